//! ringmaster's configuration: a circus ini file (with `include` / `include_dir`, `[env…]`
//! sections and `$(circus.env.X)` expansion) read into typed, validated settings.
//!
//! Circus keys ringmaster does not implement (Metwork's `async_kill`, `virtualenv`, …) are
//! accepted with a warning naming file, section and key; invalid values refuse the whole file,
//! listing every error. What circus lacks lives in extra watcher keys (`startsecs`, `exitcodes`,
//! `restart`, `memory_limit`) and in an optional `[ringmaster]` section.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::config::{
    parse_bool, parse_bytes, parse_duration, ConfigError, ConfigErrors, Report, SectionReader, UnknownKeys,
};
use ironwork_core::ini::{Entry, Ini, Section};
use nix::sys::signal::Signal;

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
    /// Where the collector and reflector keep their queues, leases and totals, when not in
    /// `redis_url` (`shared_redis_url`): the console reads them there.
    pub shared_redis_url: Option<String>,
    /// The data directory's `trash/` (`trash_dir`), whose files per step the console counts.
    pub trash_dir: Option<PathBuf>,
    /// Address of the web console (`console = 127.0.0.1:18870`, or a bare port); none by default.
    pub console: Option<SocketAddr>,
    /// The console's token (`console_token_file`, default `console.token` beside `state_file`),
    /// created 0600 when missing.
    pub console_token_file: PathBuf,
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
    /// `drain_socket`: the unix socket each process serves on (`$(circus.wid)` expanded). A
    /// process being stopped is drained first: the path is taken away (or, on a recycle or
    /// reload, taken over by its replacement) and the stop signal waits until the connections
    /// it accepted are closed, at most `drain_timeout`.
    pub drain_socket: Option<String>,
    /// `drain_timeout` (default 30 s).
    pub drain_timeout: Duration,
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
    /// The section's NAME, lower-cased as circus does (referenced as `$(circus.sockets.NAME)`, any case).
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

/// A watcher from `ringctl add` options, read exactly as a `[watcher:NAME]` section of the
/// running configuration would be (its `[env…]` sections, sockets and flapping defaults apply).
pub fn watcher_from_options(
    config: &Config,
    name: &str,
    options: &[(String, String)],
) -> Result<WatcherConfig, ConfigErrors> {
    let label = PathBuf::from(format!("<ringctl add {name}>"));
    let mut text = format!("[watcher:{name}]\n");
    for (k, v) in options {
        if k.contains(['\n', '=', ':']) || v.contains('\n') {
            return Err(ConfigError::new(&label, format!("option {k:?} cannot be written as one ini line")).into());
        }
        text.push_str(&format!("{k} = {v}\n"));
    }
    let ini = Ini::parse(&label, &text)?;
    let process_env = EnvVars::from_pairs(&process_environment());
    // The configuration file is read again only for its [env] sections; its own problems were
    // reported when it was loaded.
    let mut file_report = Report::default();
    let sections = read_files(&config.path, &process_env, &mut file_report);
    let (global_env, env_layers) = read_env_sections(&sections, &process_env, &mut file_report);
    let dir = main_dir(&config.path);
    let ctx = WatcherContext {
        main_dir: &dir,
        process_env: &process_env,
        global_env: &global_env,
        env_layers: &env_layers,
        sockets: &config.sockets,
        flapping: config.ringmaster.flapping,
    };
    let located: Vec<Located> = ini
        .sections
        .into_iter()
        .map(|section| Located {
            file: label.clone(),
            section,
        })
        .collect();
    let mut report = Report::default();
    let mut watchers = read_watchers(&located, &ctx, &mut report);
    if watchers.is_empty() {
        report.errors.push(ConfigError::new(&label, "no watcher"));
    }
    report.errors.into_result(()).map(|()| watchers.remove(0))
}

fn process_environment() -> Vec<(String, String)> {
    // Variables whose name or value is not UTF-8 cannot be represented here; they are left out
    // (of `copy_env` too) rather than mangled.
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Read `path` with ringmaster's own environment.
fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &process_environment())
}

/// Read `path` as if `env` were ringmaster's environment (for `copy_env`, `copy_path`,
/// `$(circus.env.X)` and `$NAME`), so that tests need not touch the process environment.
fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
    let process_env = EnvVars::from_pairs(env);
    let main_dir = main_dir(path);
    let mut report = Report::default();

    let sections = read_files(path, &process_env, &mut report);
    check_section_names(&sections, &mut report);
    let (global_env, env_layers) = read_env_sections(&sections, &process_env, &mut report);
    let circus = read_circus(&sections, &global_env, &main_dir, &mut report);
    let ringmaster = read_ringmaster(&sections, &global_env, &main_dir, &circus.control_socket, &mut report);
    let sockets = read_sockets(&sections, &global_env, &main_dir, &mut report);
    let ctx = WatcherContext {
        main_dir: &main_dir,
        process_env: &process_env,
        global_env: &global_env,
        env_layers: &env_layers,
        sockets: &sockets,
        flapping: ringmaster.flapping,
    };
    let watchers = read_watchers(&sections, &ctx, &mut report);
    warn_unmatched_env_sections(&env_layers, &watchers, &mut report);

    let Report { errors, warnings } = report;
    errors.into_result(Config {
        path: path.to_path_buf(),
        circus,
        ringmaster,
        watchers,
        sockets,
        warnings,
    })
}

/// The main file's directory, absolute: relative paths in the config (stream files, `state_file`,
/// unix sockets, `ipc://` endpoints) are taken from there, not from ringmaster's working directory.
fn main_dir(path: &Path) -> PathBuf {
    std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `p` as is when absolute, else under `dir`.
fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// `Some(trimmed)` unless empty.
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// `head` stripped from the start of `s`, ASCII case-insensitively.
fn strip_prefix_ci<'s>(s: &'s str, head: &str) -> Option<&'s str> {
    let start = s.get(..head.len())?;
    start.eq_ignore_ascii_case(head).then(|| &s[head.len()..])
}

// ---------------------------------------------------------------------------------------------
// Files and includes
// ---------------------------------------------------------------------------------------------

/// A section and the file it was read from.
struct Located {
    file: PathBuf,
    section: Section,
}

/// Where an `include` / `include_dir` value was written (errors about what it names point there).
#[derive(Clone)]
struct IncludeSite {
    file: PathBuf,
    key: String,
    line: usize,
}

impl IncludeSite {
    fn problem(&self, message: String) -> ConfigError {
        ConfigError::new(&self.file, message)
            .in_section("circus")
            .with_key(&self.key)
            .at_line(self.line)
    }
}

/// Reads the main file and, depth first, what its `[circus]` section includes.
struct FileReader<'a> {
    process_env: &'a EnvVars,
    report: &'a mut Report,
    sections: Vec<Located>,
    /// Canonical paths of the files being read, outermost first (the include-cycle guard).
    reading: Vec<PathBuf>,
    /// Canonical paths of every file read so far.
    done: HashSet<PathBuf>,
}

/// Every section of `path` and of the files it includes: a file's own sections first, then those
/// of each included file (recursively) in include order.
fn read_files(path: &Path, process_env: &EnvVars, report: &mut Report) -> Vec<Located> {
    let mut reader = FileReader {
        process_env,
        report,
        sections: Vec::new(),
        reading: Vec::new(),
        done: HashSet::new(),
    };
    reader.read(path, None);
    reader.sections
}

impl FileReader<'_> {
    fn read(&mut self, path: &Path, site: Option<&IncludeSite>) {
        let id = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(pos) = self.reading.iter().position(|p| *p == id) {
            let chain: Vec<String> = self.reading[pos..]
                .iter()
                .chain([&id])
                .map(|p| p.display().to_string())
                .collect();
            let message = format!("include cycle: {}", chain.join(" -> "));
            let err = match site {
                Some(site) => site.problem(message),
                None => ConfigError::new(path, message),
            };
            self.report.errors.push(err);
            return;
        }
        if !self.done.insert(id.clone()) {
            if let Some(site) = site {
                let message = format!("{} is already included; read only once", path.display());
                self.report.warnings.push(site.problem(message));
            }
            return;
        }
        let ini = match Ini::load(path) {
            Ok(ini) => ini,
            Err(errors) => {
                self.report.errors.extend(errors);
                return;
            }
        };
        let includes = self.includes_of(&ini);
        self.sections.extend(ini.sections.into_iter().map(|section| Located {
            file: path.to_path_buf(),
            section,
        }));
        self.reading.push(id);
        for (file, site) in includes {
            self.read(&file, Some(&site));
        }
        self.reading.pop();
    }

    /// The files named by `include` (space- or comma-separated globs) and `include_dir`
    /// (directories of `*.ini`) in `ini`'s `[circus]` section, relative to `ini`'s directory;
    /// each glob's matches sorted. `$(circus.env.X)` is expanded from ringmaster's environment
    /// only, as circus does (`[env]` is not known yet).
    fn includes_of(&mut self, ini: &Ini) -> Vec<(PathBuf, IncludeSite)> {
        let Some(circus) = ini.section("circus") else {
            return Vec::new();
        };
        let dir = ini.path.parent().unwrap_or(Path::new(""));
        let mut found = Vec::new();
        for (key, is_dir) in [("include", false), ("include_dir", true)] {
            let Some(entry) = circus.get(key) else {
                continue;
            };
            let site = IncludeSite {
                file: ini.path.clone(),
                key: entry.key.clone(),
                line: entry.line,
            };
            let Expanded { value, unknown } = expand_circus_env(&entry.value, self.process_env);
            for var in unknown {
                self.report.errors.push(site.problem(format!(
                    "$(circus.env.{var}): no such variable in ringmaster's environment (include paths do not see [env])"
                )));
            }
            for item in value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
            {
                let pattern = if is_dir {
                    format!("{}/*.ini", item.trim_end_matches('/'))
                } else {
                    item.to_string()
                };
                let paths = self.glob(dir, &pattern, &site);
                if paths.is_empty() {
                    let what = if is_dir { "directory" } else { "pattern" };
                    self.report.warnings.push(site.problem(format!(
                        "include {what} {item:?} matches no file (paths are relative to {})",
                        if dir.as_os_str().is_empty() { Path::new(".") } else { dir }.display()
                    )));
                }
                found.extend(paths.into_iter().map(|p| (p, site.clone())));
            }
        }
        found
    }

    /// The files matching `pattern` (relative to `dir`), sorted.
    fn glob(&mut self, dir: &Path, pattern: &str, site: &IncludeSite) -> Vec<PathBuf> {
        let full = if Path::new(pattern).is_absolute() || dir.as_os_str().is_empty() {
            pattern.to_string()
        } else {
            format!("{}/{pattern}", glob::Pattern::escape(&dir.to_string_lossy()))
        };
        match glob::glob(&full) {
            Ok(paths) => {
                let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
                files.sort();
                files
            }
            Err(e) => {
                self.report
                    .errors
                    .push(site.problem(format!("invalid include pattern {pattern:?}: {e}")));
                Vec::new()
            }
        }
    }
}

