//! `jsonlog2es.ini`: where to read, where to ship, what to change on the way. Read strictly: an
//! unknown section or key, or a bad value, is an error naming file, line, section and key, and
//! every error is listed at once.
//!
//! ```ini
//! [elasticsearch]
//! url = http://127.0.0.1:9200
//! index = logs-%Y.%m.%d
//!
//! [input:app]
//! paths = /var/log/app/*.log
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::config::{ConfigError, ConfigErrors, Report, SectionReader, UnknownKeys};
use ironwork_core::ini::{Ini, Section};

use crate::index::IndexPattern;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[elasticsearch]`.
    pub elasticsearch: Elasticsearch,
    /// `[state]`.
    pub state: State,
    /// `[transform]`.
    pub transform: Transform,
    /// One per `[input:<name>]`, in file order.
    pub inputs: Vec<Input>,
    /// `[tail]`.
    pub tail: Tail,
    /// `http_listen` in `[state]` or `--listen`: where `/health` and `/metrics` are served.
    pub listen: Option<SocketAddr>,
}

/// Where and how documents are shipped.
#[derive(Debug, Clone)]
pub struct Elasticsearch {
    /// Base URL, `http://host:port[/prefix]`.
    pub url: Endpoint,
    /// Default index pattern (strftime on the event's timestamp, UTC).
    pub index: IndexPattern,
    /// Default timestamp field.
    pub timestamp_field: String,
    /// Most documents per `_bulk` request.
    pub bulk_max_docs: usize,
    /// Most bytes per `_bulk` request body (before compression).
    pub bulk_max_bytes: usize,
    /// A partly filled batch is sent once it is this old.
    pub flush_interval: Duration,
    /// Gzip request bodies.
    pub gzip: bool,
    /// Bulk requests in flight at once.
    pub workers: usize,
    /// Per-request timeout; a timed-out request is retried.
    pub request_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay (`Retry-After` may ask for more, up to ten times this).
    pub retry_max: Duration,
}

/// An `http://` endpoint, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
    /// `Authorization: Basic …` value from `user:password@` in the URL.
    pub basic_auth: Option<String>,
}

impl Endpoint {
    /// Parse `http://[user:password@]host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err("https is not supported by this build: use http://, or a local TLS proxy".into());
        } else {
            return Err("expected http://host:port".into());
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (basic_auth, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(ironwork_core::http::base64(user.as_bytes())), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        let authority = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        {
            host.to_string()
        } else {
            format!("{host}:9200")
        };
        Ok(Self {
            authority,
            prefix: prefix.to_string(),
            basic_auth: basic_auth.map(|b| format!("Basic {b}")),
        })
    }

    /// `http://authority/prefix`, credentials left out (for logs).
    pub fn display(&self) -> String {
        format!("http://{}{}", self.authority, self.prefix)
    }
}

/// Checkpoints, dead letters and flow control.
#[derive(Debug, Clone)]
pub struct State {
    /// Directory of the checkpoint file.
    pub directory: PathBuf,
    /// Base name of the state files: `<name>.checkpoints.json`.
    pub name: String,
    /// Where rejected documents and unparseable lines go, one JSON object per line.
    pub dead_letter: PathBuf,
    /// Bytes read but not yet acknowledged by Elasticsearch; reading pauses above this.
    pub queue_bytes: u64,
    /// Checkpoints are written at most this often (and on shutdown).
    pub checkpoint_interval: Duration,
    /// Checkpoint entries of files gone this long are forgotten.
    pub forget_after: Duration,
    /// On SIGTERM, how long in-flight batches may take before the daemon exits anyway.
    pub shutdown_grace: Duration,
}

impl State {
    /// The checkpoint file.
    pub fn checkpoint_file(&self) -> PathBuf {
        self.directory.join(format!("{}.checkpoints.json", self.name))
    }
}

/// How files are followed.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Sleep when every open file is at its end.
    pub poll_interval: Duration,
    /// Globs are expanded again this often.
    pub scan_interval: Duration,
    /// Most files open at once; idle files at their end are closed first.
    pub max_open_files: usize,
    /// A file at its end and unchanged this long is closed (reopened when it grows).
    pub close_inactive: Duration,
    /// A renamed-away file at its end stays open until it got no new line for this long (the
    /// writer may still be writing through its old descriptor); a deleted one is closed at once.
    pub rotate_wait: Duration,
    /// A deleted or renamed-away file is closed after this even if unread bytes remain.
    pub close_removed_after: Duration,
    /// Bytes read per file per turn (fairness between busy files).
    pub read_chunk: usize,
}

