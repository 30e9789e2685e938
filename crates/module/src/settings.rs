//! `config/ironwork.ini`: the module's own settings (Redis, which daemons run, the switch, the
//! garbage collector, where the binaries are, and the sink endpoints later daemons use).
//!
//! Strict: an unknown section or key is an error, and every error is reported at once with its
//! file, line, section and key. A missing file means every default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::config::{parse_bytes, ConfigError, ConfigErrors, Report, SectionReader, UnknownKeys};
use ironwork_core::ini::Ini;

use crate::home::Home;

/// What `ironwork init` writes: every key with its default and what it means.
pub const DEFAULT_IRONWORK_INI: &str = "\
# ironwork module settings. Every key is shown with its default; docs/module.md has the details.
# After an edit, conf_monitor regenerates tmp/config_auto/ and ringmaster reloads.

[redis]
# This node's Redis: the file pipeline's queues and tags, ringmaster's control list. Empty:
# ringmaster runs its own redis-server on var/redis.sock. Otherwise redis://host:port,
# unix:///path/to/redis.sock or redis+unix:///path.
url =
# The Redis the nodes share for the collector and the reflector (queues, leases, metrics):
# redis+cluster://host:port,host:port,... (a Redis Cluster), or
# redis+sentinel://host:26379,host:26379/<master> (Sentinel), or one server. Empty: url.
shared_url =
# Memory cap of the managed Redis (it refuses writes when full: queues are never evicted).
maxmemory = 2gb

[node]
# This node's name among the nodes sharing [redis] shared_url: consumer ids and lease holders
# carry it. Empty: the host name. Two nodes on one machine need two names.
name =

[daemons]
# Which daemons ringmaster runs (true/false).
# directory_observer: queues files landing in var/in/incoming and in each step directory.
directory_observer = true
# conf_monitor: regenerates tmp/config_auto/ when this file or a plugin changes.
conf_monitor = true
# jsonlog2es: ships JSON-lines logs to Elasticsearch ([elasticsearch] url).
jsonlog2es = false
# mflog2mfadmin: ships the daemons' own logs to the admin Elasticsearch.
mflog2mfadmin = false
# collector: runs the plugins' collections.
collector = false
# reflector: runs the plugins' reflections and sends metrics.
reflector = false
# gc: removes old files from var/in/trash/ and abandoned ones from var/in/tmp/.
gc = true

[switch]
# What the switch does with a file no rule matches: delete, or keep (in var/in/trash/).
no_match_policy = delete
# How many switch workers run.
numprocesses = 1

[gc]
# Kept failures in var/in/trash/ are removed after this long.
trash_max_age = 24h
# Claimed files nobody holds in var/in/tmp/ are moved to the trash after this long.
tmp_max_age = 1h
# Time between two passes.
every = 5m

[data]
# The data directory (Metwork's MFDATA_DATA_IN_DIR): incoming/, step directories, tmp/, trash/,
# retry/. Relative paths are under the home. Empty: var/in. Keep it on one filesystem.
in_dir =

[binaries]
# Directory holding ringmaster, step, directory_observer, conf_monitor, ...
# Empty: the directory of the running ironwork executable.
dir =

[elasticsearch]
# Elasticsearch for jsonlog2es/mflog2mfadmin, e.g. http://127.0.0.1:9200 (empty: none).
url =

[influxdb]
# InfluxDB the reflector sends metrics to, e.g. http://127.0.0.1:8086 (empty: none).
url =
# Its database.
database =

[collector]
# The collector's own settings, with their defaults (docs/collector.md lists every key).
# The agent HTTP API (loopback unless changed; empty: none). Its mutating calls need the bearer
# token in var/state/collector.token (created on first start, mode 0600).
#listen = 127.0.0.1:9477
# Most collections running at once in one collector process.
#concurrency = 64
# Most jobs one consumer takes from collector.job.queue at once.
#collection_bulk_size = 100
# How long a silent collection manager keeps the leader lease.
#leader_ttl = 5s
# A collection disabled through the API enables itself again after this long.
#disable_for = 24h

[reflector]
# The reflector's own settings, with their defaults (docs/reflector.md lists every key). The
# metric server comes from [influxdb] url or [zabbix] server; metrics_server_endpoints here
# replaces it (several endpoints: each receives every point).
# /health and /metrics (loopback unless changed; empty: none).
#listen = 127.0.0.1:9478
# Most results one reflection consumer takes from collector.data.queue at once.
#reflection_bulk_size = 500
# Most points in one send, retries of a failed send and the wait before the first retry.
#metrics_send_bulk_size = 5000
#metrics_send_retry_count = 3
#metrics_send_retry_interval = 1s
# Keep delivered batches in metrics.sent (undelivered ones always go to metrics.unsent).
#metrics_sent_backup_mode = false
#metrics_sent_expire_days = 7
#metrics_unsent_expire_days = 30

