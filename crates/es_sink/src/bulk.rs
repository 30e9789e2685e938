//! The `_bulk` endpoint proper: NDJSON parsing, per-item verdicts (stored, 409, 400, injected
//! faults) applied to the [`Store`] in request order, and the Elasticsearch-shaped answer.
//!
//! A request is handled in three passes so the store lock is held only for the hash lookups:
//! parse and validate every line, ask the fault closure (if any), then write under the lock.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

use crate::fault::{BulkAction, ItemFault, ItemInfo};
use crate::filter::{Field, ResponseFilter};
use crate::reply::{error_type, fault_reason, push_json_str, push_u64};
use crate::store::{Stats, Store, Written};

/// Longest `_id` Elasticsearch accepts, in bytes.
const MAX_ID_BYTES: usize = 512;

/// A bulk request refused as a whole (HTTP status, error type, reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestError {
    pub(crate) status: u16,
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}

impl RequestError {
    fn bad_request(kind: &'static str, reason: String) -> Self {
        Self {
            status: 400,
            kind,
            reason,
        }
    }
}

/// The answer to a bulk request that was processed: its JSON body and what it did.
#[derive(Debug)]
pub(crate) struct BulkAnswer {
    pub(crate) body: Vec<u8>,
    pub(crate) tally: Stats,
}

/// Makes Elasticsearch-like 20-character auto `_id`s, unique within the process.
#[derive(Debug)]
pub(crate) struct IdGenerator {
    prefix: u64,
    next: AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A random 56-bit prefix per sink, without a random-number dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        h.write_u128(now.map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        Self {
            prefix: h.finish() >> 8,
            next: AtomicU64::new(0),
        }
    }

    /// Reserve `n` ids; returns the first sequence number.
    fn reserve(&self, n: usize) -> u64 {
        self.next.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// The id for sequence number `seq`: base64url of 7 prefix bytes and 8 sequence bytes.
    fn id(&self, seq: u64) -> AutoId {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut raw = [0u8; 15];
        raw[..7].copy_from_slice(&self.prefix.to_be_bytes()[1..]);
        raw[7..].copy_from_slice(&seq.to_be_bytes());
        let mut out = [0u8; 20];
        for (chunk, text) in raw.chunks(3).zip(out.chunks_mut(4)) {
            let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
            for (c, shift) in text.iter_mut().zip([18, 12, 6, 0]) {
                *c = ALPHABET[((n >> shift) & 63) as usize];
            }
        }
        AutoId(out)
    }
}

/// A generated `_id`, inline (no allocation per document).
#[derive(Debug, Clone, Copy)]
struct AutoId([u8; 20]);

impl AutoId {
    fn as_str(&self) -> &str {
        // Always ASCII from the base64url alphabet.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionLine<'a> {
    #[serde(borrow, default)]
    create: Option<Meta<'a>>,
    #[serde(borrow, default)]
    index: Option<Meta<'a>>,
    #[serde(borrow, default)]
    delete: Option<Meta<'a>>,
    #[serde(borrow, default)]
    update: Option<Meta<'a>>,
}

impl<'a> ActionLine<'a> {
    /// The one action the line names; `None` when it names none or several.
    fn single(self) -> Option<(BulkAction, Meta<'a>)> {
        match (self.create, self.index, self.delete, self.update) {
            (Some(m), None, None, None) => Some((BulkAction::Create, m)),
            (None, Some(m), None, None) => Some((BulkAction::Index, m)),
            (None, None, Some(m), None) => Some((BulkAction::Delete, m)),
            (None, None, None, Some(m)) => Some((BulkAction::Update, m)),
            _ => None,
        }
    }
}

/// Action metadata; other keys (`_type`, `routing`, `pipeline`, …) are ignored.
#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, default, rename = "_index")]
    index: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "_id")]
    id: Option<Cow<'a, str>>,
}

/// Why an item is answered with an error before it reaches the store.
#[derive(Debug)]
enum Problem {
    /// The source is not a JSON object: 400 `mapper_parsing_exception`.
    BadDocument(String),
    /// 400 `invalid_index_name_exception`.
    InvalidIndex(String),
    /// `update`: 400 `illegal_argument_exception`.
    Unsupported,
}