/// What happens to a line longer than `max_line_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongLines {
    /// Ship its first `max_line_bytes` (as an unparseable line if that cuts the JSON).
    Truncate,
    /// Skip it.
    Skip,
}

/// What happens to a line that is not a JSON object or not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Ship `{"message": <raw, lossily decoded>, "parse_error": <why>}`.
    Ship,
    /// Write it to the dead-letter file.
    DeadLetter,
}

/// Where new files start when they have no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// From their first byte.
    Beginning,
    /// From their end, for files present at the very first start (no checkpoint file yet);
    /// files that appear later are always read from the beginning.
    End,
}

/// One `[input:<name>]`.
#[derive(Debug, Clone)]
pub struct Input {
    /// The section's name after `input:`.
    pub name: String,
    /// Glob patterns; wildcards in the last component only.
    pub paths: Vec<PathBuf>,
    /// File-name globs never read (e.g. `*.gz`).
    pub exclude: Vec<glob::Pattern>,
    /// Match the last component in subdirectories too.
    pub recursive: bool,
    /// Start of files without a checkpoint.
    pub read_from: ReadFrom,
    /// Longest line shipped.
    pub max_line_bytes: usize,
    /// Over-long lines.
    pub long_lines: LongLines,
    /// Lines that do not parse.
    pub invalid: Invalid,
    /// Index pattern.
    pub index: IndexPattern,
    /// Field holding the event time.
    pub timestamp_field: String,
}

/// Changes made to every document, in this order: drop, rename, add.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transform {
    /// `drop.<field> = v1, v2`: records whose string `field` equals one of the values are not shipped.
    pub drop: Vec<(String, Vec<String>)>,
    /// `rename.<from> = <to>`.
    pub rename: Vec<(String, String)>,
    /// `add.<field> = <value>`; `%{hostname}` in a value is this host's name.
    pub add: Vec<(String, String)>,
}

/// Defaults.
pub const DEFAULT_INDEX: &str = "logs-%Y.%m.%d";
/// `@timestamp`, as Metwork's jsonlog2elasticsearch.
pub const DEFAULT_TIMESTAMP_FIELD: &str = "@timestamp";
const DEFAULT_MAX_LINE: u64 = 1 << 20;

impl Config {
    /// Read `path`; relative paths resolve under `home`, `default_url` is used when the file
    /// sets no `[elasticsearch] url`.
    pub fn load(path: &Path, home: Option<&Path>, default_url: Option<&str>) -> Result<Self, ConfigErrors> {
        let ini = Ini::load(path)?;
        Self::from_ini(&ini, home, default_url)
    }

    /// Parse `text` as if read from `path`.
    pub fn parse(
        path: &Path,
        text: &str,
        home: Option<&Path>,
        default_url: Option<&str>,
    ) -> Result<Self, ConfigErrors> {
        let ini = Ini::parse(path, text)?;
        Self::from_ini(&ini, home, default_url)
    }

