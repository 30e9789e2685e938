//! Plugins: `plugins/<name>/config.ini`, with the admin overrides in `config/plugins/<name>.ini`,
//! parsed and validated. A plugin with any error is refused as a whole, with every error listed
//! (file, line, section, key).
//!
//! Sections: `[general]`, `[step_<step>]`, `[switch_rules:<type>[:<tag>]]`,
//! `[extra_daemon_<name>]`, `[collection_<name>]` and `[reflection_<name>]`. Step keys keep
//! Metwork's names (`cmd_and_args` or `_cmd_and_args`, `numprocesses`, `timeout`, …).
//!
//! Switch-rule sections are read with `=` as the only delimiter (a pattern may contain `:`), the
//! rest of the file with configparser's `=` and `:`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::config::{ConfigError, ConfigErrors, Report, SectionReader, UnknownKeys};
use ironwork_core::ini::{Ini, Section};
use ironwork_step::layout::{valid_name, StepName};
use ironwork_step::switch_rules::RuleSet;

use crate::home::Home;

/// The token Metwork appends to a step's command line; accepted at the end and dropped (the
/// module passes those options to `step run` itself).
pub const STANDARD_STEP_ARGUMENTS: &str = "{STANDARD_STEP_ARGUMENTS}";

/// The placeholder for a step's own directory in `watched_directories`.
pub const CURRENT_STEP_DIR: &str = "{MFDATA_CURRENT_STEP_DIR}";

/// The plugin name the built-in switch uses (`step.switch.main`); no plugin may take it.
pub const SWITCH_PLUGIN: &str = "switch";

/// A validated plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    /// The plugin's name: its directory's name.
    pub name: String,
    /// Its directory (absolute).
    pub dir: PathBuf,
    /// `<dir>/config.ini`.
    pub config_file: PathBuf,
    /// The admin override that was applied, if any.
    pub override_file: Option<PathBuf>,
    /// `[general] description`.
    pub description: Option<String>,
    /// `[general] version`.
    pub version: Option<String>,
    /// `[step_<name>]` sections, sorted by name.
    pub steps: Vec<StepConfig>,
    /// `[switch_rules…]` sections, verbatim, in file order.
    pub switch_rules: Vec<RawSection>,
    /// `[extra_daemon_<name>]` sections, sorted by name.
    pub extra_daemons: Vec<ExtraDaemon>,
    /// `[collection_<name>]` sections (name = the part after the prefix), sorted by name.
    pub collections: Vec<RawSection>,
    /// `[reflection_<name>]` sections (name = the part after the prefix), in file order: the
    /// order in which matching reflections fire.
    pub reflections: Vec<RawSection>,
    /// `[app_<name>]` sections, sorted by name.
    pub apps: Vec<AppConfig>,
}

/// The placeholder in an app's `cmd_and_args` replaced by the worker's unix socket (Metwork's
/// MFSERV name).
pub const UNIX_SOCKET_PATH: &str = "{unix_socket_path}";

/// An `[app_<name>]` section: a web application served by workers behind the nginx front.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// The app's name.
    pub name: String,
    /// `cmd_and_args` split shell-style; `{unix_socket_path}` is where the worker listens.
    /// Empty for a static-only app (no workers: nginx serves `static` at the prefix).
    pub cmd_and_args: Vec<String>,
    /// `numprocesses` (2: one worker can go while the other serves).
    pub numprocesses: u32,
    /// `timeout`: longest request (nginx's read timeout) and longest drain (60 s).
    pub timeout: Duration,
    /// `graceful_timeout`: from the stop signal to SIGKILL (10 s).
    pub graceful_timeout: Duration,
    /// `max_age` (0 = never recycled).
    pub max_age: Duration,
    /// `memory_limit`: RSS above which a worker is replaced (none).
    pub memory_limit: Option<u64>,
    /// `rlimit_*`.
    pub rlimits: Rlimits,
    /// `prefix`: the URL path routed to the app (`/<plugin>/<app>/`), starting and ending with `/`.
    pub prefix: String,
    /// `static`: a directory (relative to the plugin) nginx serves itself at `static_prefix`.
    pub static_dir: Option<PathBuf>,
    /// `static_prefix` (`<prefix>static/`, or the prefix itself for a static-only app).
    pub static_prefix: String,
    /// `health`: a path each worker answers with 2xx when it is well (none).
    pub health: Option<String>,
    /// `client_max_body_size`: largest request body (nginx syntax; `[nginx]`'s by default).
    pub client_max_body_size: Option<String>,
    /// `debug`: the worker logs at DEBUG.
    pub debug: bool,
}