/// Unknown sections are errors; `[plugin:…]` sections get one warning each.
fn check_section_names(sections: &[Located], report: &mut Report) {
    for loc in sections {
        let name = loc.section.name.as_str();
        let known = ["circus", "ringmaster", "env"].contains(&name)
            || ["env:", "watcher:", "socket:"].iter().any(|p| name.starts_with(p));
        if known {
            continue;
        }
        let at = |message: &str| {
            ConfigError::new(&loc.file, message)
                .in_section(name)
                .at_line(loc.section.line)
        };
        if name.starts_with("plugin:") {
            report.warnings.push(at(
                "circus plugins are not run; section ignored (crash-loop detection and memory limits are built \
                 in: see the flapping.* and memory_limit watcher keys)",
            ));
        } else {
            report.errors.push(at(
                "unknown section (expected circus, ringmaster, env, env:NAMES, watcher:NAME, socket:NAME or \
                 plugin:NAME)",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------------------------

/// Environment variables in order, without duplicate names. Setting an existing name replaces
/// its value in place (the variable keeps its first position), so the order of a watcher's
/// environment stays that of ringmaster's own followed by the new names in config order.
#[derive(Debug, Clone, Default)]
struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut vars = Self::default();
        for (k, v) in pairs {
            vars.set(k, v.clone());
        }
        vars
    }

    /// The value of `name`, exactly.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name` as `$(circus.env.NAME)` finds it: exactly, else ignoring ASCII case
    /// (circus lower-cases both sides).
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }

    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
}

/// One `$(circus.NAME)` or `((circus.NAME))` in a value: its byte range and NAME.
struct CircusRef<'v> {
    range: std::ops::Range<usize>,
    name: &'v str,
}

/// The circus references in `value`, as circus's `replace_gnu_args` finds them: the `circus.`
/// prefix in any case, NAME made of word characters, dots and dashes.
fn circus_refs(value: &str) -> Vec<CircusRef<'_>> {
    let bytes = value.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let close = match &bytes[i..i + 2] {
            b"$(" => ")",
            b"((" => "))",
            _ => {
                i += 1;
                continue;
            }
        };
        let start = i + 2;
        if let Some(len) = value[start..].find(close) {
            if let Some(name) = strip_prefix_ci(&value[start..start + len], "circus.") {
                let is_name = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-');
                if is_name {
                    let end = start + len + close.len();
                    refs.push(CircusRef { range: i..end, name });
                    i = end;
                    continue;
                }
            }
        }
        i += 1;
    }
    refs
}

/// A value with its `$(circus.env.X)` expanded, and the Xs that were not found (left as written).
struct Expanded {
    value: String,
    unknown: Vec<String>,
}

/// Expand `$(circus.env.X)` from `vars`; other circus references (`$(circus.wid)`,
/// `$(circus.sockets.NAME)`) are left for spawn time.
fn expand_circus_env(value: &str, vars: &EnvVars) -> Expanded {
    let mut out = String::with_capacity(value.len());
    let mut unknown = Vec::new();
    let mut last = 0;
    for r in circus_refs(value) {
        let Some(var) = strip_prefix_ci(r.name, "env.") else {
            continue;
        };
        out.push_str(&value[last..r.range.start]);
        match vars.lookup(var) {
            Some(v) => out.push_str(v),
            None => {
                unknown.push(var.to_string());
                out.push_str(&value[r.range.clone()]);
            }
        }
        last = r.range.end;
    }
    out.push_str(&value[last..]);
    Expanded { value: out, unknown }
}

/// The NAMEs of the `$(circus.sockets.NAME)` in `value`.
fn socket_refs(value: &str) -> Vec<&str> {
    circus_refs(value)
        .into_iter()
        .filter_map(|r| strip_prefix_ci(r.name, "sockets."))
        .collect()
}

/// A copy of `section` with `$(circus.env.X)` expanded in every value from `vars`; an unknown X is
/// an error at its key.
fn expand_section(file: &Path, section: &Section, vars: &EnvVars, report: &mut Report) -> Section {
    let mut out = section.clone();
    for e in &mut out.entries {
        e.value = expand_value(file, &section.name, e, vars, report);
    }
    out
}

/// `e`'s value with `$(circus.env.X)` expanded from `vars`; an unknown X is an error at its key.
fn expand_value(file: &Path, section: &str, e: &Entry, vars: &EnvVars, report: &mut Report) -> String {
    let expanded = expand_circus_env(&e.value, vars);
    for var in &expanded.unknown {
        report.errors.push(
            ConfigError::new(
                file,
                format!("$(circus.env.{var}): no such variable in ringmaster's environment or [env]"),
            )
            .in_section(section)
            .with_key(&e.key)
            .at_line(e.line),
        );
    }
    expanded.value
}

/// Expand bash-style `$NAME` and `${NAME}` in an `[env…]` value: from `first` (the variables
/// resolved so far), else from `second` (ringmaster's environment, as circus looks there too so
/// that `PATH = $PATH:/x` works without `copy_env`). Unknown names become empty, as in a shell,
/// and are returned. A `$` not followed by a name stays as written.
fn expand_dollar(value: &str, first: &EnvVars, second: &EnvVars) -> (String, Vec<String>) {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(value.len());
    let mut unknown = Vec::new();
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) if end > 0 && inner[..end].chars().all(is_name_char) => (&inner[..end], end + 2),
                _ => ("", 0),
            },
            None => {
                let end = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            out.push('$');
            rest = after;
            continue;
        }
        match first.get(name).or_else(|| second.get(name)) {
            Some(v) => out.push_str(v),
            None => unknown.push(name.to_string()),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    (out, unknown)
}

// ---------------------------------------------------------------------------------------------
// [env] and [env:…]
// ---------------------------------------------------------------------------------------------

/// An `[env]` or `[env:PATTERNS]` section, `$(circus.env.X)` already expanded, `$NAME` not yet
/// (that depends on the watcher's `copy_env`).
struct EnvLayer {
    file: PathBuf,
    section: Section,
    /// `None` for `[env]` (every watcher); else fnmatch-style watcher-name patterns.
    patterns: Option<Vec<glob::Pattern>>,
}

impl EnvLayer {
    fn applies_to(&self, watcher: &str) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(watcher)),
        }
    }
}

/// The environment `$(circus.env.X)` reads outside watchers (ringmaster's own merged with
/// `[env]`), and every env section as a layer: all `[env]` first, then `[env:…]` in file order.
fn read_env_sections(sections: &[Located], process_env: &EnvVars, report: &mut Report) -> (EnvVars, Vec<EnvLayer>) {
    let mut global = process_env.clone();
    let mut layers = Vec::new();
    let no_vars = EnvVars::default();
    for loc in sections.iter().filter(|l| l.section.name == "env") {
        let mut section = loc.section.clone();
        for e in &mut section.entries {
            // An [env] value may use the [env] entries above it.
            e.value = expand_value(&loc.file, &loc.section.name, e, &global, report);
            let (full, _) = expand_dollar(&e.value, &global, &no_vars);
            global.set(&e.key, full);
        }
        layers.push(EnvLayer {
            file: loc.file.clone(),
            section,
            patterns: None,
        });
    }
    for loc in sections {
        let Some(list) = loc.section.name.strip_prefix("env:") else {
            continue;
        };
        let mut patterns = Vec::new();
        for item in list.split(',').map(str::trim) {
            let problem = match glob::Pattern::new(item) {
                _ if item.is_empty() => "empty watcher name pattern".to_string(),
                Ok(p) => {
                    patterns.push(p);
                    continue;
                }
                Err(e) => format!("invalid watcher name pattern {item:?}: {e}"),
            };
            report.errors.push(
                ConfigError::new(&loc.file, problem)
                    .in_section(&loc.section.name)
                    .at_line(loc.section.line),
            );
        }
        layers.push(EnvLayer {
            file: loc.file.clone(),
            section: expand_section(&loc.file, &loc.section, &global, report),
            patterns: Some(patterns),
        });
    }
    (global, layers)
}

/// A watcher's environment: ringmaster's own with `copy_env` (only PATH with `copy_path`), then
/// `[env]`, then each matching `[env:…]` in file order; later values replace earlier ones in place.
fn watcher_env(name: &str, copy_env: bool, copy_path: bool, ctx: &WatcherContext<'_>, report: &mut Report) -> EnvVars {
    let mut env = if copy_env {
        ctx.process_env.clone()
    } else {
        let mut env = EnvVars::default();
        if let (true, Some(path)) = (copy_path, ctx.process_env.get("PATH")) {
            env.set("PATH", path.to_string());
        }
        env
    };
    for layer in ctx.env_layers.iter().filter(|l| l.applies_to(name)) {
        for e in &layer.section.entries {
            let (value, unknown) = expand_dollar(&e.value, &env, ctx.process_env);
            for var in unknown {
                let warning = ConfigError::new(&layer.file, format!("${var} is not set; replaced by nothing"))
                    .in_section(&layer.section.name)
                    .with_key(&e.key)
                    .at_line(e.line);
                if !report.warnings.contains(&warning) {
                    report.warnings.push(warning);
                }
            }
            env.set(&e.key, value);
        }
    }
    env
}