    /// Validate a parsed file.
    pub fn from_ini(ini: &Ini, home: Option<&Path>, default_url: Option<&str>) -> Result<Self, ConfigErrors> {
        let file = ini.path.as_path();
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("jsonlog2es")
            .to_string();
        let mut report = Report::default();
        let empty = |name: &str| Section {
            name: name.to_string(),
            line: 0,
            entries: Vec::new(),
        };
        for s in &ini.sections {
            if !matches!(s.name.as_str(), "elasticsearch" | "state" | "transform" | "tail")
                && !s.name.starts_with("input:")
            {
                report.errors.push(
                    ConfigError::new(
                        file,
                        "unknown section (expected elasticsearch, state, tail, transform or input:<name>)",
                    )
                    .in_section(&s.name)
                    .at_line(s.line),
                );
            }
        }

        let es_section = ini
            .section("elasticsearch")
            .cloned()
            .unwrap_or_else(|| empty("elasticsearch"));
        let mut r = report.section(file, &es_section);
        let elasticsearch = read_elasticsearch(&mut r, default_url);
        r.finish(UnknownKeys::Error);

        let state_section = ini.section("state").cloned().unwrap_or_else(|| empty("state"));
        let mut r = report.section(file, &state_section);
        let (state, listen) = read_state(&mut r, home, &stem);
        r.finish(UnknownKeys::Error);

        let tail_section = ini.section("tail").cloned().unwrap_or_else(|| empty("tail"));
        let mut r = report.section(file, &tail_section);
        let tail = read_tail(&mut r);
        r.finish(UnknownKeys::Error);

        let transform_section = ini.section("transform").cloned().unwrap_or_else(|| empty("transform"));
        let mut r = report.section(file, &transform_section);
        let transform = read_transform(&mut r);
        r.finish(UnknownKeys::Error);

        let mut inputs = Vec::new();
        for section in ini.sections.iter().filter(|s| s.name.starts_with("input:")) {
            let mut r = report.section(file, section);
            let (index, timestamp_field) = match &elasticsearch {
                Some(es) => (es.index.clone(), es.timestamp_field.as_str()),
                None => (
                    IndexPattern::parse(DEFAULT_INDEX).expect("valid default"),
                    DEFAULT_TIMESTAMP_FIELD,
                ),
            };
            if let Some(input) = read_input(&mut r, home, &index, timestamp_field) {
                inputs.push(input);
            }
            r.finish(UnknownKeys::Error);
        }
        if inputs.is_empty() && ini.sections.iter().all(|s| !s.name.starts_with("input:")) {
            report
                .errors
                .push(ConfigError::new(file, "no [input:<name>] section: nothing to read"));
        }
        let config = elasticsearch.zip(state).map(|(elasticsearch, state)| Config {
            elasticsearch,
            state,
            transform,
            inputs,
            tail,
            listen,
        });
        report
            .finish(config)?
            .ok_or_else(|| ConfigErrors(vec![ConfigError::new(file, "invalid configuration")]))
    }
}

fn read_elasticsearch(r: &mut SectionReader<'_>, default_url: Option<&str>) -> Option<Elasticsearch> {
    let url = match (r.str("url").filter(|u| !u.trim().is_empty()), default_url) {
        (Some(_), _) => r.parse_with("url", None, |s| Endpoint::parse(s).map(Some)),
        (None, Some(d)) => match Endpoint::parse(d) {
            Ok(e) => Some(e),
            Err(e) => {
                r.error("url", format!("--url {d:?}: {e}"));
                None
            }
        },
        (None, None) => {
            r.error("url", "missing: set [elasticsearch] url (or pass --url)");
            None
        }
    };
    let index = r.parse_with("index", IndexPattern::parse(DEFAULT_INDEX).ok(), |s| {
        IndexPattern::parse(s).map(Some)
    });
    let timestamp_field = r.str("timestamp_field").unwrap_or(DEFAULT_TIMESTAMP_FIELD).to_string();
    let bulk_max_docs = r.positive("bulk_max_docs", 5000usize);
    let bulk_max_bytes = r.bytes("bulk_max_bytes", 5 << 20) as usize;
    let flush_interval = r.duration("flush_interval", Duration::from_secs(1));
    let gzip = r.parse_with("compression", false, |s| match s.trim() {
        "none" | "" => Ok(false),
        "gzip" => Ok(true),
        _ => Err("expected none or gzip".to_string()),
    });
    let workers = r.positive("workers", 2usize);
    let request_timeout = r.nonzero_duration("request_timeout", Duration::from_secs(60));
    let retry_initial = r.nonzero_duration("retry_initial", Duration::from_millis(500));
    let retry_max = r.nonzero_duration("retry_max", Duration::from_secs(60));
    if bulk_max_bytes == 0 {
        r.error("bulk_max_bytes", "must be more than 0");
    }
    Some(Elasticsearch {
        url: url?,
        index: index?,
        timestamp_field,
        bulk_max_docs,
        bulk_max_bytes,
        flush_interval,
        gzip,
        workers,
        request_timeout,
        retry_initial,
        retry_max,
    })
}

