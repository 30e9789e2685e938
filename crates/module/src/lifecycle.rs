//! Running a home's stack: `start` (ringmaster in the background on the generated
//! configuration, waited for until every watcher is up), `stop` (ringmaster's ordered `quit`:
//! steps first, Redis last) and `status` (watchers, queue depths, conf_monitor's verdict,
//! recent errors), all through ringmaster's control socket and Redis; and, without ringmaster,
//! one watcher's process in the foreground (`exec`, what systemd units and containers run).

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use ironwork_core::messages::names;
use ringmaster::control::Client;
use serde_json::{Map, Value};

use crate::home::Home;

/// One watcher as ringmaster reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherState {
    /// Watcher name.
    pub name: String,
    /// `active`, `stopped`, `backoff`, … (ringmaster's words).
    pub status: String,
    /// Live processes.
    pub processes: u64,
    /// Wanted processes.
    pub numprocesses: u64,
    /// Restarts since start.
    pub restarts: u64,
}

impl WatcherState {
    /// Whether it runs everything it should.
    pub fn is_up(&self) -> bool {
        self.status == "active" && self.processes >= self.numprocesses
    }
}

pub use ironwork_core::overview::QueueDepth;

/// What `ironwork status` prints.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Watchers, in ringmaster's order; empty when ringmaster is not running.
    pub watchers: Vec<WatcherState>,
    /// Whether ringmaster answered.
    pub running: bool,
    /// Step queues by name, then the metric pipeline's queues that hold anything.
    pub queues: Vec<QueueDepth>,
    /// conf_monitor's last verdict (`conf_monitor.status`), if any.
    pub conf_monitor: Option<Value>,
    /// The last error lines of the daemons' logs.
    pub recent_errors: Vec<String>,
    /// Whether the queues' Redis answered (`None` when not asked: ringmaster is not running).
    pub redis_ok: Option<bool>,
    /// Whether `[redis] shared_url` answered (`None` when not asked or not set).
    pub shared_redis_ok: Option<bool>,
    /// The collector's and reflector's leaders and totals, when either runs here.
    pub metric_pipeline: Option<ironwork_core::overview::MetricPipeline>,
}