[zabbix]
# Zabbix server the reflector sends to (empty: none).
server =
# Its trapper port.
port = 10051

[console]
# ringmaster's web console: watchers, queues, pipeline, logs, and buttons to start, stop,
# restart, grow and shrink watchers (those need the token in var/state/console.token).
# host:port; empty: no console. Anything but loopback makes every page need the token.
listen = 127.0.0.1:18870

[nginx]
# The front of the plugins' apps ([app_<name>] sections); it runs only when a plugin has an app.
# Where it listens (host:port).
listen = 127.0.0.1:18868
# The nginx program.
binary = nginx
# nginx worker processes (a number or auto).
worker_processes = auto
# Largest request body an app accepts unless its own client_max_body_size says otherwise.
client_max_body_size = 100m
# config/nginx.conf.template, when present, replaces the built-in template
# (`ironwork apps template` prints it).
";

/// The sections `ironwork.ini` may have.
const SECTIONS: &[&str] = &[
    "redis",
    "node",
    "data",
    "daemons",
    "switch",
    "gc",
    "binaries",
    "elasticsearch",
    "influxdb",
    "zabbix",
    "collector",
    "reflector",
    "nginx",
    "console",
];

/// Default `[redis] maxmemory`: 2 GiB.
pub const DEFAULT_MAXMEMORY: u64 = 2 << 30;

/// The whole validated `ironwork.ini`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    /// `[redis]`.
    pub redis: RedisSettings,
    /// `[console]`.
    pub console: ConsoleSettings,
    /// `[node] name`: this node's name (`IRONWORK_NODE` for every daemon); `None` = host name.
    pub node_name: Option<String>,
    /// `[data]`.
    pub data: DataSettings,
    /// `[daemons]`.
    pub daemons: Daemons,
    /// `[switch]`.
    pub switch: SwitchSettings,
    /// `[gc]`.
    pub gc: GcSettings,
    /// `[binaries]`.
    pub binaries: Binaries,
    /// `[elasticsearch]`.
    pub elasticsearch: Elasticsearch,
    /// `[influxdb]`.
    pub influxdb: Influxdb,
    /// `[zabbix]`.
    pub zabbix: Zabbix,
    /// `[collector]`: validated with the collector's own reader, copied as written into the
    /// generated `collector.ini` (after the keys the module sets, which these may override).
    pub collector: Vec<(String, String)>,
    /// `[reflector]`: validated with the reflector's own reader, copied as written into the
    /// generated `reflector.ini` (after the keys the module sets, which these may override).
    pub reflector: Vec<(String, String)>,
    /// `[nginx]`.
    pub nginx: NginxSettings,
}

/// `[console]`: ringmaster's web console.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsoleSettings {
    /// `listen` (127.0.0.1:18870); `None` = no console.
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 18870))),
        }
    }
}

/// `[nginx]`: the front of the plugins' apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSettings {
    /// `listen`: host:port (127.0.0.1:18868, Metwork MFSERV's port).
    pub listen: String,
    /// `binary` (`nginx`).
    pub binary: String,
    /// `worker_processes` (`auto`).
    pub worker_processes: String,
    /// `client_max_body_size` (`100m`).
    pub client_max_body_size: String,
}

impl Default for NginxSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:18868".into(),
            binary: "nginx".into(),
            worker_processes: "auto".into(),
            client_max_body_size: "100m".into(),
        }
    }
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `url`: an external Redis; `None` = managed by ringmaster on `var/redis.sock`.
    pub url: Option<String>,
    /// `shared_url`: the collector's and reflector's Redis when the nodes share one (a Redis
    /// Cluster, Sentinel or one server); `None` = the node's own.
    pub shared_url: Option<String>,
    /// `maxmemory` of the managed Redis, in bytes.
    pub maxmemory: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            shared_url: None,
            maxmemory: DEFAULT_MAXMEMORY,
        }
    }
}

/// Where the queues' Redis is (the type directory_observer's configuration uses too).
pub use directory_observer::config::RedisTarget;

impl RedisSettings {
    /// Whether ringmaster runs the Redis (no `url`).
    pub fn managed(&self) -> bool {
        self.url.is_none()
    }