struct Item<'a> {
    action: BulkAction,
    index: Cow<'a, str>,
    /// The client's `_id`.
    id: Option<Cow<'a, str>>,
    /// Generated when the client gave none (create and index only).
    auto_id: Option<AutoId>,
    source: &'a [u8],
    problem: Option<Problem>,
    doc: Option<serde_json::Value>,
}

impl Item<'_> {
    fn id(&self) -> &str {
        match (&self.id, &self.auto_id) {
            (Some(id), _) => id,
            (None, Some(auto)) => auto.as_str(),
            (None, None) => "",
        }
    }
}

enum Outcome {
    /// Stored, replaced, deleted, or a delete of a missing `_id`.
    Done {
        result: &'static str,
        status: u16,
        version: u32,
        seq_no: u64,
    },
    /// `create` on a stored `_id`: its version and the index's uuid.
    Conflict(u32, String),
    Problem(Problem),
    /// Injected status.
    Fault(u16),
}

/// Handle one decoded bulk body. `url_index` is the `<index>` of `/<index>/_bulk`.
pub(crate) fn bulk(
    store: &Mutex<Store>,
    ids: &IdGenerator,
    url_index: Option<&str>,
    body: &[u8],
    faults: Option<&ItemFault>,
    keep_documents: bool,
    filter: &ResponseFilter,
) -> Result<BulkAnswer, RequestError> {
    let started = std::time::Instant::now();
    let mut items = parse(body, url_index, keep_documents)?;

    // Delete items always carry an `_id` (checked in `parse`).
    let missing = items.iter().filter(|i| i.id.is_none()).count();
    let first = ids.reserve(missing);
    for (seq, item) in (first..).zip(items.iter_mut().filter(|i| i.id.is_none())) {
        item.auto_id = Some(ids.id(seq));
    }

    // Pass 2: the fault closure, outside the store lock (it may call back into the sink).
    let verdicts: Vec<Option<u16>> = match faults {
        None => Vec::new(),
        Some(f) => {
            let seen: Vec<u32> = {
                let mut store = lock(store);
                items
                    .iter()
                    .map(|i| match (&i.id, &i.problem) {
                        (_, Some(Problem::InvalidIndex(_))) | (None, _) => 0,
                        (Some(id), _) => store.index_mut(&i.index).see(id),
                    })
                    .collect()
            };
            items
                .iter()
                .zip(seen)
                .enumerate()
                .map(|(position, (i, seen_before))| {
                    f(&ItemInfo {
                        action: i.action,
                        index: &i.index,
                        id: i.id.as_deref(),
                        source: i.source,
                        seen_before,
                        position,
                    })
                })
                .collect()
        }
    };
    let counted = faults.is_some();

    // Pass 3: write, in request order.
    let mut tally = Stats {
        items: items.len() as u64,
        bytes: body.len() as u64,
        ..Stats::default()
    };
    let mut outcomes = Vec::with_capacity(items.len());
    {
        let mut store = lock(store);
        for (n, item) in items.iter_mut().enumerate() {
            if let Some(status) = verdicts.get(n).copied().flatten() {
                tally.injected_faults += 1;
                outcomes.push(Outcome::Fault(status));
                continue;
            }
            if let Some(problem) = item.problem.take() {
                if let Some(id) = &item.id {
                    if !counted && !matches!(problem, Problem::InvalidIndex(_)) {
                        store.index_mut(&item.index).see(id);
                    }
                }
                tally.bad_documents += u64::from(matches!(problem, Problem::BadDocument(_)));
                outcomes.push(Outcome::Problem(problem));
                continue;
            }
            let id = match (&item.id, &item.auto_id) {
                (Some(id), _) => id,
                (None, Some(auto)) => auto.as_str(),
                (None, None) => "",
            };
            let index = store.index_mut(&item.index);
            let written = match item.action {
                BulkAction::Create => index.write(id, true, item.doc.take(), counted),
                BulkAction::Index => index.write(id, false, item.doc.take(), counted),
                BulkAction::Delete => index.delete(id, counted),
                BulkAction::Update => {
                    outcomes.push(Outcome::Problem(Problem::Unsupported));
                    continue;
                }
            };
            let done = |result, status, version, seq_no| Outcome::Done {
                result,
                status,
                version,
                seq_no,
            };
            outcomes.push(match written {
                Written::Created(v, s) => {
                    tally.created += 1;
                    done("created", 201, v, s)
                }
                Written::Updated(v, s) => {
                    tally.updated += 1;
                    done("updated", 200, v, s)
                }
                Written::Deleted(v, s) => {
                    tally.deleted += 1;
                    done("deleted", 200, v, s)
                }
                Written::NotFound => done("not_found", 404, 1, 0),
                Written::Conflict(version) => {
                    tally.conflicts += 1;
                    Outcome::Conflict(version, index.uuid.clone())
                }
            });
        }
    }

    let errors = outcomes.iter().any(|o| !matches!(o, Outcome::Done { .. }));
    let mut out = Vec::with_capacity(64 + items.len() * 200);
    out.push(b'{');
    if filter.took() {
        out.extend_from_slice(b"\"took\":");
        push_u64(&mut out, started.elapsed().as_millis() as u64);
    }
    if filter.errors() {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(if errors {
            b"\"errors\":true"
        } else {
            b"\"errors\":false"
        });
    }
    if filter.items() {
        let before = out.len();
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"items\":[");
        let mut written = 0;
        for (item, outcome) in items.iter().zip(&outcomes) {
            let at = out.len();
            if written > 0 {
                out.push(b',');
            }
            if write_item(&mut out, item, outcome, filter) {
                written += 1;
            } else {
                out.truncate(at);
            }
        }
        if written == 0 {
            // Filtered empty: Elasticsearch drops the key.
            out.truncate(before);
        } else {
            out.push(b']');
        }
    }
    out.push(b'}');
    Ok(BulkAnswer { body: out, tally })
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic while the lock was held (a test's fault closure) leaves a consistent store: every
    // write is a single map operation.
    store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Pass 1: split the body into items and validate each (no store access).
fn parse<'a>(body: &'a [u8], url_index: Option<&'a str>, keep_documents: bool) -> Result<Vec<Item<'a>>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;".into(),
        ));
    }
    if body.last() != Some(&b'\n') {
        return Err(RequestError::bad_request(
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]".into(),
        ));
    }
    // Sized up front: an item is about 170 bytes and a request holds thousands.
    let mut items = Vec::with_capacity(memchr::memchr_iter(b'\n', body).count() / 2 + 1);
    let mut lines = LineIter::new(body);
    while let Some((line_no, line)) = lines.next() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let malformed = |detail: String| {
            RequestError::bad_request(
                "illegal_argument_exception",
                format!("Malformed action/metadata line [{line_no}], {detail}"),
            )
        };
        let (action, meta) = match fast_action_line(line) {
            Some(parsed) => parsed,
            None => {
                let parsed: ActionLine<'a> = serde_json::from_slice(line).map_err(|e| malformed(e.to_string()))?;
                parsed.single().ok_or_else(|| {
                    malformed("expected exactly one of [create], [delete], [index] or [update]".into())
                })?
            }
        };
        let position = items.len();
        let Some(index) = meta.index.or(url_index.map(Cow::Borrowed)) else {
            return Err(RequestError::bad_request(
                "action_request_validation_exception",
                format!("Validation Failed: 1: index is missing for item [{position}];"),
            ));
        };
        if let Some(id) = &meta.id {
            if id.is_empty() {
                return Err(RequestError::bad_request(
                    "action_request_validation_exception",
                    format!("Validation Failed: 1: if _id is specified it must not be empty (item [{position}]);"),
                ));
            }
            if id.len() > MAX_ID_BYTES {
                return Err(RequestError::bad_request(
                    "action_request_validation_exception",
                    format!(
                        "Validation Failed: 1: id [{id}] is too long, must be no longer than 512 bytes but was: {};",
                        id.len()
                    ),
                ));
            }
        } else if action == BulkAction::Delete {
            return Err(RequestError::bad_request(
                "action_request_validation_exception",
                format!("Validation Failed: 1: id is missing for item [{position}];"),
            ));
        }
        let mut item = Item {
            action,
            problem: index_name_problem(&index).map(Problem::InvalidIndex),
            index,
            id: meta.id,
            auto_id: None,
            source: b"",
            doc: None,
        };
        if action != BulkAction::Delete {
            let Some((_, source)) = lines.next() else {
                return Err(RequestError::bad_request(
                    "illegal_argument_exception",
                    format!("Malformed action/metadata line [{line_no}], no source line follows"),
                ));
            };
            item.source = source;
            if action == BulkAction::Update {
                item.problem = Some(Problem::Unsupported);
            } else if item.problem.is_none() {
                match validate_source(source, keep_documents) {
                    Ok(doc) => item.doc = doc,
                    Err(reason) => item.problem = Some(Problem::BadDocument(reason)),
                }
            }
        }
        items.push(item);
    }
    Ok(items)
}