/// An `[env:…]` section that applies to no watcher is probably a typo.
fn warn_unmatched_env_sections(layers: &[EnvLayer], watchers: &[WatcherConfig], report: &mut Report) {
    for layer in layers {
        if layer.patterns.is_some() && !watchers.iter().any(|w| layer.applies_to(&w.name)) {
            report.warnings.push(
                ConfigError::new(&layer.file, "matches no watcher")
                    .in_section(&layer.section.name)
                    .at_line(layer.section.line),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// [circus]
// ---------------------------------------------------------------------------------------------

/// `[circus]` keys ringmaster accepts without acting on them.
const IGNORED_CIRCUS_KEYS: &[(&str, &str)] = &[
    (
        "pubsub_endpoint",
        "events are published to Redis (ringmaster.events; see [ringmaster] redis_url)",
    ),
    (
        "stats_endpoint",
        "metrics are served on /metrics (see [ringmaster] http)",
    ),
    ("multicast_endpoint", "there is no cluster discovery"),
    ("endpoint_owner", "the control socket belongs to ringmaster's user"),
    ("httpd_host", "there is no circus-web; see [ringmaster] http"),
    ("httpd_port", "there is no circus-web; see [ringmaster] http"),
    ("loglevel", "set the IRONWORK_LOG environment variable instead"),
    ("logoutput", "ringmaster logs to stderr"),
    (
        "loggerconfig",
        "ringmaster logs to stderr; set IRONWORK_LOG for the level",
    ),
    ("pidfile", "ringmaster writes no pid file"),
    ("umask", "ringmaster keeps the umask it was started with"),
    ("stream_backend", "ringmaster reads children's output itself"),
    ("fqdn_prefix", "there is no cluster"),
    ("papa_endpoint", "there is no papa process keeper"),
];

/// `[circus]` switches that warn only when on (off is what ringmaster does anyway).
const IGNORED_CIRCUS_SWITCHES: &[(&str, &str)] = &[
    ("statsd", "metrics are served on /metrics (see [ringmaster] http)"),
    ("httpd", "there is no circus-web; see [ringmaster] http"),
    ("debug", "set IRONWORK_LOG=debug instead"),
    ("debug_gc", "set IRONWORK_LOG=debug instead"),
];

/// Settings come from the first `[circus]` section (the main file's, normally); later ones (in
/// included files) may only hold `include` / `include_dir`, anything else is ignored with a warning.
fn read_circus(sections: &[Located], global_env: &EnvVars, main_dir: &Path, report: &mut Report) -> CircusSettings {
    let default_socket = main_dir.join("ringmaster.sock");
    let mut circus_sections = sections.iter().filter(|l| l.section.name == "circus");
    let Some(loc) = circus_sections.next() else {
        return CircusSettings {
            control_socket: default_socket,
            check_delay: Duration::from_secs(5),
            warmup_delay: Duration::ZERO,
        };
    };
    for other in circus_sections {
        for e in &other.section.entries {
            if !is_include_key(&e.key) {
                report.warnings.push(
                    ConfigError::new(
                        &other.file,
                        format!(
                            "ignored: [circus] settings are read from the first [circus] section ({}:{})",
                            loc.file.display(),
                            loc.section.line
                        ),
                    )
                    .in_section("circus")
                    .with_key(&e.key)
                    .at_line(e.line),
                );
            }
        }
    }

    // `include` and `include_dir` were followed (and checked) while reading the files.
    let mut own = loc.section.clone();
    own.entries.retain(|e| !is_include_key(&e.key));
    let section = expand_section(&loc.file, &own, global_env, report);
    let mut notes = Notes::new(&loc.file, "circus");
    let mut r = report.section(&loc.file, &section);
    let control_socket = match section.get("endpoint") {
        None => default_socket,
        Some(e) => {
            r.str("endpoint");
            let value = e.value.trim();
            if let Some(path) = strip_prefix_ci(value, "ipc://").filter(|p| !p.is_empty()) {
                resolve(main_dir, path)
            } else if strip_prefix_ci(value, "tcp://").is_some() {
                notes.warn(
                    e,
                    format!(
                        "ringmaster serves its control API on a unix socket only; using {}",
                        default_socket.display()
                    ),
                );
                default_socket
            } else {
                r.error(
                    "endpoint",
                    format!("expected ipc:///path/to/socket or tcp://host:port (found {value:?})"),
                );
                default_socket
            }
        }
    };
    let check_delay = r.duration("check_delay", Duration::from_secs(5));
    let warmup_delay = r.duration("warmup_delay", Duration::ZERO);
    for (key, why) in IGNORED_CIRCUS_KEYS {
        r.ignored(key, why);
    }
    for (key, why) in IGNORED_CIRCUS_SWITCHES {
        match section.value(key).map(parse_bool) {
            Some(Ok(false)) => {
                r.str(key);
            }
            _ => r.ignored(key, why),
        }
    }
    r.finish(UnknownKeys::Warn);
    report.warnings.extend(notes.list);
    CircusSettings {
        control_socket,
        check_delay,
        warmup_delay,
    }
}

fn is_include_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("include") || key.eq_ignore_ascii_case("include_dir")
}

// ---------------------------------------------------------------------------------------------
// [ringmaster]
// ---------------------------------------------------------------------------------------------

/// `[ringmaster]` is ours: unknown keys and a second `[ringmaster]` section are errors.
fn read_ringmaster(
    sections: &[Located],
    global_env: &EnvVars,
    main_dir: &Path,
    control_socket: &Path,
    report: &mut Report,
) -> RingmasterSettings {
    let mut default_state = control_socket.as_os_str().to_owned();
    default_state.push(".pids");
    let mut settings = RingmasterSettings {
        redis_url: None,
        shared_redis_url: None,
        trash_dir: None,
        http: None,
        console: None,
        console_token_file: PathBuf::from(&default_state).with_file_name("console.token"),
        state_file: PathBuf::from(default_state),
        memory_check_interval: Duration::from_secs(1),
        flapping: Flapping::default(),
        orphan_grace: Duration::from_secs(5),
    };
    let mut found = sections.iter().filter(|l| l.section.name == "ringmaster");
    let Some(loc) = found.next() else {
        return settings;
    };
    for dup in found {
        report.errors.push(
            ConfigError::new(
                &dup.file,
                format!(
                    "duplicate section (first at {}:{})",
                    loc.file.display(),
                    loc.section.line
                ),
            )
            .in_section("ringmaster")
            .at_line(dup.section.line),
        );
    }
    let section = expand_section(&loc.file, &loc.section, global_env, report);
    let mut r = report.section(&loc.file, &section);
    settings.redis_url = r.parse_with("redis_url", None, parse_redis_url);
    settings.shared_redis_url = r.parse_with("shared_redis_url", None, parse_redis_url);
    settings.trash_dir = non_empty(r.str("trash_dir")).map(|d| resolve(main_dir, d));
    settings.http = r.parse_with("http", None, parse_http);
    settings.console = r.parse_with("console", None, parse_http);
    if let Some(state_file) = non_empty(r.str("state_file")) {
        settings.state_file = resolve(main_dir, state_file);
    }
    settings.console_token_file = match non_empty(r.str("console_token_file")) {
        Some(f) => resolve(main_dir, f),
        None => settings.state_file.with_file_name("console.token"),
    };
    settings.memory_check_interval = r.parse_with(
        "memory_check_interval",
        settings.memory_check_interval,
        parse_positive_duration,
    );
    settings.orphan_grace = r.duration("orphan_grace", settings.orphan_grace);
    settings.flapping = read_flapping(&mut r, settings.flapping);
    r.finish(UnknownKeys::Error);
    settings
}

/// `flapping.*` keys over `defaults`.
fn read_flapping(r: &mut SectionReader<'_>, defaults: Flapping) -> Flapping {
    Flapping {
        attempts: r.parse_with("flapping.attempts", defaults.attempts, |s| {
            match s.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err("expected a positive integer".into()),
            }
        }),
        window: r.duration("flapping.window", defaults.window),
        retry_in: r.duration("flapping.retry_in", defaults.retry_in),
        max_retry: r.parse_with("flapping.max_retry", defaults.max_retry, parse_max_retry),
    }
}

/// A Redis URL the client library accepts (or a bare socket path); empty means none.
fn parse_redis_url(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    ironwork_core::connection::Endpoint::parse(s)
        .map(|_| Some(s.to_string()))
        .map_err(|e| format!("invalid redis url: {e}"))
}

/// `host:port` with an IP address (or `localhost`), or a bare port on 127.0.0.1; empty means none.
fn parse_http(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let port = strip_prefix_ci(s, "localhost:").unwrap_or(s);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    }
    s.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| "expected a port or ip:port, like 9101 or 127.0.0.1:9101".into())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

// ---------------------------------------------------------------------------------------------
// [socket:NAME]
// ---------------------------------------------------------------------------------------------

/// `family` values.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    Unix,
    Inet,
}

fn read_sockets(sections: &[Located], global_env: &EnvVars, main_dir: &Path, report: &mut Report) -> Vec<SocketConfig> {
    let mut sockets: Vec<SocketConfig> = Vec::new();
    let mut first_seen: Vec<(String, &Located)> = Vec::new();
    for loc in sections {
        let Some(raw_name) = loc.section.name.strip_prefix("socket:") else {
            continue;
        };
        // Circus lower-cases socket names; `$(circus.sockets.NAME)` is matched the same way.
        let name = raw_name.trim().to_lowercase();
        let at_section = |message: String| {
            ConfigError::new(&loc.file, message)
                .in_section(&loc.section.name)
                .at_line(loc.section.line)
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            report
                .errors
                .push(at_section("a socket name must be non-empty, without spaces".into()));
        }
        if let Some((_, first)) = first_seen.iter().find(|(n, _)| *n == name) {
            report.errors.push(at_section(format!(
                "duplicate socket {name:?} (first at {}:{})",
                first.file.display(),
                first.section.line
            )));
        } else {
            first_seen.push((name.clone(), loc));
        }
        let section = expand_section(&loc.file, &loc.section, global_env, report);
        sockets.push(read_socket(report, &loc.file, &section, name, main_dir));
    }
    sockets
}

