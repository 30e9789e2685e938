//! Writing line protocol to InfluxDB over HTTP: v1 `POST /write?db=&precision=ns[&rp=]` (with
//! `u`/`p` credentials when given) or v2 `POST /api/v2/write?org=&bucket=&precision=ns` with
//! `Authorization: Token …`. Success is 204. The answer sorts failures for the sender: 400 and
//! 422 mean the data itself was refused (a malformed line, a field type conflict) and retrying
//! cannot help; anything else (no answer, 5xx, 429, a missing database, bad credentials, a body
//! over the server's limit) is the server's state, so the batch is kept and resent.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use ironwork_core::http::exchange;

use crate::line_protocol::{encode, Unwritable};
use crate::point::Point;

/// Which write API, and where the points go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// InfluxDB 1.x `/write`.
    V1 {
        /// Database.
        db: String,
        /// Retention policy (`None`: the database's default).
        rp: Option<String>,
        /// User and password.
        auth: Option<(String, String)>,
    },
    /// InfluxDB 2.x `/api/v2/write`.
    V2 {
        /// Organisation.
        org: String,
        /// Bucket.
        bucket: String,
        /// API token.
        token: String,
    },
}

/// One InfluxDB server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Where the points go.
    pub api: Api,
    /// Deadline of one request.
    pub timeout: Duration,
}

/// Why a write did not land.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No answer (connect, reset, timeout) or a 5xx/429: try again later.
    #[error("retryable: {0}")]
    Retry(String),
    /// The server refused the data (4xx): retrying the same bytes cannot help.
    #[error("refused: {0}")]
    Refused(String),
}

/// `%`-encode a query value.
fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Endpoint {
    fn path(&self) -> String {
        match &self.api {
            Api::V1 { db, rp, auth } => {
                let mut p = format!("/write?db={}&precision=ns", q(db));
                if let Some(rp) = rp {
                    p.push_str(&format!("&rp={}", q(rp)));
                }
                if let Some((u, pw)) = auth {
                    p.push_str(&format!("&u={}&p={}", q(u), q(pw)));
                }
                p
            }
            Api::V2 { org, bucket, .. } => format!("/api/v2/write?org={}&bucket={}&precision=ns", q(org), q(bucket)),
        }
    }

    /// POST `body` (line protocol) once.
    pub async fn write(&self, body: impl Into<Bytes>) -> Result<(), WriteError> {
        let body = body.into();
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(r) => r,
            Err(_) => Err(WriteError::Retry(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn exchange(&self, body: Bytes) -> Result<(), WriteError> {
        let mut req = Request::post(self.path())
            .header("host", format!("{}:{}", self.host, self.port))
            .header("content-type", "text/plain; charset=utf-8");
        if let Api::V2 { token, .. } = &self.api {
            req = req.header("authorization", format!("Token {token}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| WriteError::Refused(e.to_string()))?;
        let (status, answer) = exchange(&self.host, self.port, req, MAX_ANSWER)
            .await
            .map_err(|e| WriteError::Retry(e.to_string()))?;
        let text = String::from_utf8_lossy(&answer);
        match status.as_u16() {
            200..=299 => Ok(()),
            // Refusals of the data itself: a malformed line, a field type conflict.
            s @ (400 | 422) => Err(WriteError::Refused(format!("{s} {}", text.trim()))),
            // Everything else is the server's state, not the data's: busy, down, a missing
            // database (404), credentials (401/403), a body over its limit (413). Kept for resend.
            s => Err(WriteError::Retry(format!(
                "{}:{}: {s} {}",
                self.host,
                self.port,
                text.trim()
            ))),
        }
    }
}

/// Largest answer read (InfluxDB's error answers are short JSON).
const MAX_ANSWER: usize = 64 << 10;

/// The line-protocol body of `points`, and the points refused (by index) with the reason.
pub fn body(points: &[impl Point]) -> (String, Vec<(usize, Unwritable)>) {
    let mut out = String::with_capacity(points.len() * 64);
    let mut refused = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if let Err(e) = encode(p, &mut out) {
            refused.push((i, e));
        }
    }
    (out, refused)
}
