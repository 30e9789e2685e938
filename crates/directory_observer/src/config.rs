//! `directory_observer.ini`: Metwork's file, read strictly.
//!
//! `[common]` holds defaults inherited by every other section (configparser's default section);
//! every other section is one watched directory, skipped unless `active` is true. Unlike Metwork,
//! which silently skips a section that lacks a key, a missing required key, an unknown key or an
//! invalid value refuses the file, and every problem is reported at once with its file, line,
//! section and key. A value inherited from `[common]` is reported once, under `[common]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::config::{parse_duration, ConfigError, ConfigErrors, Report, SectionReader, UnknownKeys};
use ironwork_core::ini::{Entry, Ini, Section};

use crate::filter::Filter;

/// The section every other section inherits from.
pub const COMMON: &str = "common";

/// Environment variable naming the runtime home (relative directories and `--config`).
pub const HOME_ENV: &str = "IRONWORK_HOME";

/// Where relative `directory` values live, under the runtime home.
pub const DATA_IN_DIR: &str = "var/in";

/// Where a relative `--config` is looked up, under the runtime home.
pub const CONFIG_AUTO_DIR: &str = "tmp/config_auto";

/// Default `poll_queue_limit` (Metwork's).
pub const DEFAULT_POLL_QUEUE_LIMIT: u64 = 10_000;

/// Default `timeout` (Metwork's): how long one push to Redis may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `buffer_size`: events held per queue while Redis is away or the queue is full.
/// Larger than a whole default kernel queue (16384 events), so a burst never overflows it while
/// Redis is up; about 200 bytes per held event.
pub const DEFAULT_BUFFER_SIZE: usize = 100_000;

/// Default `shutdown_grace`: how long SIGTERM waits for the buffer to reach Redis.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Keys of a step section (all of them may also sit in `[common]`).
const STEP_KEYS: &[&str] = &[
    "active",
    "directory",
    "queue",
    "redis_server",
    "redis_port",
    "redis_unix_socket",
    "ignore",
    "only",
    "forced_poll",
    "poll_queue_limit",
    "timeout",
    "recursive",
    "monitor_inactivitytimeout",
];

/// Daemon-wide keys, valid in `[common]` only.
const COMMON_ONLY_KEYS: &[&str] = &["http_listen", "shutdown_grace", "buffer_size"];

/// Where the daemon's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis_unix_socket`.
    Unix(PathBuf),
    /// `redis_server` and `redis_port` (when `redis_unix_socket` is empty or `null`).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl RedisTarget {
    /// The URL for `ironwork_core::Redis`.
    pub fn url(&self) -> String {
        match self {
            Self::Unix(path) => format!("redis+unix://{}", path.display()),
            Self::Tcp { host, port } => format!("redis://{host}:{port}"),
        }
    }
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix socket {}", path.display()),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One active section: a directory watched for one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The section's name (`step_<plugin>_<step>[_<n>]` in generated files).
    pub section: String,
    /// The watched directory, absolute; written into messages as is.
    pub directory: PathBuf,
    /// The Redis list events are pushed to.
    pub queue: String,
    /// `only` / `ignore`.
    pub filter: Filter,
    /// Period of the full rescans posting `exists` (`forced_poll`; None = off).
    pub forced_poll: Option<Duration>,
    /// Most messages the queue may hold (`poll_queue_limit`; None = no limit).
    pub poll_queue_limit: Option<u64>,
    /// How long one push may take before it counts as failed and is retried (`timeout`;
    /// None = no limit).
    pub timeout: Option<Duration>,
    /// Watch subdirectories too.
    pub recursive: bool,
}

