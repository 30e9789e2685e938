//! The optional loopback HTTP endpoint of every daemon: `GET /health` (JSON, 200 or 503) and
//! `GET /metrics` (Prometheus text). Listens on 127.0.0.1 unless configured otherwise.
//!
//! Also the small HTTP pieces several daemons need: [`serve_connections`] (the accept loop),
//! [`exchange`] (one request on a fresh connection), [`percent_decode`] and [`base64`] (for
//! basic auth).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// 200 when true, 503 otherwise.
    pub ok: bool,
    /// Details rendered into the JSON body (e.g. `{"redis": "down"}`).
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Computes the daemon's health on each request.
pub type HealthCheck = Arc<dyn Fn() -> Health + Send + Sync>;

/// Most connections served at once; further ones wait in the accept backlog.
const MAX_CONNECTIONS: usize = 32;

/// Bind `addr` (use port 0 for any free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve `/health` and `/metrics` on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: HealthCheck, token: CancellationToken) {
    serve_connections(listener, MAX_CONNECTIONS, token, move |req: Request<Incoming>| {
        let response = respond(&req, &metrics, &health);
        async move { Ok::<_, Infallible>(response) }
    })
    .await;
}

/// Accept on `listener` until `token` is cancelled and serve each connection (HTTP/1.1) with
/// `handle`, at most `max` at once (further ones wait in the accept backlog). Open connections
/// are dropped on cancel; a handler error closes its connection without an answer.
pub async fn serve_connections<H, F, E, B>(listener: TcpListener, max: usize, token: CancellationToken, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = Arc::new(Semaphore::new(max));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (handle, token) = (handle.clone(), token.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(handle);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "http connection ended"); },
                _ = token.cancelled() => {}
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

fn respond<B>(req: &Request<B>, metrics: &Metrics, health: &HealthCheck) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics.render()),
        "/health" => {
            let h = health();
            let mut body = h.details;
            body.insert("status".into(), if h.ok { "ok" } else { "unhealthy" }.into());
            let status = if h.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", serde_json::Value::Object(body).to_string())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /health or /metrics\n".into(),
        ),
    }
}

/// Why [`exchange`] got no whole answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// No connection, or it broke before the answer's head (retry later).
    #[error("{0}")]
    Connect(String),
    /// The answer's body broke off or was longer than allowed.
    #[error("reading the answer: {0}")]
    Body(String),
}

/// Send `req` on a fresh HTTP/1.1 connection to `host:port` and read the answer, its body up to
/// `max_body` bytes. No deadline of its own: callers wrap it in theirs.
pub async fn exchange(
    host: &str,
    port: u16,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(StatusCode, Bytes), ExchangeError> {
    let connect = |e: String| ExchangeError::Connect(format!("{host}:{port}: {e}"));
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| connect(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| ExchangeError::Body(format!("{e} (at most {max_body} bytes)")))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    conn.abort();
    result
}

/// Decode `%XX` escapes (invalid ones are kept as they are; invalid UTF-8 is replaced).
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Standard base64 with padding (RFC 4648), for `Authorization: Basic`.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The address to listen on when a config gives only a port: loopback.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
        assert_eq!(super::base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn percent_escapes_are_decoded_and_bad_ones_kept() {
        assert_eq!(super::percent_decode("mflog-2026.11.23"), "mflog-2026.11.23");
        assert_eq!(super::percent_decode("a%2Cb%2a%20c"), "a,b* c");
        assert_eq!(super::percent_decode("bad%zz%2"), "bad%zz%2");
    }

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_health_and_metrics_on_loopback() {
        let listener = bind(loopback(0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert!(addr.ip().is_loopback());
        let metrics = Metrics::new();
        metrics.counter("ironwork_test_total", "A test counter.", &[]).add(7);
        let up = Arc::new(AtomicBool::new(true));
        let up2 = up.clone();
        let health: HealthCheck = Arc::new(move || Health {
            ok: up2.load(Ordering::Relaxed),
            details: serde_json::Map::new(),
        });
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, health, token.clone()));

        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("ironwork_test_total 7"), "{m}");
        let h = get(addr, "/health").await;
        assert!(h.starts_with("HTTP/1.1 200") && h.contains(r#""status":"ok""#), "{h}");
        up.store(false, Ordering::Relaxed);
        let h = get(addr, "/health").await;
        assert!(h.starts_with("HTTP/1.1 503"), "{h}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("server stops on cancel")
            .expect("no panic");
    }
}
