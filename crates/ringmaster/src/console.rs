//! The web console (`[ringmaster] console = 127.0.0.1:18870`): one page with the watchers and
//! their processes (state, pid, rss, cpu, age, restarts), the queues with a sparkline of the last
//! hour, the pipeline (files per step, files/s, the last dead letters and their reasons), each
//! watcher's log tail, and buttons that start, stop, restart, grow or shrink a watcher, kept live
//! over server-sent events.
//!
//! Every figure comes from the same place as `ringctl`'s: the page asks the supervision loop the
//! same `status`, `stats` and `tail` commands through [`control::dispatch`], and reads the queues
//! with [`ironwork_core::overview::depths`], which `ironwork status` uses too.
//!
//! The page is rendered on the server, so it reads without JavaScript (it then refreshes itself
//! every few seconds); the script only swaps in the parts each event carries, rendered by the
//! same code. Changes need the token of `console_token_file` (created 0600 at start when
//! missing) and a confirmation: the script asks and sends the token as a bearer; without it, an
//! action links to a page that asks for both. Bound to anything but loopback, every request
//! needs the token (or the read-only cookie `/?token=` leaves). A loopback console answers only
//! its own `Host` names.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use ironwork_core::messages::{names, ControlCommand, RingmasterEvent};
use ironwork_core::overview::QueueDepth;
use ironwork_core::Redis;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control;
use crate::supervisor::Input;

/// How often the live page gets a fresh snapshot.
const EVENT_PERIOD: Duration = Duration::from_secs(2);
/// How often queue depths and step counters are recorded for the sparklines and rates.
const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
const SAMPLES: usize = 360;
/// Dead letters shown per step.
const FAILURES_SHOWN: isize = 3;
/// The cookie that lets a browser read a console bound beyond loopback.
const READ_COOKIE: &str = "ironwork_console";
/// Recent notable events kept (flapping, memory limit, abnormal exits, kills, stops, starts).
const EVENTS_KEPT: usize = 50;
/// Most console connections served at once.
const MAX_CONNECTIONS: usize = 32;
/// Most log lines one tail request returns.
const MAX_TAIL: u64 = 1000;
/// The actions the page offers, as ringmaster commands.
const ACTIONS: &[&str] = &["start", "stop", "restart", "incr", "decr"];

const PAGE_CSS: &str = include_str!("console/console.css");
const PAGE_JS: &str = include_str!("console/console.js");

type Body = BoxBody<Bytes, Infallible>;

/// What the console needs from the running ringmaster.
#[derive(Clone)]
pub struct Console {
    inputs: mpsc::Sender<Input>,
    redis: Option<Redis>,
    /// The collector's and reflector's Redis (`shared_redis_url`, else `redis`).
    shared: Option<Redis>,
    /// `trash/` of the data directory (`trash_dir`), counted per step.
    trash_dir: Option<std::path::PathBuf>,
    token: Arc<str>,
    /// What the cookie of `/?token=…` holds: lets a browser read, never act.
    read_token: Arc<str>,
    /// Bound beyond loopback: reading needs the token too.
    guarded: bool,
    /// The `Host` values a loopback console answers (no DNS rebinding).
    hosts: Arc<[String]>,
    /// The last snapshot and when it was taken, shared by every page and event stream.
    latest: Arc<tokio::sync::Mutex<Option<Taken>>>,
    /// The snapshot (with the page's parts) for the event streams, one producer for all.
    live: tokio::sync::watch::Sender<Arc<String>>,
    history: Arc<std::sync::Mutex<VecDeque<Sample>>>,
    events: Arc<std::sync::Mutex<VecDeque<RingmasterEvent>>>,
}

/// A snapshot and when it was taken.
type Taken = (std::time::Instant, Arc<Value>);

/// Queue depths and step counters at one time.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: f64,
    waiting: BTreeMap<String, u64>,
    files: BTreeMap<String, u64>,
    jobs: Option<u64>,
}

/// What [`Console::measure`] reads from Redis.
#[derive(Debug, Default)]
struct Measures {
    queues: Vec<QueueDepth>,
    pipeline: Vec<StepFigures>,
}

/// One step's figures on the page.
#[derive(Debug)]
struct StepFigures {
    queue: String,
    files: u64,
    trash: Option<usize>,
    failures: Vec<Value>,
}

