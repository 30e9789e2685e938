//! `filter_path` for bulk answers, as Elasticsearch applies it: only the named keys are kept
//! (`errors,items.*.status,items.*.error` is what shippers send), and objects left empty are
//! dropped, items included. Clients that ask for less get less to parse, as from Elasticsearch.
//!
//! Understood: `took`, `errors`, `items`, `items.<action|*>`, `items.<action|*>.<field|*>`
//! (deeper paths keep the whole field, e.g. `items.*.error.type` keeps `error`), and `*`.
//! Anything else (exclusions, `**`, other wildcards) answers unfiltered.

use crate::fault::BulkAction;

/// The fields of a bulk item answer, in the order Elasticsearch writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Index,
    Id,
    Version,
    Result,
    Shards,
    SeqNo,
    PrimaryTerm,
    Status,
    Error,
}

impl Field {
    const ALL: [Field; 9] = [
        Field::Index,
        Field::Id,
        Field::Version,
        Field::Result,
        Field::Shards,
        Field::SeqNo,
        Field::PrimaryTerm,
        Field::Status,
        Field::Error,
    ];

    /// The key in the answer.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Index => "_index",
            Field::Id => "_id",
            Field::Version => "_version",
            Field::Result => "result",
            Field::Shards => "_shards",
            Field::SeqNo => "_seq_no",
            Field::PrimaryTerm => "_primary_term",
            Field::Status => "status",
            Field::Error => "error",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

const EVERY_FIELD: u16 = (1 << Field::ALL.len()) - 1;

/// Which parts of a bulk answer to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseFilter {
    took: bool,
    errors: bool,
    /// Per action (create, index, delete, update), the fields kept, one bit per [`Field`].
    items: [u16; 4],
}

impl Default for ResponseFilter {
    fn default() -> Self {
        Self::all()
    }
}

impl ResponseFilter {
    /// No filtering.
    pub(crate) fn all() -> Self {
        Self {
            took: true,
            errors: true,
            items: [EVERY_FIELD; 4],
        }
    }

    /// The filter of a request's query string (`filter_path=…`); unfiltered without one or when
    /// it uses what is not understood.
    pub(crate) fn from_query(query: &str) -> Self {
        let Some(value) = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "filter_path")
            .map(|(_, v)| ironwork_core::http::percent_decode(v))
        else {
            return Self::all();
        };
        Self::parse(&value).unwrap_or_else(|| {
            tracing::debug!(filter_path = %value, "filter_path not understood, answering unfiltered");
            Self::all()
        })
    }

    fn parse(value: &str) -> Option<Self> {
        let mut f = Self {
            took: false,
            errors: false,
            items: [0; 4],
        };
        for path in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parts: Vec<&str> = path.split('.').collect();
            match parts.as_slice() {
                ["*"] => return Some(Self::all()),
                ["took"] => f.took = true,
                ["errors"] => f.errors = true,
                ["items"] => f.items = [EVERY_FIELD; 4],
                ["items", action, rest @ ..] => {
                    let action = match *action {
                        "*" => None,
                        "create" => Some(BulkAction::Create),
                        "index" => Some(BulkAction::Index),
                        "delete" => Some(BulkAction::Delete),
                        "update" => Some(BulkAction::Update),
                        _ => return None,
                    };
                    let fields = match rest.first() {
                        None | Some(&"*") => EVERY_FIELD,
                        Some(name) if !name.contains('*') => Field::ALL
                            .iter()
                            .filter(|field| field.name() == *name)
                            .fold(0, |bits, field| bits | field.bit()),
                        Some(_) => return None,
                    };
                    for (n, kept) in f.items.iter_mut().enumerate() {
                        if action.is_none_or(|a| action_slot(a) == n) {
                            *kept |= fields;
                        }
                    }
                }
                _ => return None,
            }
        }
        Some(f)
    }

    pub(crate) fn took(&self) -> bool {
        self.took
    }

    pub(crate) fn errors(&self) -> bool {
        self.errors
    }

    pub(crate) fn items(&self) -> bool {
        self.items.iter().any(|&bits| bits != 0)
    }

    /// Whether `field` of an item with `action` is kept.
    pub(crate) fn item_field(&self, action: BulkAction, field: Field) -> bool {
        self.items[action_slot(action)] & field.bit() != 0
    }
}

fn action_slot(action: BulkAction) -> usize {
    match action {
        BulkAction::Create => 0,
        BulkAction::Index => 1,
        BulkAction::Delete => 2,
        BulkAction::Update => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_shipper_filter_keeps_errors_status_and_error() {
        let f = ResponseFilter::from_query("filter_path=errors,items.*.status,items.*.error&refresh=false");
        assert!(!f.took() && f.errors() && f.items());
        assert!(f.item_field(BulkAction::Create, Field::Status));
        assert!(f.item_field(BulkAction::Index, Field::Error));
        assert!(!f.item_field(BulkAction::Index, Field::Id));
    }

    #[test]
    fn action_specific_paths_deep_paths_and_encoded_commas() {
        let f = ResponseFilter::from_query("filter_path=items.create._id%2Citems.*.error.type");
        assert!(f.item_field(BulkAction::Create, Field::Id));
        assert!(!f.item_field(BulkAction::Index, Field::Id));
        assert!(f.item_field(BulkAction::Index, Field::Error));
        assert!(!f.errors());
        let unknown = ResponseFilter::from_query("filter_path=items.*.nothing");
        assert!(!unknown.items(), "an unknown field keeps nothing");
    }

    #[test]
    fn no_filter_wildcards_and_unknown_syntax_answer_everything() {
        for query in [
            "",
            "pretty",
            "filter_path=*",
            "filter_path=-took",
            "filter_path=**.status",
            "filter_path=items.*.st*",
        ] {
            assert_eq!(ResponseFilter::from_query(query), ResponseFilter::all(), "{query}");
        }
        let f = ResponseFilter::from_query("filter_path=took");
        assert!(f.took() && !f.errors() && !f.items());
    }
}
