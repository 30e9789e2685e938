//! Switch rules, Metwork's format: every `[switch_rules*:<type>:<tag>]` (or
//! `[switch_rules*:alwaystrue]`) section holds lines `pattern = plugin/step, plugin2/step2*`.
//! The pattern is tested against the value of tag `<tag>` (`{NOT_FOUND}` when absent); a
//! trailing `*` on a target hard-links instead of copying. Every matching line applies.
//!
//! Types: `fnmatch`, `regex` (Python `re.match`: anchored at the start), `equal`, their `not…`
//! forms, and `alwaystrue`. In patterns, `@@@@@@` stands for `=` and `~~~~~~` for `#`.
//! Metwork's `python` rules (dotted-path functions) are refused with a clear error.

use std::collections::BTreeSet;
use std::path::Path;

use ironwork_core::config::{ConfigError, ConfigErrors};
use ironwork_core::ini::Ini;
use regex::Regex;

use crate::layout::StepName;
use crate::tags::Tags;

/// One thing a matching rule asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action {
    /// Where the file goes.
    pub target: StepName,
    /// Hard link (`*`) rather than copy.
    pub hardlink: bool,
}

#[derive(Debug, Clone)]
enum Test {
    Fnmatch(Regex),
    Regex(Regex),
    Equal(String),
    Always,
}

#[derive(Debug, Clone)]
struct Rule {
    test: Test,
    negate: bool,
    actions: Vec<Action>,
}

#[derive(Debug, Clone)]
struct Block {
    tag: Option<String>,
    rules: Vec<Rule>,
}

/// Every rule of a rules file, in file order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    blocks: Vec<Block>,
}

const NOT_FOUND: &str = "{NOT_FOUND}";

impl RuleSet {
    /// Read a rules file. Every error is reported, with its section, key and line.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::from(ConfigError::new(path, format!("cannot read: {e}"))))?;
        Self::parse(path, &text)
    }

    /// Parse rules from `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let ini = Ini::parse_with_delimiters(path, text, &['='])?;
        let mut errors = ConfigErrors::default();
        let mut blocks = Vec::new();
        for section in &ini.sections {
            let mut parts = section.name.splitn(3, ':');
            let prefix = parts.next().unwrap_or_default();
            if !prefix.starts_with("switch_rules") {
                continue;
            }
            let err = |msg: String| {
                ConfigError::new(path, msg)
                    .in_section(&section.name)
                    .at_line(section.line)
            };
            let kind = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let param = parts.next().map(str::trim).filter(|p| !p.is_empty());
            let (base, negate) = match kind.strip_prefix("not") {
                Some(rest @ ("fnmatch" | "regex" | "equal")) => (rest.to_string(), true),
                _ => (kind.clone(), false),
            };
            let tag = match (base.as_str(), param) {
                ("alwaystrue", None) if !negate => None,
                ("alwaystrue", Some(_)) => {
                    errors.push(err("alwaystrue rules take no parameter".into()));
                    continue;
                }
                ("fnmatch" | "regex" | "equal", Some(tag)) => Some(tag.to_string()),
                ("fnmatch" | "regex" | "equal", None) => {
                    errors.push(err(format!(
                        "{kind} rules need a tag name: [switch_rules:{kind}:<tag>]"
                    )));
                    continue;
                }
                ("python", _) => {
                    errors.push(err(
                        "python rules are not supported: use fnmatch, regex or equal on a tag".into(),
                    ));
                    continue;
                }
                _ => {
                    errors.push(err(format!(
                        "unknown rule type {kind:?} (fnmatch, notfnmatch, regex, notregex, equal, notequal, alwaystrue)"
                    )));
                    continue;
                }
            };
            let mut rules = Vec::new();
            for entry in &section.entries {
                let err = |msg: String| {
                    ConfigError::new(path, msg)
                        .in_section(&section.name)
                        .with_key(&entry.key)
                        .at_line(entry.line)
                };
                let pattern = entry.key.replace("@@@@@@", "=").replace("~~~~~~", "#");
                let test = match base.as_str() {
                    "fnmatch" => match Regex::new(&fnmatch_to_regex(&pattern)) {
                        Ok(r) => Test::Fnmatch(r),
                        Err(e) => {
                            errors.push(err(format!("bad fnmatch pattern: {e}")));
                            continue;
                        }
                    },
                    "regex" => match Regex::new(&format!("^(?:{pattern})")) {
                        Ok(r) => Test::Regex(r),
                        Err(e) => {
                            errors.push(err(format!("bad regex: {e}")));
                            continue;
                        }
                    },
                    "equal" => Test::Equal(pattern),
                    _ => Test::Always,
                };
                let mut actions = Vec::new();
                for target in entry.value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let (target, hardlink) = match target.strip_suffix('*') {
                        Some(t) => (t, true),
                        None => (target, false),
                    };
                    match StepName::parse(target) {
                        Ok(target) => actions.push(Action { target, hardlink }),
                        Err(e) => errors.push(err(format!("bad action: {e}"))),
                    }
                }
                if entry.value.split(',').all(|t| t.trim().is_empty()) {
                    errors.push(err("a rule needs at least one plugin/step target".into()));
                }
                rules.push(Rule { test, negate, actions });
            }
            blocks.push(Block { tag, rules });
        }
        errors.into_result(Self { blocks })
    }

    /// Every action whose rule matches `tags`, without duplicates, in a stable order.
    pub fn evaluate(&self, tags: &Tags) -> BTreeSet<Action> {
        let mut out = BTreeSet::new();
        for block in &self.blocks {
            let value = block
                .tag
                .as_deref()
                .map(|t| tags.get(t).unwrap_or(NOT_FOUND))
                .unwrap_or_default();
            for rule in &block.rules {
                let hit = match &rule.test {
                    Test::Fnmatch(r) | Test::Regex(r) => r.is_match(value),
                    Test::Equal(s) => s == value,
                    Test::Always => true,
                };
                if hit != rule.negate {
                    out.extend(rule.actions.iter().cloned());
                }
            }
        }
        out
    }

    /// Number of rule lines.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(|b| b.rules.len()).sum()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Python's `fnmatch.translate`: `*`, `?`, `[seq]`, `[!seq]`, whole-string match.