fn read_socket(report: &mut Report, file: &Path, section: &Section, name: String, main_dir: &Path) -> SocketConfig {
    let mut r = report.section(file, section);
    let host = non_empty(r.str("host")).unwrap_or("localhost").to_string();
    let port = r.parse("port", 8080u16);
    let path = non_empty(r.str("path"));
    let family = r.parse_with("family", None, |s| match s.trim().to_ascii_uppercase().as_str() {
        "AF_UNIX" => Ok(Some(Family::Unix)),
        "AF_INET" | "AF_INET6" => Ok(Some(Family::Inet)),
        _ => Err("expected AF_UNIX, AF_INET or AF_INET6".into()),
    });
    r.parse_with("type", (), |s| {
        if s.trim().eq_ignore_ascii_case("SOCK_STREAM") {
            Ok(())
        } else {
            Err("only SOCK_STREAM sockets are supported".into())
        }
    });
    let address = match (family, path) {
        (Some(Family::Inet), Some(_)) => {
            r.error("path", "a path makes a unix socket, but family is not AF_UNIX");
            SocketAddress::Tcp { host, port }
        }
        (_, Some(path)) => SocketAddress::Unix(resolve(main_dir, path)),
        (Some(Family::Unix), None) => {
            r.error("path", "family = AF_UNIX needs a path");
            SocketAddress::Unix(PathBuf::new())
        }
        (_, None) => SocketAddress::Tcp { host, port },
    };
    let so_reuseport = r.bool("so_reuseport", false);
    let umask = r.parse_with("umask", None, parse_umask);
    let replace = r.bool("replace", false);
    let backlog = r.parse_with("backlog", 2048, |s| match s.trim().parse::<i32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive integer".into()),
    });
    r.ignored("interface", "sockets are not bound to an interface");
    r.ignored("blocking", "sockets are handed to children as circus does by default");
    r.finish(UnknownKeys::Warn);
    SocketConfig {
        name,
        address,
        so_reuseport,
        umask,
        replace,
        backlog,
    }
}

/// An octal umask: `077`, `0077` or `0o077`; empty means none.
fn parse_umask(s: &str) -> Result<Option<u32>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let digits = strip_prefix_ci(s, "0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(Some(m)),
        _ => Err("expected an octal umask like 077".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// [watcher:NAME]
// ---------------------------------------------------------------------------------------------

/// What every watcher section is read against.
struct WatcherContext<'a> {
    main_dir: &'a Path,
    process_env: &'a EnvVars,
    global_env: &'a EnvVars,
    env_layers: &'a [EnvLayer],
    sockets: &'a [SocketConfig],
    flapping: Flapping,
}

/// Watcher keys circus (or Metwork on top of it) knows that ringmaster accepts without acting on
/// them. Any other unknown watcher key is a warning too: circus keeps them freeform for plugins.
const IGNORED_WATCHER_KEYS: &[(&str, &str)] = &[
    ("async_kill", "stopping one watcher never blocks the others"),
    ("virtualenv", "set PATH and PYTHONPATH in an [env:NAME] section instead"),
    (
        "virtualenv_py_ver",
        "set PATH and PYTHONPATH in an [env:NAME] section instead",
    ),
    ("send_hup", "a reload restarts the processes"),
    ("on_demand", "processes start with their watcher"),
    (
        "stdin_socket",
        "stdin is /dev/null, or inherited with close_child_stdin = false",
    ),
    (
        "check_flapping",
        "crash-loop detection is built in; tune it with flapping.* keys",
    ),
    ("use_papa", "there is no papa process keeper"),
    ("stream_backend", "ringmaster reads children's output itself"),
    ("shell_args", "shell = true runs /bin/sh -c"),
    ("executable", "the program is the first word of cmd"),
    (
        "autorestart_kill_signal",
        "Metwork autorestart plugin option; circus plugins are not run",
    ),
    ("mfdata_plugin", "Metwork plugin metadata, not used by ringmaster"),
    ("mfserv_plugin", "Metwork plugin metadata, not used by ringmaster"),
];

fn read_watchers(sections: &[Located], ctx: &WatcherContext<'_>, report: &mut Report) -> Vec<WatcherConfig> {
    let mut watchers = Vec::new();
    let mut first_seen: Vec<(String, &Located)> = Vec::new();
    for loc in sections {
        let Some(raw_name) = loc.section.name.strip_prefix("watcher:") else {
            continue;
        };
        let name = raw_name.trim();
        let at_section = |message: String| {
            ConfigError::new(&loc.file, message)
                .in_section(&loc.section.name)
                .at_line(loc.section.line)
        };
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            report.errors.push(at_section(
                "a watcher name must be non-empty, without spaces or '/'".into(),
            ));
        }
        // Circus finds watchers by lower-cased name, so names differing only in case collide.
        let key = name.to_lowercase();
        if let Some((_, first)) = first_seen.iter().find(|(n, _)| *n == key) {
            report.errors.push(at_section(format!(
                "duplicate watcher {name:?} (first at {}:{})",
                first.file.display(),
                first.section.line
            )));
        } else {
            first_seen.push((key, loc));
        }

        // The environment decides how `$(circus.env.X)` expands in the other keys, so copy_env and
        // copy_path are looked at first (the reader validates them below).
        let switch = |key: &str| {
            loc.section
                .value(key)
                .and_then(|v| parse_bool(&expand_circus_env(v, ctx.global_env).value).ok())
                .unwrap_or(false)
        };
        let env = watcher_env(name, switch("copy_env"), switch("copy_path"), ctx, report);
        // As circus: ringmaster's environment and [env], overridden by the watcher's own.
        let mut vars = ctx.global_env.clone();
        for (k, v) in &env.0 {
            vars.set(k, v.clone());
        }
        let section = expand_section(&loc.file, &loc.section, &vars, report);
        watchers.push(read_watcher(report, &loc.file, &section, name, env, ctx));
    }
    watchers
}

fn read_watcher(
    report: &mut Report,
    file: &Path,
    section: &Section,
    name: &str,
    env: EnvVars,
    ctx: &WatcherContext<'_>,
) -> WatcherConfig {
    let mut notes = Notes::new(file, &section.name);
    let mut r = report.section(file, section);
    let cmd = r.required("cmd").unwrap_or_default().to_string();
    let args = r.str("args").unwrap_or_default().to_string();
    let numprocesses = r.parse_with("numprocesses", 1, |s| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| "expected a non-negative integer".to_string())
    });
    let singleton = r.bool("singleton", false);
    if singleton && numprocesses > 1 {
        r.error(
            "singleton",
            format!("a singleton watcher runs at most one process, but numprocesses = {numprocesses}"),
        );
    }
    let use_sockets = r.bool("use_sockets", false);
    check_socket_refs(&mut r, section, use_sockets, ctx.sockets);
    let close_child_stdout = r.bool("close_child_stdout", false);
    let close_child_stderr = r.bool("close_child_stderr", false);

    let watcher = WatcherConfig {
        name: name.to_string(),
        cmd,
        args,
        shell: r.bool("shell", false),
        working_dir: non_empty(r.str("working_dir")).map(PathBuf::from),
        uid: non_empty(r.str("uid")).map(str::to_string),
        gid: non_empty(r.str("gid")).map(str::to_string),
        numprocesses,
        warmup_delay: r.duration("warmup_delay", Duration::ZERO),
        autostart: r.bool("autostart", true),
        restart: read_restart(&mut r),
        exitcodes: r.parse_with("exitcodes", vec![0], parse_exitcodes),
        max_retry: r.parse_with("max_retry", 5, parse_max_retry),
        startsecs: r.duration("startsecs", Duration::ZERO),
        priority: r.parse("priority", 0i64),
        singleton,
        env: env.0,
        copy_env: r.bool("copy_env", false),
        copy_path: r.bool("copy_path", false),
        stop_signal: r.parse_with("stop_signal", libc::SIGTERM, parse_signal),
        stop_children: r.bool("stop_children", false),
        graceful_timeout: r.duration("graceful_timeout", Duration::from_secs(30)),
        max_age: r.duration("max_age", Duration::ZERO),
        max_age_variance: r.duration("max_age_variance", Duration::from_secs(30)),
        rlimits: read_rlimits(&mut r),
        use_sockets,
        close_child_stdin: r.bool("close_child_stdin", true),
        stdout: read_stream(&mut r, "stdout", close_child_stdout, ctx.main_dir, &mut notes),
        stderr: read_stream(&mut r, "stderr", close_child_stderr, ctx.main_dir, &mut notes),
        hooks: read_hooks(&mut r, &mut notes),
        memory_limit: r.parse_with("memory_limit", None, parse_memory_limit),
        flapping: read_flapping(&mut r, ctx.flapping),
        drain_socket: r.parse_with("drain_socket", None, |v| match v.trim() {
            "" => Ok(None),
            v if v.starts_with('/') => Ok(Some(v.to_string())),
            _ => Err("expected an absolute path".into()),
        }),
        drain_timeout: r.duration("drain_timeout", Duration::from_secs(30)),
    };
    for (key, why) in IGNORED_WATCHER_KEYS {
        r.ignored(key, why);
    }
    r.finish(UnknownKeys::Warn);
    report.warnings.extend(notes.list);
    watcher
}

/// Every `$(circus.sockets.NAME)` in cmd and args names a `[socket:NAME]`, and the watcher has
/// `use_sockets = true` (the reference is expanded at spawn time to the inherited fd).
fn check_socket_refs(r: &mut SectionReader<'_>, section: &Section, use_sockets: bool, sockets: &[SocketConfig]) {
    for key in ["cmd", "args"] {
        let Some(entry) = section.get(key) else {
            continue;
        };
        let mut needs_use_sockets = false;
        for name in socket_refs(&entry.value) {
            if sockets.iter().any(|s| s.name.eq_ignore_ascii_case(name)) {
                needs_use_sockets = true;
            } else {
                r.error(
                    key,
                    format!("$(circus.sockets.{name}) names no [socket:{name}] section"),
                );
            }
        }
        if needs_use_sockets && !use_sockets {
            r.error(key, "refers to $(circus.sockets.…) but use_sockets is not true");
        }
    }
}

