//! The `HTTP` method: one request per run, JSON answer, fields extracted by JSON pointer.
//!
//! Keys:
//! - `url` (required): `http://host[:port]/path?query`, `{var}` placeholders rendered per run
//!   (`https` is refused: the collector carries no TLS stack; put a local proxy in front).
//! - `http_method`: `GET` (default) or `POST`; `body` (POST, rendered) and `content_type`
//!   (default `application/json`).
//! - `auth`: `none` (default), `basic` (`username`, `password`) or `bearer` (`token`).
//! - `header.<Name> = value`: extra request headers (rendered).
//! - `field.<name> = <JSON pointer>`: one point `http.<name>` per field, from the answer's JSON
//!   (`/data/0/temp`); a pointer the answer lacks fails the run.
//! - `expect_status`: the status that counts as success (default: any 2xx).
//!
//! Points: `http.status`, `http.response_ms`, and the fields. A connection error, a timeout, an
//! unexpected status or an answer that is not JSON (when fields are asked for) fail the run.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use ironwork_core::config::SectionReader;
use ironwork_core::http::{base64, ExchangeError};

use super::{point, Failure, Outcome, Probe, ProbeFuture};
use crate::collection::Run;

/// Compile an `HTTP` section.
pub fn compile(r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    let url = r.required("url").unwrap_or_default().to_string();
    if !url.is_empty() && !url.starts_with("http://") {
        r.error(
            "url",
            "must start with http:// (https is not supported; use a local proxy)",
        );
    }
    let method = match r.str("http_method").unwrap_or("GET").to_ascii_uppercase().as_str() {
        "GET" => hyper::Method::GET,
        "POST" => hyper::Method::POST,
        _ => {
            r.error("http_method", "must be GET or POST");
            hyper::Method::GET
        }
    };
    let body = r.str("body").map(str::to_string);
    let content_type = r.str("content_type").unwrap_or("application/json").to_string();
    let auth = match r.str("auth").unwrap_or("none").to_ascii_lowercase().as_str() {
        "none" => None,
        "basic" => {
            let user = r.required("username").unwrap_or_default();
            let pass = r.str("password").unwrap_or_default();
            Some(format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())))
        }
        "bearer" => r.required("token").map(|t| format!("Bearer {t}")),
        _ => {
            r.error("auth", "must be none, basic or bearer");
            None
        }
    };
    let headers = r
        .prefixed("header.")
        .into_iter()
        .map(|(k, e)| (k.to_string(), e.value.clone()))
        .collect();
    let mut fields = Vec::new();
    for (name, e) in r.prefixed("field.") {
        if !crate::points::valid_name(name) || !(e.value.is_empty() || e.value.starts_with('/')) {
            r.error(
                &e.key,
                "a field is field.<name> = <JSON pointer starting with />, name made of [0-9A-Za-z._-]",
            );
        }
        fields.push((name.to_string(), e.value.clone()));
    }
    let expect_status = r.parse_with("expect_status", None, |s| {
        s.parse::<u16>()
            .ok()
            .filter(|c| (100..600).contains(c))
            .map(Some)
            .ok_or_else(|| "must be an HTTP status code".to_string())
    });
    Arc::new(Http {
        url,
        method,
        body,
        content_type,
        auth,
        headers,
        fields,
        expect_status,
    })
}

/// Largest answer read.
const MAX_ANSWER: usize = 8 << 20;

#[derive(Debug)]
struct Http {
    url: String,
    method: hyper::Method,
    body: Option<String>,
    content_type: String,
    auth: Option<String>,
    headers: Vec<(String, String)>,
    fields: Vec<(String, String)>,
    expect_status: Option<u16>,
}

