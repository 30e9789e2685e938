//! The HTTP side: the accept loop (hyper, HTTP/1.1 with keep-alive) and the routes, from `_bulk`
//! (body limits, gzip/deflate, injected whole-request faults and delays) to `_count`, `_cat`, the
//! root info document and `/_sink/stats`.

use std::borrow::Cow;
use std::io::Read;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use ironwork_core::http::percent_decode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bulk::{bulk, IdGenerator, RequestError};
use crate::fault::{FaultPlan, RequestFaultKind};
use crate::filter::ResponseFilter;
use crate::reply::{error_type, fault_reason, request_error};
use crate::store::{Counters, Stats, Store};

/// Most connections served at once; further ones wait in the accept backlog.
const MAX_CONNECTIONS: usize = 256;

/// Everything the routes share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Mutex<FaultPlan>,
    pub(crate) counters: Counters,
    pub(crate) ids: IdGenerator,
    pub(crate) keep_documents: bool,
    pub(crate) max_content_length: usize,
}

impl State {
    pub(crate) fn new(keep_documents: bool, max_content_length: usize) -> Self {
        Self {
            store: Mutex::new(Store::default()),
            faults: Mutex::new(FaultPlan::default()),
            counters: Counters::default(),
            ids: IdGenerator::new(),
            keep_documents,
            max_content_length,
        }
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn faults(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serve on `listener` until `token` is cancelled; open connections are dropped then.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, token: CancellationToken) {
    ironwork_core::http::serve_connections(listener, MAX_CONNECTIONS, token, move |req| respond(req, state.clone()))
        .await;
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("x-elastic-product", "Elasticsearch")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn json(status: u16, body: impl Into<Bytes>) -> Reply {
    reply(status, "application/json", body)
}

fn error(status: u16, kind: &str, reason: &str) -> Reply {
    json(status, request_error(status, kind, reason))
}

/// Answer one request. An `Err` makes hyper drop the connection without an answer (the
/// injected disconnect).
async fn respond(req: Request<Incoming>, state: Arc<State>) -> Result<Reply, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<Cow<'_, str>> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segs: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST || method == Method::PUT;
    Ok(match segs.as_slice() {
        [] if get => json(200, info()),
        ["_bulk"] if post => return bulk_route(req, None, &query, &state).await,
        [index, "_bulk"] if post => {
            let index = index.to_string();
            return bulk_route(req, Some(&index), &query, &state).await;
        }
        ["_count"] if get || post => count(&state, ""),
        [pattern, "_count"] if get || post => count(&state, pattern),
        ["_refresh"] if get || post => refresh(&state, ""),
        [pattern, "_refresh"] if get || post => refresh(&state, pattern),
        ["_cat", "indices"] if get => cat_indices(&state, "", &query),
        ["_cat", "indices", pattern] if get => cat_indices(&state, pattern, &query),
        ["_cat", "health"] if get => cat_health(&state, &query),
        ["_cluster", "health"] if get => json(200, cluster_health(&state)),
        ["_sink", "stats"] if get => json(200, stats_json(&state.counters.snapshot())),
        ["_index_template" | "_template", _] if method == Method::PUT => json(200, r#"{"acknowledged":true}"#),
        [index] if method == Method::PUT && !index.starts_with('_') => create_index(&state, index),
        [index] if method == Method::HEAD && !index.starts_with('_') => {
            json(if state.store().contains(index) { 200 } else { 404 }, "")
        }
        _ => {
            tracing::debug!(%method, %path, "no handler");
            let reason = format!("no handler found for uri [{path}] and method [{method}]");
            json(400, serde_json::json!({ "error": reason, "status": 400 }).to_string())
        }
    })
}

async fn bulk_route(
    req: Request<Incoming>,
    index: Option<&str>,
    query: &str,
    state: &State,
) -> Result<Reply, std::io::Error> {
    // Counted on arrival: a request whose client gives up during a delay still shows.
    state
        .counters
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let encoding = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let length_hint = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let wire = match read_body(req.into_body(), length_hint, state.max_content_length).await {
        Ok(b) => b,
        Err(e) => {
            return match e {
                BodyError::TooLarge => {
                    let reason = format!("request body is larger than {} bytes", state.max_content_length);
                    Ok(error(413, error_type(413), &reason))
                }
                BodyError::Read(e) => Err(std::io::Error::other(format!("reading the body: {e}"))),
            };
        }
    };
    let (fault, items, max_body, delay, delay_answer) = {
        let mut plan = state.faults();
        let fault = plan.requests.pop_front();
        (
            fault,
            plan.items.clone(),
            plan.max_body_bytes,
            plan.delay,
            plan.delay_answer,
        )
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = fault {
        state.counters.add(&Stats {
            injected_faults: 1,
            bytes: wire.len() as u64,
            ..Stats::default()
        });
        return match fault.kind {
            RequestFaultKind::Disconnect => Err(std::io::Error::other("injected disconnect")),
            RequestFaultKind::Status {
                status,
                retry_after,
                body,
            } => {
                let body = body.unwrap_or_else(|| {
                    let target = index.unwrap_or("_bulk");
                    request_error(status, error_type(status), &fault_reason(status, target, wire.len()))
                });
                let mut r = json(status, body);
                if let Some(seconds) = retry_after {
                    r.headers_mut().insert("retry-after", seconds.into());
                }
                Ok(r)
            }
        };
    }
    let limit = max_body.unwrap_or(usize::MAX).min(state.max_content_length);
    let decoded = match decode(&wire, encoding.as_deref(), limit) {
        Ok(d) => d,
        Err(e) => {
            state.counters.add(&Stats {
                bytes: wire.len() as u64,
                ..Stats::default()
            });
            return Ok(error(e.status, e.kind, &e.reason));
        }
    };
    if decoded.len() > limit {
        state.counters.add(&Stats {
            bytes: decoded.len() as u64,
            injected_faults: u64::from(max_body.is_some_and(|m| decoded.len() > m)),
            ..Stats::default()
        });
        let reason = format!("request body is too large: more than {limit} bytes");
        return Ok(error(413, error_type(413), &reason));
    }
    let filter = ResponseFilter::from_query(query);
    let answer = match bulk(
        &state.store,
        &state.ids,
        index,
        &decoded,
        items.as_ref(),
        state.keep_documents,
        &filter,
    ) {
        Ok(answer) => {
            state.counters.add(&answer.tally);
            json(200, answer.body)
        }
        Err(e) => {
            state.counters.add(&Stats {
                bytes: decoded.len() as u64,
                ..Stats::default()
            });
            error(e.status, e.kind, &e.reason)
        }
    };
    if let Some(delay) = delay_answer {
        tokio::time::sleep(delay).await;
    }
    Ok(answer)
}

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// The whole body, into one buffer sized from `Content-Length` (hyper's collect would gather
/// chunks and copy them again).
async fn read_body(mut body: Incoming, hint: Option<usize>, limit: usize) -> Result<Vec<u8>, BodyError> {
    if hint.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::with_capacity(hint.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(BodyError::Read)?.into_data() {
            if buf.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// The body as sent, or decompressed (gzip, deflate), read up to `limit + 1` bytes.
fn decode<'a>(wire: &'a [u8], encoding: Option<&str>, limit: usize) -> Result<Cow<'a, [u8]>, RequestError> {
    let mut out = Vec::with_capacity(wire.len().saturating_mul(4).min(limit.saturating_add(1)));
    let cap = limit as u64 + 1;
    let done = match encoding {
        None | Some("" | "identity") => return Ok(Cow::Borrowed(wire)),
        Some("gzip" | "x-gzip") => flate2::read::MultiGzDecoder::new(wire).take(cap).read_to_end(&mut out),
        Some("deflate") => flate2::read::ZlibDecoder::new(wire).take(cap).read_to_end(&mut out),
        Some(other) => {
            return Err(RequestError {
                status: 400,
                kind: "illegal_argument_exception",
                reason: format!("unsupported Content-Encoding [{other}]"),
            })
        }
    };
    done.map_err(|e| RequestError {
        status: 400,
        kind: "illegal_argument_exception",
        reason: format!("cannot decompress the request body: {e}"),
    })?;
    Ok(Cow::Owned(out))
}

fn info() -> String {
    serde_json::json!({
        "name": "es_sink",
        "cluster_name": "es_sink",
        "cluster_uuid": "es-sink-cluster-uuid",
        "version": {
            "number": "8.11.0",
            "build_flavor": "default",
            "build_type": "es_sink",
            "build_hash": "es_sink",
            "build_date": "2023-11-04T10:04:57.184859352Z",
            "build_snapshot": false,
            "lucene_version": "9.8.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    })
    .to_string()
}

fn index_not_found(name: &str) -> Reply {
    let reason = format!("no such index [{name}]");
    let body = serde_json::json!({
        "error": {
            "root_cause": [{"type": "index_not_found_exception", "reason": reason, "index": name}],
            "type": "index_not_found_exception", "reason": reason, "index": name,
        },
        "status": 404,
    });
    json(404, body.to_string())
}

fn count(state: &State, pattern: &str) -> Reply {
    let store = state.store();
    match store.resolve(pattern) {
        Ok(_) => {
            let n = store.count(pattern);
            let body = serde_json::json!({
                "count": n,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            });
            json(200, body.to_string())
        }
        Err(missing) => index_not_found(&missing),
    }
}

fn refresh(state: &State, pattern: &str) -> Reply {
    match state.store().resolve(pattern) {
        Ok(_) => json(200, r#"{"_shards":{"total":1,"successful":1,"failed":0}}"#),
        Err(missing) => index_not_found(&missing),
    }
}

fn create_index(state: &State, name: &str) -> Reply {
    let mut store = state.store();
    if store.contains(name) {
        let reason = format!("index [{name}] already exists");
        return error(400, "resource_already_exists_exception", &reason);
    }
    store.index_mut(name);
    let body = serde_json::json!({"acknowledged": true, "shards_acknowledged": true, "index": name});
    json(200, body.to_string())
}

fn cat_indices(state: &State, pattern: &str, query: &str) -> Reply {
    let store = state.store();
    let names = match store.resolve(pattern) {
        Ok(n) => n,
        Err(missing) => return index_not_found(&missing),
    };
    let rows: Vec<(String, u64, String)> = store
        .indices()
        .into_iter()
        .filter(|(n, _, _)| names.contains(&n.as_str()))
        .collect();
    if wants_json(query) {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, docs, uuid)| {
                serde_json::json!({
                    "health": "green", "status": "open", "index": name, "uuid": uuid,
                    "pri": "1", "rep": "0", "docs.count": docs.to_string(), "docs.deleted": "0",
                    "store.size": "0b", "pri.store.size": "0b",
                })
            })
            .collect();
        return json(200, serde_json::Value::from(list).to_string());
    }
    let text: String = rows
        .iter()
        .map(|(name, docs, uuid)| format!("green open {name} {uuid} 1 0 {docs} 0 0b 0b\n"))
        .collect();
    reply(200, "text/plain; charset=UTF-8", text)
}

fn cat_health(state: &State, query: &str) -> Reply {
    let indices = state.store().indices().len();
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if wants_json(query) {
        let body = serde_json::json!([{
            "epoch": epoch.to_string(), "cluster": "es_sink", "status": "green",
            "node.total": "1", "node.data": "1", "shards": indices.to_string(),
            "pri": indices.to_string(), "relo": "0", "init": "0", "unassign": "0",
            "pending_tasks": "0", "active_shards_percent": "100.0%",
        }]);
        return json(200, body.to_string());
    }
    let text = format!("{epoch} 00:00:00 es_sink green 1 1 {indices} {indices} 0 0 0 0 - 100.0%\n");
    reply(200, "text/plain; charset=UTF-8", text)
}

fn cluster_health(state: &State) -> String {
    let indices = state.store().indices().len();
    serde_json::json!({
        "cluster_name": "es_sink", "status": "green", "timed_out": false,
        "number_of_nodes": 1, "number_of_data_nodes": 1,
        "active_primary_shards": indices, "active_shards": indices,
        "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": 0,
        "number_of_pending_tasks": 0, "active_shards_percent_as_number": 100.0,
    })
    .to_string()
}

fn stats_json(stats: &Stats) -> String {
    serde_json::to_string(stats).unwrap_or_default()
}

fn wants_json(query: &str) -> bool {
    query.split('&').any(|kv| kv == "format=json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_and_plain_segments() {}

    #[test]
    fn gzip_and_deflate_bodies_are_decoded_within_the_limit() {
        use std::io::Write;
        let plain = b"{\"index\":{}}\n{\"a\":1}\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(
            decode(&gz, Some("gzip"), 1 << 20).expect("decoded").as_ref(),
            &plain[..]
        );
        assert_eq!(
            decode(&gz, Some("gzip"), 10).expect("decoded").len(),
            11,
            "stops past the limit"
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&plain).expect("zlib");
        let z = z.finish().expect("zlib");
        assert_eq!(
            decode(&z, Some("deflate"), 1 << 20).expect("decoded").as_ref(),
            &plain[..]
        );
        assert_eq!(decode(b"xx", Some("gzip"), 100).map_err(|e| e.status), Err(400));
        assert_eq!(decode(&gz, Some("br"), 100).map_err(|e| e.status), Err(400));
    }
}