fn resolve(path: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    let p = PathBuf::from(path.trim());
    if p.is_absolute() {
        return Ok(p);
    }
    match home {
        Some(h) => Ok(h.join(p)),
        None => Err("a relative path needs --home or $IRONWORK_HOME".into()),
    }
}

fn read_state(r: &mut SectionReader<'_>, home: Option<&Path>, stem: &str) -> (Option<State>, Option<SocketAddr>) {
    let directory = r.parse_with("directory", resolve("var/state", home).ok(), |s| {
        resolve(s, home).map(Some)
    });
    if directory.is_none() && r.str("directory").is_none() {
        r.error("directory", "missing: set an absolute directory, or pass --home");
    }
    let name = r.str("name").unwrap_or(stem).to_string();
    let dead_letter = match r.str("dead_letter") {
        Some(_) => r.parse_with("dead_letter", None, |s| resolve(s, home).map(Some)),
        None => directory.as_ref().map(|d| d.join(format!("{name}.dead-letter.ndjson"))),
    };
    let queue_bytes = r.bytes("queue_bytes", 64 << 20);
    let checkpoint_interval = r.nonzero_duration("checkpoint_interval", Duration::from_secs(1));
    let forget_after = r.duration("forget_after", Duration::from_secs(24 * 3600));
    let shutdown_grace = r.duration("shutdown_grace", Duration::from_secs(8));
    let listen = r.parse_with("http_listen", None, |s| {
        s.trim()
            .parse::<SocketAddr>()
            .map(Some)
            .map_err(|e| format!("expected host:port: {e}"))
    });
    let state = directory.zip(dead_letter).map(|(directory, dead_letter)| State {
        directory,
        name,
        dead_letter,
        queue_bytes: queue_bytes.max(1),
        checkpoint_interval,
        forget_after,
        shutdown_grace,
    });
    (state, listen)
}

fn read_tail(r: &mut SectionReader<'_>) -> Tail {
    Tail {
        poll_interval: r.nonzero_duration("poll_interval", Duration::from_millis(250)),
        scan_interval: r.nonzero_duration("scan_interval", Duration::from_secs(2)),
        max_open_files: r.positive("max_open_files", 512usize),
        close_inactive: r.duration("close_inactive", Duration::from_secs(300)),
        rotate_wait: r.duration("rotate_wait", Duration::from_secs(30)),
        close_removed_after: r.duration("close_removed_after", Duration::from_secs(600)),
        read_chunk: r.bytes("read_chunk", 256 << 10).max(4096) as usize,
    }
}

fn read_transform(r: &mut SectionReader<'_>) -> Transform {
    let mut t = Transform::default();
    for (field, e) in r.prefixed("drop.") {
        let values = e
            .value
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        t.drop.push((field.to_string(), values));
    }
    for (field, e) in r.prefixed("rename.") {
        t.rename.push((field.to_string(), e.value.trim().to_string()));
    }
    for (field, e) in r.prefixed("add.") {
        t.add.push((field.to_string(), e.value.trim().to_string()));
    }
    for (field, _) in t.rename.iter().chain(&t.add) {
        if field.is_empty() {
            r.error("add./rename.", "a field name is needed after the dot");
        }
    }
    t
}

