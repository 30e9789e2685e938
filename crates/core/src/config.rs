//! Config validation that reports every problem at once, each naming its file, line, section and
//! key, plus typed readers for INI sections and the value syntaxes operators write (booleans as
//! configparser accepts them, durations as `30`, `1.5`, `30s` or `5m`, sizes as `512M` or `1GiB`).
//!
//! A daemon reads its config in two stages: [`crate::ini::Ini`] for syntax, then a validation pass
//! with a [`SectionReader`] per section that produces typed values and collects errors and warnings
//! in a [`Report`]. Keys a section does not know are errors unless the caller accepts them as
//! warnings (compatibility keys of the tools ironwork replaces).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::ini::{Entry, Section};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The section, when relevant.
    pub section: Option<String>,
    /// The key, when relevant.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem with `file` as a whole.
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            section: None,
            key: None,
            message: message.into(),
        }
    }

    /// Attach the line.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// Attach the section.
    pub fn in_section(mut self, section: &str) -> Self {
        self.section = Some(section.to_string());
        self
    }

    /// Attach the key.
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }
}

impl fmt::Display for ConfigError {
    /// `file:line: [section] key: message`, omitting what is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ":")?;
        match (&self.section, &self.key) {
            (Some(s), Some(k)) => write!(f, " [{s}] {k}:")?,
            (Some(s), None) => write!(f, " [{s}]:")?,
            (None, Some(k)) => write!(f, " {k}:")?,
            (None, None) => {}
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found, in the order found. Displays one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Record a problem.
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add another set of problems.
    pub fn extend(&mut self, other: ConfigErrors) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when there were no problems.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Errors and warnings collected while validating one config.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems that refuse the config.
    pub errors: ConfigErrors,
    /// Things an operator should know that do not refuse it (ignored compatibility keys).
    pub warnings: Vec<ConfigError>,
}

impl Report {
    /// A reader for one section of `file`; call [`SectionReader::finish`] when done.
    pub fn section<'a>(&'a mut self, file: &'a Path, section: &'a Section) -> SectionReader<'a> {
        SectionReader {
            file,
            section,
            used: HashSet::new(),
            report: self,
        }
    }

    /// Log the warnings (one WARN line each) and turn the errors into a result.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        for w in &self.warnings {
            tracing::warn!(file = %w.file.display(), line = w.line, section = w.section, key = w.key, "{}", w.message);
        }
        self.errors.into_result(value)
    }
}

/// What to do with keys a section reader was never asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKeys {
    /// Refuse the config.
    Error,
    /// Accept it with a warning.
    Warn,
}

/// Typed access to one section that records every problem in the [`Report`].
pub struct SectionReader<'a> {
    file: &'a Path,
    section: &'a Section,
    used: HashSet<usize>,
    report: &'a mut Report,
}

impl<'a> SectionReader<'a> {
    /// The section's name.
    pub fn name(&self) -> &'a str {
        &self.section.name
    }

    fn entry(&mut self, key: &str) -> Option<&'a Entry> {
        let section: &'a Section = self.section;
        let (idx, e) = section
            .entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.key.eq_ignore_ascii_case(key))?;
        self.used.insert(idx);
        Some(e)
    }

    fn error_at(&mut self, e: &Entry, message: String) {
        self.report.errors.push(
            ConfigError::new(self.file, message)
                .in_section(&self.section.name)
                .with_key(&e.key)
                .at_line(e.line),
        );
    }

    /// Record an error about `key` (present or not).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let err = ConfigError::new(self.file, message)
            .in_section(&self.section.name)
            .with_key(key);
        let err = match self.section.get(key) {
            Some(e) => err.at_line(e.line),
            None => err.at_line(self.section.line),
        };
        self.report.errors.push(err);
    }

    /// The raw value of `key`, if present.
    pub fn str(&mut self, key: &str) -> Option<&'a str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The raw value of `key`; an error naming the key when it is missing or empty.
    pub fn required(&mut self, key: &str) -> Option<&'a str> {
        match self.entry(key) {
            Some(e) if !e.value.is_empty() => Some(e.value.as_str()),
            Some(e) => {
                self.error_at(e, "must not be empty".into());
                None
            }
            None => {
                self.error(key, "missing required key");
                None
            }
        }
    }

    /// Parse `key` with `parse`, or `default` when absent; a parse failure is an error.
    pub fn parse_with<T>(&mut self, key: &str, default: T, parse: impl FnOnce(&str) -> Result<T, String>) -> T {
        let Some(e) = self.entry(key) else {
            return default;
        };
        match parse(&e.value) {
            Ok(v) => v,
            Err(msg) => {
                self.error_at(e, format!("{msg} (found {:?})", e.value));
                default
            }
        }
    }

    /// A `FromStr` value (integers, …), or `default`.
    pub fn parse<T: FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        self.parse_with(key, default, |s| {
            s.parse::<T>().map_err(|e| format!("invalid value: {e}"))
        })
    }

    /// A boolean as configparser accepts it, or `default`.
    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        self.parse_with(key, default, parse_bool)
    }

    /// A duration (`30`, `1.5`, `30s`, `5m`, `250ms`), or `default`.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        self.parse_with(key, default, parse_duration)
    }

    /// A duration above zero (a timer, a retry delay, a TTL), or `default`.
    pub fn nonzero_duration(&mut self, key: &str, default: Duration) -> Duration {
        self.parse_with(key, default, |v| match parse_duration(v)? {
            d if d.is_zero() => Err("must be longer than 0".into()),
            d => Ok(d),
        })
    }

    /// A whole number of at least 1 (a count, a size, a bound), or `default`.
    pub fn positive<T: FromStr + Default + PartialEq>(&mut self, key: &str, default: T) -> T {
        self.parse_with(key, default, |v| match v.trim().parse::<T>() {
            Ok(n) if n == T::default() => Err("must be at least 1".into()),
            Ok(n) => Ok(n),
            Err(_) => Err("expected a whole number of at least 1".into()),
        })
    }

    /// A byte size (`1048576`, `512K`, `100M`, `1GiB`), or `default`.
    pub fn bytes(&mut self, key: &str, default: u64) -> u64 {
        self.parse_with(key, default, parse_bytes)
    }

    /// Every entry whose key starts with `prefix` (ASCII case-insensitive), as
    /// `(rest of the key, entry)`; they count as known.
    pub fn prefixed(&mut self, prefix: &str) -> Vec<(&'a str, &'a Entry)> {
        let section: &'a Section = self.section;
        let mut out = Vec::new();
        for (idx, e) in section.entries.iter().enumerate() {
            if e.key.len() >= prefix.len() && e.key[..prefix.len()].eq_ignore_ascii_case(prefix) {
                self.used.insert(idx);
                out.push((&e.key[prefix.len()..], e));
            }
        }
        out
    }

    /// Accept `key` without using it, warning that it has no effect here.
    pub fn ignored(&mut self, key: &str, why: &str) {
        if let Some(e) = self.entry(key) {
            self.report.warnings.push(
                ConfigError::new(self.file, format!("accepted but not implemented: {why}"))
                    .in_section(&self.section.name)
                    .with_key(&e.key)
                    .at_line(e.line),
            );
        }
    }

    /// Report keys nobody asked about, as errors or warnings.
    pub fn finish(self, unknown: UnknownKeys) {
        for (idx, e) in self.section.entries.iter().enumerate() {
            if self.used.contains(&idx) {
                continue;
            }
            let err = ConfigError::new(self.file, "unknown key")
                .in_section(&self.section.name)
                .with_key(&e.key)
                .at_line(e.line);
            match unknown {
                UnknownKeys::Error => self.report.errors.push(err),
                UnknownKeys::Warn => self.report.warnings.push(err),
            }
        }
    }
}