/// The whole validated file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (re-read on SIGHUP).
    pub path: PathBuf,
    /// The runtime home used to resolve relative directories.
    pub home: Option<PathBuf>,
    /// The Redis every active section uses (None when no section is active).
    pub redis: Option<RedisTarget>,
    /// Loopback address of `/health` and `/metrics` (`http_listen`).
    pub http_listen: Option<SocketAddr>,
    /// How long SIGTERM waits for buffered events to reach Redis (`shutdown_grace`).
    pub shutdown_grace: Duration,
    /// Events held per queue while they cannot be pushed (`buffer_size`).
    pub buffer_size: usize,
    /// Active sections, in file order.
    pub steps: Vec<Step>,
    /// Things worth knowing that do not refuse the file.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Read `path`, resolving relative directories under `$IRONWORK_HOME/var/in`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let home = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()).map(PathBuf::from);
        Self::load_with_home(path, home.as_deref())
    }

    /// Read `path` with an explicit runtime home.
    pub fn load_with_home(path: &Path, home: Option<&Path>) -> Result<Self, ConfigErrors> {
        let ini = Ini::load(path)?;
        Self::from_ini(&ini, home)
    }

    /// Parse `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str, home: Option<&Path>) -> Result<Self, ConfigErrors> {
        let ini = Ini::parse(path, text)?;
        Self::from_ini(&ini, home)
    }

    /// Validate a parsed file.
    pub fn from_ini(ini: &Ini, home: Option<&Path>) -> Result<Self, ConfigErrors> {
        let file = ini.path.as_path();
        let mut report = Report::default();
        let empty = Section {
            name: COMMON.to_string(),
            line: 0,
            entries: Vec::new(),
        };
        let common = ini.section(COMMON).unwrap_or(&empty);

        // [common] alone: its values are checked once, and errors name [common].
        let mut r = report.section(file, common);
        read_step(&mut r, false, home);
        let http_listen = r.parse_with("http_listen", None, parse_listen);
        let shutdown_grace = r.duration("shutdown_grace", DEFAULT_SHUTDOWN_GRACE);
        let buffer_size = r.parse_with("buffer_size", DEFAULT_BUFFER_SIZE, |s| {
            match s.trim().parse::<usize>() {
                Ok(0) => Err("must be at least 1".to_string()),
                Ok(n) => Ok(n),
                Err(e) => Err(format!("expected a number of events: {e}")),
            }
        });
        r.finish(UnknownKeys::Error);

        let inherited_lines: Vec<usize> = common.entries.iter().map(|e| e.line).collect();
        let mut steps: Vec<(Step, RedisTarget, &Section)> = Vec::new();
        for section in ini.sections.iter().filter(|s| s.name != COMMON) {
            let merged = inherit(section, common);
            let mut sub = Report::default();
            let mut r = sub.section(file, &merged);
            for key in COMMON_ONLY_KEYS {
                if section.get(key).is_some() {
                    r.error(key, "daemon-wide setting, valid in [common] only");
                }
                r.str(key);
            }
            let active = r.bool("active", false);
            let step = if active {
                read_step(&mut r, true, home)
            } else {
                // Inactive sections are skipped as in Metwork; only their key names are checked.
                for key in STEP_KEYS {
                    r.str(key);
                }
                None
            };
            r.finish(UnknownKeys::Error);
            // Problems with inherited values were reported under [common] already.
            let own = |e: &ConfigError| !e.line.is_some_and(|l| inherited_lines.contains(&l));
            report.errors.0.extend(sub.errors.0.into_iter().filter(own));
            report.warnings.extend(sub.warnings.into_iter().filter(own));
            if let Some((step, redis)) = step {
                steps.push((step, redis, section));
            }
        }

        check_steps(file, common, &steps, &mut report.errors);
        let redis = steps.first().map(|(_, r, _)| r.clone());
        let config = Config {
            path: ini.path.clone(),
            home: home.map(Path::to_path_buf),
            redis,
            http_listen,
            shutdown_grace,
            buffer_size,
            steps: steps.into_iter().map(|(s, _, _)| s).collect(),
            warnings: report.warnings.clone(),
        };
        report.errors.into_result(config)
    }
}

/// Where a `--config` argument points: relative paths are under `$IRONWORK_HOME/tmp/config_auto`
/// when the home is known, else relative to the working directory.
pub fn resolve_config_path(arg: &Path, home: Option<&Path>) -> PathBuf {
    match home {
        Some(home) if arg.is_relative() => home.join(CONFIG_AUTO_DIR).join(arg),
        _ => arg.to_path_buf(),
    }
}