/// `restart` when given, else `respawn`; both given and disagreeing is an error.
fn read_restart(r: &mut SectionReader<'_>) -> RestartPolicy {
    let respawn_given = r.str("respawn").map(|v| parse_bool(v).is_ok()).unwrap_or(false);
    let respawn = r.bool("respawn", true);
    let restart = r.parse_with("restart", None, |s| match s.trim().to_ascii_lowercase().as_str() {
        "always" => Ok(Some(RestartPolicy::Always)),
        "on-failure" | "on_failure" => Ok(Some(RestartPolicy::OnFailure)),
        "never" => Ok(Some(RestartPolicy::Never)),
        _ => Err("expected always, on-failure or never".into()),
    });
    match restart {
        None if respawn => RestartPolicy::Always,
        None => RestartPolicy::Never,
        Some(policy) => {
            let restarts = policy != RestartPolicy::Never;
            if respawn_given && respawn != restarts {
                r.error("restart", format!("contradicts respawn = {respawn}"));
            }
            policy
        }
    }
}

/// Comma-separated exit codes (0-255).
fn parse_exitcodes(s: &str) -> Result<Vec<i32>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c.parse::<i32>() {
            Ok(n) if (0..=255).contains(&n) => Ok(n),
            _ => Err(format!("expected comma-separated exit codes (0-255), not {c:?}")),
        })
        .collect()
}

/// A retry count: -1 (forever) or more.
fn parse_max_retry(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err("expected a count, or -1 for forever".into()),
    }
}

/// A signal as circus's `to_signum` takes it: `TERM`, `SIGTERM`, `sigterm` or `15`.
/// A signal by name (`TERM`, `SIGTERM`, any case) or number, as `stop_signal` accepts it.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| "unknown signal number".into());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| "unknown signal (use a name like TERM or SIGINT, or a number)".into())
}

/// A `memory_limit`: a size (`512M`); empty means none.
pub fn parse_memory_limit(s: &str) -> Result<Option<u64>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    match parse_bytes(s)? {
        0 => Err("must be more than zero (leave the key out for no limit)".into()),
        n => Ok(Some(n)),
    }
}

/// `rlimit_<name>` keys.
fn read_rlimits(r: &mut SectionReader<'_>) -> Vec<(i32, Option<u64>)> {
    let mut limits = Vec::new();
    for (name, e) in r.prefixed("rlimit_") {
        let Some(resource) = rlimit_resource(name) else {
            r.error(
                &e.key,
                format!(
                    "unknown resource limit {name:?} (expected one of as, core, cpu, data, fsize, locks, memlock, \
                     msgqueue, nice, nofile, nproc, rss, rtprio, sigpending, stack)"
                ),
            );
            continue;
        };
        match parse_rlimit(&e.value) {
            Ok(limit) => limits.push((resource, limit)),
            Err(message) => r.error(&e.key, format!("{message} (found {:?})", e.value)),
        }
    }
    limits
}

/// The libc resource for an `rlimit_<name>` key.
fn rlimit_resource(name: &str) -> Option<i32> {
    let resource = match name.to_ascii_lowercase().as_str() {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(resource as i32)
}

/// A limit: an integer, a float in integer value as Metwork writes (`1e9`), or empty / -1 /
/// `unlimited` / `infinity` for no limit.
fn parse_rlimit(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    let unlimited = ["", "-1", "unlimited", "infinity"];
    if unlimited.iter().any(|u| s.eq_ignore_ascii_case(u)) {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Some(n));
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err("expected a non-negative integer like 1000 or 1e9, or nothing for unlimited".into()),
    }
}

/// Options of `stdout_stream.*` / `stderr_stream.*`.
const STREAM_OPTIONS: &[&str] = &[
    "class",
    "filename",
    "max_bytes",
    "backup_count",
    "rotate_when",
    "rotate_interval",
    "time_format",
    "utc",
    "refresh_time",
];

/// Stream classes, by what they do here.
#[derive(Clone, Copy, PartialEq)]
enum StreamClass {
    /// `StdoutStream`, `FancyStdoutStream`: ringmaster's own output.
    Console,
    /// `FileStream`: rotated by size.
    Sized,
    /// `WatchedFileStream`: never rotated by ringmaster.
    Watched,
    /// `TimedRotatingFileStream`: rotated by time.
    Timed,
}

impl StreamClass {
    fn of(class: &str) -> Option<Self> {
        match class.to_ascii_lowercase().as_str() {
            "stdoutstream" | "fancystdoutstream" => Some(Self::Console),
            "filestream" => Some(Self::Sized),
            "watchedfilestream" => Some(Self::Watched),
            "timedrotatingfilestream" => Some(Self::Timed),
            _ => None,
        }
    }

    /// Whether the class takes `option` (`utc` and `refresh_time` are accepted everywhere).
    fn takes(self, option: &str) -> bool {
        match option {
            "class" | "utc" | "refresh_time" => true,
            "filename" | "time_format" => self != Self::Console,
            "max_bytes" => self == Self::Sized,
            "backup_count" => matches!(self, Self::Sized | Self::Timed),
            "rotate_when" | "rotate_interval" => self == Self::Timed,
            _ => false,
        }
    }
}

/// `<which>_stream.*` (`which` is `stdout` or `stderr`). `StdoutStream` classes mean the child's
/// stream goes to ringmaster's own stream of the same kind.
fn read_stream(
    r: &mut SectionReader<'_>,
    which: &str,
    closed: bool,
    main_dir: &Path,
    notes: &mut Notes<'_>,
) -> StreamConfig {
    let prefix = format!("{which}_stream.");
    let key = |option: &str| format!("{prefix}{option}");
    let entries = r.prefixed(&prefix);
    if closed {
        for (_, e) in &entries {
            notes.warn(e, format!("ignored: close_child_{which} = true discards this output"));
        }
        return StreamConfig::Null;
    }
    if entries.is_empty() {
        return StreamConfig::Inherit;
    }
    for (option, e) in &entries {
        if !STREAM_OPTIONS.iter().any(|o| option.eq_ignore_ascii_case(o)) {
            r.error(
                &e.key,
                format!("unknown stream option (expected one of {})", STREAM_OPTIONS.join(", ")),
            );
        }
    }
    let find = |option: &str| {
        entries
            .iter()
            .find(|(o, _)| o.eq_ignore_ascii_case(option))
            .map(|(_, e)| *e)
    };
    let class_name = match find("class") {
        // `circus.stream.FileStream` and `FileStream` name the same class.
        Some(e) => e.value.trim().rsplit('.').next().unwrap_or_default().to_string(),
        None if find("filename").is_some() => "FileStream".to_string(),
        None => {
            r.error(&key("class"), "missing: give a class (FileStream, …) or a filename");
            return StreamConfig::Inherit;
        }
    };
    let Some(class) = StreamClass::of(&class_name) else {
        r.error(
            &key("class"),
            format!(
                "unknown stream class {class_name:?} (expected FileStream, WatchedFileStream, \
                 TimedRotatingFileStream, StdoutStream or FancyStdoutStream)"
            ),
        );
        return StreamConfig::Inherit;
    };
    for (option, e) in &entries {
        let option = option.to_ascii_lowercase();
        if STREAM_OPTIONS.contains(&option.as_str()) && !class.takes(&option) {
            notes.warn(e, format!("ignored: {class_name} has no {option} option"));
        }
    }
    // Accepted for compatibility: rotation here is by interval, and output is read as it comes.
    r.bool(&key("utc"), false);
    r.duration(&key("refresh_time"), Duration::ZERO);
    if class == StreamClass::Console {
        return StreamConfig::Inherit;
    }
    let Some(filename) = r.required(&key("filename")) else {
        return StreamConfig::Inherit;
    };
    let max_bytes = if class.takes("max_bytes") {
        r.bytes(&key("max_bytes"), 0)
    } else {
        0
    };
    let backup_count = if class.takes("backup_count") {
        r.parse(&key("backup_count"), 0u32)
    } else {
        0
    };
    let rotate_every = if class == StreamClass::Timed {
        let unit = r.parse_with(&key("rotate_when"), Duration::from_secs(3600), parse_rotate_when);
        let interval = r.parse_with(&key("rotate_interval"), 1u32, |s| match s.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err("expected a positive integer".into()),
        });
        Some(unit.checked_mul(interval).unwrap_or(Duration::MAX))
    } else {
        None
    };
    StreamConfig::File(FileStream {
        path: resolve(main_dir, filename.trim()),
        max_bytes,
        backup_count,
        rotate_every,
        time_format: non_empty(r.str(&key("time_format"))).map(str::to_string),
    })
}

/// The period of a `rotate_when` unit, as Python's TimedRotatingFileHandler (which circus uses)
/// spells it. `MIDNIGHT` is taken as every day and `W0`-`W6` as every week, counted from when
/// the stream is opened rather than aligned on midnight or on the weekday.
fn parse_rotate_when(s: &str) -> Result<Duration, String> {
    let secs = match s.trim().to_ascii_uppercase().as_str() {
        "S" => 1,
        "M" => 60,
        "H" => 3600,
        "D" | "MIDNIGHT" => 86_400,
        "W0" | "W1" | "W2" | "W3" | "W4" | "W5" | "W6" => 7 * 86_400,
        _ => return Err("expected S, M, H, D, MIDNIGHT or W0-W6".into()),
    };
    Ok(Duration::from_secs(secs))
}

/// Hook names circus has that ringmaster does not run.
const CIRCUS_ONLY_HOOKS: &[&str] = &[
    "before_spawn",
    "after_spawn",
    "before_signal",
    "after_signal",
    "before_reap",
    "after_reap",
    "extended_stats",
];