/// A section kept as written: its name and its `key = value` pairs in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection {
    /// The section name (for collections and reflections, the part after the prefix).
    pub name: String,
    /// The entries, keys as written; continuation lines joined with `\n`.
    pub entries: Vec<(String, String)>,
}

/// What happens to a file whose step failed (and exhausted its retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Into `var/in/trash/<plugin>.<step>/` with its tags.
    Keep,
    /// Removed.
    Delete,
    /// To `plugin/step` or an absolute directory (`failure_policy_move_dest_dir`).
    Move(String),
}

impl FailurePolicy {
    /// The spelling `step run --failure-policy` takes.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Delete => "delete",
            Self::Move(_) => "move",
        }
    }
}

/// `rlimit_*` keys (None = not set; Metwork's 0 also means not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rlimits {
    /// `rlimit_as`.
    pub address_space: Option<u64>,
    /// `rlimit_nofile`.
    pub nofile: Option<u64>,
    /// `rlimit_stack`.
    pub stack: Option<u64>,
    /// `rlimit_fsize`.
    pub fsize: Option<u64>,
}

impl AppConfig {
    /// Whether it runs workers (else nginx serves its static directory alone).
    pub fn has_workers(&self) -> bool {
        !self.cmd_and_args.is_empty()
    }
}

