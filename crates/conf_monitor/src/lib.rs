//! conf_monitor: keeps `tmp/config_auto/` in step with the module's configuration while
//! everything runs (Metwork's conf_monitor).
//!
//! - [`sources`]: what is watched (`config/ironwork.ini`, `config/plugins/*.ini`,
//!   `plugins/*/config.ini`) and the debounce that turns edits into one regeneration.
//! - this module: [`regenerate`] (load, generate, validate, write what changed) and [`run`]
//!   (the loop, and telling the daemons: `reloadconfig` to ringmaster and SIGHUP to
//!   directory_observer through the Redis list `ringmaster.control`; the switch re-reads its
//!   rules file by itself).
//!
//! A configuration with errors changes nothing: every error is logged and published in the
//! Redis key `conf_monitor.status`, which `ironwork status` shows, and the last good
//! configuration keeps running.

pub mod sources;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironwork::home::Home;
use ironwork_core::messages::{epoch_seconds, names, ControlCommand};
use ironwork_core::{CancellationToken, Queue, Redis};
use serde::Serialize;

/// The generated files, by name under `tmp/config_auto/`.
pub const RINGMASTER_INI: &str = "ringmaster.ini";
/// directory_observer's file.
pub const DIRECTORY_OBSERVER_INI: &str = "directory_observer.ini";
/// The switch's rules.
pub const SWITCH_RULES_INI: &str = "switch_rules.ini";

/// What a regeneration changed on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// File names (under `tmp/config_auto/`) whose content changed.
    pub files: Vec<&'static str>,
}

impl Changes {
    /// Whether `name` changed.
    pub fn has(&self, name: &str) -> bool {
        self.files.contains(&name)
    }
}

/// Load the settings and plugins of `home`, generate, validate what was generated, and write
/// the files whose content changed (each atomically). Errors: every problem found, as lines.
pub fn regenerate(home: &Home, bin_dir: &Path) -> Result<Changes, Vec<String>> {
    let lines = |e: ironwork_core::config::ConfigErrors| e.0.iter().map(ToString::to_string).collect::<Vec<_>>();
    let settings = ironwork::settings::Settings::load(home).map_err(lines)?;
    let home = &settings.apply(home.clone());
    let (plugins, errors) = ironwork::plugin::load_all(home);
    if !errors.is_empty() {
        return Err(lines(errors));
    }
    let generated = ironwork::generate::generate(home, &settings, &plugins, bin_dir);
    let dir = home.root.join("tmp").join("config_auto");
    std::fs::create_dir_all(&dir).map_err(|e| vec![format!("cannot create {}: {e}", dir.display())])?;
    let outputs = [
        (RINGMASTER_INI, &generated.ringmaster_ini),
        (DIRECTORY_OBSERVER_INI, &generated.directory_observer_ini),
        (SWITCH_RULES_INI, &generated.switch_rules_ini),
    ];
    // Stage every changed file and validate it with the daemon's own loader before any of
    // them replaces the running one.
    let mut staged = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in outputs {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == *text) {
            continue;
        }
        let part = dir.join(format!(".{name}.new"));
        if let Err(e) = std::fs::write(&part, text) {
            problems.push(format!("cannot write {}: {e}", part.display()));
            continue;
        }
        if let Err(e) = validate(name, &part, home) {
            problems.extend(e);
        }
        staged.push((name, part, path));
    }
    if !problems.is_empty() {
        for (_, part, _) in &staged {
            let _ = std::fs::remove_file(part);
        }
        return Err(problems);
    }
    let mut changes = Changes::default();
    for (name, part, path) in staged {
        std::fs::rename(&part, &path).map_err(|e| vec![format!("cannot replace {}: {e}", path.display())])?;
        changes.files.push(name);
    }
    Ok(changes)
}

/// Check a generated file with the loader of the daemon that will read it.
fn validate(name: &str, path: &Path, home: &Home) -> Result<(), Vec<String>> {
    let lines = |e: ironwork_core::config::ConfigErrors| e.0.iter().map(ToString::to_string).collect::<Vec<_>>();
    match name {
        RINGMASTER_INI => ringmaster::config::Config::load(path).map(drop).map_err(lines),
        DIRECTORY_OBSERVER_INI => directory_observer::config::Config::load_with_home(path, Some(&home.root))
            .map(drop)
            .map_err(lines),
        SWITCH_RULES_INI => ironwork_step::switch_rules::RuleSet::load(path)
            .map(drop)
            .map_err(lines),
        _ => Ok(()),
    }
}

/// What [`run`] publishes in `conf_monitor.status`.
#[derive(Debug, Serialize)]
struct Status<'a> {
    ok: bool,
    time: f64,
    errors: &'a [String],
    changed: &'a [&'static str],
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the ironwork binaries are (for the generated commands).
    pub bin_dir: PathBuf,
    /// How often the sources are looked at.
    pub poll: Duration,
    /// How long they must stay unchanged before a regeneration.
    pub quiet: Duration,
}

/// Watch `home` until `token` is cancelled: regenerate on every settled change, and tell the
/// daemons about what changed.
pub async fn run(home: Home, redis: Redis, options: Options, token: CancellationToken) -> anyhow::Result<()> {
    let control = Queue::new(&redis, names::RINGMASTER_CONTROL);
    let mut debounce = sources::Debouncer::new(options.quiet);
    let mut generation = 0u64;
    tracing::info!(home = %home.root.display(), "conf_monitor started");
    loop {
        if debounce.observe(sources::fingerprint(&home.root), Instant::now()) {
            generation += 1;
            let result = regenerate(&home, &options.bin_dir);
            let (errors, changes) = match &result {
                Ok(c) => (Vec::new(), c.clone()),
                Err(e) => (e.clone(), Changes::default()),
            };
            for e in &errors {
                tracing::error!(error = %e, "configuration refused, the running one stays");
            }
            if !changes.files.is_empty() {
                tracing::info!(files = ?changes.files, generation, "configuration regenerated");
            }
            let mut commands = Vec::new();
            if changes.has(RINGMASTER_INI) {
                commands.push(command(generation, "reloadconfig", serde_json::json!({})));
            }
            if changes.has(DIRECTORY_OBSERVER_INI) {
                let props = serde_json::json!({"name": "directory_observer", "signum": "HUP"});
                commands.push(command(generation, "signal", props));
            }
            let status = Status {
                ok: errors.is_empty(),
                time: epoch_seconds(),
                errors: &errors,
                changed: &changes.files,
            };
            let status = serde_json::to_string(&status)?;
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                r = publish(&redis, &control, commands, status) => r?,
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(options.poll) => {}
        }
    }
}

fn command(generation: u64, name: &str, properties: serde_json::Value) -> Vec<u8> {
    let properties = match properties {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let cmd = ControlCommand {
        id: format!("conf_monitor-{}-{generation}-{name}", std::process::id()),
        command: name.to_string(),
        properties,
    };
    serde_json::to_vec(&cmd).unwrap_or_default()
}

async fn publish(redis: &Redis, control: &Queue, commands: Vec<Vec<u8>>, status: String) -> anyhow::Result<()> {
    for c in &commands {
        control.push(c).await?;
    }
    redis
        .retry("status", |mut c| {
            let status = status.clone();
            async move {
                redis::cmd("SET")
                    .arg(names::CONF_MONITOR_STATUS)
                    .arg(status)
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await?;
    Ok(())
}