    /// Where Redis is for a stack in `home`.
    pub fn target(&self, home: &Home) -> RedisTarget {
        match self.url.as_deref().map(parse_redis_url) {
            Some(Ok(t)) => t,
            // Validated when loaded; a hand-built invalid url falls back to the managed socket.
            _ => RedisTarget::Unix(home.redis_socket()),
        }
    }

    /// The URL daemons are given (`unix://…` for a socket, as `step --redis` documents).
    pub fn url_for_daemons(&self, home: &Home) -> String {
        match (&self.url, self.target(home)) {
            (Some(url), _) => url.clone(),
            (None, target) => target.url(),
        }
    }

    /// The URL the collector and the reflector are given: `shared_url`, else the node's own.
    pub fn shared_url_for_daemons(&self, home: &Home) -> String {
        self.shared_url.clone().unwrap_or_else(|| self.url_for_daemons(home))
    }
}

/// Check a `shared_url`: any form the daemons' Redis client takes.
fn parse_shared_url(url: &str) -> Result<String, String> {
    ironwork_core::connection::Endpoint::parse(url).map(|_| url.to_string())
}

/// Parse a Redis URL: `redis://host[:port][/db]`, `unix:///path` or `redis+unix:///path`.
pub fn parse_redis_url(url: &str) -> Result<RedisTarget, String> {
    let url = url.trim();
    if let Some(path) = url
        .strip_prefix("unix://")
        .or_else(|| url.strip_prefix("redis+unix://"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if !path.starts_with('/') {
            return Err("a unix socket URL needs an absolute path (unix:///path/to/redis.sock)".into());
        }
        return Ok(RedisTarget::Unix(PathBuf::from(path)));
    }
    if url.starts_with("redis+cluster://") || url.starts_with("redis+sentinel://") {
        return Err("this node's own Redis (file pipeline, ringmaster) is one server: \
                    put a Redis Cluster or Sentinel in shared_url"
            .into());
    }
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err("expected redis://host:port, unix:///path or redis+unix:///path".into());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    // `[::1]:6379`: the port follows the closing bracket.
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, "6379"),
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or(p)),
            None => return Err("unclosed '[' in redis:// URL".into()),
        },
        None => hostport.split_once(':').unwrap_or((hostport, "6379")),
    };
    if host.is_empty() {
        return Err("missing host in redis:// URL".into());
    }
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?} in redis:// URL"))?;
    Ok(RedisTarget::Tcp {
        host: host.to_string(),
        port,
    })
}

/// `[daemons]`: which optional daemons ringmaster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Daemons {
    /// `directory_observer` (true).
    pub directory_observer: bool,
    /// `conf_monitor` (true).
    pub conf_monitor: bool,
    /// `jsonlog2es` (false).
    pub jsonlog2es: bool,
    /// `mflog2mfadmin` (false).
    pub mflog2mfadmin: bool,
    /// `collector` (false).
    pub collector: bool,
    /// `reflector` (false).
    pub reflector: bool,
    /// `gc` (true).
    pub gc: bool,
}

impl Default for Daemons {
    fn default() -> Self {
        Self {
            directory_observer: true,
            conf_monitor: true,
            jsonlog2es: false,
            mflog2mfadmin: false,
            collector: false,
            reflector: false,
            gc: true,
        }
    }
}

/// What the switch does with a file no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoMatchPolicy {
    /// Remove it.
    #[default]
    Delete,
    /// Keep it in `var/in/trash/switch.nomatch/`.
    Keep,
}

impl NoMatchPolicy {
    /// The spelling `step switch --no-match-policy` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Keep => "keep",
        }
    }
}

/// `[switch]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchSettings {
    /// `no_match_policy` (delete).
    pub no_match_policy: NoMatchPolicy,
    /// `numprocesses` (1).
    pub numprocesses: u32,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        Self {
            no_match_policy: NoMatchPolicy::Delete,
            numprocesses: 1,
        }
    }
}

/// `[gc]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    /// `trash_max_age` (24h).
    pub trash_max_age: Duration,
    /// `tmp_max_age` (1h).
    pub tmp_max_age: Duration,
    /// `every` (5m).
    pub every: Duration,
}