impl Rlimits {
    /// The limits that are set, as (`as|nofile|stack|fsize`, value), in that fixed order.
    pub fn set(&self) -> Vec<(&'static str, u64)> {
        [
            ("as", self.address_space),
            ("nofile", self.nofile),
            ("stack", self.stack),
            ("fsize", self.fsize),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// One entry of `watched_directories`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchedDirectory {
    /// The step's own directory, `var/in/step.<plugin>.<step>` (`{MFDATA_CURRENT_STEP_DIR}`).
    StepDir,
    /// A directory: absolute, or relative to `var/in`.
    Path(PathBuf),
}

/// A `[step_<name>]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// The step's name.
    pub name: String,
    /// `cmd_and_args` split shell-style, `{STANDARD_STEP_ARGUMENTS}` dropped, the program made
    /// absolute when it names a file in the plugin directory.
    pub cmd_and_args: Vec<String>,
    /// `numprocesses` (1).
    pub numprocesses: u32,
    /// `timeout` (600 s), also the watcher's `graceful_timeout`.
    pub timeout: Duration,
    /// `max_age` (0 = never recycled).
    pub max_age: Duration,
    /// `failure_policy` (keep) with `failure_policy_move_dest_dir`.
    pub failure_policy: FailurePolicy,
    /// `retry_total` (0).
    pub retry_total: u32,
    /// `retry_min_wait` (10 s).
    pub retry_min_wait: Duration,
    /// `retry_max_wait` (120 s).
    pub retry_max_wait: Duration,
    /// `retry_backoff` (0).
    pub retry_backoff: Duration,
    /// `rlimit_*`.
    pub rlimits: Rlimits,
    /// `watched_directories` (empty = the step's own directory).
    pub watched_directories: Vec<WatchedDirectory>,
    /// `debug` (false).
    pub debug: bool,
}

impl StepConfig {
    /// The directories this step's queue is fed from, absolute, without duplicates.
    pub fn watched_dirs(&self, home: &Home, plugin: &str) -> Vec<PathBuf> {
        let own = home.step_dir(plugin, &self.name);
        if self.watched_directories.is_empty() {
            return vec![own];
        }
        let mut out: Vec<PathBuf> = Vec::new();
        for w in &self.watched_directories {
            let p = match w {
                WatchedDirectory::StepDir => own.clone(),
                WatchedDirectory::Path(p) if p.is_absolute() => p.clone(),
                WatchedDirectory::Path(p) => home.data_dir().join(p),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// An `[extra_daemon_<name>]` section: a plugin's own long-running program.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraDaemon {
    /// The daemon's name.
    pub name: String,
    /// `cmd_and_args` split shell-style, the program resolved as for steps.
    pub cmd_and_args: Vec<String>,
    /// `numprocesses` (1).
    pub numprocesses: u32,
    /// `graceful_timeout` (10 s).
    pub graceful_timeout: Duration,
    /// `max_age` (0 = never recycled).
    pub max_age: Duration,
    /// `rlimit_*`.
    pub rlimits: Rlimits,
}

/// Whether a section name is a switch-rules section (`switch_rules…:…`).
/// Largest plugin or override file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn is_switch_section(name: &str) -> bool {
    name.split(':').next().unwrap_or_default().starts_with("switch_rules")
}

/// A file's sections: the switch-rules ones read with `=` only, the others with `=` and `:`.
/// Line numbers are the file's.
fn read_sections(path: &Path, errors: &mut ConfigErrors) -> Option<Vec<Section>> {
    // Only a regular file of sensible size: a FIFO would block, /dev/zero never end.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            errors.push(ConfigError::new(path, "not a regular file"));
            return None;
        }
        Ok(m) if m.len() > MAX_CONFIG_BYTES => {
            errors.push(ConfigError::new(path, format!("larger than {MAX_CONFIG_BYTES} bytes")));
            return None;
        }
        _ => {}
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::new(path, format!("cannot read: {e}")));
            return None;
        }
    };
    // Two copies of the text with the other kind of section blanked out, so each parse keeps
    // the file's line numbers.
    let mut main = String::with_capacity(text.len());
    let mut rules = String::with_capacity(text.len());
    let mut in_rules = false;
    for line in text.lines() {
        let t = line.trim();
        if !line.starts_with([' ', '\t']) && t.starts_with('[') {
            in_rules = is_switch_section(t.trim_start_matches('[').trim_end_matches(']').trim());
        }
        let (to, blank) = if in_rules {
            (&mut rules, &mut main)
        } else {
            (&mut main, &mut rules)
        };
        to.push_str(line);
        to.push('\n');
        blank.push('\n');
    }
    let mut sections = Vec::new();
    for parsed in [
        Ini::parse(path, &main),
        Ini::parse_with_delimiters(path, &rules, &['=']),
    ] {
        match parsed {
            Ok(ini) => sections.extend(ini.sections),
            Err(e) => errors.extend(e),
        }
    }
    sections.sort_by_key(|s| s.line);
    Some(sections)
}

/// A plugin section with the admin override applied.
struct Merged {
    section: Section,
    /// Keys (lower-case) whose entry comes from the override file.
    overridden: Vec<String>,
}

