//! INI files as Python's configparser reads them (the dialect of circus.ini and every Metwork
//! config), kept in file order with line numbers so errors can point at file, section, key and line.
//!
//! - `[section]` headers; `key = value` or `key: value` (the first `=` or `:` splits);
//! - whole-line comments start with `#` or `;`; there are no inline comments (`cmd = a ; b`
//!   keeps `; b`, as configparser does);
//! - an indented line continues the previous value (joined with `\n`);
//! - keys keep their case (callers compare case-insensitively where the dialect does);
//! - a duplicate section or key is an error, as with configparser's `strict=True`.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ConfigErrors};

/// A parsed INI file.
#[derive(Debug, Clone, PartialEq)]
pub struct Ini {
    /// Where it was read from (used in error messages).
    pub path: PathBuf,
    /// Sections in file order.
    pub sections: Vec<Section>,
}

/// One `[name]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The text between the brackets, trimmed.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// Entries in file order.
    pub entries: Vec<Entry>,
}

/// One `key = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key, trimmed, case kept.
    pub key: String,
    /// The value, trimmed; continuation lines joined with `\n`.
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

impl Section {
    /// The entry for `key` (ASCII case-insensitive, as configparser's default).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.eq_ignore_ascii_case(key))
    }

    /// The value for `key`, if present.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(|e| e.value.as_str())
    }
}

impl Ini {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::from(ConfigError::new(path, format!("cannot read: {e}"))))?;
        Self::parse(path, &text)
    }

    /// Parse `text`, naming it `path` in errors. Reports every syntax error, not just the first.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        Self::parse_with_delimiters(path, text, &['=', ':'])
    }

    /// [`Ini::parse`] splitting keys from values only at the first of `delimiters` (Metwork's
    /// switch rules use `=` alone, so a pattern may contain `:`).
    pub fn parse_with_delimiters(path: &Path, text: &str, delimiters: &[char]) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut sections: Vec<Section> = Vec::new();
        // Whether the last line was a key line, so an indented line may continue it.
        let mut continuing = false;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                if trimmed.is_empty() {
                    continuing = false;
                }
                continue;
            }
            let indented = raw.starts_with([' ', '\t']);
            if indented && continuing {
                if let Some(entry) = sections.last_mut().and_then(|s| s.entries.last_mut()) {
                    if !entry.value.is_empty() {
                        entry.value.push('\n');
                    }
                    entry.value.push_str(trimmed);
                    continue;
                }
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                continuing = false;
                let Some(name) = rest.strip_suffix(']') else {
                    errors.push(ConfigError::new(path, "section header without closing ']'").at_line(line));
                    continue;
                };
                let name = name.trim().to_string();
                if let Some(first) = sections.iter().find(|s| s.name == name) {
                    errors.push(
                        ConfigError::new(path, format!("duplicate section (first at line {})", first.line))
                            .in_section(&name)
                            .at_line(line),
                    );
                }
                sections.push(Section {
                    name,
                    line,
                    entries: Vec::new(),
                });
                continue;
            }
            let Some(split) = trimmed.find(delimiters) else {
                errors.push(ConfigError::new(path, format!("expected 'key = value', found {trimmed:?}")).at_line(line));
                continuing = false;
                continue;
            };
            let key = trimmed[..split].trim().to_string();
            let value = trimmed[split + 1..].trim().to_string();
            let Some(section) = sections.last_mut() else {
                errors.push(
                    ConfigError::new(path, "key before any [section] header")
                        .with_key(&key)
                        .at_line(line),
                );
                continuing = false;
                continue;
            };
            if key.is_empty() {
                errors.push(
                    ConfigError::new(path, "empty key")
                        .in_section(&section.name)
                        .at_line(line),
                );
                continuing = false;
                continue;
            }
            if let Some(first) = section.get(&key) {
                errors.push(
                    ConfigError::new(path, format!("duplicate key (first at line {})", first.line))
                        .in_section(&section.name)
                        .with_key(&key)
                        .at_line(line),
                );
            }
            section.entries.push(Entry { key, value, line });
            continuing = true;
        }
        errors.into_result(Self {
            path: path.to_path_buf(),
            sections,
        })
    }

    /// The section named exactly `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Ini, ConfigErrors> {
        Ini::parse(Path::new("t.ini"), text)
    }

    #[test]
    fn configparser_dialect() {
        let ini = parse(
            "# comment\n; other comment\n[circus]\ncheck_delay = 5\nendpoint: ipc:///x\n\n[watcher:a]\ncmd = sh -c 'x ; y'\nargs = one\n  two\n\tthree\n",
        )
        .expect("valid");
        assert_eq!(ini.sections.len(), 2);
        let c = ini.section("circus").expect("circus");
        assert_eq!(c.value("CHECK_DELAY"), Some("5"));
        assert_eq!(c.value("endpoint"), Some("ipc:///x"));
        let w = ini.section("watcher:a").expect("watcher");
        assert_eq!(w.value("cmd"), Some("sh -c 'x ; y'"));
        assert_eq!(w.value("args"), Some("one\ntwo\nthree"));
        assert_eq!(w.get("args").map(|e| e.line), Some(9));
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let err = parse("orphan = 1\n[a]\nx = 1\nx = 2\nnot a pair\n[a]\n[broken\n").expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.len(), 5, "{text}");
        assert!(
            text.contains("t.ini:1: orphan: key before any [section] header"),
            "{text}"
        );
        assert!(
            text.contains("t.ini:4: [a] x: duplicate key (first at line 3)"),
            "{text}"
        );
        assert!(text.contains("t.ini:5:"), "{text}");
        assert!(
            text.contains("t.ini:6: [a]: duplicate section (first at line 2)"),
            "{text}"
        );
        assert!(text.contains("t.ini:7: section header without closing ']'"), "{text}");
    }

    #[test]
    fn empty_values_and_colons_in_values() {
        let ini = parse("[s]\nempty =\nurl = redis://h:1\n").expect("valid");
        let s = ini.section("s").expect("s");
        assert_eq!(s.value("empty"), Some(""));
        assert_eq!(s.value("url"), Some("redis://h:1"));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "[\\[\\]=:;# a-z\\n\\t]{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn written_entries_read_back(entries in proptest::collection::btree_map("[a-z][a-z0-9_.]{0,10}", "[a-zA-Z0-9 /._-]{0,20}", 0..10)) {
            let mut text = String::from("[s]\n");
            for (k, v) in &entries {
                text.push_str(&format!("{k} = {v}\n"));
            }
            let ini = parse(&text).expect("valid");
            let s = ini.section("s").expect("s");
            prop_assert_eq!(s.entries.len(), entries.len());
            for (k, v) in &entries {
                prop_assert_eq!(s.value(k), Some(v.trim()));
            }
        }
    }
}