/// The action lines shippers write, `{"create":{"_index":"i","_id":"x"}}` (spaces allowed
/// between tokens, as rsyslog puts them), without escapes, read without serde: a fifth of the
/// sink's time went to serde here. `None` for anything else, which serde then reads or refuses.
fn fast_action_line(line: &[u8]) -> Option<(BulkAction, Meta<'_>)> {
    /// Without leading JSON whitespace (`trim_ascii` would also take form feeds).
    fn ws(s: &[u8]) -> &[u8] {
        let n = s
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .count();
        &s[n..]
    }
    /// After `token` and the spaces around it.
    fn eat<'l>(s: &'l [u8], token: &[u8]) -> Option<&'l [u8]> {
        Some(ws(ws(s).strip_prefix(token)?))
    }
    /// A string without escapes (`s` starts at its opening quote), and what follows it.
    fn string(s: &[u8]) -> Option<(&[u8], &[u8])> {
        let s = s.strip_prefix(b"\"")?;
        let end = memchr::memchr2(b'"', b'\\', s)?;
        (s[end] == b'"').then(|| (&s[..end], &s[end + 1..]))
    }
    let (name, rest) = string(eat(line, b"{")?)?;
    let action = match name {
        b"create" => BulkAction::Create,
        b"index" => BulkAction::Index,
        b"delete" => BulkAction::Delete,
        _ => return None,
    };
    let mut rest = eat(eat(rest, b":")?, b"{")?;
    let mut meta = Meta { index: None, id: None };
    if let Some(end) = rest.strip_prefix(b"}") {
        rest = end;
    } else {
        loop {
            let (key, after) = string(rest)?;
            let (value, after) = string(eat(after, b":")?)?;
            let value = Cow::Borrowed(std::str::from_utf8(value).ok()?);
            let slot = match key {
                b"_index" => &mut meta.index,
                b"_id" => &mut meta.id,
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None; // a repeated key: serde says how it is malformed
            }
            match ws(after).split_first()? {
                (b',', more) => rest = ws(more),
                (b'}', more) => {
                    rest = more;
                    break;
                }
                _ => return None,
            }
        }
    }
    (eat(rest, b"}")? == b"").then_some((action, meta))
}