impl Plugin {
    /// Load and validate the plugin in `dir`, applying `override_file` (an admin override) if given.
    pub fn load(dir: &Path, override_file: Option<&Path>) -> Result<Plugin, ConfigErrors> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let config_file = dir.join("config.ini");
        let mut errors = ConfigErrors::default();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !valid_name(&name) {
            errors.push(ConfigError::new(
                &dir,
                format!("plugin name {name:?} must be letters, digits, '_' or '-' (it is the directory's name)"),
            ));
        } else if name == SWITCH_PLUGIN {
            errors.push(ConfigError::new(
                &dir,
                "the plugin name \"switch\" is reserved for the built-in switch",
            ));
        }
        let sections = read_sections(&config_file, &mut errors).unwrap_or_default();
        let mut merged: Vec<Merged> = sections
            .into_iter()
            .map(|section| Merged {
                section,
                overridden: Vec::new(),
            })
            .collect();
        if let Some(ovr) = override_file {
            for osec in read_sections(ovr, &mut errors).unwrap_or_default() {
                let Some(m) = merged.iter_mut().find(|m| m.section.name == osec.name) else {
                    errors.push(
                        ConfigError::new(
                            ovr,
                            format!("overrides a section {} does not have", config_file.display()),
                        )
                        .in_section(&osec.name)
                        .at_line(osec.line),
                    );
                    continue;
                };
                for entry in osec.entries {
                    m.overridden.push(entry.key.to_ascii_lowercase());
                    match m
                        .section
                        .entries
                        .iter_mut()
                        .find(|e| e.key.eq_ignore_ascii_case(&entry.key))
                    {
                        Some(e) => *e = entry,
                        None => m.section.entries.push(entry),
                    }
                }
            }
        }

        let mut plugin = Plugin {
            name: name.clone(),
            dir: dir.clone(),
            config_file: config_file.clone(),
            override_file: override_file.map(Path::to_path_buf),
            description: None,
            version: None,
            steps: Vec::new(),
            switch_rules: Vec::new(),
            extra_daemons: Vec::new(),
            collections: Vec::new(),
            reflections: Vec::new(),
            apps: Vec::new(),
        };
        let mut steps = BTreeMap::new();
        let mut daemons = BTreeMap::new();
        let mut collections = BTreeMap::new();
        let mut reflections: Vec<RawSection> = Vec::new();
        let mut apps = BTreeMap::new();
        for m in &merged {
            let mut report = Report::default();
            let section = &m.section;
            let sname = section.name.as_str();
            let bad_name = |what: &str, n: &str| {
                ConfigError::new(
                    &config_file,
                    format!("{what} name {n:?} must be letters, digits, '_' or '-'"),
                )
                .in_section(sname)
                .at_line(section.line)
            };
            if sname == "general" {
                let mut r = report.section(&config_file, section);
                plugin.description = r.str("description").map(str::to_string);
                plugin.version = r.str("version").map(str::to_string);
                r.finish(UnknownKeys::Error);
            } else if is_switch_section(sname) {
                check_switch_section(&config_file, section, &mut report.errors);
                plugin.switch_rules.push(raw(sname, section));
            } else if let Some(step) = sname.strip_prefix("step_") {
                if !valid_name(step) {
                    report.errors.push(bad_name("step", step));
                } else {
                    let mut r = report.section(&config_file, section);
                    let s = read_step(&mut r, step, &dir);
                    r.finish(UnknownKeys::Error);
                    steps.insert(step.to_string(), s);
                }
            } else if let Some(d) = sname.strip_prefix("extra_daemon_") {
                if !valid_name(d) {
                    report.errors.push(bad_name("extra daemon", d));
                } else {
                    let mut r = report.section(&config_file, section);
                    let daemon = read_extra_daemon(&mut r, d, &dir);
                    r.finish(UnknownKeys::Error);
                    daemons.insert(d.to_string(), daemon);
                }
            } else if let Some(a) = sname.strip_prefix("app_") {
                if !valid_name(a) {
                    report.errors.push(bad_name("app", a));
                } else {
                    let mut r = report.section(&config_file, section);
                    let app = read_app(&mut r, a, &name, &dir);
                    r.finish(UnknownKeys::Error);
                    apps.insert(a.to_string(), app);
                }
            } else if let Some(c) = sname.strip_prefix("collection_") {
                if valid_name(c) {
                    // The collector's own reader: a collection it would refuse refuses the plugin.
                    let mut r = report.section(&config_file, section);
                    let _ = collector::config::read_collection(&mut r, &name, c, &dir);
                    r.finish(UnknownKeys::Error);
                    collections.insert(c.to_string(), raw(c, section));
                } else {
                    report.errors.push(bad_name("collection", c));
                }
            } else if let Some(c) = sname.strip_prefix("reflection_") {
                if valid_name(c) {
                    // The reflector's own reader: a reflection it would refuse refuses the plugin.
                    let mut r = report.section(&config_file, section);
                    let _ = reflector::config::read_reflection(&mut r, &name, c);
                    r.finish(UnknownKeys::Error);
                    reflections.retain(|x| x.name != c);
                    reflections.push(raw(c, section));
                } else {
                    report.errors.push(bad_name("reflection", c));
                }
            } else {
                report.errors.push(
                    ConfigError::new(
                        &config_file,
                        "unknown section (expected general, step_<name>, switch_rules:<type>[:<tag>], \
                         extra_daemon_<name>, app_<name>, collection_<name> or reflection_<name>)",
                    )
                    .in_section(sname)
                    .at_line(section.line),
                );
            }
            // Problems with a key the override set are the override file's.
            for mut e in report.errors.0 {
                let from_override = e
                    .key
                    .as_ref()
                    .is_some_and(|k| m.overridden.contains(&k.to_ascii_lowercase()));
                if let (true, Some(ovr)) = (from_override, override_file) {
                    e.file = ovr.to_path_buf();
                }
                errors.push(e);
            }
        }
        plugin.steps = steps.into_values().collect();
        plugin.extra_daemons = daemons.into_values().collect();
        plugin.collections = collections.into_values().collect();
        plugin.reflections = reflections;
        plugin.apps = apps.into_values().collect();
        errors.into_result(plugin)
    }
}