impl Console {
    /// A console answering from `inputs` (the supervision loop) and `redis` (the queues), with
    /// the token read from `token_file`, or written there (0600) when missing.
    pub fn new(
        inputs: mpsc::Sender<Input>,
        redis: Option<Redis>,
        shared: Option<Redis>,
        token_file: &Path,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            inputs,
            shared: shared.or_else(|| redis.clone()),
            trash_dir: None,
            redis,
            token: load_or_create_token(token_file)?.into(),
            read_token: random_token().into(),
            guarded: !addr.ip().is_loopback(),
            hosts: loopback_hosts(addr).into(),
            latest: Default::default(),
            live: tokio::sync::watch::Sender::new(Arc::new(String::new())),
            history: Default::default(),
            events: Default::default(),
        })
    }

    /// Count the files kept in `dir/<plugin>.<step>/` for each step.
    pub fn with_trash_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.trash_dir = dir;
        self
    }

    /// Serve on `listener` until `token` is cancelled.
    pub async fn serve(self, listener: tokio::net::TcpListener, token: CancellationToken) {
        tokio::spawn(self.clone().record(token.clone()));
        tokio::spawn(self.clone().produce(token.clone()));
        let stop = token.clone();
        ironwork_core::http::serve_connections(listener, MAX_CONNECTIONS, token, move |req: Request<Incoming>| {
            let (console, stop) = (self.clone(), stop.clone());
            async move { Ok::<_, Infallible>(console.respond(req, stop).await) }
        })
        .await;
    }

    async fn respond(&self, req: Request<Incoming>, stop: CancellationToken) -> Response<Body> {
        secure(self.route(req, stop).await)
    }

    async fn route(&self, req: Request<Incoming>, stop: CancellationToken) -> Response<Body> {
        let path = req.uri().path().to_string();
        if !self.guarded {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return text(StatusCode::MISDIRECTED_REQUEST, "unknown Host for a loopback console\n");
            }
        }
        if self.guarded && !self.may_read(&req) {
            return text(
                StatusCode::UNAUTHORIZED,
                "the console is bound beyond loopback: open /?token=<console token> once, or send it as a bearer\n",
            );
        }
        // `/?token=…` (beyond loopback) leaves a cookie that lets this browser read; changes
        // still need the token itself.
        if self.guarded && path == "/" && query_param(&req, "token").is_some() {
            return Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header("location", "/")
                .header(
                    "set-cookie",
                    format!(
                        "{READ_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=86400",
                        self.read_token
                    ),
                )
                .body(full(String::new()))
                .unwrap_or_default();
        }
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/") => html(render_page(&*self.current().await)),
            (Method::GET, "/console.css") => asset("text/css", PAGE_CSS),
            (Method::GET, "/console.js") => asset("text/javascript", PAGE_JS),
            (Method::GET, "/api/state") => {
                let mut state = (*self.current().await).clone();
                if query_param(&req, "html").is_some() {
                    state["html"] = Value::Object(render_fragments(&state));
                }
                json_response(StatusCode::OK, &state)
            }
            (Method::GET, p) if p.starts_with("/action/") => match parse_action(&p["/action/".len()..]) {
                Ok((command, name)) => html(render_confirmation(command, &name)),
                Err(e) => text(StatusCode::NOT_FOUND, &format!("{e}\n")),
            },
            (Method::GET, "/events") => self.events(stop),
            (Method::GET, p) if p.starts_with("/logs/") => {
                let name = ironwork_core::http::percent_decode(&p["/logs/".len()..]).into_owned();
                let lines = query_param(&req, "lines")
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(100)
                    .min(MAX_TAIL);
                self.tail(&name, lines).await
            }
            (Method::POST, p) if p.starts_with("/action/") => self.action(req, &p["/action/".len()..]).await,
            (Method::GET | Method::POST, _) => text(StatusCode::NOT_FOUND, "not found\n"),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET or POST\n"),
        }
    }

    /// Whether the request may read (beyond loopback): the token as a bearer, or in `/?token=`
    /// (the page that sets the cookie), or the cookie that page left.
    fn may_read<B>(&self, req: &Request<B>) -> bool {
        let cookie = req
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == READ_COOKIE && constant_time_eq(v.as_bytes(), self.read_token.as_bytes()));
        let login = req.uri().path() == "/"
            && query_param(req, "token").is_some_and(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes()));
        cookie || login || self.authorized(req, None)
    }

    /// Whether the request carries the token: `Authorization: Bearer …`, or the form's `token`.
    fn authorized<B>(&self, req: &Request<B>, form: Option<&Map<String, Value>>) -> bool {
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = bearer.or_else(|| form.and_then(|f| f.get("token")).and_then(Value::as_str));
        given.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.token.as_bytes()))
    }

    /// `POST /action/<command>/<watcher>`: token and `confirm=yes` required.
    async fn action(&self, req: Request<Incoming>, rest: &str) -> Response<Body> {
        let (command, name) = match parse_action(rest) {
            Ok(a) => a,
            Err(e) => return text(StatusCode::NOT_FOUND, &format!("{e}\n")),
        };
        let from_page = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let (head, body) = req.into_parts();
        let Ok(collected) = http_body_util::Limited::new(body, 4096).collect().await else {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n");
        };
        let form = parse_form(&collected.to_bytes());
        let req = Request::from_parts(head, ());
        if !self.authorized(&req, Some(&form)) {
            return text(StatusCode::UNAUTHORIZED, "wrong or missing token\n");
        }
        if form.get("confirm").and_then(Value::as_str) != Some("yes") {
            return text(StatusCode::BAD_REQUEST, "not confirmed (confirm=yes)\n");
        }
        let mut props = Map::new();
        props.insert("name".into(), name.clone().into());
        let reply = self.call(command, props).await;
        tracing::info!(command, watcher = %name, status = %reply.status, "console action");
        if from_page {
            if reply.status != "ok" {
                let reason = reply.reason.unwrap_or_default();
                return html(render_refusal(command, &name, &reason));
            }
            return Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header("location", "/")
                .body(full(String::new()))
                .unwrap_or_default();
        }
        let status = if reply.status == "ok" {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        json_response(status, &serde_json::to_value(&reply).unwrap_or_default())
    }

    async fn tail(&self, name: &str, lines: u64) -> Response<Body> {
        let mut props = Map::new();
        props.insert("name".into(), name.into());
        props.insert("lines".into(), lines.into());
        let reply = self.call("tail", props).await;
        if reply.status != "ok" {
            return text(
                StatusCode::NOT_FOUND,
                &format!("{}\n", reply.reason.unwrap_or_default()),
            );
        }
        let lines: Vec<&str> = reply
            .body
            .get("lines")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        text(StatusCode::OK, &(lines.join("\n") + "\n"))
    }

    /// A stream of the snapshots the producer publishes, the current one first.
    fn events(&self, stop: CancellationToken) -> Response<Body> {
        let mut rx = self.live.subscribe();
        rx.mark_changed();
        let (tx, out) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    r = rx.changed() => if r.is_err() { return },
                }
                let data = rx.borrow_and_update().clone();
                if data.is_empty() {
                    continue;
                }
                let frame = Frame::data(Bytes::from(format!("event: state\ndata: {data}\n\n")));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures_util::stream::unfold(out, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-store")
            .header("x-accel-buffering", "no")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap_or_default()
    }

    /// Publish a snapshot every [`EVENT_PERIOD`] while an event stream listens.
    async fn produce(self, stop: CancellationToken) {
        loop {
            if self.live.receiver_count() > 0 {
                let mut state = (*self.current().await).clone();
                state["html"] = Value::Object(render_fragments(&state));
                self.live.send_replace(Arc::new(state.to_string()));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(EVENT_PERIOD) => {}
            }
        }
    }

    /// The last snapshot when younger than [`EVENT_PERIOD`], else a new one: however many pages
    /// and streams are open, the supervisor and Redis are asked once per period.
    async fn current(&self) -> Arc<Value> {
        let mut latest = self.latest.lock().await;
        if let Some((at, v)) = &*latest {
            if at.elapsed() < EVENT_PERIOD {
                return v.clone();
            }
        }
        let v = Arc::new(self.snapshot().await);
        *latest = Some((std::time::Instant::now(), v.clone()));
        v
    }

    /// Keep the notable supervision events for the page, passing every event on to `forward`.
    pub async fn keep_events(
        self,
        mut events: mpsc::Receiver<RingmasterEvent>,
        forward: mpsc::Sender<RingmasterEvent>,
    ) {
        while let Some(ev) = events.recv().await {
            if notable(&ev) {
                let mut kept = self.events.lock().unwrap_or_else(|p| p.into_inner());
                kept.push_back(ev.clone());
                while kept.len() > EVENTS_KEPT {
                    kept.pop_front();
                }
            }
            if forward.send(ev).await.is_err() {
                return;
            }
        }
    }

    /// Record a [`Sample`] every [`SAMPLE_PERIOD`] until `stop`.
    async fn record(self, stop: CancellationToken) {
        loop {
            // A sample Redis could not give is left out: a gap, not a false zero.
            if let Some(m) = self.measure(&self.step_watchers().await).await {
                let jobs = match &self.shared {
                    Some(shared) => {
                        tokio::time::timeout(Duration::from_secs(3), ironwork_core::overview::metric_pipeline(shared))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(|m| m.jobs_enqueued)
                    }
                    None => None,
                };
                let sample = Sample {
                    at: ironwork_core::messages::epoch_seconds(),
                    waiting: m.queues.iter().map(|q| (q.queue.clone(), q.waiting)).collect(),
                    files: m.pipeline.iter().map(|p| (p.queue.clone(), p.files)).collect(),
                    jobs,
                };
                let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
                h.push_back(sample);
                while h.len() > SAMPLES {
                    h.pop_front();
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_PERIOD) => {}
            }
        }
    }

    async fn step_watchers(&self) -> Vec<String> {
        let status = self.call("status", Map::new()).await.body;
        status
            .get("statuses")
            .and_then(Value::as_object)
            .map(|s| s.keys().filter(|n| n.starts_with("step.")).cloned().collect())
            .unwrap_or_default()
    }

    /// The queues (the steps', then the collector's and reflector's), and per step the files
    /// that entered it, those in the trash, and its last dead letters; `None` when Redis does
    /// not answer in time.
    async fn measure(&self, steps: &[String]) -> Option<Measures> {
        let redis = self.redis.as_ref()?;
        let work = async {
            let mut queues = ironwork_core::overview::step_depths(redis, steps, false).await?;
            if let Some(shared) = &self.shared {
                queues.extend(ironwork_core::overview::metric_depths(shared).await?);
            }
            let mut pipeline = Vec::new();
            for q in queues.iter().filter(|q| q.queue.starts_with("step.")) {
                let mut parts = q.queue.splitn(3, '.').skip(1);
                let (Some(plugin), Some(step)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let mut pipe = redis::pipe();
                pipe.get(names::step_files(plugin, step))
                    .lrange(names::dead(&q.queue), 0, FAILURES_SHOWN - 1);
                let (files, dead): (Option<u64>, Vec<String>) = redis.pipeline("step_figures", &pipe).await?;
                let failures = dead
                    .iter()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .map(|d| json!({"reason": d.get("reason"), "at": d.get("dead_at"), "payload": d.get("payload")}))
                    .collect();
                pipeline.push(StepFigures {
                    queue: q.queue.clone(),
                    files: files.unwrap_or(0),
                    trash: None,
                    failures,
                });
            }
            Ok::<_, redis::RedisError>(Measures { queues, pipeline })
        };
        let mut m = tokio::time::timeout(Duration::from_secs(3), work).await.ok()?.ok()?;
        if let Some(dir) = self.trash_dir.clone() {
            let queues: Vec<String> = m.pipeline.iter().map(|p| p.queue.clone()).collect();
            let counts =
                tokio::task::spawn_blocking(move || queues.iter().map(|q| trash_count(&dir, q)).collect::<Vec<_>>())
                    .await
                    .unwrap_or_default();
            for (p, n) in m.pipeline.iter_mut().zip(counts) {
                p.trash = Some(n);
            }
        }
        Some(m)
    }

    async fn call(&self, command: &str, properties: Map<String, Value>) -> ironwork_core::messages::ControlReply {
        let cmd = ControlCommand {
            id: format!("console-{command}"),
            command: command.to_string(),
            properties,
        };
        control::dispatch(cmd, &self.inputs).await
    }

    /// Everything the page shows: `status` and `stats` as `ringctl` gets them, and the queues.
    pub async fn snapshot(&self) -> Value {
        let status = self.call("status", Map::new()).await.body;
        let stats = self.call("stats", Map::new()).await.body;
        let details = status
            .get("details")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let info = stats
            .get("info")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let order: Vec<String> = status
            .get("statuses")
            .and_then(Value::as_object)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        let watchers: Vec<Value> = order
            .iter()
            .map(|name| {
                let d = details.get(name).cloned().unwrap_or_default();
                let i = info.get(name).cloned().unwrap_or_default();
                let mut processes: Vec<Value> = i
                    .get("processes")
                    .and_then(Value::as_object)
                    .map(|p| p.values().cloned().collect())
                    .unwrap_or_default();
                processes.sort_by_key(|p| p.get("wid").and_then(Value::as_u64).unwrap_or(0));
                json!({
                    "name": name,
                    "status": d.get("status"),
                    "processes": d.get("processes"),
                    "numprocesses": d.get("numprocesses"),
                    "restarts": d.get("restarts"),
                    "memory_restarts": i.get("memory_restarts"),
                    "retry_in": d.get("retry_in"),
                    "workers": processes,
                })
            })
            .collect();
        let known: Vec<String> = order.iter().filter(|n| n.starts_with("step.")).cloned().collect();
        let measured = self.measure(&known).await;
        let redis_ok = self.redis.is_none() || measured.is_some();
        let Measures { queues, pipeline } = measured.unwrap_or_default();
        let now = ironwork_core::messages::epoch_seconds();
        let history: Vec<Sample> = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let queues: Vec<Value> = queues
            .iter()
            .map(|q| {
                let series: Vec<u64> = history
                    .iter()
                    .map(|s| s.waiting.get(&q.queue).copied().unwrap_or(0))
                    .chain([q.waiting])
                    .collect();
                json!({"queue": q.queue, "waiting": q.waiting, "in_flight": q.in_flight, "dead": q.dead,
                       "spark": sparkline(&series)})
            })
            .collect();
        let pipeline: Vec<Value> = pipeline
            .into_iter()
            .map(|p| {
                let files_per_s = rate(&history, now, p.files, |s| s.files.get(&p.queue).copied());
                json!({"step": p.queue, "files": p.files, "files_per_s": files_per_s, "trash": p.trash, "failures": p.failures})
            })
            .collect();
        let metric_pipeline = match &self.shared {
            Some(shared)
                if watchers
                    .iter()
                    .any(|w| matches!(w["name"].as_str(), Some("collector" | "reflector"))) =>
            {
                match tokio::time::timeout(Duration::from_secs(3), ironwork_core::overview::metric_pipeline(shared))
                    .await
                {
                    Ok(Ok(m)) => {
                        let jobs_per_s = rate(&history, now, m.jobs_enqueued, |s| s.jobs);
                        let mut v = serde_json::to_value(&m).unwrap_or_default();
                        v["jobs_per_s"] = json!(jobs_per_s);
                        v
                    }
                    _ => json!({"unreachable": true}),
                }
            }
            _ => Value::Null,
        };
        let events: Vec<Value> = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .map(
                |e| json!({"time": e.time, "watcher": e.watcher, "event": e.event, "pid": e.pid, "details": e.details}),
            )
            .collect();
        json!({
            "time": now,
            "metric_pipeline": metric_pipeline,
            "events": events,
            "watchers": watchers,
            "queues": queues,
            "pipeline": pipeline,
            "redis_ok": redis_ok,
        })
    }
}

/// Files kept in the trash for the step of `queue` (`step.<p>.<s>` → `<dir>/<p>.<s>/`), their
/// `.tags` companions left out.
fn trash_count(dir: &Path, queue: &str) -> usize {
    let sub = queue.strip_prefix("step.").unwrap_or(queue);
    std::fs::read_dir(dir.join(sub))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".tags"))
                .count()
        })
        .unwrap_or(0)
}

