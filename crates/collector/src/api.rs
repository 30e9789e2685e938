//! The plugin agent's HTTP API (after lodastack's agent), plus `/health` and `/metrics`.
//!
//! `ns` is a plugin and `repo` one of its collections. Every `POST` and `GET /log/offset` need
//! `Authorization: Bearer <token>` (the token file's content); reads of lists and status do not.
//!
//! | call | does |
//! |---|---|
//! | `GET /plugins/list` | every collection: ns, repo, method, interval, targets, enabled |
//! | `POST /plugins/run?ns=&repo=[&target=][&timeout=][&param=]` | run now, answer the result (409 while a run is going) |
//! | `POST /plugins/enable?ns=&repo=` / `disable` | disabled collections enable themselves after `disable_for` |
//! | `POST /post?ns=` | a JSON list of points → `metrics.send.queue` (database = ns, `host` tag added) |
//! | `POST /update` | reload the definitions (422 with every error; the old ones stay) |
//! | `GET /me/ns` | the plugins this collector serves |
//! | `GET /me/status` | version, uptime, leadership, counters |
//! | `GET /log/offset?fpath=&offset=&num=` | `num` whole lines from byte `offset` of a file under `log_roots` (at most 8 MiB read, lines cut at 64 KiB) |

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use ironwork_core::messages::{epoch_seconds, names, FieldValue, MetricPoint};
use ironwork_core::Queue;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::consumer::{run_once, Ask, Trigger};
use crate::guard;
use crate::points;
use crate::shared::Shared;

/// Largest `POST /post` body.
const MAX_BODY: usize = 8 << 20;
/// Most lines one `GET /log/offset` returns.
const MAX_LINES: usize = 10_000;
/// Longest deadline an on-demand run may ask for.
const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(600);

type Reply = Response<Full<Bytes>>;

/// A refusal: status and message.
struct Refusal(StatusCode, String);

impl Refusal {
    fn bad(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }
}

fn reply(status: StatusCode, body: Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .unwrap_or_default()
}

/// Serve the API on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    ironwork_core::http::serve_connections(listener, 64, token, move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            let answer = match handle(&shared, req).await {
                Ok(r) => r,
                Err(Refusal(status, msg)) => reply(status, json!({ "error": msg })),
            };
            Ok::<_, Infallible>(answer)
        }
    })
    .await;
}

/// Read the token file, or create it (0600, 32 random bytes in hex) when it does not exist.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is empty", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// One query component: `+` is a space, then `%XX` escapes.
fn decode_component(s: &str) -> String {
    ironwork_core::http::percent_decode(&s.replace('+', " ")).into_owned()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode_component(k), decode_component(v)),
            None => (decode_component(kv), String::new()),
        })
        .collect()
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> Result<(), Refusal> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "this call needs Authorization: Bearer <token> (the collector's token_file)".into(),
        ));
    };
    // Compare in constant time: the token is a secret.
    let want = shared.api_token.as_bytes();
    let same = given.len() == want.len() && given.bytes().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(Refusal(StatusCode::FORBIDDEN, "wrong token".into()))
    }
}

fn required<'a>(q: &'a HashMap<String, String>, key: &str) -> Result<&'a str, Refusal> {
    match q.get(key).map(String::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Refusal::bad(format!("missing parameter {key}"))),
    }
}