fn raw(name: &str, section: &Section) -> RawSection {
    RawSection {
        name: name.to_string(),
        entries: section
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect(),
    }
}

/// Validate one switch-rules section with the switch's own parser, reporting its errors at the
/// plugin file's lines.
fn check_switch_section(file: &Path, section: &Section, errors: &mut ConfigErrors) {
    let mut text = format!("[{}]\n", section.name);
    let mut lines = vec![section.line];
    for e in &section.entries {
        text.push_str(&format!("{} = {}\n", e.key, e.value.replace('\n', "\n    ")));
        lines.push(e.line);
        lines.extend(std::iter::repeat_n(e.line, e.value.matches('\n').count()));
    }
    if let Err(errs) = RuleSet::parse(file, &text) {
        for mut e in errs.0 {
            e.line = e.line.and_then(|l| lines.get(l - 1).copied()).or(Some(section.line));
            errors.push(e);
        }
    }
}

/// `cmd_and_args` (or Metwork's `_cmd_and_args`), split shell-style.
fn read_cmd(r: &mut SectionReader<'_>, plugin_dir: &Path, is_step: bool) -> Vec<String> {
    let (key, value) = match (r.str("cmd_and_args"), r.str("_cmd_and_args")) {
        (Some(_), Some(_)) => {
            r.error("_cmd_and_args", "give cmd_and_args or _cmd_and_args, not both");
            return Vec::new();
        }
        (Some(v), None) => ("cmd_and_args", v),
        (None, Some(v)) => ("_cmd_and_args", v),
        (None, None) => {
            r.error("cmd_and_args", "missing required key");
            return Vec::new();
        }
    };
    let Some(mut words) = shlex::split(value) else {
        r.error(
            key,
            "cannot split into words: unbalanced quotes or a trailing backslash",
        );
        return Vec::new();
    };
    if is_step && words.last().map(String::as_str) == Some(STANDARD_STEP_ARGUMENTS) {
        words.pop();
    }
    if words.iter().any(|w| {
        let lower = w.to_ascii_lowercase();
        lower.contains("$(circus.") || lower.contains("((circus.")
    }) {
        r.error(
            key,
            "$(circus.…) would be rewritten by the supervisor: pass values through the environment instead",
        );
        return Vec::new();
    }
    if words.iter().any(|w| w.contains("{STANDARD_STEP_ARGUMENTS}")) {
        let msg = if is_step {
            "{STANDARD_STEP_ARGUMENTS} is accepted only as the last word"
        } else {
            "{STANDARD_STEP_ARGUMENTS} is for steps, not extra daemons"
        };
        r.error(key, msg);
        return Vec::new();
    }
    if words.iter().any(|w| w.contains(['\n', '\r', '\0'])) {
        r.error(key, "an argument contains a line break or a NUL byte");
        return Vec::new();
    }
    let Some(program) = words.first_mut() else {
        r.error(key, "no command");
        return Vec::new();
    };
    if Path::new(program.as_str()).is_relative() {
        let candidate = plugin_dir.join(program.as_str());
        if candidate.is_file() {
            *program = candidate.display().to_string();
        }
    }
    words
}

