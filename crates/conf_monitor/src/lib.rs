//! conf_monitor: keeps `tmp/config_auto/` in step with the module's configuration while
//! everything runs (Metwork's conf_monitor).
//!
//! - [`sources`]: what is watched (`config/ironwork.ini`, `config/plugins/*.ini`,
//!   `plugins/*/config.ini`) and the debounce that turns edits into one regeneration.
//! - this module: [`regenerate`] (load, generate, validate, write what changed) and [`run`]
//!   (the loop, and telling the daemons: `reloadconfig` to ringmaster and SIGHUP to
//!   directory_observer, the collector, the reflector and nginx through the Redis list
//!   `ringmaster.control`; the switch re-reads its rules file by itself).
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
/// The collector's file.
pub const COLLECTOR_INI: &str = "collector.ini";
/// The reflector's file.
pub const REFLECTOR_INI: &str = "reflector.ini";
/// The apps' front.
pub const NGINX_CONF: &str = "nginx.conf";

/// What a regeneration changed on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// File names (under `tmp/config_auto/`) whose content changed.
    pub files: Vec<&'static str>,
    /// Whether ringmaster runs a collector (which then hears about its file).
    #[serde(skip)]
    pub collector: bool,
    /// Whether ringmaster runs a reflector (which then hears about its file).
    #[serde(skip)]
    pub reflector: bool,
    /// Whether nginx runs on the previous `nginx.conf` and must re-read it. Not when nginx is
    /// new (ringmaster starts it on the new file, and a HUP before nginx has set up its signal
    /// handlers would kill it) or gone.
    #[serde(skip)]
    pub nginx_reload: bool,
}

impl Changes {
    /// Whether `name` changed.
    pub fn has(&self, name: &str) -> bool {
        self.files.contains(&name)
    }
}

/// Load the settings and plugins of `home`, generate, validate what was generated with each
/// daemon's loader, and write the files whose content changed (each atomically). Errors: every
/// problem found, as lines; nothing is written then.
pub fn regenerate(home: &Home, bin_dir: &Path) -> Result<Changes, Vec<String>> {
    let lines = |e: ironwork_core::config::ConfigErrors| e.0.iter().map(ToString::to_string).collect::<Vec<_>>();
    let settings = ironwork::settings::Settings::load(home).map_err(lines)?;
    let home = &settings.apply(home.clone());
    let (plugins, errors) = ironwork::plugin::load_all(home);
    if !errors.is_empty() {
        return Err(lines(errors));
    }
    let generated = ironwork::generate::generate(home, &settings, &plugins, bin_dir);
    let mut changes = Changes {
        collector: settings.daemons.collector,
        reflector: settings.daemons.reflector,
        ..Changes::default()
    };
    let old_nginx = std::fs::read_to_string(home.nginx_conf()).unwrap_or_default();
    changes.nginx_reload =
        !old_nginx.is_empty() && !generated.nginx_conf.is_empty() && old_nginx != generated.nginx_conf;
    for (name, text, path) in [
        (RINGMASTER_INI, &generated.ringmaster_ini, home.ringmaster_ini()),
        (
            DIRECTORY_OBSERVER_INI,
            &generated.directory_observer_ini,
            home.directory_observer_ini(),
        ),
        (SWITCH_RULES_INI, &generated.switch_rules_ini, home.switch_rules_ini()),
        (COLLECTOR_INI, &generated.collector_ini, home.collector_ini()),
        (REFLECTOR_INI, &generated.reflector_ini, home.reflector_ini()),
        (NGINX_CONF, &generated.nginx_conf, home.nginx_conf()),
    ] {
        if std::fs::read_to_string(&path).map_or(true, |old| old != *text) {
            changes.files.push(name);
        }
    }
    if changes.files.is_empty() {
        return Ok(changes);
    }
    generated.validate(home)?;
    generated
        .write(home)
        .map_err(|e| vec![format!("cannot write {}: {e}", home.config_auto_dir().display())])?;
    Ok(changes)
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
/// daemons about what changed. Notifications are kept until Redis has taken them (the files on
/// disk already say what changed, so a notification lost now would be lost for good), and the
/// first pass always tells ringmaster and the observer to re-read their files: a regeneration
/// made while conf_monitor was down (or by `ironwork generate`) is never left unannounced.
pub async fn run(home: Home, redis: Redis, options: Options, token: CancellationToken) -> anyhow::Result<()> {
    let control = Queue::new(&redis, names::RINGMASTER_CONTROL);
    let mut debounce = sources::Debouncer::new(options.quiet);
    let mut generation = 0u64;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut status: Option<String> = None;
    let mut redis_down = false;
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
            let first = generation == 1 && errors.is_empty();
            if changes.has(RINGMASTER_INI) || first {
                pending.push(command(generation, "reloadconfig", serde_json::json!({})));
            }
            if changes.has(DIRECTORY_OBSERVER_INI) || first {
                let props = serde_json::json!({"name": "directory_observer", "signum": "HUP"});
                pending.push(command(generation, "signal", props));
            }
            for (file, name, runs) in [
                (COLLECTOR_INI, "collector", changes.collector),
                (REFLECTOR_INI, "reflector", changes.reflector),
            ] {
                if (changes.has(file) || first) && runs {
                    let props = serde_json::json!({"name": name, "signum": "HUP"});
                    pending.push(command(generation, "signal", props));
                }
            }
            if changes.nginx_reload {
                // nginx re-reads its file on SIGHUP, old workers finishing their requests;
                // `nginx -t` accepted it before it was written.
                let props = serde_json::json!({"name": "nginx", "signum": "HUP"});
                pending.push(command(generation, "signal", props));
            }
            let s = Status {
                ok: errors.is_empty(),
                time: epoch_seconds(),
                errors: &errors,
                changed: &changes.files,
            };
            status = Some(serde_json::to_string(&s)?);
        }
        if !pending.is_empty() || status.is_some() {
            let attempt = publish(&redis, &control, &pending, status.as_deref());
            let result = tokio::select! {
                _ = token.cancelled() => return Ok(()),
                r = tokio::time::timeout(PUBLISH_TIMEOUT, attempt) => r,
            };
            match result {
                Ok(Ok(())) => {
                    pending.clear();
                    status = None;
                    if std::mem::take(&mut redis_down) {
                        tracing::info!("Redis is back: pending notifications delivered");
                    }
                }
                Ok(Err(e)) if !redis_down => {
                    redis_down = true;
                    tracing::warn!(error = %e, pending = pending.len(), "cannot notify through Redis, will retry");
                }
                Err(_) if !redis_down => {
                    redis_down = true;
                    tracing::warn!(pending = pending.len(), "Redis does not answer, notifications held");
                }
                _ => {}
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(options.poll) => {}
        }
    }
}

/// Longest a notification attempt may take before conf_monitor goes back to watching.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

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

async fn publish(redis: &Redis, control: &Queue, commands: &[Vec<u8>], status: Option<&str>) -> anyhow::Result<()> {
    if !commands.is_empty() {
        control.push_batch(commands).await?;
    }
    if let Some(status) = status {
        redis
            .retry("status", |mut c| async move {
                redis::cmd("SET")
                    .arg(names::CONF_MONITOR_STATUS)
                    .arg(status)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
    }
    Ok(())
}