/// Every call: path, whether it is a POST (else a GET), whether it needs the token.
const ROUTES: &[(&str, bool, bool)] = &[
    ("/health", false, false),
    ("/metrics", false, false),
    ("/plugins/list", false, false),
    ("/plugins/run", true, true),
    ("/plugins/enable", true, true),
    ("/plugins/disable", true, true),
    ("/post", true, true),
    ("/update", true, true),
    ("/me/ns", false, false),
    ("/me/status", false, false),
    // Reads files: the token, like the mutating calls.
    ("/log/offset", false, true),
];

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Result<Reply, Refusal> {
    let path = req.uri().path().to_string();
    let Some(&(_, is_post, needs_token)) = ROUTES.iter().find(|(p, _, _)| *p == path) else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("no such call: {path}")));
    };
    let allowed = if is_post { Method::POST } else { Method::GET };
    if req.method() != allowed {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes {allowed}"),
        ));
    }
    if needs_token {
        authorized(shared, &req)?;
    }
    let q = query(&req);
    match path.as_str() {
        "/health" => Ok(reply(
            if shared.redis.is_healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            json!({"status": if shared.redis.is_healthy() { "ok" } else { "unhealthy" }, "redis": shared.redis.is_healthy()}),
        )),
        "/metrics" => Ok(Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(shared.stats.metrics.render())))
            .unwrap_or_default()),
        "/plugins/list" => list(shared).await,
        "/plugins/run" => run(shared, &q).await,
        "/plugins/enable" => enable(shared, &q, true).await,
        "/plugins/disable" => enable(shared, &q, false).await,
        "/post" => post(shared, &q, req).await,
        "/update" => match shared.reload() {
            Ok(n) => Ok(reply(StatusCode::OK, json!({ "reloaded": true, "collections": n }))),
            Err(errors) => Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("definitions refused, the previous ones stay in force:\n{errors}"),
            )),
        },
        "/me/ns" => Ok(reply(StatusCode::OK, json!(shared.definitions().plugins()))),
        "/me/status" => Ok(reply(
            StatusCode::OK,
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "id": shared.id,
                "uptime_s": shared.started.elapsed().as_secs_f64(),
                "leader": shared.stats.leader.get() == 1,
                "collections": shared.definitions().collections.len(),
                "counters": shared.stats.to_json(),
            }),
        )),
        "/log/offset" => log_offset(shared, &q).await,
        _ => Err(Refusal(StatusCode::NOT_FOUND, format!("no such call: {path}"))),
    }
}

async fn disabled(shared: &Shared) -> Result<HashMap<String, f64>, Refusal> {
    let mut c = shared.redis.conn();
    redis::cmd("HGETALL")
        .arg(names::COLLECTOR_DISABLED)
        .query_async(&mut c)
        .await
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")))
}

async fn list(shared: &Shared) -> Result<Reply, Refusal> {
    let disabled = disabled(shared).await?;
    let now = epoch_seconds();
    let items: Vec<Value> = shared
        .definitions()
        .collections
        .iter()
        .map(|c| {
            let until = disabled.get(&c.id()).copied().filter(|u| *u > now);
            json!({
                "ns": c.plugin,
                "repo": c.name,
                "method": c.method,
                "interval_s": c.interval.as_secs_f64(),
                "targets": c.targets,
                "enabled": c.enabled && until.is_none(),
                "disabled_until": until,
            })
        })
        .collect();
    Ok(reply(StatusCode::OK, Value::Array(items)))
}

fn collection<'a>(
    defs: &'a crate::shared::Definitions,
    q: &HashMap<String, String>,
) -> Result<&'a Arc<crate::collection::Collection>, Refusal> {
    let ns = required(q, "ns")?;
    let repo = required(q, "repo")?;
    defs.get(ns, repo).ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            format!("no collection {repo:?} in plugin {ns:?}"),
        )
    })
}