/// An rlimit: an integer, or Metwork's float spelling (`1e9`); empty or 0 = not set.
fn parse_rlimit(v: &str) -> Result<Option<u64>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let n = match v.parse::<u64>() {
        Ok(n) => n,
        Err(_) => match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => f as u64,
            _ => return Err("expected a non-negative integer (or 1e9 style)".into()),
        },
    };
    Ok((n > 0).then_some(n))
}

fn read_rlimits(r: &mut SectionReader<'_>) -> Rlimits {
    Rlimits {
        address_space: r.parse_with("rlimit_as", None, parse_rlimit),
        nofile: r.parse_with("rlimit_nofile", None, parse_rlimit),
        stack: r.parse_with("rlimit_stack", None, parse_rlimit),
        fsize: r.parse_with("rlimit_fsize", None, parse_rlimit),
    }
}

fn read_step(r: &mut SectionReader<'_>, name: &str, plugin_dir: &Path) -> StepConfig {
    let cmd_and_args = read_cmd(r, plugin_dir, true);
    let numprocesses = r.parse("numprocesses", 1u32);
    let timeout = r.nonzero_duration("timeout", Duration::from_secs(600));
    let max_age = r.duration("max_age", Duration::ZERO);
    let policy = r.parse_with("failure_policy", "keep", |v| match v.trim() {
        "keep" => Ok("keep"),
        "delete" => Ok("delete"),
        "move" => Ok("move"),
        _ => Err("expected keep, delete or move".into()),
    });
    let dest = r
        .str("failure_policy_move_dest_dir")
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let failure_policy = match (policy, dest) {
        ("move", Some(d)) => {
            if !Path::new(d).is_absolute() {
                if let Err(e) = StepName::parse(d) {
                    r.error(
                        "failure_policy_move_dest_dir",
                        format!("expected plugin/step or an absolute directory: {e}"),
                    );
                }
            }
            FailurePolicy::Move(d.to_string())
        }
        ("move", None) => {
            r.error("failure_policy_move_dest_dir", "required with failure_policy = move");
            FailurePolicy::Keep
        }
        (_, Some(_)) => {
            r.error(
                "failure_policy_move_dest_dir",
                "only meaningful with failure_policy = move",
            );
            FailurePolicy::Keep
        }
        ("delete", None) => FailurePolicy::Delete,
        _ => FailurePolicy::Keep,
    };
    let retry_total = r.parse("retry_total", 0u32);
    let retry_min_wait = r.duration("retry_min_wait", Duration::from_secs(10));
    let retry_max_wait = r.duration("retry_max_wait", Duration::from_secs(120));
    let retry_backoff = r.duration("retry_backoff", Duration::ZERO);
    if retry_min_wait > retry_max_wait {
        r.error("retry_min_wait", "must not be longer than retry_max_wait");
    }
    let rlimits = read_rlimits(r);
    let watched_directories = r.parse_with("watched_directories", Vec::new(), |v| {
        let mut out = Vec::new();
        for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == CURRENT_STEP_DIR {
                out.push(WatchedDirectory::StepDir);
                continue;
            }
            let p = PathBuf::from(item);
            if item.contains(['{', '}']) {
                return Err(format!("unknown placeholder in {item:?} (only {CURRENT_STEP_DIR})"));
            }
            if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!("{item:?}: '..' is not allowed"));
            }
            out.push(WatchedDirectory::Path(p));
        }
        Ok(out)
    });
    let debug = r.bool("debug", false);
    StepConfig {
        name: name.to_string(),
        cmd_and_args,
        numprocesses,
        timeout,
        max_age,
        failure_policy,
        retry_total,
        retry_min_wait,
        retry_max_wait,
        retry_backoff,
        rlimits,
        watched_directories,
        debug,
    }
}