/// `section` with the `[common]` entries it does not override appended (lines kept, so errors
/// about them can be recognised as inherited).
fn inherit(section: &Section, common: &Section) -> Section {
    let mut merged = section.clone();
    for e in &common.entries {
        if section.get(&e.key).is_none() {
            merged.entries.push(Entry {
                key: e.key.clone(),
                value: e.value.clone(),
                line: e.line,
            });
        }
    }
    merged
}

/// Read the step keys of one (merged) section. With `required`, missing keys are errors and a
/// complete step is returned when everything is valid.
fn read_step(r: &mut SectionReader<'_>, required: bool, home: Option<&Path>) -> Option<(Step, RedisTarget)> {
    // Accepted for compatibility: inactivity is not a failure mode here (scans and kernel
    // overflows are handled), so there is nothing to time out.
    r.str("monitor_inactivitytimeout");
    r.str("active");
    let directory = if required {
        r.required("directory")
    } else {
        r.str("directory")
    };
    let directory = directory.and_then(|d| resolve_directory(r, d, home));
    let queue = if required { r.required("queue") } else { r.str("queue") };
    let redis = read_redis(r, required, home);
    let only = r.str("only");
    let ignore = r.str("ignore");
    let filter = match Filter::new(only, ignore) {
        Ok(f) => Some(f),
        Err(e) => {
            let key = if only.is_some_and(|o| o.split(';').any(|p| p == e.pattern)) {
                "only"
            } else {
                "ignore"
            };
            r.error(key, e.to_string());
            None
        }
    };
    let forced_poll = r.parse_with("forced_poll", None, |s| parse_period(s, "forced_poll"));
    let poll_queue_limit = r.parse_with("poll_queue_limit", Some(DEFAULT_POLL_QUEUE_LIMIT), |s| {
        match s.trim().parse::<i64>() {
            Ok(n) if n <= 0 => Ok(None),
            Ok(n) => Ok(Some(n as u64)),
            Err(e) => Err(format!("expected a number of messages (0 = no limit): {e}")),
        }
    });
    let timeout = r.parse_with("timeout", Some(DEFAULT_TIMEOUT), |s| parse_period(s, "timeout"));
    let recursive = r.bool("recursive", false);
    Some((
        Step {
            section: r.name().to_string(),
            directory: directory?,
            queue: queue?.to_string(),
            filter: filter?,
            forced_poll,
            poll_queue_limit,
            timeout,
            recursive,
        },
        redis?,
    ))
}

fn resolve_directory(r: &mut SectionReader<'_>, dir: &str, home: Option<&Path>) -> Option<PathBuf> {
    let path = PathBuf::from(dir);
    if path.is_absolute() {
        return Some(path);
    }
    match home {
        Some(home) => Some(home.join(DATA_IN_DIR).join(path)),
        None => {
            r.error(
                "directory",
                format!("relative directory {dir:?} needs {HOME_ENV} (it is taken under $IRONWORK_HOME/{DATA_IN_DIR})"),
            );
            None
        }
    }
}

/// `redis_unix_socket` (relative: under the runtime home), or `redis_server` + `redis_port` when
/// the socket is empty or `null`.
fn read_redis(r: &mut SectionReader<'_>, required: bool, home: Option<&Path>) -> Option<RedisTarget> {
    let socket = r.str("redis_unix_socket");
    let server = r.str("redis_server");
    let port = r.parse_with("redis_port", None, |s| {
        s.trim()
            .parse::<u16>()
            .map(Some)
            .map_err(|e| format!("expected a TCP port: {e}"))
    });
    match socket.map(str::trim) {
        Some(s) if !s.is_empty() && s != "null" => {
            if Path::new(s).is_absolute() {
                return Some(RedisTarget::Unix(PathBuf::from(s)));
            }
            match home {
                Some(home) => Some(RedisTarget::Unix(home.join(s))),
                None => {
                    r.error(
                        "redis_unix_socket",
                        format!("relative socket path {s:?} needs {HOME_ENV} (or use an absolute path)"),
                    );
                    None
                }
            }
        }
        socket => {
            let server = server.map(str::trim).filter(|s| !s.is_empty());
            match (server, port) {
                (Some(host), Some(port)) => Some(RedisTarget::Tcp {
                    host: host.to_string(),
                    port,
                }),
                _ if !required => None,
                (None, _) if socket.is_none() => {
                    r.error(
                        "redis_unix_socket",
                        "missing required key (give a socket path, or null with redis_server and redis_port)",
                    );
                    None
                }
                (None, _) => {
                    r.error("redis_server", "missing required key (redis_unix_socket is null)");
                    None
                }
                (Some(_), None) => {
                    if r.str("redis_port").is_none() {
                        r.error("redis_port", "missing required key (redis_unix_socket is null)");
                    }
                    None
                }
            }
        }
    }
}