/// How fast a running total grew, per second, since the oldest sample of the last minute (and
/// at least a second old).
fn rate(history: &[Sample], now: f64, current: u64, of: impl Fn(&Sample) -> Option<u64>) -> Option<f64> {
    let (at, then) = history
        .iter()
        .filter(|s| now - s.at <= 70.0 && now - s.at >= 1.0)
        .find_map(|s| of(s).map(|v| (s.at, v)))?;
    Some(current.saturating_sub(then) as f64 / (now - at))
}

/// Whether the page lists `ev`: flapping, memory limits, SIGKILLs after a graceful timeout,
/// exits ringmaster did not ask for, hook failures, and watchers started, stopped, added or
/// removed. (The stop signals of every stop and restart are left out: they would crowd out the
/// rest.)
fn notable(ev: &RingmasterEvent) -> bool {
    match ev.event.as_str() {
        "flapping" | "memory_limit" | "timeout_kill" | "hook_failure" | "start" | "stop" | "add" | "remove" => true,
        "reap" => !ev.details.get("requested").and_then(Value::as_bool).unwrap_or(false),
        _ => false,
    }
}

/// An inline SVG polyline of `series` (at least two points), scaled to its own maximum.
pub fn sparkline(series: &[u64]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 20.0;
    let max = series.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if series.len() > 1 {
        W / (series.len() - 1) as f64
    } else {
        W
    };
    let points: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, H - (*v as f64 / max) * (H - 2.0) - 1.0))
        .collect();
    format!(
        "<svg class=\"spark\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\"><polyline fill=\"none\" stroke=\"currentColor\" points=\"{}\"/></svg>",
        points.join(" ")
    )
}

