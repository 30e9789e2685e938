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
//! every few seconds); the script only replaces the tables as events arrive. Changes need the
//! token of `console_token_file` (created 0600 at start when missing): a bearer header for the
//! script, a form field for the page's buttons, and an explicit confirmation either way. Bound
//! to anything but loopback, every request needs the token.

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
    /// Bound beyond loopback: reading needs the token too.
    guarded: bool,
    history: Arc<std::sync::Mutex<VecDeque<Sample>>>,
    events: Arc<std::sync::Mutex<VecDeque<RingmasterEvent>>>,
}

/// Queue depths and step counters at one time.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: f64,
    waiting: BTreeMap<String, u64>,
    files: BTreeMap<String, u64>,
    jobs: u64,
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
            guarded: !addr.ip().is_loopback(),
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
        let stop = token.clone();
        ironwork_core::http::serve_connections(listener, MAX_CONNECTIONS, token, move |req: Request<Incoming>| {
            let (console, stop) = (self.clone(), stop.clone());
            async move { Ok::<_, Infallible>(console.respond(req, stop).await) }
        })
        .await;
    }

    async fn respond(&self, req: Request<Incoming>, stop: CancellationToken) -> Response<Body> {
        let path = req.uri().path().to_string();
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
                    format!("{READ_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", self.token),
                )
                .body(full(String::new()))
                .unwrap_or_default();
        }
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/") => html(render_page(&self.snapshot().await)),
            (Method::GET, "/console.css") => asset("text/css", PAGE_CSS),
            (Method::GET, "/console.js") => asset("text/javascript", PAGE_JS),
            (Method::GET, "/api/state") => {
                let mut state = self.snapshot().await;
                if query_param(&req, "html").is_some() {
                    state["html"] = Value::Object(render_fragments(&state));
                }
                json_response(StatusCode::OK, &state)
            }
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

    /// Whether the request may read (beyond loopback): the token as a bearer, in `?token=`, or
    /// in the cookie `/?token=` left.
    fn may_read<B>(&self, req: &Request<B>) -> bool {
        let cookie = req
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == READ_COOKIE && constant_time_eq(v.as_bytes(), self.token.as_bytes()));
        let query = query_param(req, "token").is_some_and(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes()));
        cookie || query || self.authorized(req, None)
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
        let Some((command, name)) = rest.split_once('/') else {
            return text(StatusCode::NOT_FOUND, "expected /action/<command>/<watcher>\n");
        };
        if !ACTIONS.contains(&command) {
            return text(StatusCode::NOT_FOUND, "unknown action\n");
        }
        let name = ironwork_core::http::percent_decode(name).into_owned();
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

    fn events(&self, stop: CancellationToken) -> Response<Body> {
        let console = self.clone();
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            loop {
                let mut state = console.snapshot().await;
                state["html"] = Value::Object(render_fragments(&state));
                let data = state.to_string();
                let frame = Frame::data(Bytes::from(format!("event: state\ndata: {data}\n\n")));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(EVENT_PERIOD) => {}
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-store")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap_or_default()
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
            let (queues, pipeline) = self.measure(&self.step_watchers().await).await;
            let jobs = match &self.shared {
                Some(shared) => {
                    tokio::time::timeout(Duration::from_secs(3), ironwork_core::overview::metric_pipeline(shared))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map_or(0, |m| m.jobs_enqueued)
                }
                None => 0,
            };
            let sample = Sample {
                at: ironwork_core::messages::epoch_seconds(),
                waiting: queues.iter().map(|q| (q.queue.clone(), q.waiting)).collect(),
                files: pipeline.iter().map(|(q, n, _)| (q.clone(), *n)).collect(),
                jobs,
            };
            {
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

    /// The queues, and per step queue the files that entered it and its last dead letters.
    async fn measure(&self, steps: &[String]) -> (Vec<QueueDepth>, Vec<(String, u64, Vec<Value>)>) {
        let Some(redis) = &self.redis else {
            return Default::default();
        };
        let work = async {
            let queues = ironwork_core::overview::depths(redis, steps).await?;
            let mut pipeline = Vec::new();
            for q in queues.iter().filter(|q| q.queue.starts_with("step.")) {
                let mut parts = q.queue.splitn(3, '.').skip(1);
                let (Some(plugin), Some(step)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let mut pipe = redis::pipe();
                pipe.get(names::step_files(plugin, step));
                let (files,): (Option<u64>,) = redis.pipeline("step_files", &pipe).await?;
                let mut pipe = redis::pipe();
                pipe.lrange(names::dead(&q.queue), 0, FAILURES_SHOWN - 1);
                let (dead,): (Vec<String>,) = redis.pipeline("dead_letters", &pipe).await?;
                let failures = dead
                    .iter()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .map(|d| json!({"reason": d.get("reason"), "at": d.get("dead_at"), "payload": d.get("payload")}))
                    .collect();
                pipeline.push((q.queue.clone(), files.unwrap_or(0), failures));
            }
            Ok::<_, redis::RedisError>((queues, pipeline))
        };
        match tokio::time::timeout(Duration::from_secs(3), work).await {
            Ok(Ok(v)) => v,
            _ => Default::default(),
        }
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
        let (queues, pipeline) = self.measure(&known).await;
        let redis_ok = self.redis.is_none() || self.redis.as_ref().is_some_and(Redis::is_healthy);
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
            .map(|(queue, files, failures)| {
                let files_per_s = rate(&history, now, files, |s| s.files.get(&queue).copied().unwrap_or(0));
                let trash = self.trash_dir.as_deref().map(|dir| trash_count(dir, &queue));
                json!({"step": queue, "files": files, "files_per_s": files_per_s, "trash": trash, "failures": failures})
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
fn rate(history: &[Sample], now: f64, current: u64, of: impl Fn(&Sample) -> u64) -> Option<f64> {
    let s = history.iter().find(|s| now - s.at <= 70.0 && now - s.at >= 1.0)?;
    Some(current.saturating_sub(of(s)) as f64 / (now - s.at))
}

/// Whether the page lists `ev`: flapping, memory limits, kills, exits other than a requested
/// stop's, hook failures, and watchers started or stopped.
fn notable(ev: &RingmasterEvent) -> bool {
    match ev.event.as_str() {
        "flapping" | "memory_limit" | "kill" | "hook_failure" | "start" | "stop" | "add" | "remove" => true,
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
        let buttons: String = ACTIONS
            .iter()
            .map(|a| {
                format!(
                    "<form method=\"post\" action=\"/action/{a}/{n}\" class=\"act\">\
                     <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
                     <input type=\"password\" name=\"token\" placeholder=\"token\">\
                     <button type=\"submit\">{a}</button></form>",
                    n = escape(name)
                )
            })
            .collect();
        rows.push_str(&format!(
            "<tr data-watcher=\"{n}\"><td><a href=\"/logs/{n}\">{n}</a></td><td class=\"st-{st}\">{st}</td>\
             <td>{}/{}</td><td>{}{}</td><td><ul>{procs}</ul></td><td>{buttons}</td></tr>",
            w["processes"],
            w["numprocesses"],
            w["restarts"],
            match w["memory_restarts"].as_u64() {
                Some(m) if m > 0 => format!(" ({m} over the memory limit)"),
                _ => String::new(),
            },
            n = escape(name),
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

/// The token in `path`, or a new random one written there (0600, parent created 0700).
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(t) = std::fs::read_to_string(path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let token: String = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
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