impl Report {
    /// Everything runs and the configuration was accepted.
    pub fn healthy(&self) -> bool {
        self.running
            && self.redis_ok != Some(false)
            && self.shared_redis_ok != Some(false)
            && self.watchers.iter().all(WatcherState::is_up)
            && self
                .conf_monitor
                .as_ref()
                .is_none_or(|s| s.get("ok").and_then(Value::as_bool).unwrap_or(true))
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.running {
            writeln!(f, "ringmaster is not running")?;
        } else {
            writeln!(
                f,
                "{:<40} {:<9} {:>9} {:>8}",
                "WATCHER", "STATUS", "PROCESSES", "RESTARTS"
            )?;
            for w in &self.watchers {
                let procs = format!("{}/{}", w.processes, w.numprocesses);
                writeln!(f, "{:<40} {:<9} {:>9} {:>8}", w.name, w.status, procs, w.restarts)?;
            }
        }
        if !self.queues.is_empty() {
            writeln!(f)?;
            writeln!(f, "{:<40} {:>9} {:>9} {:>6}", "QUEUE", "WAITING", "IN FLIGHT", "DEAD")?;
            for q in &self.queues {
                writeln!(f, "{:<40} {:>9} {:>9} {:>6}", q.queue, q.waiting, q.in_flight, q.dead)?;
            }
        }
        if self.redis_ok == Some(false) {
            writeln!(f)?;
            writeln!(
                f,
                "redis: UNREACHABLE (queue depths and the configuration's state unknown)"
            )?;
        }
        if let Some(m) = &self.metric_pipeline {
            writeln!(f)?;
            let holder = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".into());
            writeln!(f, "collection manager: {}", holder(&m.collector_leader))?;
            writeln!(f, "reflector leader:   {}", holder(&m.reflector_leader))?;
            writeln!(
                f,
                "jobs enqueued {}, points sent {}, not sent {}, unsent batches waiting {}",
                m.jobs_enqueued, m.points_sent, m.points_unsent, m.unsent_batches
            )?;
        }
        if self.shared_redis_ok == Some(false) {
            writeln!(f)?;
            writeln!(
                f,
                "shared redis: UNREACHABLE (the collector's and reflector's queue depths unknown)"
            )?;
        }
        if let Some(s) = &self.conf_monitor {
            let ok = s.get("ok").and_then(Value::as_bool).unwrap_or(true);
            writeln!(f)?;
            if ok {
                writeln!(f, "configuration: accepted")?;
            } else {
                writeln!(f, "configuration: REFUSED (the last good one keeps running)")?;
                for e in s.get("errors").and_then(Value::as_array).into_iter().flatten() {
                    writeln!(f, "  {}", e.as_str().unwrap_or_default())?;
                }
            }
        }
        if !self.recent_errors.is_empty() {
            writeln!(f)?;
            writeln!(f, "recent errors:")?;
            for e in &self.recent_errors {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

async fn call(
    home: &Home,
    command: &str,
    properties: Map<String, Value>,
    timeout: Duration,
) -> anyhow::Result<Map<String, Value>> {
    let mut client = Client::connect(&home.ringmaster_socket()).await?;
    let reply = tokio::time::timeout(timeout, client.call(command, properties))
        .await
        .with_context(|| format!("ringmaster did not answer `{command}` within {}s", timeout.as_secs()))??;
    if reply.status != "ok" {
        anyhow::bail!("{command}: {}", reply.reason.as_deref().unwrap_or("refused"));
    }
    Ok(reply.body)
}

/// The watchers ringmaster runs, or `None` when it does not answer.
pub async fn watchers(home: &Home) -> Option<Vec<WatcherState>> {
    let body = call(home, "status", Map::new(), CALL_TIMEOUT).await.ok()?;
    let details = body.get("details")?.as_object()?;
    let order = body.get("statuses")?.as_object()?;
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(
        order
            .keys()
            .filter_map(|name| {
                let d = details.get(name)?;
                Some(WatcherState {
                    name: name.clone(),
                    status: d.get("status").and_then(Value::as_str).unwrap_or_default().to_string(),
                    processes: n(d, "processes"),
                    numprocesses: n(d, "numprocesses"),
                    restarts: n(d, "restarts"),
                })
            })
            .collect(),
    )
}

/// Have ringmaster re-read its configuration, and directory_observer, the collector, the
/// reflector and nginx their own (after the files were regenerated while the stack runs).
pub async fn apply(home: &Home) -> anyhow::Result<()> {
    // nginx re-reads its file only if it ran before: one started by this reload reads the new
    // file anyway, and a HUP before it has set up its handlers would kill it.
    let nginx_ran = watchers(home)
        .await
        .is_some_and(|ws| ws.iter().any(|w| w.name == "nginx" && w.status == "active"));
    call(home, "reloadconfig", Map::new(), CALL_TIMEOUT).await?;
    let nginx = nginx_ran.then_some("nginx");
    for name in ["directory_observer", "collector", "reflector"]
        .into_iter()
        .chain(nginx)
    {
        let mut props = Map::new();
        props.insert("name".into(), Value::from(name));
        props.insert("signum".into(), Value::from("HUP"));
        // A daemon that does not run (disabled, no app) is fine.
        let _ = call(home, "signal", props, CALL_TIMEOUT).await;
    }
    Ok(())
}

/// How long an ordinary control command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Start ringmaster on `ringmaster_ini` in the background (its own session, output to
/// `log/ringmaster.log`) unless it already runs, then wait up to `timeout` for every watcher.
pub async fn start(home: &Home, ringmaster: &Path, ringmaster_ini: &Path, timeout: Duration) -> anyhow::Result<Report> {
    let mut child = None;
    if watchers(home).await.is_none() {
        let log_dir = home.log_dir();
        std::fs::create_dir_all(&log_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("ringmaster.log"))
            .with_context(|| format!("cannot open {}", log_dir.join("ringmaster.log").display()))?;
        let mut cmd = Command::new(ringmaster);
        cmd.arg("--log-format")
            .arg("json")
            .arg(ringmaster_ini)
            .env("IRONWORK_HOME", &home.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        child = Some(
            cmd.spawn()
                .with_context(|| format!("cannot start {}", ringmaster.display()))?,
        );
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            let log = std::fs::read_to_string(home.log_dir().join("ringmaster.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("ringmaster exited at once ({status}):\n  {}", tail.join("\n  "));
        }
        if let Some(ws) = watchers(home).await {
            if !ws.is_empty() && ws.iter().all(WatcherState::is_up) {
                // Up means answering too: Redis may still be loading its append-only file.
                let report = status(home).await?;
                if report.redis_ok != Some(false) {
                    return Ok(report);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let report = status(home).await?;
            anyhow::bail!("not every watcher came up within {}s:\n{report}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop everything in order and wait up to `timeout` for ringmaster to be gone.
pub async fn stop(home: &Home, timeout: Duration) -> anyhow::Result<bool> {
    // Not answering `status` in time is not "not running": only a refused connection is.
    if Client::connect(&home.ringmaster_socket()).await.is_err() {
        return Ok(false);
    }
    // ringmaster answers `quit` once every watcher has stopped: give it the whole timeout.
    call(home, "quit", Map::new(), timeout).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if Client::connect(&home.ringmaster_socket()).await.is_err() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("ringmaster still answers {}s after quit", timeout.as_secs())
}

/// Watchers, queue depths, conf_monitor's verdict and recent errors.
pub async fn status(home: &Home) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if let Some(ws) = watchers(home).await {
        report.running = true;
        report.watchers = ws;
    }
    if report.running {
        let (url, shared_url) = match crate::settings::Settings::load(home) {
            Ok(s) => (s.redis.url_for_daemons(home), s.redis.shared_url_for_daemons(home)),
            Err(_) => {
                let own = format!("unix://{}", home.redis_socket().display());
                (own.clone(), own)
            }
        };
        // Every step's queue is listed, the empty ones too (Redis drops empty lists).
        let known: Vec<String> = report
            .watchers
            .iter()
            .filter(|w| w.name.starts_with("step."))
            .map(|w| w.name.clone())
            .collect();
        match tokio::time::timeout(Duration::from_secs(5), redis_view(&url, &known, shared_url == url)).await {
            Ok(Ok((queues, conf))) => {
                report.queues = queues;
                report.conf_monitor = conf;
                report.redis_ok = Some(true);
            }
            _ => report.redis_ok = Some(false),
        }
        // The collector's and reflector's leaders and totals (what the console shows too).
        let metric_daemons = report
            .watchers
            .iter()
            .any(|w| w.name == "collector" || w.name == "reflector");
        if metric_daemons {
            let view = async {
                let redis = ironwork_core::Redis::open(&shared_url)?;
                anyhow::Ok(ironwork_core::overview::metric_pipeline(&redis).await?)
            };
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), view).await {
                report.metric_pipeline = Some(m);
            }
        }
        // The collector's and reflector's queues, in `[redis] shared_url` when set.
        if shared_url != url {
            match tokio::time::timeout(Duration::from_secs(5), shared_view(&shared_url)).await {
                Ok(Ok(queues)) => {
                    report.queues.extend(queues);
                    report.shared_redis_ok = Some(true);
                }
                _ => report.shared_redis_ok = Some(false),
            }
        }
    }
    report.recent_errors = recent_errors(&home.log_dir(), 5);
    Ok(report)
}

/// The node's queues (the same figures ringmaster's console shows) and conf_monitor's verdict.
async fn redis_view(
    url: &str,
    known: &[String],
    metric_queues: bool,
) -> anyhow::Result<(Vec<QueueDepth>, Option<Value>)> {
    let redis = ironwork_core::Redis::open(url)?;
    let mut queues = ironwork_core::overview::step_depths(&redis, known, true).await?;
    if metric_queues {
        queues.extend(ironwork_core::overview::metric_depths(&redis).await?);
    }
    let conf: Option<String> = redis
        .retry("conf_monitor_status", |mut c| async move {
            redis::cmd("GET")
                .arg(names::CONF_MONITOR_STATUS)
                .query_async(&mut c)
                .await
        })
        .await?;
    Ok((queues, conf.and_then(|s| serde_json::from_str(&s).ok())))
}

/// The collector's and reflector's queues in `[redis] shared_url` (which may be a cluster), when
/// they hold anything.
async fn shared_view(url: &str) -> anyhow::Result<Vec<QueueDepth>> {
    let redis = ironwork_core::Redis::open(url)?;
    Ok(ironwork_core::overview::metric_depths(&redis).await?)
}

/// Every worker of the generated ringmaster.ini, `NAME:WID`, in the file's order: what a
/// service manager runs one unit or container per (`exec`).
pub fn workers(home: &Home) -> anyhow::Result<Vec<String>> {
    let config = load_generated(home)?;
    Ok(config
        .watchers
        .iter()
        .flat_map(|w| (1..=w.numprocesses).map(move |wid| format!("{}:{wid}", w.name)))
        .collect())
}

/// Replace this process with worker `WID` (default 1) of watcher `NAME` of the generated
/// ringmaster.ini (`NAME[:WID]`), as ringmaster would start it; returns only on failure.
pub fn exec(home: &Home, spec: &str) -> anyhow::Error {
    let (name, wid) = match spec.rsplit_once(':') {
        Some((n, w)) => match w.parse::<u32>() {
            Ok(wid) if wid >= 1 => (n, wid),
            _ => return anyhow::anyhow!("{spec}: the worker number after ':' must be 1 or more"),
        },
        None => (spec, 1),
    };
    let config = match load_generated(home) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let Some(w) = config.watcher(name) else {
        let known: Vec<&str> = config.watchers.iter().map(|w| w.name.as_str()).collect();
        return anyhow::anyhow!(
            "{}: no watcher {name:?} (there are: {})",
            home.ringmaster_ini().display(),
            known.join(", ")
        );
    };
    if wid > w.numprocesses {
        return anyhow::anyhow!("{name} runs {} worker(s): there is no worker {wid}", w.numprocesses);
    }
    anyhow::Error::from(ringmaster::process::exec(w, wid)).context(format!("exec {name}:{wid}"))
}

fn load_generated(home: &Home) -> anyhow::Result<ringmaster::config::Config> {
    let ini = home.ringmaster_ini();
    if !ini.is_file() {
        anyhow::bail!("{} is missing: run `ironwork generate` first", ini.display());
    }
    ringmaster::config::Config::load(&ini).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The last `n` error lines across the JSON logs in `dir` (the end of each file only).
pub fn recent_errors(dir: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut found: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut text = String::new();
        if f.read_to_string(&mut text).is_err() {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("\"level\":\"error\"")) {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let ts = v
                .get("timestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut shown = String::new();
            let _ = write!(
                shown,
                "{ts} {name}: {}",
                v.get("event").and_then(Value::as_str).unwrap_or(line)
            );
            if let Some(err) = v.get("error").and_then(Value::as_str) {
                let _ = write!(shown, ": {err}");
            }
            found.push((ts, shown));
        }
    }
    found.sort();
    found.into_iter().rev().take(n).rev().map(|(_, s)| s).collect()
}