async fn run(shared: &Arc<Shared>, q: &HashMap<String, String>) -> Result<Reply, Refusal> {
    let defs = shared.definitions();
    let c = collection(&defs, q)?.clone();
    let target = match q.get("target").filter(|t| !t.is_empty()) {
        Some(t) if c.targets.contains(t) => t.clone(),
        Some(t) => {
            return Err(Refusal::bad(format!(
                "target {t:?} is not one of the collection's targets ({})",
                c.targets.join(", ")
            )))
        }
        None => c.targets.first().cloned().unwrap_or_default(),
    };
    let timeout = match q.get("timeout").filter(|t| !t.is_empty()) {
        None => Duration::from_secs(10),
        Some(t) => match ironwork_core::config::parse_duration(t) {
            Ok(d) if !d.is_zero() && d <= MAX_RUN_TIMEOUT => d,
            _ => {
                return Err(Refusal::bad(format!(
                    "timeout {t:?}: expected seconds between 0 and 600"
                )))
            }
        },
    };
    let param = match q.get("param").filter(|p| !p.is_empty()) {
        None => Vec::new(),
        Some(p) => shlex::split(p).ok_or_else(|| Refusal::bad(format!("param {p:?}: unbalanced quotes")))?,
    };
    let taken = guard::take(shared, &[(&c.plugin, &c.name, &target, timeout)])
        .await
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")))?;
    let Some(held) = taken.into_iter().next().flatten() else {
        return Err(Refusal(StatusCode::CONFLICT, "plugin is running".into()));
    };
    // In a task of its own: a client that hangs up does not abandon the run half-way, and the
    // result is pushed and the guard released whatever happens to this request.
    let task = tokio::spawn({
        let shared = shared.clone();
        async move {
            let ask = Ask {
                target,
                correlation_info: c.correlation_info.clone(),
                param,
                timeout,
                trigger: Trigger::Call,
                scheduled_at: None,
            };
            let data = run_once(&shared, &c, ask).await;
            let payload = serde_json::to_vec(&data).unwrap_or_default();
            let mut pipe = redis::pipe();
            pipe.cmd("LPUSH").arg(names::COLLECTOR_DATA).arg(&payload).ignore();
            guard::release_in(&mut pipe, std::slice::from_ref(&held));
            let mut conn = shared.redis.conn();
            let pushed = pipe.query_async::<()>(&mut conn).await;
            match &pushed {
                Ok(()) => shared.stats.results_pushed.inc(),
                Err(e) => {
                    tracing::warn!(error = %e, plugin = %c.plugin, collection = %c.name, "on-demand result not pushed")
                }
            }
            (data, pushed.is_ok())
        }
    });
    match task.await {
        Ok((data, true)) => Ok(reply(StatusCode::OK, serde_json::to_value(&data).unwrap_or_default())),
        Ok((_, false)) => Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "ran, but Redis did not take the result".into(),
        )),
        Err(e) => Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("run failed: {e}"))),
    }
}

async fn enable(shared: &Shared, q: &HashMap<String, String>, on: bool) -> Result<Reply, Refusal> {
    let defs = shared.definitions();
    let c = collection(&defs, q)?;
    let mut conn = shared.redis.conn();
    let until = epoch_seconds() + shared.settings.disable_for.as_secs_f64();
    let r: Result<i64, _> = if on {
        redis::cmd("HDEL")
            .arg(names::COLLECTOR_DISABLED)
            .arg(c.id())
            .query_async(&mut conn)
            .await
    } else {
        redis::cmd("HSET")
            .arg(names::COLLECTOR_DISABLED)
            .arg(c.id())
            .arg(until)
            .query_async(&mut conn)
            .await
    };
    r.map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")))?;
    tracing::info!(plugin = %c.plugin, collection = %c.name, enabled = on, "collection {}", if on { "enabled" } else { "disabled" });
    let body = if on {
        json!({ "ns": c.plugin, "repo": c.name, "enabled": true })
    } else {
        json!({ "ns": c.plugin, "repo": c.name, "enabled": false, "disabled_until": until })
    };
    Ok(reply(StatusCode::OK, body))
}

/// The agent's point as a metric point for the sender.
fn metric_point(p: ironwork_core::messages::DataPoint, ns: &str, host: &str) -> MetricPoint {
    let value = match &p.value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::Int(i),
            None => FieldValue::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::String(s) => FieldValue::Str(s.clone()),
        other => FieldValue::Str(other.to_string()),
    };
    let mut tags = p.tags;
    tags.entry("host".into()).or_insert_with(|| host.to_string());
    MetricPoint {
        name: p.name,
        tags,
        fields: BTreeMap::from([("value".to_string(), value)]),
        timestamp_ns: (p.timestamp * 1e9) as i64,
        database: Some(ns.to_string()),
    }
}

