//! Which file names a step posts: Metwork's `only` and `ignore` keys.
//!
//! Each key is a `;`-separated list of regular expressions tried with Python's `re.match`
//! semantics: anchored at the start of the base name, not at its end (`^.*\.t$` and `.*\.t$` are
//! the same pattern; `foo` matches `foobar`). A name is posted when it matches one of `only` (every
//! name, when `only` is absent or empty) and none of `ignore`. `^.*\.working$` is always ignored,
//! whatever `ignore` says, as Metwork does.
//!
//! Patterns are compiled once into a [`RegexSet`] per list, so checking a name is one pass of a
//! lazy DFA whatever the number of patterns.

use regex::RegexSet;

/// `ignore` when the key is absent: the writer convention (`name.t` then rename) and temp files.
pub const DEFAULT_IGNORE: &str = r"^.*\.t$;^.*\.tmp$";

/// Always ignored, added to whatever `ignore` says: files a consumer is working on.
pub const ALWAYS_IGNORE: &str = r"^.*\.working$";

/// A pattern list that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct FilterError {
    /// The offending item of the list.
    pub pattern: String,
    /// What the regex compiler said (its last line: the actual complaint).
    pub reason: String,
}

/// The compiled `only` / `ignore` pair of one step. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Filter {
    only: Option<RegexSet>,
    ignore: RegexSet,
    only_src: Option<String>,
    ignore_src: String,
}

impl PartialEq for Filter {
    /// Two filters are the same when they were written the same.
    fn eq(&self, other: &Self) -> bool {
        self.only_src == other.only_src && self.ignore_src == other.ignore_src
    }
}

impl Default for Filter {
    fn default() -> Self {
        // The defaults are known-good patterns.
        Self::new(None, None).unwrap_or_else(|_| Self {
            only: None,
            ignore: RegexSet::empty(),
            only_src: None,
            ignore_src: String::new(),
        })
    }
}

impl Filter {
    /// Compile `only` (None: every name) and `ignore` (None: [`DEFAULT_IGNORE`]), adding
    /// [`ALWAYS_IGNORE`] to the latter.
    pub fn new(only: Option<&str>, ignore: Option<&str>) -> Result<Self, FilterError> {
        let ignore_src = ignore.unwrap_or(DEFAULT_IGNORE).to_string();
        let mut ignore_items = split(&ignore_src);
        if !ignore_items.contains(&ALWAYS_IGNORE) {
            ignore_items.insert(0, ALWAYS_IGNORE);
        }
        let ignore_set = compile(&ignore_items)?;
        let only_items = only.map(split).unwrap_or_default();
        let only_set = if only_items.is_empty() {
            None
        } else {
            Some(compile(&only_items)?)
        };
        Ok(Self {
            only: only_set,
            ignore: ignore_set,
            only_src: only.map(str::to_string),
            ignore_src,
        })
    }

    /// Whether a file named `name` (a base name) is posted.
    #[inline]
    pub fn accepts(&self, name: &str) -> bool {
        if let Some(only) = &self.only {
            if !only.is_match(name) {
                return false;
            }
        }
        !self.ignore.is_match(name)
    }

    /// `only` as configured (None when absent).
    pub fn only(&self) -> Option<&str> {
        self.only_src.as_deref()
    }

    /// `ignore` as configured, or the default (without the always-added `.working` pattern).
    pub fn ignore(&self) -> &str {
        &self.ignore_src
    }
}

/// Split a `;` list. Empty items are skipped: in Metwork a trailing `;` becomes an empty
/// alternative that matches every name, which is never what the author meant.
fn split(list: &str) -> Vec<&str> {
    list.split(';').filter(|s| !s.is_empty()).collect()
}

/// Anchor each pattern at the start (Python's `re.match`) and compile the set.
fn compile(items: &[&str]) -> Result<RegexSet, FilterError> {
    // Check each item alone first so the error names the pattern at fault.
    for item in items {
        if let Err(e) = regex::Regex::new(&anchor(item)) {
            return Err(FilterError {
                pattern: (*item).to_string(),
                reason: last_line(&e.to_string()),
            });
        }
    }
    RegexSet::new(items.iter().map(|p| anchor(p))).map_err(|e| FilterError {
        pattern: items.join(";"),
        reason: last_line(&e.to_string()),
    })
}