/// `hooks.*`: shell commands for the four hooks ringmaster runs; circus Python hooks and other
/// hook names are ignored with a warning.
fn read_hooks(r: &mut SectionReader<'_>, notes: &mut Notes<'_>) -> Hooks {
    let mut hooks = Hooks::default();
    for (name, e) in r.prefixed("hooks.") {
        let name = name.to_ascii_lowercase();
        let slot = match name.as_str() {
            "before_start" => &mut hooks.before_start,
            "after_start" => &mut hooks.after_start,
            "before_stop" => &mut hooks.before_stop,
            "after_stop" => &mut hooks.after_stop,
            other if CIRCUS_ONLY_HOOKS.contains(&other) => {
                notes.warn(e, format!("ignored: ringmaster does not run {other} hooks"));
                continue;
            }
            other => {
                notes.warn(
                    e,
                    format!("ignored: unknown hook {other:?} (ringmaster runs before_start, after_start, before_stop, after_stop)"),
                );
                continue;
            }
        };
        let command = e.value.trim();
        if command.is_empty() {
            continue;
        }
        if is_python_hook(command) {
            notes.warn(
                e,
                "ignored: a circus Python hook cannot run here; give a shell command (exit 0 to go on, 200 to skip)",
            );
            continue;
        }
        *slot = Some(command.to_string());
    }
    hooks
}

/// Whether a hook value is a circus Python hook: a dotted path (identifier characters and dots,
/// at least one dot), optionally followed by `, <ignore_failure bool>` as circus allows.
fn is_python_hook(value: &str) -> bool {
    let (path, flag) = match value.split_once(',') {
        Some((path, flag)) => (path.trim(), Some(flag)),
        None => (value, None),
    };
    let dotted = path.contains('.')
        && path.split('.').all(|part| {
            !part.is_empty()
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    dotted && flag.is_none_or(|f| parse_bool(f).is_ok())
}

/// Warnings gathered while a [`SectionReader`] holds the report.
struct Notes<'a> {
    file: &'a Path,
    section: &'a str,
    list: Vec<ConfigError>,
}

impl<'a> Notes<'a> {
    fn new(file: &'a Path, section: &'a str) -> Self {
        Self {
            file,
            section,
            list: Vec::new(),
        }
    }

    fn warn(&mut self, e: &Entry, message: impl Into<String>) {
        self.list.push(
            ConfigError::new(self.file, message)
                .in_section(self.section)
                .with_key(&e.key)
                .at_line(e.line),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Load `text` as `circus.ini` in a fresh directory, with `env` as ringmaster's environment.
    fn load_text(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config, ConfigErrors>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "circus.ini", text);
        let result = load_with_env(&path, &vars(env));
        (dir, result)
    }

    fn load_ok(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let (dir, result) = load_text(text, env);
        match result {
            Ok(config) => (dir, config),
            Err(e) => panic!("config refused:\n{e}"),
        }
    }

    fn load_err(text: &str, env: &[(&str, &str)]) -> String {
        let (_dir, result) = load_text(text, env);
        result.expect_err("config accepted").to_string()
    }

    fn env_value<'c>(w: &'c WatcherConfig, name: &str) -> Option<&'c str> {
        w.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn warned(config: &Config, key: &str) -> bool {
        config.warnings.iter().any(|w| w.key.as_deref() == Some(key))
    }

    #[test]
    fn minimal_file_has_the_documented_defaults() {
        let (dir, config) = load_ok("[watcher:web]\ncmd = sleep 10\n", &[("PATH", "/bin")]);
        let dir = std::fs::canonicalize(dir.path()).expect("canonical");
        let dir = main_dir(&dir.join("circus.ini"));
        assert_eq!(
            config.circus,
            CircusSettings {
                control_socket: dir.join("ringmaster.sock"),
                check_delay: Duration::from_secs(5),
                warmup_delay: Duration::ZERO,
            }
        );
        assert_eq!(
            config.ringmaster,
            RingmasterSettings {
                redis_url: None,
                shared_redis_url: None,
                trash_dir: None,
                http: None,
                console: None,
                console_token_file: dir.join("console.token"),
                state_file: dir.join("ringmaster.sock.pids"),
                memory_check_interval: Duration::from_secs(1),
                flapping: Flapping::default(),
                orphan_grace: Duration::from_secs(5),
            }
        );
        assert!(config.sockets.is_empty());
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(
            config.watchers,
            vec![WatcherConfig {
                name: "web".into(),
                cmd: "sleep 10".into(),
                args: String::new(),
                shell: false,
                working_dir: None,
                uid: None,
                gid: None,
                numprocesses: 1,
                warmup_delay: Duration::ZERO,
                autostart: true,
                restart: RestartPolicy::Always,
                exitcodes: vec![0],
                max_retry: 5,
                startsecs: Duration::ZERO,
                priority: 0,
                singleton: false,
                env: Vec::new(),
                copy_env: false,
                copy_path: false,
                stop_signal: libc::SIGTERM,
                stop_children: false,
                graceful_timeout: Duration::from_secs(30),
                max_age: Duration::ZERO,
                max_age_variance: Duration::from_secs(30),
                rlimits: Vec::new(),
                use_sockets: false,
                close_child_stdin: true,
                stdout: StreamConfig::Inherit,
                stderr: StreamConfig::Inherit,
                hooks: Hooks::default(),
                memory_limit: None,
                flapping: Flapping::default(),
                drain_socket: None,
                drain_timeout: Duration::from_secs(30),
            }]
        );
    }

    #[test]
    fn the_example_in_etc_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/ringmaster.ini");
        let env = vec![("IRONWORK_HOME".to_string(), "/srv/ironwork".to_string())];
        let config = load_with_env(&path, &env).expect("etc/ringmaster.ini is valid");
        assert_eq!(
            config.circus.control_socket,
            Path::new("/srv/ironwork/var/ringmaster.sock")
        );
        assert_eq!(config.watchers[0].name, "redis");
        assert!(config.watchers[0].args.contains("--maxmemory-policy noeviction"));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn metwork_circus_ini_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metwork_circus.ini");
        let text = std::fs::read_to_string(&path).expect("fixture");
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.starts_with(needle))
                .map(|i| i + 1)
                .expect("needle in fixture")
        };
        let env = vars(&[("MFMODULE_RUNTIME_HOME", "/home/mfdata"), ("PATH", "/usr/bin")]);
        let config = load_with_env(&path, &env).unwrap_or_else(|e| panic!("refused:\n{e}"));

        assert_eq!(
            config.circus.control_socket,
            PathBuf::from("/home/mfdata/var/circus.socket")
        );
        assert_eq!(config.circus.check_delay, Duration::from_secs(15));
        assert_eq!(
            config.ringmaster.state_file,
            PathBuf::from("/home/mfdata/var/circus.socket.pids")
        );
        let names: Vec<&str> = config.watchers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["redis", "directory_observer", "conf_monitor", "step.ungzip.main"]
        );

        let redis = config.watcher("redis").expect("redis");
        assert_eq!(
            redis.args,
            "--stdout redis.log --stderr STDOUT -- redis-server /home/mfdata/tmp/config_auto/redis.conf"
        );
        assert_eq!(redis.working_dir, Some(PathBuf::from("/home/mfdata")));
        assert_eq!(redis.priority, 10);
        assert_eq!(redis.max_retry, -1);
        assert_eq!(redis.restart, RestartPolicy::Always);
        assert_eq!(redis.hooks, Hooks::default(), "the Python hook is not run");
        assert_eq!(env_value(redis, "MFMODULE_RUNTIME_HOME"), Some("/home/mfdata"));

        let observer = config.watcher("directory_observer").expect("observer");
        assert_eq!(observer.graceful_timeout, Duration::from_secs(10));
        assert_eq!(config.watcher("conf_monitor").expect("conf_monitor").stop_signal, 9);

        let step = config.watcher("step.ungzip.main").expect("step");
        assert!(step.shell);
        assert_eq!(step.numprocesses, 2);
        assert!(step.copy_env);
        assert!(
            step.args.contains("step_ungzip_main_worker$(circus.wid).log"),
            "{}",
            step.args
        );
        assert!(step
            .args
            .contains("--redis-unix-socket-path=/home/mfdata/var/redis.socket"));
        assert_eq!(step.working_dir, Some(PathBuf::from("/home/mfdata/var/plugins/ungzip")));
        assert_eq!(step.graceful_timeout, Duration::from_secs(600));
        assert_eq!(step.max_age, Duration::from_secs(3600));
        assert_eq!(step.max_age_variance, Duration::from_secs(3600));
        assert_eq!(
            step.rlimits,
            vec![
                (libc::RLIMIT_AS as i32, Some(1_000_000_000)),
                (libc::RLIMIT_NOFILE as i32, Some(1000)),
                (libc::RLIMIT_STACK as i32, Some(10_000_000)),
                (libc::RLIMIT_FSIZE as i32, Some(10_000_000_000)),
            ]
        );
        assert_eq!(env_value(step, "HOTSWAP"), Some("0"));
        assert_eq!(env_value(step, "MFDATA_CURRENT_APP_DEBUG"), Some("0"));
        assert_eq!(env_value(step, "PATH"), Some("/usr/bin"));
        assert_eq!(
            env_value(redis, "HOTSWAP"),
            None,
            "[env:step.ungzip.main] is for that watcher only"
        );

        let warning_at = |key: &str, line: usize| {
            config
                .warnings
                .iter()
                .any(|w| w.key.as_deref() == Some(key) && w.file == path && w.line == Some(line))
        };
        for key in ["async_kill", "autorestart_kill_signal", "mfdata_plugin"] {
            assert!(
                warning_at(key, line_of(&format!("{key} ="))),
                "{key}: {:#?}",
                config.warnings
            );
        }
        for key in ["pubsub_endpoint", "loglevel", "logoutput"] {
            assert!(
                warning_at(key, line_of(&format!("{key} ="))),
                "{key}: {:#?}",
                config.warnings
            );
        }
        let hook = config
            .warnings
            .iter()
            .find(|w| w.key.as_deref() == Some("hooks.before_start"))
            .expect("python hook warning");
        assert_eq!(hook.line, Some(line_of("hooks.before_start")));
        assert!(hook.message.contains("Python hook"), "{}", hook.message);
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.key.as_deref() == Some("loglevel") && w.message.contains("IRONWORK_LOG")),
            "{:#?}",
            config.warnings
        );
        assert!(!warned(&config, "statsd"), "statsd = False asks for nothing");
        assert_eq!(config.warnings.len(), 7, "{:#?}", config.warnings);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = "\
[watcher:a]
cmd = run
numprocesses = many
stop_signal = SIGNOPE
rlimit_bogus = 10

