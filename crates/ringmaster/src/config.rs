//! ringmaster's configuration: a circus ini file (with `include` / `include_dir`, `[env…]`
//! sections and `$(circus.env.X)` expansion) read into typed, validated settings.
//!
//! Circus keys ringmaster does not implement (Metwork's `async_kill`, `virtualenv`, …) are
//! accepted with a warning naming file, section and key; invalid values refuse the whole file,
//! listing every error. What circus lacks lives in extra watcher keys (`startsecs`, `exitcodes`,
//! `restart`, `memory_limit`) and in an optional `[ringmaster]` section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::config::{ConfigError, ConfigErrors};

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main file.
    pub path: PathBuf,
    /// `[circus]`.
    pub circus: CircusSettings,
    /// `[ringmaster]` (optional; defaults otherwise).
    pub ringmaster: RingmasterSettings,
    /// `[watcher:NAME]` sections, in file order (includes expanded in place).
    pub watchers: Vec<WatcherConfig>,
    /// `[socket:NAME]` sections, in file order.
    pub sockets: Vec<SocketConfig>,
    /// Accepted-but-ignored keys and other non-fatal remarks, already formatted with file/section/key.
    pub warnings: Vec<ConfigError>,
}

/// `[circus]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CircusSettings {
    /// The control socket: from `endpoint = ipc:///path`, else `ringmaster.sock` beside the main file.
    /// A `tcp://` endpoint is accepted with a warning (ringmaster serves only a unix socket).
    pub control_socket: PathBuf,
    /// Housekeeping period (circus `check_delay`, default 5 s). Reaping does not wait for it.
    pub check_delay: Duration,
    /// Pause between starting two watchers (default 0).
    pub warmup_delay: Duration,
}

/// `[ringmaster]`: what circus has no key for.
#[derive(Debug, Clone, PartialEq)]
pub struct RingmasterSettings {
    /// Redis to consume `ringmaster.control` from and publish `ringmaster.events` to (`redis_url`).
    pub redis_url: Option<String>,
    /// Loopback address for `/health` and `/metrics` (`http = 127.0.0.1:9101`, or a bare port).
    pub http: Option<SocketAddr>,
    /// Where the pids of running children are recorded, so that a restarted ringmaster can kill what
    /// a SIGKILLed predecessor left behind (`state_file`, default `<control socket>.pids`).
    pub state_file: PathBuf,
    /// How often RSS is checked against `memory_limit` (`memory_check_interval`, default 1 s).
    pub memory_check_interval: Duration,
    /// Flapping defaults for every watcher (`flapping.attempts`, `flapping.window`, `flapping.retry_in`,
    /// `flapping.max_retry`, as circus's flapping plugin).
    pub flapping: Flapping,
    /// Grace given to a SIGKILLed predecessor's leftovers between SIGTERM and SIGKILL (`orphan_grace`, 5 s).
    pub orphan_grace: Duration,
}

/// Crash-loop detection: `attempts` exits within `window` stop the watcher for `retry_in`;
/// after `max_retry` such pauses (-1 = never give up) it stays stopped until an operator acts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flapping {
    /// Exits that make a burst (circus default 2).
    pub attempts: u32,
    /// The burst window (circus default 1 s).
    pub window: Duration,
    /// Pause before trying again (circus default 7 s).
    pub retry_in: Duration,
    /// Pauses before giving up (circus default 5; -1 = forever).
    pub max_retry: i64,
}

impl Default for Flapping {
    fn default() -> Self {
        Self {
            attempts: 2,
            window: Duration::from_secs(1),
            retry_in: Duration::from_secs(7),
            max_retry: 5,
        }
    }
}

/// When a process that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always (circus `respawn = true`, the default).
    Always,
    /// Only when the exit code is not in `exitcodes` or a signal killed it.
    OnFailure,
    /// Never (circus `respawn = false`).
    Never,
}