/// Lines of a body that ends with `\n`, numbered from 1, without the `\n`.
struct LineIter<'a> {
    body: &'a [u8],
    at: usize,
    line_no: usize,
}

impl<'a> LineIter<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self {
            body,
            at: 0,
            line_no: 0,
        }
    }
}

impl<'a> Iterator for LineIter<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.body[self.at..];
        let end = memchr::memchr(b'\n', rest)?;
        self.at += end + 1;
        self.line_no += 1;
        Some((self.line_no, &rest[..end]))
    }
}

/// A source must be one JSON object. Returns the parsed document when it is to be kept.
fn validate_source(source: &[u8], keep: bool) -> Result<Option<serde_json::Value>, String> {
    match source.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err("the document is not a JSON object".into()),
        None => return Err("the document is empty".into()),
    }
    if keep {
        serde_json::from_slice::<serde_json::Value>(source)
            .map(Some)
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(source)
            .map(|_| None)
            .map_err(|e| e.to_string())
    }
}

/// Elasticsearch's index name rules, as the reason it gives when one is broken.
fn index_name_problem(name: &str) -> Option<String> {
    let broken = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 255 {
        Some("index name is too long")
    } else if name.chars().any(char::is_uppercase) {
        Some("must be lowercase")
    } else if name.starts_with(['_', '-', '+']) {
        Some("must not start with '_', '-', or '+'")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        Some("must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]")
    } else {
        None
    };
    broken.map(|why| format!("Invalid index name [{name}], {why}"))
}