/// `<plugin>.<name>` split in two, each made of letters, digits, `_` or `-` (the id of a
/// `[collection:…]` or `[reflection:…]` section of a generated file); `None` otherwise.
pub fn plugin_item(id: &str) -> Option<(&str, &str)> {
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    id.split_once('.').filter(|(p, n)| valid(p) && valid(n))
}

/// A comma- or whitespace-separated list, empty items dropped.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// configparser's booleans: 1/yes/true/on and 0/no/false/off, any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err("expected a boolean (true/false, yes/no, on/off, 1/0)".into()),
    }
}

/// Longest duration a config may give: anything larger is a typo, and would overflow deadlines.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration: plain numbers are seconds (circus style, fractions allowed); otherwise humantime
/// (`250ms`, `30s`, `5m`, `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err("expected a non-negative duration".into());
        }
        Duration::try_from_secs_f64(secs).map_err(|_| "duration out of range".to_string())?
    } else {
        humantime::parse_duration(s).map_err(|e| format!("expected a duration like 30, 1.5, 30s or 5m: {e}"))?
    };
    if d > MAX_DURATION {
        return Err("longer than ten years".into());
    }
    Ok(d)
}

/// A byte size: a plain integer, or a number with K/M/G/T (powers of 1024, optional `i`/`B`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let num: f64 = num
        .parse()
        .map_err(|_| "expected a size like 1048576, 512K, 100M or 1GiB".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (use K, M, G or T)")),
    };
    Ok((num * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ini::Ini;

    #[test]
    fn value_syntaxes() {
        assert_eq!(parse_bool("On"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e30").is_err());
        assert!(parse_duration("1e19").is_err());
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5M"), Ok(3 << 19));
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn reader_collects_every_error_with_file_section_key_and_line() {
        let path = Path::new("/etc/x.ini");
        let ini = Ini::parse(
            path,
            "[watcher:a]\nnumprocesses = many\nautostart = perhaps\nasync_kill = true\nbogus = 1\n",
        )
        .expect("syntax ok");
        let mut report = Report::default();
        let mut r = report.section(path, &ini.sections[0]);
        assert_eq!(r.parse("numprocesses", 1u32), 1);
        assert!(r.bool("autostart", true));
        assert_eq!(r.required("cmd"), None);
        r.ignored("async_kill", "stops never block other watchers here");
        r.finish(UnknownKeys::Error);
        let errors = report.errors.to_string();
        assert_eq!(report.errors.len(), 4, "{errors}");
        assert!(
            errors.contains("/etc/x.ini:2: [watcher:a] numprocesses: invalid value"),
            "{errors}"
        );
        assert!(
            errors.contains("/etc/x.ini:3: [watcher:a] autostart: expected a boolean"),
            "{errors}"
        );
        assert!(
            errors.contains("/etc/x.ini:1: [watcher:a] cmd: missing required key"),
            "{errors}"
        );
        assert!(
            errors.contains("/etc/x.ini:5: [watcher:a] bogus: unknown key"),
            "{errors}"
        );
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].key.as_deref(), Some("async_kill"));
        assert!(report.finish(()).is_err());
    }

    #[test]
    fn prefixed_keys_count_as_known() {
        let path = Path::new("x.ini");
        let ini = Ini::parse(path, "[w]\nrlimit_nofile = 10\nRLIMIT_AS = 20\n").expect("ok");
        let mut report = Report::default();
        let mut r = report.section(path, &ini.sections[0]);
        let keys: Vec<_> = r.prefixed("rlimit_").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["nofile", "AS"]);
        r.finish(UnknownKeys::Error);
        assert!(report.errors.is_empty());
    }
}