/// The page, rendered from a snapshot: complete without JavaScript.
pub fn render_page(s: &Value) -> String {
    let f = render_fragments(s);
    let part = |id: &str| f.get(id).and_then(Value::as_str).unwrap_or_default().to_string();
    let hidden = if s["redis_ok"] == false { "" } else { " hidden" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ironwork</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\
         <link rel=\"stylesheet\" href=\"/console.css\"></head><body>\
         <header><h1>ironwork</h1><span id=\"live\">snapshot</span></header>\
         <p class=\"alert\" id=\"redis-alert\"{hidden}>Redis does not answer: queue depths unknown.</p>\
         <h2>Watchers</h2><table id=\"watchers\"><thead><tr><th>watcher</th><th>state</th>\
         <th>processes</th><th>restarts</th><th>workers</th><th>actions</th></tr></thead>\
         <tbody id=\"watchers-body\">{}</tbody></table>\
         <h2>Queues</h2><table id=\"queues\"><thead><tr><th>queue</th><th>waiting</th>\
         <th>in flight</th><th>dead</th><th>last hour</th></tr></thead><tbody id=\"queues-body\">{}</tbody></table>\
         <h2>Pipeline</h2><table id=\"pipeline\"><thead><tr><th>step</th><th>files</th>\
         <th>files/s</th><th>in the trash</th><th>last failures</th></tr></thead><tbody id=\"pipeline-body\">{}</tbody></table>\
         <div id=\"metric-section\">{}</div>\
         <h2>Recent events</h2><table id=\"events\"><thead><tr><th>time (UTC)</th><th>watcher</th>\
         <th>event</th><th>details</th></tr></thead><tbody id=\"events-body\">{}</tbody></table>\
         <script src=\"/console.js\"></script></body></html>",
        part("watchers-body"),
        part("queues-body"),
        part("pipeline-body"),
        part("metric-section"),
        part("events-body"),
    )
}