/// Append one item's answer with the fields `filter` keeps; returns false (having written
/// a partial item the caller truncates) when it keeps none.
fn write_item(out: &mut Vec<u8>, item: &Item<'_>, outcome: &Outcome, filter: &ResponseFilter) -> bool {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(item.action.name().as_bytes());
    out.extend_from_slice(b"\":{");
    let mut fields = Fields {
        out,
        filter,
        action: item.action,
        count: 0,
    };
    fields.put(Field::Index, |o| push_json_str(o, &item.index));
    fields.put(Field::Id, |o| push_json_str(o, item.id()));
    match outcome {
        Outcome::Done {
            result,
            status,
            version,
            seq_no,
        } => {
            fields.put(Field::Version, |o| push_u64(o, u64::from(*version)));
            fields.put(Field::Result, |o| push_json_str(o, result));
            fields.put(Field::Shards, |o| {
                o.extend_from_slice(b"{\"total\":1,\"successful\":1,\"failed\":0}");
            });
            fields.put(Field::SeqNo, |o| push_u64(o, *seq_no));
            fields.put(Field::PrimaryTerm, |o| o.push(b'1'));
            fields.put(Field::Status, |o| push_u64(o, u64::from(*status)));
        }
        _ => {
            let status = match outcome {
                Outcome::Fault(s) => *s,
                Outcome::Conflict(..) => 409,
                Outcome::Problem(_) | Outcome::Done { .. } => 400,
            };
            fields.put(Field::Status, |o| push_u64(o, u64::from(status)));
            fields.put(Field::Error, |o| {
                o.extend_from_slice(error_json(item, outcome).as_bytes())
            });
        }
    }
    if fields.count == 0 {
        return false;
    }
    out.extend_from_slice(b"}}");
    true
}

/// Writes the kept fields of one item, with commas between them.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    filter: &'a ResponseFilter,
    action: BulkAction,
    count: usize,
}

impl Fields<'_> {
    fn put(&mut self, field: Field, value: impl FnOnce(&mut Vec<u8>)) {
        if !self.filter.item_field(self.action, field) {
            return;
        }
        if self.count > 0 {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(field.name().as_bytes());
        self.out.extend_from_slice(b"\":");
        value(self.out);
        self.count += 1;
    }
}