impl Default for GcSettings {
    fn default() -> Self {
        Self {
            trash_max_age: Duration::from_secs(24 * 3600),
            tmp_max_age: Duration::from_secs(3600),
            every: Duration::from_secs(300),
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSettings {
    /// `in_dir`: the data directory (Metwork's `MFDATA_DATA_IN_DIR`); relative paths are under
    /// the home; `None` = `var/in`.
    pub in_dir: Option<PathBuf>,
}

impl Settings {
    /// `home` with the data directory these settings name.
    pub fn apply(&self, home: Home) -> Home {
        let dir = self.data.in_dir.as_ref().map(|d| home.root.join(d));
        home.with_data_dir(dir)
    }
}

/// `[binaries]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binaries {
    /// `dir`: where the ironwork binaries are; `None` = the running executable's directory
    /// (see [`Settings::bin_dir`]).
    pub dir: Option<PathBuf>,
}

/// `[elasticsearch]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Elasticsearch {
    /// `url` (http:// or https://), if any.
    pub url: Option<String>,
}

/// `[influxdb]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Influxdb {
    /// `url` (http:// or https://), if any.
    pub url: Option<String>,
    /// `database`, if any.
    pub database: Option<String>,
}

/// `[zabbix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zabbix {
    /// `server`, if any.
    pub server: Option<String>,
    /// `port` (10051).
    pub port: u16,
}

impl Default for Zabbix {
    fn default() -> Self {
        Self {
            server: None,
            port: 10051,
        }
    }
}

impl Settings {
    /// Read `config/ironwork.ini` of `home`; a missing file gives the defaults.
    pub fn load(home: &Home) -> Result<Settings, ConfigErrors> {
        let path = home.ironwork_ini();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(ConfigError::new(&path, format!("cannot read: {e}")).into()),
        }
    }

    /// Parse `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigErrors> {
        let ini = Ini::parse(path, text)?;
        let mut report = Report::default();
        let mut s = Settings::default();
        for section in &ini.sections {
            if !SECTIONS.contains(&section.name.as_str()) {
                report.errors.push(
                    ConfigError::new(
                        path,
                        format!("unknown section (expected one of {})", SECTIONS.join(", ")),
                    )
                    .in_section(&section.name)
                    .at_line(section.line),
                );
                continue;
            }
            let mut r = report.section(path, section);
            match section.name.as_str() {
                "redis" => {
                    s.redis.url = optional(&mut r, "url", |v| parse_redis_url(v).map(|_| v.to_string()));
                    s.redis.shared_url = optional(&mut r, "shared_url", parse_shared_url);
                    s.redis.maxmemory = r.parse_with("maxmemory", DEFAULT_MAXMEMORY, parse_bytes);
                }
                "daemons" => {
                    let d = &mut s.daemons;
                    d.directory_observer = r.bool("directory_observer", d.directory_observer);
                    d.conf_monitor = r.bool("conf_monitor", d.conf_monitor);
                    d.jsonlog2es = r.bool("jsonlog2es", d.jsonlog2es);
                    d.mflog2mfadmin = r.bool("mflog2mfadmin", d.mflog2mfadmin);
                    d.collector = r.bool("collector", d.collector);
                    d.reflector = r.bool("reflector", d.reflector);
                    d.gc = r.bool("gc", d.gc);
                }
                "switch" => {
                    s.switch.no_match_policy =
                        r.parse_with("no_match_policy", NoMatchPolicy::Delete, |v| match v.trim() {
                            "delete" => Ok(NoMatchPolicy::Delete),
                            "keep" => Ok(NoMatchPolicy::Keep),
                            _ => Err("expected delete or keep".into()),
                        });
                    s.switch.numprocesses = r.positive("numprocesses", 1u32);
                }
                "gc" => {
                    s.gc.trash_max_age = r.nonzero_duration("trash_max_age", s.gc.trash_max_age);
                    s.gc.tmp_max_age = r.nonzero_duration("tmp_max_age", s.gc.tmp_max_age);
                    s.gc.every = r.nonzero_duration("every", s.gc.every);
                }
                "data" => {
                    s.data.in_dir = r.parse_with("in_dir", None, |v| {
                        let v = v.trim();
                        if v.is_empty() {
                            Ok(None)
                        } else if Path::new(v)
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir))
                        {
                            Err("'..' is not allowed".into())
                        } else {
                            Ok(Some(PathBuf::from(v)))
                        }
                    });
                }
                "binaries" => {
                    s.binaries.dir = r.parse_with("dir", None, |v| {
                        let p = PathBuf::from(v.trim());
                        if v.trim().is_empty() {
                            Ok(None)
                        } else if p.is_absolute() {
                            Ok(Some(p))
                        } else {
                            Err("expected an absolute directory".into())
                        }
                    });
                }
                "elasticsearch" => {
                    s.elasticsearch.url = optional(&mut r, "url", http_url);
                }
                "influxdb" => {
                    s.influxdb.url = optional(&mut r, "url", |v| match http_url(v) {
                        Ok(u) if u.starts_with("https://") => {
                            Err("the reflector writes over http:// only (put a TLS proxy in front)".into())
                        }
                        other => other,
                    });
                    s.influxdb.database = optional(&mut r, "database", |v| Ok(v.to_string()));
                }
                "zabbix" => {
                    s.zabbix.server = optional(&mut r, "server", |v| {
                        if v.contains(char::is_whitespace) {
                            Err("expected a host name or address".into())
                        } else {
                            Ok(v.to_string())
                        }
                    });
                    s.zabbix.port = r.parse_with("port", 10051, |v| match v.trim().parse::<u16>() {
                        Ok(0) | Err(_) => Err("expected a port (1-65535)".into()),
                        Ok(p) => Ok(p),
                    });
                }
                "node" => {
                    s.node_name = optional(&mut r, "name", |v| {
                        if v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                            Ok(v.to_string())
                        } else {
                            Err("letters, digits, '-', '_' or '.'".into())
                        }
                    });
                }
                "console" => {
                    s.console.listen = r.parse_with("listen", s.console.listen, |v| match v.trim() {
                        "" => Ok(None),
                        v => v
                            .parse()
                            .map(Some)
                            .map_err(|_| "expected ip:port, like 127.0.0.1:18870".into()),
                    });
                }
                "nginx" => {
                    let n = &mut s.nginx;
                    n.listen = r.parse_with("listen", n.listen.clone(), |v| {
                        let v = v.trim();
                        match v.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                            Some((h, Ok(p))) if !h.is_empty() && p > 0 && !v.contains(char::is_whitespace) => {
                                Ok(v.to_string())
                            }
                            _ => Err("expected host:port".into()),
                        }
                    });
                    n.binary = r.parse_with("binary", n.binary.clone(), |v| match v.trim() {
                        "" => Err("expected a program".into()),
                        v => Ok(v.to_string()),
                    });
                    n.worker_processes =
                        r.parse_with("worker_processes", n.worker_processes.clone(), |v| match v.trim() {
                            "auto" => Ok("auto".into()),
                            v if v.parse::<u32>().is_ok_and(|n| n > 0) => Ok(v.to_string()),
                            _ => Err("expected auto or a number above 0".into()),
                        });
                    n.client_max_body_size =
                        r.parse_with("client_max_body_size", n.client_max_body_size.clone(), |v| {
                            crate::plugin::nginx_size(v)?.ok_or_else(|| "expected a size".to_string())
                        });
                }
                "collector" => {
                    let _ = collector::config::read_settings(&mut r, path, false);
                    s.collector = section
                        .entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect();
                }
                "reflector" => {
                    let _ = reflector::config::read_settings(&mut r, false);
                    s.reflector = section
                        .entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect();
                }
                _ => {}
            }
            r.finish(UnknownKeys::Error);
        }
        report.finish(s)
    }

    /// Where the ironwork binaries are: `[binaries] dir`, else the running executable's directory.
    pub fn bin_dir(&self) -> std::io::Result<PathBuf> {
        if let Some(dir) = &self.binaries.dir {
            return Ok(dir.clone());
        }
        let exe = std::env::current_exe()?;
        exe.parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| std::io::Error::other(format!("{} has no parent directory", exe.display())))
    }
}