/// `http://host[:port]/path` → (host, port, path-and-query); IPv6 hosts in brackets.
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url}: unclosed ["))?;
        match after.strip_prefix(':') {
            Some(p) => (host, p),
            None if after.is_empty() => (host, "80"),
            None => return Err(format!("{url}: bad authority")),
        }
    } else {
        authority.rsplit_once(':').unwrap_or((authority, "80"))
    };
    let port = port.parse::<u16>().map_err(|_| format!("{url}: bad port {port:?}"))?;
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// The `Host` header for `host:port` (IPv6 in brackets, port 80 left out).
fn host_header(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

impl Http {
    async fn exchange(&self, run: &Run) -> Result<(u16, Bytes), Failure> {
        let fail = |kind, message: String| Failure { kind, message };
        let url = run.render(&self.url);
        let (host, port, path) = split_url(&url).map_err(|m| fail("config", m))?;
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header("host", host_header(&host, port))
            .header("user-agent", concat!("ironwork-collector/", env!("CARGO_PKG_VERSION")))
            .header("accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), run.render(v));
        }
        let body = match (&self.method, &self.body) {
            (&hyper::Method::POST, Some(b)) => {
                req = req.header("content-type", &self.content_type);
                Bytes::from(run.render(b))
            }
            _ => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| fail("config", format!("bad request: {e}")))?;
        let (status, body) = ironwork_core::http::exchange(&host, port, req, MAX_ANSWER)
            .await
            .map_err(|e| match e {
                ExchangeError::Connect(m) => fail("connect", format!("{url}: {m}")),
                ExchangeError::Body(m) => fail("output", format!("{url}: {m}")),
            })?;
        let status = status.as_u16();
        Ok((status, body))
    }
}

impl Probe for Http {
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let (status, body) = match tokio::time::timeout(run.timeout, self.exchange(run)).await {
                Err(_) => return Outcome::failed("timeout", format!("no answer within {:?}", run.timeout)),
                Ok(Err(f)) => {
                    return Outcome {
                        points: Vec::new(),
                        failure: Some(f),
                    }
                }
                Ok(Ok(answer)) => answer,
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut out = Outcome::ok(vec![
                point(run, "http.status", status),
                point(run, "http.response_ms", ms),
            ]);
            let good = match self.expect_status {
                Some(want) => status == want,
                None => (200..300).contains(&status),
            };
            if !good {
                out.failure = Some(Failure {
                    kind: "status",
                    message: format!("answered {status}: {}", crate::points::head(&body)),
                });
                return out;
            }
            if self.fields.is_empty() {
                return out;
            }
            let json: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    out.failure = Some(Failure {
                        kind: "output",
                        message: format!("answer is not JSON ({e}): {:?}", crate::points::head(&body)),
                    });
                    return out;
                }
            };
            let mut missing = Vec::new();
            for (name, pointer) in &self.fields {
                match json.pointer(pointer) {
                    Some(
                        v @ (serde_json::Value::Number(_) | serde_json::Value::String(_) | serde_json::Value::Bool(_)),
                    ) => {
                        out.points.push(point(run, format!("http.{name}"), v.clone()));
                    }
                    _ => missing.push(format!("{name} ({pointer})")),
                }
            }
            if !missing.is_empty() {
                out.failure = Some(Failure {
                    kind: "output",
                    message: format!("no scalar at {}", missing.join(", ")),
                });
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_url("http://h:8080/a?b=1").unwrap(),
            ("h".into(), 8080, "/a?b=1".into())
        );
        assert_eq!(split_url("http://h").unwrap(), ("h".into(), 80, "/".into()));
        assert_eq!(split_url("http://[::1]:81/x").unwrap(), ("::1".into(), 81, "/x".into()));
        assert_eq!(split_url("http://[::1]/x").unwrap(), ("::1".into(), 80, "/x".into()));
        assert_eq!(host_header("::1", 81), "[::1]:81");
        assert_eq!(host_header("h", 80), "h");
        assert!(split_url("https://h/").is_err());
        assert!(split_url("http://h:x/").is_err());
    }
}