[watcher:b]
args = no command

[watcher:c]
cmd = run
singleton = true
numprocesses = 2

[watcher:d]
cmd = serve --fd $(circus.sockets.web)
args = --home $(circus.env.NOPE)
";
        let err = load_err(text, &[]);
        let expected = [
            "circus.ini:3: [watcher:a] numprocesses: expected a non-negative integer",
            "circus.ini:4: [watcher:a] stop_signal: unknown signal",
            "circus.ini:5: [watcher:a] rlimit_bogus: unknown resource limit \"bogus\"",
            "circus.ini:7: [watcher:b] cmd: missing required key",
            "circus.ini:12: [watcher:c] singleton: a singleton watcher runs at most one process",
            "circus.ini:16: [watcher:d] cmd: $(circus.sockets.web) names no [socket:web] section",
            "circus.ini:17: [watcher:d] args: $(circus.env.NOPE): no such variable",
        ];
        for e in expected {
            assert!(err.contains(e), "missing {e:?} in:\n{err}");
        }
        assert_eq!(err.lines().count(), expected.len(), "{err}");
    }

    #[test]
    fn other_invalid_values_are_errors() {
        let err = load_err(
            "[circus]\nendpoint = inproc://x\n\n[ringmaster]\nhttp = somewhere\nbogus = 1\n\n[what]\nx = 1\n\n\
             [watcher:a b]\ncmd = x\nrespawn = false\nrestart = always\nmax_retry = -2\nexitcodes = 0, 300\n\
             memory_limit = lots\nrlimit_nofile = -5\n",
            &[],
        );
        for e in [
            "[circus] endpoint: expected ipc://",
            "[ringmaster] http: expected a port or ip:port",
            "[ringmaster] bogus: unknown key",
            "[what]: unknown section",
            "[watcher:a b]: a watcher name must be non-empty",
            "[watcher:a b] restart: contradicts respawn = false",
            "[watcher:a b] max_retry: expected a count, or -1",
            "[watcher:a b] exitcodes: expected comma-separated exit codes",
            "[watcher:a b] memory_limit:",
            "[watcher:a b] rlimit_nofile: expected a non-negative integer",
        ] {
            assert!(err.contains(e), "missing {e:?} in:\n{err}");
        }
    }

    #[test]
    fn watcher_values_in_their_circus_spellings() {
        let (_dir, config) = load_ok(
            "[watcher:a]\ncmd = x\nstop_signal = sigint\nrestart = on-failure\nexitcodes = 0, 3\nrlimit_as = 1e9\n\
             rlimit_core =\nmemory_limit = 512M\nstartsecs = 2\nflapping.attempts = 4\n\
             hooks.before_start = /usr/bin/check --fast\nhooks.after_stop = echo done, really\n\
             hooks.before_spawn = echo no\nfoo = bar\n\n\
             [watcher:b]\ncmd = x\nrespawn = false\nstop_signal = KILL\n\n\
             [watcher:c]\ncmd = x\nstop_signal = SIGHUP\nnumprocesses = 0\n\n\
             [ringmaster]\nflapping.attempts = 3\nflapping.window = 2s\nredis_url = /run/redis.sock\nhttp = 9101\n\
             memory_check_interval = 250ms\norphan_grace = 1\n",
            &[],
        );
        let a = config.watcher("a").expect("a");
        assert_eq!(a.stop_signal, libc::SIGINT);
        assert_eq!(a.restart, RestartPolicy::OnFailure);
        assert_eq!(a.exitcodes, vec![0, 3]);
        assert_eq!(
            a.rlimits,
            vec![
                (libc::RLIMIT_AS as i32, Some(1_000_000_000)),
                (libc::RLIMIT_CORE as i32, None)
            ]
        );
        assert_eq!(a.memory_limit, Some(512 << 20));
        assert_eq!(a.startsecs, Duration::from_secs(2));
        assert_eq!(
            a.flapping,
            Flapping {
                attempts: 4,
                window: Duration::from_secs(2),
                ..Flapping::default()
            }
        );
        assert_eq!(a.hooks.before_start.as_deref(), Some("/usr/bin/check --fast"));
        assert_eq!(a.hooks.after_stop.as_deref(), Some("echo done, really"));
        assert!(warned(&config, "hooks.before_spawn"));
        assert!(warned(&config, "foo"), "unknown watcher keys are warnings");
        let b = config.watcher("b").expect("b");
        assert_eq!((b.restart, b.stop_signal), (RestartPolicy::Never, libc::SIGKILL));
        let c = config.watcher("c").expect("c");
        assert_eq!((c.stop_signal, c.numprocesses), (libc::SIGHUP, 0));
        assert_eq!(c.flapping.attempts, 3, "[ringmaster] flapping defaults");
        let rm = &config.ringmaster;
        assert_eq!(rm.redis_url.as_deref(), Some("/run/redis.sock"));
        assert_eq!(rm.http, Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9101))));
        assert_eq!(rm.memory_check_interval, Duration::from_millis(250));
        assert_eq!(rm.orphan_grace, Duration::from_secs(1));
    }

    #[test]
    fn circus_env_lookup_is_exact_then_case_insensitive() {
        let (_dir, config) = load_ok(
            "[watcher:a]\ncmd = $(CIRCUS.ENV.home)/bin/x $(circus.env.Mixed) ((circus.env.HOME))\n",
            &[("HOME", "/h"), ("Mixed", "exact"), ("MIXED", "upper")],
        );
        assert_eq!(config.watchers[0].cmd, "/h/bin/x exact /h");
    }

    #[test]
    fn includes_are_relative_to_the_including_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "circus.ini",
            "[circus]\ninclude = conf/*.ini, extra.ini\ninclude_dir = conf.d\n\n[watcher:main]\ncmd = x\n",
        );
        write(dir.path(), "conf/b.ini", "[watcher:b]\ncmd = x\n");
        write(
            dir.path(),
            "conf/a.ini",
            "[circus]\ninclude = nested/n.ini\n\n[watcher:a]\ncmd = x\n",
        );
        write(dir.path(), "conf/nested/n.ini", "[watcher:n]\ncmd = x\n");
        write(dir.path(), "extra.ini", "[socket:s]\nport = 9000\n");
        write(dir.path(), "conf.d/z.ini", "[watcher:z]\ncmd = x\n");
        write(dir.path(), "conf.d/ignored.conf", "[watcher:no]\ncmd = x\n");
        let config = load_with_env(&main, &[]).unwrap_or_else(|e| panic!("refused:\n{e}"));
        let names: Vec<&str> = config.watchers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["main", "a", "n", "b", "z"]);
        assert_eq!(config.sockets.len(), 1);
        assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    }

    #[test]
    fn errors_in_included_files_name_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "circus.ini",
            "[circus]\ninclude_dir = d\n\n[watcher:w]\ncmd = x\n",
        );
        let bad = write(dir.path(), "d/bad.ini", "[watcher:v]\ncmd = x\nnumprocesses = -1\n");
        let dup = write(dir.path(), "d/dup.ini", "[watcher:W]\ncmd = y\n");
        let err = load_with_env(&main, &[]).expect_err("refused").to_string();
        assert!(
            err.contains(&format!("{}:3: [watcher:v] numprocesses:", bad.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("{}:1: [watcher:W]: duplicate watcher", dup.display())),
            "{err}"
        );
        assert!(err.contains(&format!("first at {}:4", main.display())), "{err}");
    }

    #[test]
    fn an_include_cycle_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "a.ini",
            "[circus]\ninclude = b.ini\n\n[watcher:a]\ncmd = x\n",
        );
        write(
            dir.path(),
            "b.ini",
            "[circus]\ninclude = a.ini\n\n[watcher:b]\ncmd = x\n",
        );
        let err = load_with_env(&main, &[]).expect_err("refused").to_string();
        assert!(err.contains("b.ini:2: [circus] include: include cycle:"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        let unknown = write(dir.path(), "c.ini", "[circus]\ninclude = $(circus.env.NOPE)/x.ini\n");
        let err = load_with_env(&unknown, &[]).expect_err("refused").to_string();
        assert!(err.contains("c.ini:2: [circus] include: $(circus.env.NOPE)"), "{err}");
        assert_eq!(err.lines().count(), 1, "reported once: {err}");

        let lonely = write(dir.path(), "alone/self.ini", "[circus]\ninclude = *.ini\n");
        let err = load_with_env(&lonely, &[]).expect_err("refused").to_string();
        assert!(err.contains("include cycle"), "{err}");
    }

    #[test]
    fn env_sections_merge_in_order() {
        let text = "\
[env:web*]
ORDER = glob
FROM_GLOB = 1

[watcher:web1]
cmd = x

[env]
ORDER = global
PATH = $PATH:/opt/bin
BASE = ${HOME}/base

[env:web1,other]
ORDER = list
LIST = $ORDER+$BASE

[watcher:other]
cmd = x
copy_path = true

[watcher:plain]
cmd = x
copy_env = true
args = $(circus.env.BASE)
";
        // ORDER in ringmaster's environment loses to the values resolved so far.
        let process = [("PATH", "/bin"), ("HOME", "/h"), ("ORDER", "process"), ("LANG", "C")];
        let (_dir, config) = load_ok(text, &process);
        let web = config.watcher("web1").expect("web1");
        assert_eq!(
            web.env,
            vars(&[
                ("ORDER", "list"),
                ("PATH", "/bin:/opt/bin"),
                ("BASE", "/h/base"),
                ("FROM_GLOB", "1"),
                ("LIST", "list+/h/base"),
            ])
        );
        let other = config.watcher("other").expect("other");
        assert_eq!(
            other.env,
            vars(&[
                ("PATH", "/bin:/opt/bin"),
                ("ORDER", "list"),
                ("BASE", "/h/base"),
                ("LIST", "list+/h/base"),
            ])
        );
        let plain = config.watcher("plain").expect("plain");
        assert_eq!(
            plain.env,
            vars(&[
                ("PATH", "/bin:/opt/bin"),
                ("HOME", "/h"),
                ("ORDER", "global"),
                ("LANG", "C"),
                ("BASE", "/h/base"),
            ])
        );
        assert_eq!(plain.args, "/h/base", "$(circus.env.X) sees [env]");
    }

    #[test]
    fn unset_dollar_variables_warn_and_unmatched_env_sections_warn() {
        let (_dir, config) = load_ok(
            "[env]\nA = $UNSET-x\n\n[env:nobody]\nB = 1\n\n[watcher:w1]\ncmd = x\n\n[watcher:w2]\ncmd = x\n",
            &[],
        );
        assert_eq!(env_value(&config.watchers[0], "A"), Some("-x"));
        let unset: Vec<_> = config
            .warnings
            .iter()
            .filter(|w| w.message.contains("$UNSET"))
            .collect();
        assert_eq!(unset.len(), 1, "once, not per watcher: {:#?}", config.warnings);
        assert!(config
            .warnings
            .iter()
            .any(|w| w.section.as_deref() == Some("env:nobody") && w.message.contains("matches no watcher")));
    }

    #[test]
    fn sockets_tcp_and_unix() {
        let (dir, config) = load_ok(
            "[socket:Web]\nhost = 0.0.0.0\nport = 8000\nso_reuseport = true\nbacklog = 128\n\n\
             [socket:api]\npath = api.sock\numask = 0o077\nreplace = true\ninterface = eth0\n\n\
             [socket:defaults]\nfamily = AF_INET6\n\n\
             [watcher:w]\ncmd = serve --fd $(circus.sockets.web) --fd $(circus.sockets.API)\nuse_sockets = true\n",
            &[],
        );
        let dir = main_dir(&dir.path().join("circus.ini"));
        assert_eq!(
            config.sockets,
            vec![
                SocketConfig {
                    name: "web".into(),
                    address: SocketAddress::Tcp {
                        host: "0.0.0.0".into(),
                        port: 8000
                    },
                    so_reuseport: true,
                    umask: None,
                    replace: false,
                    backlog: 128,
                },
                SocketConfig {
                    name: "api".into(),
                    address: SocketAddress::Unix(dir.join("api.sock")),
                    so_reuseport: false,
                    umask: Some(0o077),
                    replace: true,
                    backlog: 2048,
                },
                SocketConfig {
                    name: "defaults".into(),
                    address: SocketAddress::Tcp {
                        host: "localhost".into(),
                        port: 8080
                    },
                    so_reuseport: false,
                    umask: None,
                    replace: false,
                    backlog: 2048,
                },
            ]
        );
        assert_eq!(
            config.watchers[0].cmd, "serve --fd $(circus.sockets.web) --fd $(circus.sockets.API)",
            "expanded at spawn time"
        );
        assert!(warned(&config, "interface"));
    }

    #[test]
    fn socket_errors_and_use_sockets() {
        let err = load_err(
            "[socket:a]\nfamily = AF_UNIX\n\n[socket:b]\ntype = SOCK_DGRAM\numask = 999\n\n[socket:A]\nport = 1\n\n\
             [watcher:w]\ncmd = serve $(circus.sockets.b)\n",
            &[],
        );
        for e in [
            "[socket:a] path: family = AF_UNIX needs a path",
            "[socket:b] type: only SOCK_STREAM",
            "[socket:b] umask: expected an octal umask",
            "[socket:A]: duplicate socket \"a\"",
            "[watcher:w] cmd: refers to $(circus.sockets.…) but use_sockets is not true",
        ] {
            assert!(err.contains(e), "missing {e:?} in:\n{err}");
        }
    }

    #[test]
    fn stream_configuration() {
        let (dir, config) = load_ok(
            "[watcher:sized]\ncmd = x\nstdout_stream.class = circus.stream.FileStream\n\
             stdout_stream.filename = logs/out.log\nstdout_stream.max_bytes = 10M\nstdout_stream.backup_count = 3\n\
             stdout_stream.time_format = %Y-%m-%d\nstderr_stream.class = StdoutStream\n\n\
             [watcher:timed]\ncmd = x\nstdout_stream.class = TimedRotatingFileStream\n\
             stdout_stream.filename = /var/log/t.log\nstdout_stream.rotate_when = H\nstdout_stream.rotate_interval = 6\n\
             stdout_stream.utc = true\nstdout_stream.max_bytes = 5\n\
             stderr_stream.class = TimedRotatingFileStream\nstderr_stream.filename = e.log\n\
             stderr_stream.rotate_when = midnight\n\n\
             [watcher:closed]\ncmd = x\nclose_child_stdout = true\nstdout_stream.class = FileStream\n\
             stdout_stream.filename = never.log\nclose_child_stderr = true\n\n\
             [watcher:implicit]\ncmd = x\nstderr_stream.filename = /tmp/e.log\n",
            &[],
        );
        let dir = main_dir(&dir.path().join("circus.ini"));
        let sized = config.watcher("sized").expect("sized");
        assert_eq!(
            sized.stdout,
            StreamConfig::File(FileStream {
                path: dir.join("logs/out.log"),
                max_bytes: 10 << 20,
                backup_count: 3,
                rotate_every: None,
                time_format: Some("%Y-%m-%d".into()),
            })
        );
        assert_eq!(sized.stderr, StreamConfig::Inherit);
        let timed = config.watcher("timed").expect("timed");
        assert_eq!(
            timed.stdout,
            StreamConfig::File(FileStream {
                path: PathBuf::from("/var/log/t.log"),
                max_bytes: 0,
                backup_count: 0,
                rotate_every: Some(Duration::from_secs(6 * 3600)),
                time_format: None,
            })
        );
        let StreamConfig::File(stderr) = &timed.stderr else {
            panic!("file stream expected: {:?}", timed.stderr);
        };
        assert_eq!(stderr.rotate_every, Some(Duration::from_secs(86_400)));
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.key.as_deref() == Some("stdout_stream.max_bytes")
                    && w.message.contains("TimedRotatingFileStream has no max_bytes")),
            "{:#?}",
            config.warnings
        );
        let closed = config.watcher("closed").expect("closed");
        assert_eq!(
            (&closed.stdout, &closed.stderr),
            (&StreamConfig::Null, &StreamConfig::Null)
        );
        assert!(warned(&config, "stdout_stream.filename"));
        let implicit = config.watcher("implicit").expect("implicit");
        assert!(matches!(&implicit.stderr, StreamConfig::File(f) if f.path == Path::new("/tmp/e.log")));
    }

    #[test]
    fn stream_errors() {
        let err = load_err(
            "[watcher:a]\ncmd = x\nstdout_stream.class = SyslogStream\nstderr_stream.class = FileStream\n\n\
             [watcher:b]\ncmd = x\nstdout_stream.class = TimedRotatingFileStream\nstdout_stream.filename = x\n\
             stdout_stream.rotate_when = fortnight\nstdout_stream.colour = red\n",
            &[],
        );
        for e in [
            "[watcher:a] stdout_stream.class: unknown stream class \"SyslogStream\"",
            "[watcher:a] stderr_stream.filename: missing required key",
            "[watcher:b] stdout_stream.rotate_when: expected S, M, H, D, MIDNIGHT or W0-W6",
            "[watcher:b] stdout_stream.colour: unknown stream option",
        ] {
            assert!(err.contains(e), "missing {e:?} in:\n{err}");
        }
    }

    #[test]
    fn circus_section_and_plugins() {
        let (_dir, config) = load_ok(
            "[circus]\nendpoint = tcp://127.0.0.1:5555\nwarmup_delay = 2\nhttpd = true\ndebug = false\n\
             made_up = 1\n\n[plugin:flapping]\nuse = circus.plugins.flapping.Flapping\n",
            &[],
        );
        assert!(config.circus.control_socket.ends_with("ringmaster.sock"));
        assert_eq!(config.circus.warmup_delay, Duration::from_secs(2));
        for key in ["endpoint", "httpd", "made_up"] {
            assert!(warned(&config, key), "{key}: {:#?}", config.warnings);
        }
        assert!(!warned(&config, "debug"));
        let plugin: Vec<_> = config
            .warnings
            .iter()
            .filter(|w| w.section.as_deref() == Some("plugin:flapping"))
            .collect();
        assert_eq!(plugin.len(), 1, "one warning per plugin section");

        let (_dir, config) = load_ok("[circus]\nendpoint = ipc://run/c.sock\n", &[]);
        assert!(config.circus.control_socket.is_absolute());
        assert!(config.circus.control_socket.ends_with("run/c.sock"));
    }

    #[test]
    fn helpers() {
        assert!(is_python_hook("mfext.circus_hooks.before_start_shell"));
        assert!(is_python_hook("my.hooks.check, true"));
        assert!(!is_python_hook("/usr/bin/hook.sh"));
        assert!(!is_python_hook("hook.sh --x"));
        assert!(!is_python_hook("nodots"));
        assert_eq!(parse_signal("15"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigterm"), Ok(libc::SIGTERM));
        assert!(parse_signal("0").is_err());
        assert_eq!(parse_rlimit("1e9"), Ok(Some(1_000_000_000)));
        assert_eq!(parse_rlimit(""), Ok(None));
        assert!(parse_rlimit("1.5").is_err());
        let empty = EnvVars::default();
        let set = EnvVars::from_pairs(&vars(&[("A", "1")]));
        assert_eq!(
            expand_dollar("$A${A}$ $1 ${ x", &set, &empty),
            ("11$ $1 ${ x".to_string(), vec![])
        );
        assert_eq!(
            expand_dollar("a$B-c", &empty, &set),
            ("a-c".to_string(), vec!["B".to_string()])
        );
    }
}