/// An optional value: absent or empty is `None`.
fn optional<T>(r: &mut SectionReader<'_>, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
    r.parse_with(key, None, |v| {
        let v = v.trim();
        if v.is_empty() {
            Ok(None)
        } else {
            parse(v).map(Some)
        }
    })
}

fn http_url(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') || v.contains(char::is_whitespace) {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        let tcp = |h: &str, p| {
            Ok(RedisTarget::Tcp {
                host: h.into(),
                port: p,
            })
        };
        assert_eq!(parse_redis_url("redis://h"), tcp("h", 6379));
        assert_eq!(parse_redis_url("redis://:pw@h:7000/2"), tcp("h", 7000));
        assert_eq!(parse_redis_url("redis://[::1]:7001"), tcp("::1", 7001));
        assert_eq!(
            parse_redis_url("unix:///run/r.sock"),
            Ok(RedisTarget::Unix("/run/r.sock".into()))
        );
        assert_eq!(
            parse_redis_url("redis+unix:///run/r.sock"),
            Ok(RedisTarget::Unix("/run/r.sock".into()))
        );
        assert!(parse_redis_url("unix://relative.sock").is_err());
        assert!(parse_redis_url("redis://h:port").is_err());
        assert!(parse_redis_url("rediss://h").is_err());
    }
}