/// `[watcher:NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherConfig {
    /// The section's NAME.
    pub name: String,
    /// `cmd`, after `$(circus.env.X)` expansion; `$(circus.wid)` and `$(circus.sockets.X)` are
    /// expanded per process at spawn time.
    pub cmd: String,
    /// `args`, same expansion rules, appended to `cmd`.
    pub args: String,
    /// `shell`: run `cmd args` through `/bin/sh -c` instead of splitting it shell-style.
    pub shell: bool,
    /// `working_dir`.
    pub working_dir: Option<PathBuf>,
    /// `uid` (name or number).
    pub uid: Option<String>,
    /// `gid` (name or number).
    pub gid: Option<String>,
    /// `numprocesses` (default 1).
    pub numprocesses: u32,
    /// `warmup_delay` between two processes of this watcher (default 0).
    pub warmup_delay: Duration,
    /// `autostart` (default true).
    pub autostart: bool,
    /// `restart`, or from `respawn` (true → always, false → never).
    pub restart: RestartPolicy,
    /// `exitcodes`: expected exit codes for `restart = on-failure` (default `0`).
    pub exitcodes: Vec<i32>,
    /// `max_retry`: spawn failures in a row before giving up (default 5; -1 = forever). Retries back off.
    pub max_retry: i64,
    /// `startsecs`: a process that exits sooner counts as a failed start (default 0 = off).
    pub startsecs: Duration,
    /// `priority`: higher starts first and stops last (default 0).
    pub priority: i64,
    /// `singleton`: at most one process.
    pub singleton: bool,
    /// Environment for the process, in precedence order already resolved: ringmaster's own
    /// environment when `copy_env` (or only PATH with `copy_path`), then `[env]`, then matching
    /// `[env:…]` sections in file order, later entries winning.
    pub env: Vec<(String, String)>,
    /// `copy_env`.
    pub copy_env: bool,
    /// `copy_path`.
    pub copy_path: bool,
    /// `stop_signal` (name with or without SIG, any case, or number; default SIGTERM).
    pub stop_signal: i32,
    /// `stop_children`: signal every descendant too, not only the process group.
    pub stop_children: bool,
    /// `graceful_timeout` before SIGKILL (default 30 s).
    pub graceful_timeout: Duration,
    /// `max_age` (0 = off).
    pub max_age: Duration,
    /// `max_age_variance` (default 30 s).
    pub max_age_variance: Duration,
    /// `rlimit_<name>`: (libc `RLIMIT_*` resource, limit; `None` = unlimited, from an empty value).
    pub rlimits: Vec<(i32, Option<u64>)>,
    /// `use_sockets`: children inherit the `[socket:…]` fds.
    pub use_sockets: bool,
    /// `close_child_stdin` (default true): stdin is /dev/null.
    pub close_child_stdin: bool,
    /// `stdout_stream.*`, or /dev/null with `close_child_stdout`.
    pub stdout: StreamConfig,
    /// `stderr_stream.*`, or /dev/null with `close_child_stderr`.
    pub stderr: StreamConfig,
    /// `hooks.*` as shell commands.
    pub hooks: Hooks,
    /// `memory_limit`: RSS above which a process is restarted (bytes; `512M` etc. accepted).
    pub memory_limit: Option<u64>,
    /// `flapping.*` overrides of the `[ringmaster]` defaults.
    pub flapping: Flapping,
}

/// Where a child's stdout or stderr goes.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamConfig {
    /// To ringmaster's own stdout/stderr (the default, and `class = StdoutStream`).
    Inherit,
    /// Discarded (`close_child_stdout = true`).
    Null,
    /// To a file (`class = FileStream | WatchedFileStream | TimedRotatingFileStream`).
    File(FileStream),
}

/// A file stream with rotation by size and/or time.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStream {
    /// `filename`.
    pub path: PathBuf,
    /// `max_bytes`: rotate when the file would exceed this (0 = never by size).
    pub max_bytes: u64,
    /// `backup_count`: rotated files kept as `path.1` … `path.N` (default 0 with size rotation
    /// means truncate in place, as Python's RotatingFileHandler).
    pub backup_count: u32,
    /// `rotate_when` + `rotate_interval` for `TimedRotatingFileStream`.
    pub rotate_every: Option<Duration>,
    /// `time_format`: when set, each line is prefixed with the UTC time in this strftime format.
    pub time_format: Option<String>,
}

/// Hook shell commands. Exit 0: go on. Exit 200 (Metwork's convention): skip the action quietly.
/// Any other exit: a `before_*` hook aborts the action with an error; an `after_*` hook's failure
/// is only logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    /// `hooks.before_start`.
    pub before_start: Option<String>,
    /// `hooks.after_start`.
    pub after_start: Option<String>,
    /// `hooks.before_stop`.
    pub before_stop: Option<String>,
    /// `hooks.after_stop`.
    pub after_stop: Option<String>,
}

/// `[socket:NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketConfig {
    /// The section's NAME (referenced as `$(circus.sockets.NAME)`).
    pub name: String,
    /// What to bind.
    pub address: SocketAddress,
    /// `so_reuseport`.
    pub so_reuseport: bool,
    /// `umask` applied while binding a unix socket (octal).
    pub umask: Option<u32>,
    /// `replace`: unlink a stale unix socket file before binding.
    pub replace: bool,
    /// `backlog` (default 2048).
    pub backlog: i32,
}

/// A socket's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// `host` + `port`.
    Tcp {
        /// Host name or address (default `localhost`).
        host: String,
        /// Port (default 8080).
        port: u16,
    },
    /// `path` (or `family = AF_UNIX`).
    Unix(PathBuf),
}

impl Config {
    /// Read and validate `path`: every error in every included file is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        load(path)
    }

    /// The watcher named `name`.
    pub fn watcher(&self, name: &str) -> Option<&WatcherConfig> {
        self.watchers.iter().find(|w| w.name == name)
    }
}

fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let _ = path;
    todo!("circus ini loader")
}