pub fn fnmatch_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from("(?s)^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str("\\[");
                } else {
                    let body: String = chars[i..j].iter().collect();
                    i = j + 1;
                    let (negated, body) = match body.strip_prefix('!') {
                        Some(rest) => (true, rest.to_string()),
                        None => (false, body),
                    };
                    out.push('[');
                    if negated {
                        out.push('^');
                    }
                    for (k, ch) in body.chars().enumerate() {
                        // Escape what the regex crate reads as class syntax (nesting, set operations).
                        if matches!(ch, '\\' | '[' | '&' | '~' | '|') || (ch == '^' && k == 0) {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                    out.push(']');
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        Tags(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn targets(set: &BTreeSet<Action>) -> Vec<String> {
        set.iter()
            .map(|a| format!("{}{}", a.target, if a.hardlink { "*" } else { "" }))
            .collect()
    }

    const RULES: &str = "\
[switch_rules:fnmatch:first.core.original_basename]
*.gz = ungzip/main, archive/main*
data_??.csv = csv/main

[switch_rules_other:notfnmatch:first.core.original_basename]
*.gz = plain/main

[switch_rules:regex:first.core.original_dirname]
in(coming)? = seen/main

[switch_rules:equal:latest.guess.main.type]
image/png = images/main

[switch_rules:alwaystrue]
* = all/main
a@@@@@@b = all/main

[not_a_rule_section]
x = y
";

    fn rules() -> RuleSet {
        RuleSet::parse(Path::new("rules.ini"), RULES).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_matching_rule_applies() {
        let r = rules();
        let hit = r.evaluate(&tags(&[
            ("first.core.original_basename", "x.gz"),
            ("first.core.original_dirname", "incoming"),
        ]));
        assert_eq!(targets(&hit), ["all/main", "archive/main*", "seen/main", "ungzip/main"]);
        let hit = r.evaluate(&tags(&[("first.core.original_basename", "data_01.csv")]));
        assert_eq!(targets(&hit), ["all/main", "csv/main", "plain/main"]);
        let hit = r.evaluate(&tags(&[("latest.guess.main.type", "image/png")]));
        assert_eq!(targets(&hit), ["all/main", "images/main", "plain/main"]);
    }

    #[test]
    fn regex_is_anchored_at_the_start_only() {
        let r = rules();
        assert!(
            targets(&r.evaluate(&tags(&[("first.core.original_dirname", "incoming2")])))
                .contains(&"seen/main".to_string())
        );
        assert!(
            !targets(&r.evaluate(&tags(&[("first.core.original_dirname", "xincoming")])))
                .contains(&"seen/main".to_string())
        );
    }

    #[test]
    fn a_missing_tag_reads_as_not_found() {
        let r = RuleSet::parse(Path::new("r"), "[switch_rules:equal:nope]\n{NOT_FOUND} = lost/main\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(targets(&r.evaluate(&Tags::default())), ["lost/main"]);
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let text = "[switch_rules:bogus:x]\na = b/c\n[switch_rules:fnmatch:t]\n*.x = nodest\n[switch_rules:regex:t]\n(unclosed = a/b\n[switch_rules:python]\nm.f = a/b\n";
        let errs = RuleSet::parse(Path::new("rules.ini"), text).err().unwrap_or_default();
        let text = errs.to_string();
        assert_eq!(errs.len(), 4, "{text}");
        assert!(text.contains("switch_rules:bogus:x"), "{text}");
        assert!(text.contains("*.x"), "{text}");
        assert!(text.contains("python rules are not supported"), "{text}");
    }

    #[test]
    fn the_example_in_etc_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/switch_rules.ini");
        let r = RuleSet::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let hit = r.evaluate(&tags(&[("first.core.original_basename", "notes.txt")]));
        assert_eq!(targets(&hit), ["demo/main"]);
    }

    #[test]
    fn fnmatch_follows_python() {
        let cases = [
            ("*.gz", "a.gz", true),
            ("*.gz", "a.gzip", false),
            ("a?c", "abc", true),
            ("[!a]*", "bcd", true),
            ("[!a]*", "abc", false),
            ("[a-c]x", "bx", true),
            ("[", "[", true),
            ("a.b", "axb", false),
            ("*", "multi\nline", true),
        ];
        for (pat, s, want) in cases {
            let re = Regex::new(&fnmatch_to_regex(pat)).unwrap_or_else(|e| panic!("{pat}: {e}"));
            assert_eq!(re.is_match(s), want, "{pat} vs {s}");
        }
    }
}