/// The page's live parts, by element id, rendered once here for the page and for the events
/// (the script only swaps them in).
pub fn render_fragments(s: &Value) -> Map<String, Value> {
    let mut rows = String::new();
    for w in s["watchers"].as_array().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or_default();
        let status = w["status"].as_str().unwrap_or_default();
        let mut procs = String::new();
        for p in w["workers"].as_array().into_iter().flatten() {
            procs.push_str(&format!(
                "<li>#{} pid {} · {} · cpu {} · up {}</li>",
                p["wid"],
                p["pid"],
                p["rss"].as_u64().map_or("–".into(), human_bytes),
                p["cpu"].as_f64().map_or("–".into(), |c| format!("{c:.1}%")),
                p["age"].as_f64().map_or("–".into(), human_age),
            ));
        }
        // Each action is a link to its confirmation page (the script asks in place instead).
        let buttons: String = ACTIONS
            .iter()
            .map(|a| {
                format!(
                    "<a class=\"act\" data-action=\"{a}\" href=\"/action/{a}/{e}\">{a}</a>",
                    e = url_segment(name)
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        rows.push_str(&format!(
            "<tr data-watcher=\"{n}\"><td><a href=\"/logs/{e}\">{n}</a></td><td class=\"st-{st}\">{st}</td>\
             <td>{}/{}</td><td>{}{}</td><td><ul>{procs}</ul></td><td>{buttons}</td></tr>",
            w["processes"],
            w["numprocesses"],
            w["restarts"],
            match w["memory_restarts"].as_u64() {
                Some(m) if m > 0 => format!(" ({m} over the memory limit)"),
                _ => String::new(),
            },
            n = escape(name),
            e = url_segment(name),
            st = escape(status),
        ));
    }
    let mut queues = String::new();
    for q in s["queues"].as_array().into_iter().flatten() {
        queues.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(q["queue"].as_str().unwrap_or_default()),
            q["waiting"],
            q["in_flight"],
            q["dead"],
            q["spark"].as_str().unwrap_or_default(),
        ));
    }
    let mut pipeline = String::new();
    for p in s["pipeline"].as_array().into_iter().flatten() {
        let failures: String = p["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| format!("<li>{}</li>", escape(f["reason"].as_str().unwrap_or_default())))
            .collect();
        pipeline.push_str(&format!(
            "<tr><td>{}</td><td class=\"files\">{}</td><td>{}</td><td>{}</td><td><ul>{failures}</ul></td></tr>",
            escape(p["step"].as_str().unwrap_or_default()),
            p["files"],
            p["files_per_s"].as_f64().map_or("–".into(), |r| format!("{r:.2}")),
            p["trash"].as_u64().map_or("–".into(), |n| n.to_string()),
        ));
    }
    let mut events = String::new();
    for e in s["events"].as_array().into_iter().flatten() {
        let details = e["details"]
            .as_object()
            .filter(|d| !d.is_empty())
            .map(|d| Value::Object(d.clone()).to_string());
        events.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            clock(e["time"].as_f64().unwrap_or_default()),
            escape(e["watcher"].as_str().unwrap_or_default()),
            escape(e["event"].as_str().unwrap_or_default()),
            escape(&details.unwrap_or_default()),
        ));
    }
    let metric = &s["metric_pipeline"];
    let metric_section = if metric.is_null() {
        String::new()
    } else if metric["unreachable"] == true {
        "<h2>Collector and reflector</h2><p class=\"alert\">Their Redis does not answer.</p>".to_string()
    } else {
        let holder = |v: &Value| escape(v.as_str().unwrap_or("none"));
        format!(
            "<h2>Collector and reflector</h2><table id=\"metric\"><tbody>\
             <tr><th>collection manager (lease holder)</th><td>{}</td></tr>\
             <tr><th>reflector leader</th><td>{}</td></tr>\
             <tr><th>jobs enqueued</th><td>{} ({} /s)</td></tr>\
             <tr><th>points sent / not sent</th><td>{} / {}</td></tr>\
             <tr><th>unsent batches waiting</th><td>{}</td></tr></tbody></table>",
            holder(&metric["collector_leader"]),
            holder(&metric["reflector_leader"]),
            metric["jobs_enqueued"],
            metric["jobs_per_s"].as_f64().map_or("–".into(), |r| format!("{r:.2}")),
            metric["points_sent"],
            metric["points_unsent"],
            metric["unsent_batches"],
        )
    };
    let mut out = Map::new();
    for (id, html) in [
        ("watchers-body", rows),
        ("queues-body", queues),
        ("pipeline-body", pipeline),
        ("metric-section", metric_section),
        ("events-body", events),
    ] {
        out.insert(id.into(), html.into());
    }
    out
}