/// A period in seconds (Metwork writes integers; `1.5`, `250ms`, `5m` are accepted too).
/// Zero or a negative number turns the feature off, as in Metwork.
fn parse_period(s: &str, _key: &str) -> Result<Option<Duration>, String> {
    if let Ok(n) = s.trim().parse::<f64>() {
        if n <= 0.0 {
            return Ok(None);
        }
    }
    parse_duration(s).map(|d| if d.is_zero() { None } else { Some(d) })
}

/// `127.0.0.1:9100`, `[::1]:9100`, or a bare port (loopback); empty for none.
fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Some(ironwork_core::http::loopback(port)));
    }
    s.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| format!("expected ADDRESS:PORT or a port: {e}"))
}

/// Checks across sections: one Redis, one section per directory, no directory inside a
/// recursive one, one set of queue settings per queue.
fn check_steps(file: &Path, common: &Section, steps: &[(Step, RedisTarget, &Section)], errors: &mut ConfigErrors) {
    let at = |section: &Section, key: &str, message: String| {
        let line = section
            .get(key)
            .or_else(|| common.get(key))
            .map_or(section.line, |e| e.line);
        ConfigError::new(file, message)
            .in_section(&section.name)
            .with_key(key)
            .at_line(line)
    };
    let Some((first, first_redis, _)) = steps.first() else {
        return;
    };
    let mut by_queue: HashMap<&str, &Step> = HashMap::new();
    for (i, (step, redis, section)) in steps.iter().enumerate() {
        if redis != first_redis {
            let key = match redis {
                RedisTarget::Unix(_) => "redis_unix_socket",
                RedisTarget::Tcp { .. } if section.get("redis_port").is_some() => "redis_port",
                RedisTarget::Tcp { .. } if section.get("redis_server").is_some() => "redis_server",
                RedisTarget::Tcp { .. } => "redis_unix_socket",
            };
            errors.push(at(
                section,
                key,
                format!(
                    "every active section must use the same Redis: [{}] uses {first_redis}, this one {redis}",
                    first.section
                ),
            ));
        }
        for (other, _, _) in &steps[..i] {
            if other.directory == step.directory {
                errors.push(at(
                    section,
                    "directory",
                    format!("{} is already watched by [{}]", step.directory.display(), other.section),
                ));
            } else if other.recursive && step.directory.starts_with(&other.directory) {
                errors.push(at(
                    section,
                    "directory",
                    format!(
                        "{} is inside {}, which [{}] watches recursively",
                        step.directory.display(),
                        other.directory.display(),
                        other.section
                    ),
                ));
            } else if step.recursive && other.directory.starts_with(&step.directory) {
                errors.push(at(
                    section,
                    "recursive",
                    format!(
                        "{} contains {}, watched by [{}]",
                        step.directory.display(),
                        other.directory.display(),
                        other.section
                    ),
                ));
            }
        }
        match by_queue.get(step.queue.as_str()) {
            Some(other) if other.poll_queue_limit != step.poll_queue_limit => errors.push(at(
                section,
                "poll_queue_limit",
                format!(
                    "queue {} is also fed by [{}] with a different poll_queue_limit",
                    step.queue, other.section
                ),
            )),
            Some(other) if other.timeout != step.timeout => errors.push(at(
                section,
                "timeout",
                format!(
                    "queue {} is also fed by [{}] with a different timeout",
                    step.queue, other.section
                ),
            )),
            Some(_) => {}
            None => {
                by_queue.insert(&step.queue, step);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("/etc/do.ini"), text, Some(Path::new("/home/iw")))
    }

    const COMMON_SECTION: &str = "[common]\nactive=false\nforced_poll=300\npoll_queue_limit=10000\n\
        monitor_inactivitytimeout=300\nredis_server=127.0.0.1\nredis_port=6379\n\
        redis_unix_socket=/home/iw/var/redis.sock\ntimeout=10\nignore=^.*\\.t$;^.*\\.tmp$\nonly=^.*$\n";

    /// What Metwork's `_make_directory_observer_conf` writes: mfdata's [common], then one section
    /// per listened directory.
    const METWORK_GENERATED: &str =
        "[common]\n\n# Defines whether or not a directory should be scrutinized\nactive=false\n\
        forced_poll=300\npoll_queue_limit=10000\nmonitor_inactivitytimeout=300\n\
        redis_server=127.0.0.1\nredis_port=6379\nredis_unix_socket=/home/mfdata/var/redis.socket\n\
        timeout=10\nignore=^.*\\.t$;^.*\\.tmp$\nonly=^.*$\n\n\
        [step_ungzip_main]\nactive=true\ndirectory=/home/mfdata/var/in/step.ungzip.main\nqueue=step.ungzip.main\n\n\
        [step_switch_main_0]\nactive=true\ndirectory=/home/mfdata/var/in/incoming\nqueue=step.switch.main\n\n\
        [step_switch_main_1]\nactive=true\ndirectory=/home/mfdata/var/in/step.switch.main\nqueue=step.switch.main\n";

    #[test]
    fn metwork_generated_file_loads() {
        let c = parse(METWORK_GENERATED).expect("valid");
        assert_eq!(c.steps.len(), 3);
        assert_eq!(
            c.redis,
            Some(RedisTarget::Unix(PathBuf::from("/home/mfdata/var/redis.socket")))
        );
        let s = &c.steps[0];
        assert_eq!(s.section, "step_ungzip_main");
        assert_eq!(s.directory, PathBuf::from("/home/mfdata/var/in/step.ungzip.main"));
        assert_eq!(s.queue, "step.ungzip.main");
        assert_eq!(s.forced_poll, Some(Duration::from_secs(300)));
        assert_eq!(s.poll_queue_limit, Some(10_000));
        assert_eq!(s.timeout, Some(Duration::from_secs(10)));
        assert!(!s.recursive);
        assert_eq!(s.filter.only(), Some("^.*$"));
        assert!(s.filter.accepts("a.gz") && !s.filter.accepts("a.gz.t"));
        assert_eq!(c.steps[1].queue, c.steps[2].queue);
        assert_eq!(c.buffer_size, DEFAULT_BUFFER_SIZE);
        assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn common_is_inherited_and_overridden() {
        let c = parse(&format!(
            "{COMMON_SECTION}[a]\nactive=true\ndirectory=/d/a\nqueue=qa\nforced_poll=0\nrecursive=yes\n\
             [b]\nactive=true\ndirectory=rel/b\nqueue=qb\npoll_queue_limit=0\ntimeout=0\nignore=\n"
        ))
        .expect("valid");
        let (a, b) = (&c.steps[0], &c.steps[1]);
        assert_eq!(a.forced_poll, None, "0 turns forced_poll off");
        assert!(a.recursive);
        assert_eq!(a.poll_queue_limit, Some(10_000), "inherited");
        assert_eq!(b.forced_poll, Some(Duration::from_secs(300)), "inherited");
        assert_eq!(
            b.directory,
            PathBuf::from("/home/iw/var/in/rel/b"),
            "relative → $IRONWORK_HOME/var/in"
        );
        assert_eq!(b.poll_queue_limit, None, "0 = no limit");
        assert_eq!(b.timeout, None, "0 = no timeout");
        assert!(b.filter.accepts("x.t"), "empty ignore overrides the inherited one");
        assert!(!b.filter.accepts("x.working"));
    }

    #[test]
    fn inactive_sections_are_skipped_but_their_keys_checked() {
        let c = parse(&format!(
            "{COMMON_SECTION}[off]\ndirectory=/d/off\n[off2]\nactive=false\n[on]\nactive=1\ndirectory=/d/on\nqueue=q\n"
        ))
        .expect("valid");
        assert_eq!(c.steps.len(), 1);
        assert_eq!(c.steps[0].section, "on");
        let err = parse(&format!("{COMMON_SECTION}[off]\nactive=false\nbogus=1\n")).expect_err("unknown key");
        assert!(err.to_string().contains("[off] bogus: unknown key"), "{err}");
    }

    #[test]
    fn missing_required_keys_are_errors_naming_file_section_and_key() {
        let err =
            parse("[common]\nredis_unix_socket=null\n[a]\nactive=true\ndirectory=/d/a\n[b]\nactive=true\nqueue=q\n")
                .expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("/etc/do.ini:3: [a] queue: missing required key"),
            "{text}"
        );
        assert!(
            text.contains("/etc/do.ini:6: [b] directory: missing required key"),
            "{text}"
        );
        assert!(text.contains("[a] redis_server: missing required key"), "{text}");
        assert!(text.contains("[b] redis_server: missing required key"), "{text}");
    }

    #[test]
    fn every_error_is_listed_once_with_section_and_key() {
        let err = parse(
            "[common]\nredis_unix_socket=/r.sock\nforced_poll=often\nbogus_common=1\n\
             [a]\nactive=true\ndirectory=/d/a\nqueue=qa\npoll_queue_limit=many\nonly=^(x\nbogus=2\n\
             [b]\nactive=maybe\n[c]\nactive=true\ndirectory=/d/c\nqueue=qc\nrecursive=sure\nhttp_listen=1\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        let expect = [
            "/etc/do.ini:3: [common] forced_poll: expected a duration",
            "/etc/do.ini:4: [common] bogus_common: unknown key",
            "/etc/do.ini:9: [a] poll_queue_limit: expected a number of messages",
            "/etc/do.ini:10: [a] only: invalid regular expression \"^(x\"",
            "/etc/do.ini:11: [a] bogus: unknown key",
            "/etc/do.ini:13: [b] active: expected a boolean",
            "/etc/do.ini:18: [c] recursive: expected a boolean",
            "/etc/do.ini:19: [c] http_listen: daemon-wide setting, valid in [common] only",
        ];
        for e in expect {
            assert!(text.contains(e), "missing {e:?} in:\n{text}");
        }
        assert_eq!(err.len(), expect.len(), "inherited errors are reported once:\n{text}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = parse(&format!(
            "{COMMON_SECTION}[a]\nactive=true\ndirectory=/d\nqueue=q\ncounter=step.a.counter\n"
        ))
        .expect_err("unknown key");
        assert!(
            err.to_string().contains("/etc/do.ini:16: [a] counter: unknown key"),
            "{err}"
        );
    }

    #[test]
    fn differing_redis_is_refused() {
        let err = parse(&format!(
            "{COMMON_SECTION}[a]\nactive=true\ndirectory=/d/a\nqueue=qa\n\
             [b]\nactive=true\ndirectory=/d/b\nqueue=qb\nredis_unix_socket=/other.sock\n\
             [c]\nactive=true\ndirectory=/d/c\nqueue=qc\nredis_unix_socket=null\nredis_port=6380\n"
        ))
        .expect_err("two redis");
        let text = err.to_string();
        assert!(
            text.contains("[b] redis_unix_socket: every active section must use the same Redis"),
            "{text}"
        );
        assert!(
            text.contains("[c] redis_port: every active section must use the same Redis"),
            "{text}"
        );
        // Inactive sections may say anything about Redis.
        parse(&format!(
            "{COMMON_SECTION}[a]\nactive=true\ndirectory=/d/a\nqueue=qa\n[b]\nredis_port=1\n"
        ))
        .expect("inactive sections do not count");
    }

    #[test]
    fn null_socket_means_tcp() {
        for socket in ["null", ""] {
            let c = parse(&format!(
                "[common]\nredis_server=10.0.0.1\nredis_port=6380\nredis_unix_socket={socket}\n\
                 [a]\nactive=true\ndirectory=/d\nqueue=q\n"
            ))
            .expect("valid");
            assert_eq!(
                c.redis,
                Some(RedisTarget::Tcp {
                    host: "10.0.0.1".into(),
                    port: 6380
                })
            );
            assert_eq!(
                c.redis.as_ref().map(RedisTarget::url).as_deref(),
                Some("redis://10.0.0.1:6380")
            );
        }
    }

    #[test]
    fn overlapping_directories_and_queue_settings_are_refused() {
        let err = parse(&format!(
            "{COMMON_SECTION}[a]\nactive=true\ndirectory=/d\nqueue=qa\nrecursive=true\n\
             [b]\nactive=true\ndirectory=/d/sub\nqueue=qb\n\
             [c]\nactive=true\ndirectory=/d\nqueue=qc\n\
             [e]\nactive=true\ndirectory=/e\nqueue=qa\npoll_queue_limit=5\n"
        ))
        .expect_err("overlaps");
        let text = err.to_string();
        assert!(text.contains("[b] directory: /d/sub is inside /d"), "{text}");
        assert!(text.contains("[c] directory: /d is already watched by [a]"), "{text}");
        assert!(
            text.contains("[e] poll_queue_limit: queue qa is also fed by [a]"),
            "{text}"
        );
    }

    #[test]
    fn daemon_settings_and_relative_directories() {
        let c = parse(&format!(
            "{COMMON_SECTION}http_listen=9100\nshutdown_grace=2s\nbuffer_size=5\n[a]\nactive=true\ndirectory=/d\nqueue=q\n"
        ))
        .expect("valid");
        assert_eq!(c.http_listen, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!(c.shutdown_grace, Duration::from_secs(2));
        assert_eq!(c.buffer_size, 5);
        let err = Config::parse(
            Path::new("x.ini"),
            "[common]\nredis_unix_socket=/r.sock\n[a]\nactive=true\ndirectory=rel\nqueue=q\n",
            None,
        )
        .expect_err("no home");
        assert!(err.to_string().contains("[a] directory: relative directory"), "{err}");
    }

    #[test]
    fn no_active_section_is_valid_and_idle() {
        let c = parse(COMMON_SECTION).expect("valid");
        assert!(c.steps.is_empty());
        assert_eq!(c.redis, None);
    }

    #[test]
    fn example_config_in_etc_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/directory_observer.ini");
        let c =
            Config::load_with_home(&path, Some(Path::new("/home/iw"))).expect("etc/directory_observer.ini is valid");
        assert_eq!(
            c.redis,
            Some(RedisTarget::Unix(PathBuf::from("/home/iw/var/redis.sock")))
        );
        let dirs: Vec<_> = c.steps.iter().map(|s| s.directory.clone()).collect();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/home/iw/var/in/incoming"),
                PathBuf::from("/home/iw/var/in/step.demo.main")
            ]
        );
        assert_eq!(c.steps[0].queue, "step.switch.main");
        assert_eq!(c.steps[1].forced_poll, Some(Duration::from_secs(300)));
        assert_eq!(c.http_listen, None);
    }

    #[test]
    fn relative_config_is_under_config_auto() {
        let home = Path::new("/home/iw");
        assert_eq!(
            resolve_config_path(Path::new("directory_observer.ini"), Some(home)),
            PathBuf::from("/home/iw/tmp/config_auto/directory_observer.ini")
        );
        assert_eq!(
            resolve_config_path(Path::new("/etc/x.ini"), Some(home)),
            PathBuf::from("/etc/x.ini")
        );
        assert_eq!(resolve_config_path(Path::new("x.ini"), None), PathBuf::from("x.ini"));
    }
}