fn read_extra_daemon(r: &mut SectionReader<'_>, name: &str, plugin_dir: &Path) -> ExtraDaemon {
    ExtraDaemon {
        name: name.to_string(),
        cmd_and_args: read_cmd(r, plugin_dir, false),
        numprocesses: r.parse("numprocesses", 1u32),
        graceful_timeout: r.duration("graceful_timeout", Duration::from_secs(10)),
        max_age: r.duration("max_age", Duration::ZERO),
        rlimits: read_rlimits(r),
    }
}

fn read_app(r: &mut SectionReader<'_>, name: &str, plugin: &str, plugin_dir: &Path) -> AppConfig {
    // Without a command, the app is its static directory alone.
    let has_cmd = r.str("cmd_and_args").is_some() || r.str("_cmd_and_args").is_some();
    let cmd_and_args = if has_cmd {
        read_cmd(r, plugin_dir, false)
    } else {
        Vec::new()
    };
    let url_path = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if !v.starts_with('/') || !v.ends_with('/') {
            return Err("must start and end with '/'".into());
        }
        if v.split('/').any(|seg| seg == "." || seg == "..") {
            return Err("'.' and '..' segments are not allowed".into());
        }
        if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)) {
            return Err("only letters, digits and / - _ . ~ are allowed".into());
        }
        Ok(v.to_string())
    };
    let prefix = r.parse_with("prefix", format!("/{plugin}/{name}/"), url_path);
    let static_dir = r.parse_with("static", None, |v| {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let p = Path::new(v);
        if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err("must be a directory of the plugin (relative, no '..')".into());
        }
        let dir = plugin_dir.join(p);
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        // A link out of the plugin would publish whatever it points at.
        match (dir.canonicalize(), plugin_dir.canonicalize()) {
            (Ok(real), Ok(base)) if real.starts_with(&base) => Ok(Some(dir)),
            _ => Err(format!("{} leads out of the plugin directory", dir.display())),
        }
    });
    if !has_cmd && static_dir.is_none() {
        r.error(
            "cmd_and_args",
            "missing: give cmd_and_args, or static alone for a static-only app",
        );
    }
    let default_static = if has_cmd {
        format!("{prefix}static/")
    } else {
        prefix.clone()
    };
    let static_prefix = r.parse_with("static_prefix", default_static, url_path);
    let health = r.parse_with("health", None, |v| {
        let v = v.trim();
        match v {
            "" => Ok(None),
            _ if v.starts_with('/') && !v.contains(char::is_whitespace) => Ok(Some(v.to_string())),
            _ => Err("expected a path starting with '/'".into()),
        }
    });
    let client_max_body_size = r.parse_with("client_max_body_size", None, nginx_size);
    AppConfig {
        name: name.to_string(),
        cmd_and_args,
        numprocesses: r.positive("numprocesses", 2u32),
        timeout: r.nonzero_duration("timeout", Duration::from_secs(60)),
        graceful_timeout: r.nonzero_duration("graceful_timeout", Duration::from_secs(10)),
        max_age: r.duration("max_age", Duration::ZERO),
        memory_limit: r.parse_with("memory_limit", None, ringmaster::config::parse_memory_limit),
        rlimits: read_rlimits(r),
        prefix,
        static_dir,
        static_prefix,
        health,
        client_max_body_size,
        debug: r.bool("debug", false),
    }
}