/// `<command>/<watcher>` of an action URL: one of [`ACTIONS`] and one watcher's exact name (no
/// pattern: a glob would reach every watcher it matches).
fn parse_action(rest: &str) -> Result<(&'static str, String), &'static str> {
    let (command, name) = rest.split_once('/').ok_or("expected /action/<command>/<watcher>")?;
    let command = ACTIONS.iter().find(|a| **a == command).ok_or("unknown action")?;
    let name = ironwork_core::http::percent_decode(name).into_owned();
    if name.is_empty() || name.contains(['*', '?', '[', ']']) {
        return Err("name one watcher exactly");
    }
    Ok((command, name))
}

/// The page that asks before an action, for browsers without JavaScript: the token, and a
/// button that says what it does.
fn render_confirmation(command: &str, name: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{command} {n}?</title>\
         <link rel=\"stylesheet\" href=\"/console.css\"></head><body>\
         <h1>{command} {n}?</h1>\
         <form method=\"post\" action=\"/action/{command}/{e}\" class=\"confirm\">\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <label>console token <input type=\"password\" name=\"token\" autocomplete=\"off\"></label> \
         <button type=\"submit\">{command} {n}</button> <a href=\"/\">back</a></form></body></html>",
        n = escape(name),
        e = url_segment(name),
    )
}