fn read_input(
    r: &mut SectionReader<'_>,
    home: Option<&Path>,
    index: &IndexPattern,
    timestamp_field: &str,
) -> Option<Input> {
    let name = r.name().trim_start_matches("input:").to_string();
    let paths = r.required("paths").map(|p| {
        p.split_whitespace()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
            .map(|s| resolve(s, home))
            .collect::<Result<Vec<_>, _>>()
    });
    let paths = match paths {
        Some(Ok(p)) => {
            for path in &p {
                let parent = path
                    .parent()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if parent.contains(['*', '?', '[']) {
                    r.error(
                        "paths",
                        format!("{}: wildcards are allowed in the last component only", path.display()),
                    );
                }
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    if let Err(e) = glob::Pattern::new(name) {
                        r.error("paths", format!("{}: {e}", path.display()));
                    }
                }
            }
            Some(p)
        }
        Some(Err(e)) => {
            r.error("paths", e);
            None
        }
        None => None,
    };
    let exclude = r.parse_with("exclude", Vec::new(), |s| {
        s.split_whitespace()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("{p}: {e}")))
            .collect()
    });
    let recursive = r.bool("recursive", false);
    let read_from = r.parse_with("read_from", ReadFrom::Beginning, |s| match s.trim() {
        "beginning" => Ok(ReadFrom::Beginning),
        "end" => Ok(ReadFrom::End),
        _ => Err("expected beginning or end".into()),
    });
    let max_line_bytes = r.bytes("max_line_bytes", DEFAULT_MAX_LINE).max(16) as usize;
    let long_lines = r.parse_with("long_lines", LongLines::Truncate, |s| match s.trim() {
        "truncate" => Ok(LongLines::Truncate),
        "skip" => Ok(LongLines::Skip),
        _ => Err("expected truncate or skip".into()),
    });
    let invalid = r.parse_with("invalid", Invalid::Ship, |s| match s.trim() {
        "ship" => Ok(Invalid::Ship),
        "dead_letter" => Ok(Invalid::DeadLetter),
        _ => Err("expected ship or dead_letter".into()),
    });
    let index = r.parse_with("index", index.clone(), IndexPattern::parse);
    let timestamp_field = r.str("timestamp_field").unwrap_or(timestamp_field).to_string();
    Some(Input {
        name,
        paths: paths?,
        exclude,
        recursive,
        read_from,
        max_line_bytes,
        long_lines,
        invalid,
        index,
        timestamp_field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("/etc/j.ini"), text, Some(Path::new("/h")), None)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("[elasticsearch]\nurl = http://es:9201/p/\n[input:a]\npaths = log/*.log /abs/x.log\n")
            .expect("valid");
        assert_eq!(c.elasticsearch.url.authority, "es:9201");
        assert_eq!(c.elasticsearch.url.prefix, "/p");
        assert_eq!(
            c.inputs[0].paths,
            vec![PathBuf::from("/h/log/*.log"), PathBuf::from("/abs/x.log")]
        );
        assert_eq!(
            c.state.checkpoint_file(),
            PathBuf::from("/h/var/state/j.checkpoints.json")
        );
        assert_eq!(c.state.dead_letter, PathBuf::from("/h/var/state/j.dead-letter.ndjson"));
        assert_eq!(c.inputs[0].timestamp_field, "@timestamp");
        assert_eq!(c.inputs[0].read_from, ReadFrom::Beginning);
    }

    #[test]
    fn every_error_names_section_and_key() {
        let err = parse(
            "[elasticsearch]\nurl = https://x\nbulk_max_docs = 0\nretry_initial = 0s\n[input:a]\npaths = /a/*/b.log\nread_from = middle\nbogus = 1\n[outputs]\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "[elasticsearch] url:",
            "https is not supported",
            "bulk_max_docs",
            "last component only",
            "[input:a] read_from:",
            "[input:a] bogus: unknown key",
            "[outputs]",
            "retry_initial: must be longer than 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn url_from_the_command_line_when_the_file_has_none() {
        let c = Config::parse(
            Path::new("/j.ini"),
            "[input:a]\npaths = /x\n",
            Some(Path::new("/h")),
            Some("http://u:p@h"),
        )
        .expect("valid");
        assert_eq!(c.elasticsearch.url.authority, "h:9200");
        assert_eq!(c.elasticsearch.url.basic_auth.as_deref(), Some("Basic dTpw"));
        assert!(Config::parse(
            Path::new("/j.ini"),
            "[input:a]\npaths = /x\n",
            Some(Path::new("/h")),
            None
        )
        .is_err());
    }

    #[test]
    fn transforms_keep_their_order() {
        let c = parse("[elasticsearch]\nurl=http://e\n[transform]\ndrop.name = a, b\nrename.msg = message\nadd.host = %{hostname}\n[input:a]\npaths=/x\n")
            .expect("valid");
        assert_eq!(
            c.transform.drop,
            vec![("name".to_string(), vec!["a".to_string(), "b".to_string()])]
        );
        assert_eq!(c.transform.rename, vec![("msg".to_string(), "message".to_string())]);
        assert_eq!(c.transform.add, vec![("host".to_string(), "%{hostname}".to_string())]);
    }
}