/// An nginx size (`10m`, `512k`, `0` = no limit); empty = not set.
pub fn nginx_size(v: &str) -> Result<Option<String>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || v.len() - digits.len() > 1 {
        return Err("expected an nginx size such as 10m, 512k or 0 (no limit)".into());
    }
    Ok(Some(v.to_string()))
}

/// Every plugin under `plugins/` (sorted by name), with its admin override when one exists, and
/// the errors of the plugins that were refused. Two steps fed from the same directory (each
/// other's, or the switch's `var/in/incoming`) refuse the later plugin.
pub fn load_all(home: &Home) -> (Vec<Plugin>, ConfigErrors) {
    let mut errors = ConfigErrors::default();
    let root = home.plugins_dir();
    let mut dirs: Vec<(String, PathBuf)> = match std::fs::read_dir(&root) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| !n.starts_with('.'))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            errors.push(ConfigError::new(&root, format!("cannot list plugins: {e}")));
            Vec::new()
        }
    };
    dirs.sort();
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    owners.insert(home.incoming_dir(), "the switch (switch/main)".to_string());
    let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
    prefixes.insert("/__ironwork/".into(), "nginx itself".into());
    prefixes.insert("/".into(), "nginx itself (the 404 for unknown paths)".into());
    let mut plugins = Vec::new();
    for (name, dir) in dirs {
        let ovr = home.plugin_override(&name);
        let plugin = match Plugin::load(&dir, ovr.is_file().then_some(ovr.as_path())) {
            Ok(p) => p,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        let mut conflicts = ConfigErrors::default();
        let mut my_prefixes: Vec<(String, String)> = Vec::new();
        for app in &plugin.apps {
            let who = format!("{}/{}", plugin.name, app.name);
            // The URL paths it serves: a static-only app serves its static_prefix alone.
            let mut paths = Vec::new();
            if app.has_workers() {
                paths.push(app.prefix.clone());
            }
            if app.static_dir.is_some() {
                paths.push(app.static_prefix.clone());
            }
            for prefix in paths {
                let taken = prefixes
                    .get(&prefix)
                    .cloned()
                    .or_else(|| my_prefixes.iter().find(|(p, _)| *p == prefix).map(|(_, w)| w.clone()));
                match taken {
                    Some(other) => conflicts.push(
                        ConfigError::new(
                            &plugin.config_file,
                            format!("URL prefix {prefix} is already served by {other}"),
                        )
                        .in_section(&format!("app_{}", app.name))
                        .with_key(if app.has_workers() && prefix == app.prefix {
                            "prefix"
                        } else {
                            "static_prefix"
                        }),
                    ),
                    None => my_prefixes.push((prefix, who.clone())),
                }
            }
        }
        let mut mine: Vec<(PathBuf, String)> = Vec::new();
        for step in &plugin.steps {
            let who = format!("{}/{}", plugin.name, step.name);
            for d in step.watched_dirs(home, &plugin.name) {
                let taken = owners
                    .get(&d)
                    .cloned()
                    .or_else(|| mine.iter().find(|(p, _)| *p == d).map(|(_, w)| w.clone()));
                match taken {
                    Some(other) => conflicts.push(
                        ConfigError::new(
                            &plugin.config_file,
                            format!("{} is already watched for {other}", d.display()),
                        )
                        .in_section(&format!("step_{}", step.name))
                        .with_key("watched_directories"),
                    ),
                    None => mine.push((d, who.clone())),
                }
            }
        }
        if conflicts.is_empty() {
            owners.extend(mine);
            prefixes.extend(my_prefixes);
            plugins.push(plugin);
        } else {
            errors.extend(conflicts);
        }
    }
    (plugins, errors)
}