fn anchor(pattern: &str) -> String {
    format!("^(?:{pattern})")
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_ignore_t_tmp_and_working() {
        let f = Filter::default();
        for name in ["data.csv", "a", "x.t.gz", "report.tmp.1", "t", "x.tt"] {
            assert!(f.accepts(name), "{name} refused");
        }
        for name in ["data.csv.t", "x.tmp", "y.working", ".tmp", ".t"] {
            assert!(!f.accepts(name), "{name} accepted");
        }
        assert_eq!(f.ignore(), DEFAULT_IGNORE);
        assert_eq!(f.only(), None);
    }

    #[test]
    fn working_is_ignored_even_when_ignore_is_set_or_empty() {
        for ignore in ["", r"^foo$", ALWAYS_IGNORE] {
            let f = Filter::new(None, Some(ignore)).expect("valid");
            assert!(!f.accepts("a.working"), "ignore={ignore:?}");
            assert!(f.accepts("a.t"), "ignore={ignore:?}: .t is only a default");
        }
    }

    #[test]
    fn only_restricts_and_semicolons_split() {
        let f = Filter::new(Some(r"^.*\.gz$;^.*\.bz2$"), None).expect("valid");
        assert!(f.accepts("a.gz"));
        assert!(f.accepts("b.bz2"));
        assert!(!f.accepts("c.txt"));
        // `ignore` still applies on top of `only`.
        let f = Filter::new(Some(r".*\.gz$"), Some(r".*secret.*")).expect("valid");
        assert!(!f.accepts("secret.gz"));
        assert!(f.accepts("public.gz"));
    }

    #[test]
    fn patterns_are_anchored_at_the_start_only_like_re_match() {
        let f = Filter::new(Some("foo"), Some("")).expect("valid");
        assert!(f.accepts("foo"));
        assert!(f.accepts("foobar"), "re.match does not anchor at the end");
        assert!(!f.accepts("barfoo"), "re.match anchors at the start");
        // An alternation inside one item stays anchored as a whole.
        let f = Filter::new(Some("a|b"), Some("")).expect("valid");
        assert!(f.accepts("b1"));
        assert!(!f.accepts("cb"));
    }

    #[test]
    fn empty_items_do_not_match_everything() {
        let f = Filter::new(None, Some(r"^.*\.t$;")).expect("valid");
        assert!(f.accepts("data.csv"));
        assert!(!f.accepts("data.t"));
        let f = Filter::new(Some(""), None).expect("valid");
        assert!(f.accepts("anything"), "an empty only means every name");
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = Filter::new(Some(r"^ok$;^(unclosed$"), None).expect_err("invalid");
        assert_eq!(err.pattern, "^(unclosed$");
        assert!(!err.reason.contains('\n'), "{err}");
        // Python-only syntax (look-behind) is refused rather than silently different.
        assert!(Filter::new(None, Some(r"(?<!x)\.t$")).is_err());
    }

    #[test]
    fn equality_is_by_source() {
        let a = Filter::new(Some("a"), None).expect("valid");
        assert_eq!(a, Filter::new(Some("a"), None).expect("valid"));
        assert_ne!(a, Filter::new(Some("b"), None).expect("valid"));
        assert_ne!(a, Filter::new(Some("a"), Some("")).expect("valid"));
    }

    proptest! {
        /// A literal prefix pattern accepts exactly the names that start with it.
        #[test]
        fn literal_patterns_behave_like_starts_with(prefix in "[a-z]{1,4}", name in "[a-z.]{0,8}") {
            let f = Filter::new(Some(&regex::escape(&prefix)), Some("")).expect("valid");
            prop_assert_eq!(f.accepts(&name), name.starts_with(&prefix));
        }

        /// Suffix patterns in Metwork's style match by suffix, and splitting on `;` is an OR.
        #[test]
        fn suffix_lists_are_an_or(exts in proptest::collection::vec("[a-z]{1,3}", 1..4), name in "[a-z]{1,4}\\.[a-z]{1,3}") {
            let list: Vec<String> = exts.iter().map(|e| format!(r"^.*\.{e}$")).collect();
            let f = Filter::new(Some(&list.join(";")), Some("")).expect("valid");
            let expected = exts.iter().any(|e| name.ends_with(&format!(".{e}")));
            prop_assert_eq!(f.accepts(&name), expected);
        }

        #[test]
        fn never_panics_on_any_name(name in "\\PC{0,20}") {
            let _ = Filter::default().accepts(&name);
        }
    }
}