/// The answer to a refused action posted from the page.
fn render_refusal(command: &str, name: &str, reason: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>refused</title>\
         <link rel=\"stylesheet\" href=\"/console.css\"></head><body>\
         <p class=\"alert\">{command} {}: {}</p><a href=\"/\">back</a></body></html>",
        escape(name),
        escape(reason),
    )
}

/// `s` percent-encoded for one URL path segment.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `Host` values that name a loopback console: its address, and `localhost` with its port.
fn loopback_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// Headers every answer carries: no sniffing, no framing, nothing loaded from elsewhere.
fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    r
}

/// `HH:MM:SS` (UTC) of an epoch time.
fn clock(t: f64) -> String {
    let s = t as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b >> 10),
    }
}

fn human_age(s: f64) -> String {
    match s as u64 {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// HTML-escape text for element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn parse_form(body: &[u8]) -> Map<String, Value> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let v = v.replace('+', " ");
            (
                ironwork_core::http::percent_decode(k).into_owned(),
                Value::from(ironwork_core::http::percent_decode(&v).into_owned()),
            )
        })
        .collect()
}

fn query_param<B>(req: &Request<B>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| ironwork_core::http::percent_decode(v).into_owned())
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 24 random bytes as hex.
fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token in `path`, or a new random one written there (0600; a missing parent is created
/// 0700). A token file others can read is made private again, with a warning.
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    if let Ok(t) = std::fs::read_to_string(path) {
        if !t.trim().is_empty() {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the console token was readable by others: made 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            return Ok(t.trim().to_string());
        }
    }
    let token = random_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{token}")?;
    Ok(token)
}