async fn post(shared: &Shared, q: &HashMap<String, String>, req: Request<Incoming>) -> Result<Reply, Refusal> {
    let ns = required(q, "ns")?;
    if !points::valid_name(ns) {
        return Err(Refusal::bad(format!("ns {ns:?} must be made of [0-9A-Za-z._-]")));
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: {e} (at most {MAX_BODY} bytes)"),
            )
        })?
        .to_bytes();
    let parsed = points::parse(&body, epoch_seconds()).map_err(Refusal::bad)?;
    if !parsed.rejected.is_empty() {
        return Err(Refusal::bad(format!(
            "{} point(s) refused, none queued: {}",
            parsed.rejected.len(),
            parsed.rejected.join("; ")
        )));
    }
    let payloads: Vec<Vec<u8>> = parsed
        .points
        .into_iter()
        .map(|p| serde_json::to_vec(&metric_point(p, ns, &shared.settings.host)).unwrap_or_default())
        .collect();
    Queue::new(&shared.redis, names::METRICS_SEND)
        .push_batch(&payloads)
        .await
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")))?;
    shared.stats.posted_points.add(payloads.len() as u64);
    Ok(reply(StatusCode::OK, json!({ "queued": payloads.len() })))
}

/// `fpath` resolved (symlinks and `..` included) and confirmed to be under one of `roots`.
fn confine(fpath: &str, roots: &[PathBuf]) -> Result<PathBuf, Refusal> {
    let real = std::fs::canonicalize(fpath).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Refusal(StatusCode::NOT_FOUND, format!("{fpath}: no such file")),
        _ => Refusal(StatusCode::FORBIDDEN, format!("{fpath}: {e}")),
    })?;
    let inside = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .any(|r| real.starts_with(&r));
    if !inside || !real.is_file() {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("{fpath}: not a file under the configured log roots"),
        ));
    }
    Ok(real)
}

async fn log_offset(shared: &Shared, q: &HashMap<String, String>) -> Result<Reply, Refusal> {
    let fpath = required(q, "fpath")?.to_string();
    let offset: u64 = match q.get("offset").filter(|s| !s.is_empty()) {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| Refusal::bad(format!("offset {s:?}: expected a byte offset")))?,
    };
    let num: usize = match q.get("num").filter(|s| !s.is_empty()) {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LINES).contains(&n) => n,
            _ => return Err(Refusal::bad(format!("num {s:?}: expected 1 to {MAX_LINES} lines"))),
        },
    };
    let real = confine(&fpath, &shared.settings.log_roots)?;
    let read = tokio::task::spawn_blocking(move || read_lines(&real, offset, num))
        .await
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (lines, next) = read.map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("{fpath}: {e}")))?;
    Ok(reply(
        StatusCode::OK,
        json!({ "fpath": fpath, "offset": offset, "next_offset": next, "lines": lines }),
    ))
}

/// Longest line `GET /log/offset` returns whole; longer ones are cut (and marked).
const MAX_LINE: usize = 64 << 10;
/// Most bytes one `GET /log/offset` reads.
const MAX_READ: u64 = 8 << 20;

/// Up to `num` complete lines from byte `offset` (reading at most [`MAX_READ`] bytes), and the
/// offset after the last one returned. A line longer than [`MAX_LINE`] is cut and ends with `…`.
fn read_lines(path: &Path, offset: u64, num: usize) -> std::io::Result<(Vec<String>, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if offset > len {
        return Ok((Vec::new(), len));
    }
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(f.take(MAX_READ));
    let mut lines = Vec::new();
    let mut next = offset;
    let mut buf = Vec::new();
    while lines.len() < num {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        next += n as u64;
        buf.pop();
        let mut line = String::from_utf8_lossy(&buf[..buf.len().min(MAX_LINE)]).into_owned();
        if buf.len() > MAX_LINE {
            line.push('…');
        }
        lines.push(line);
    }
    Ok((lines, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(decode_component("a%20b+c%2F..%2"), "a b c/..%2");
        assert_eq!(decode_component("%zz%2B"), "%zz+");
    }
}