/// The `error` object of an item that failed.
fn error_json(item: &Item<'_>, outcome: &Outcome) -> String {
    let error = match outcome {
        Outcome::Done { .. } => serde_json::Value::Null,
        Outcome::Conflict(version, uuid) => serde_json::json!({
            "type": "version_conflict_engine_exception",
            "reason": format!("[{}]: version conflict, document already exists (current version [{version}])", item.id()),
            "index_uuid": uuid,
            "shard": "0",
            "index": item.index,
        }),
        Outcome::Problem(Problem::BadDocument(detail)) => serde_json::json!({
            "type": "mapper_parsing_exception",
            "reason": "failed to parse",
            "caused_by": {"type": "not_x_content_exception", "reason": detail},
        }),
        Outcome::Problem(Problem::InvalidIndex(reason)) => serde_json::json!({
            "type": "invalid_index_name_exception",
            "reason": reason,
            "index_uuid": "_na_",
            "index": item.index,
        }),
        Outcome::Problem(Problem::Unsupported) => serde_json::json!({
            "type": "illegal_argument_exception",
            "reason": "es_sink does not support the update action",
        }),
        Outcome::Fault(status) => serde_json::json!({
            "type": error_type(*status),
            "reason": fault_reason(*status, &item.index, item.source.len()),
        }),
    };
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(store: &Mutex<Store>, body: &str) -> serde_json::Value {
        let ids = IdGenerator::new();
        let answer = bulk(
            store,
            &ids,
            Some("url-index"),
            body.as_bytes(),
            None,
            false,
            &ResponseFilter::all(),
        )
        .expect("processed");
        serde_json::from_slice(&answer.body).expect("valid JSON answer")
    }

    #[test]
    fn the_fast_action_reader_takes_plain_lines_and_leaves_the_rest_to_serde() {
        let read = read_fast;
        fn some(a: BulkAction, i: Option<&str>, id: Option<&str>) -> Read {
            Some((a, i.map(str::to_string), id.map(str::to_string)))
        }
        assert_eq!(
            read(r#"{"create":{"_index":"mflog-2026.11.23","_id":"ab-12"}}"#),
            some(BulkAction::Create, Some("mflog-2026.11.23"), Some("ab-12"))
        );
        assert_eq!(read(r#"{"index":{}}"#), some(BulkAction::Index, None, None));
        assert_eq!(
            read(r#"{"delete":{"_id":"x"}}"#),
            some(BulkAction::Delete, None, Some("x"))
        );
        assert_eq!(
            read(r#" { "index" : { "_index": "mflog-bench" , "_id" : "7" } } "#),
            some(BulkAction::Index, Some("mflog-bench"), Some("7")),
            "spaces as rsyslog writes them"
        );
        for other in [
            r#"{"index":{"_id":"a\"b"}}"#,
            r#"{"index":{"_type":"_doc"}}"#,
            r#"{"index":{"_id":"1","_id":"2"}}"#,
            r#"{"update":{"_id":"1"}}"#,
            r#"{"index":{}}}"#,
            "{\"index\":{}}\x0c",
            r#"{"index":{},"create":{}}"#,
            r#"{"index":{"_id":"1"}"#,
            r#"{"index":{"_id":1}}"#,
        ] {
            assert_eq!(read(other), None, "{other}");
        }
    }

    type Read = Option<(BulkAction, Option<String>, Option<String>)>;

    fn owned(m: Meta<'_>) -> (Option<String>, Option<String>) {
        (m.index.map(Cow::into_owned), m.id.map(Cow::into_owned))
    }

    fn read_fast(line: &str) -> Read {
        fast_action_line(line.as_bytes()).map(|(a, m)| {
            let (i, id) = owned(m);
            (a, i, id)
        })
    }

    /// Serde's reading of an action line, in the fast reader's terms.
    fn read_serde(line: &str) -> Read {
        let (action, m) = serde_json::from_str::<ActionLine<'_>>(line)
            .ok()?
            .single()
            .filter(|(a, _)| *a != BulkAction::Update)?;
        let (i, id) = owned(m);
        Some((action, i, id))
    }

    fn action_line() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(vec!["", "", " ", "\t", "  "]);
        let action = prop::sample::select(vec!["create", "index", "delete", "update", "bogus"]);
        let key = prop::sample::select(vec!["_index", "_id", "_type", "routing"]);
        let value = "[a-z0-9.\"\\\\é -]{0,6}";
        let field = (key, value, ws.clone(), ws.clone())
            .prop_map(|(k, v, w1, w2)| format!("\"{k}\"{w1}:{w2}{}", serde_json::Value::from(v)));
        let fields = prop::collection::vec(field, 0..4);
        (
            ws.clone(),
            action,
            ws.clone(),
            fields,
            ws,
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(w1, action, w2, fields, w3, cut, truncate)| {
                let line = format!(
                    "{w1}{{\"{action}\"{w2}:{{{}}}{w3}}}{w1}",
                    fields.join(&format!("{w2},{w3}"))
                );
                if truncate {
                    let at = cut.index(line.len() + 1);
                    line.get(..at).unwrap_or(&line).to_string()
                } else {
                    line
                }
            })
    }

    proptest::proptest! {
        #[test]
        fn the_fast_action_reader_agrees_with_serde_whenever_it_answers(line in action_line()) {
            let fast = read_fast(&line);
            if fast.is_some() {
                proptest::prop_assert_eq!(fast, read_serde(&line), "{:?}", line);
            }
        }
    }

    #[test]
    fn generated_ids_are_20_url_safe_characters_and_distinct() {
        let g = IdGenerator::new();
        let (a, b) = (g.id(g.reserve(1)), g.id(g.reserve(1)));
        let (a, b) = (a.as_str(), b.as_str());
        assert_eq!(a.len(), 20);
        assert!(
            a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn items_take_the_url_index_unless_the_action_names_one() {
        let store = Mutex::new(Store::default());
        let v = run(
            &store,
            "{\"index\":{}}\n{\"a\":1}\n{\"create\":{\"_index\":\"named\",\"_id\":\"x\"}}\n{\"b\":2}\n",
        );
        assert_eq!(v["errors"], false);
        assert_eq!(v["items"][0]["index"]["_index"], "url-index");
        assert_eq!(v["items"][1]["create"]["_index"], "named");
        assert_eq!(v["items"][1]["create"]["_id"], "x");
    }

    #[test]
    fn malformed_action_lines_and_missing_newline_refuse_the_request() {
        let store = Mutex::new(Store::default());
        let ids = IdGenerator::new();
        for body in [
            "{\"index\":{}}\n{\"a\":1}",
            "not json\n{}\n",
            "{\"index\":{},\"create\":{}}\n{}\n",
            "{\"bogus\":{}}\n{}\n",
            "{\"index\":{\"_id\":\"\"}}\n{}\n",
            "{\"delete\":{}}\n",
            "{\"index\":{}}\n",
            "",
        ] {
            let e = bulk(
                &store,
                &ids,
                Some("i"),
                body.as_bytes(),
                None,
                false,
                &ResponseFilter::all(),
            )
            .expect_err(body);
            assert_eq!(e.status, 400, "{body}");
        }
        let e = bulk(
            &store,
            &ids,
            None,
            b"{\"index\":{}}\n{}\n",
            None,
            false,
            &ResponseFilter::all(),
        )
        .expect_err("no index");
        assert_eq!(e.kind, "action_request_validation_exception");
        assert_eq!(lock(&store).count("*"), 0, "nothing stored by refused requests");
    }

    #[test]
    fn invalid_index_names_and_updates_fail_per_item() {
        let store = Mutex::new(Store::default());
        let v = run(
            &store,
            "{\"index\":{\"_index\":\"Upper\"}}\n{}\n{\"update\":{\"_id\":\"1\"}}\n{\"doc\":{}}\n{\"index\":{}}\n{}\n",
        );
        assert_eq!(v["errors"], true);
        assert_eq!(v["items"][0]["index"]["status"], 400);
        assert_eq!(v["items"][0]["index"]["error"]["type"], "invalid_index_name_exception");
        assert_eq!(v["items"][1]["update"]["status"], 400);
        assert_eq!(v["items"][2]["index"]["status"], 201);
    }

    #[test]
    fn delete_answers_200_then_404() {
        let store = Mutex::new(Store::default());
        run(&store, "{\"create\":{\"_id\":\"d\"}}\n{}\n");
        let v = run(&store, "{\"delete\":{\"_id\":\"d\"}}\n{\"delete\":{\"_id\":\"d\"}}\n");
        assert_eq!(v["errors"], false);
        assert_eq!(v["items"][0]["delete"]["status"], 200);
        assert_eq!(v["items"][0]["delete"]["result"], "deleted");
        assert_eq!(v["items"][1]["delete"]["status"], 404);
        assert_eq!(lock(&store).count("url-index"), 0);
    }
}