fn full(body: impl Into<Bytes>) -> Body {
    BodyExt::boxed(Full::new(body.into()))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(body.to_string()))
        .unwrap_or_default()
}

fn html(body: String) -> Response<Body> {
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(full(body))
        .unwrap_or_default()
}

fn asset(ctype: &str, body: &'static str) -> Response<Body> {
    Response::builder()
        .header("content-type", ctype)
        .body(full(body))
        .unwrap_or_default()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_names_and_renders_without_script() {
        let s = json!({
            "watchers": [{"name": "step.<x>", "status": "active", "processes": 1, "numprocesses": 1,
                          "restarts": 0, "workers": [{"wid": 1, "pid": 42, "rss": 3_145_728, "cpu": 1.5, "age": 75.0}]}],
            "queues": [{"queue": "step.a.b", "waiting": 3, "in_flight": 1, "dead": 0}],
            "redis_ok": true,
        });
        let page = render_page(&s);
        assert!(page.contains("step.&lt;x&gt;") && !page.contains("step.<x>"));
        assert!(page.contains("pid 42 · 3.0 MiB · cpu 1.5% · up 1m15s"), "{page}");
        assert!(page.contains("<td>step.a.b</td><td>3</td><td>1</td><td>0</td>"));
        let spark = sparkline(&[0, 5, 10]);
        assert!(spark.contains("points=\"0.0,19.0 60.0,10.0 120.0,1.0\""), "{spark}");
        assert!(page.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn forms_and_tokens() {
        let f = parse_form(b"token=ab%2Bc&confirm=yes&x=a+b");
        assert_eq!(f["token"], "ab+c");
        assert_eq!(f["x"], "a b");
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
    }
}
