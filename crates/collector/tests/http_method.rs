//! The HTTP method against an in-test server: basic and bearer auth, GET and POST with rendered
//! placeholders, JSON field extraction, and each way a request can fail.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use collector::collection::{Run, RunLimits};
use collector::config;
use collector::method::Outcome;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ironwork_core::config::{Report, UnknownKeys};
use ironwork_core::ini::Ini;

/// Answers like a small appliance API:
/// - `GET /api/status`: needs basic `admin:s3cret`; `{"cpu":{"load":0.75},"name":"box","up":true}`
/// - `POST /api/vms/<id>/power`: needs `Bearer tok`; echoes the body's `action` and the id
/// - `GET /text`: not JSON; `GET /slow`: answers after 3 s
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let path = req.uri().path().to_string();
                    let method = req.method().clone();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let (status, text) = match (method.as_str(), path.as_str()) {
                        ("GET", "/api/status") if auth == "Basic YWRtaW46czNjcmV0" => {
                            (200, r#"{"cpu":{"load":0.75},"name":"box","up":true}"#.to_string())
                        }
                        ("GET", "/api/status") => (401, r#"{"error":"auth"}"#.to_string()),
                        ("POST", p) if p.starts_with("/api/vms/") && auth == "Bearer tok" => {
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                            let id = p.trim_start_matches("/api/vms/").trim_end_matches("/power");
                            (200, serde_json::json!({"vm": id, "action": v["action"]}).to_string())
                        }
                        ("GET", "/text") => (200, "plain words".to_string()),
                        ("GET", "/slow") => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            (200, "{}".to_string())
                        }
                        _ => (404, "{}".to_string()),
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(text)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn collect(section: &str, target: &str) -> Outcome {
    let text = format!("[c]\nmethod = HTTP\ntimeout = 1\ncorrelation_info.vmid = 42\n{section}");
    let ini = Ini::parse(Path::new("plugin.ini"), &text).unwrap();
    let mut report = Report::default();
    let mut r = report.section(Path::new("plugin.ini"), &ini.sections[0]);
    let c = config::read_collection(&mut r, "p", "c", Path::new("/")).unwrap();
    r.finish(UnknownKeys::Error);
    report.finish(()).unwrap();
    let info: BTreeMap<String, String> = c.correlation_info.clone();
    let run = Run::new(&c, target, &info, Arc::new(RunLimits::default()));
    c.probe.collect(&run).await
}

fn value<'a>(out: &'a Outcome, name: &str) -> &'a serde_json::Value {
    &out.points
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", out.points))
        .value
}

#[tokio::test]
async fn basic_auth_get_extracts_fields() {
    let addr = serve().await;
    let out = collect(
        "url = http://{target}/api/status\nauth = basic\nusername = admin\npassword = s3cret\n\
         field.load = /cpu/load\nfield.name = /name\nfield.up = /up\n",
        &addr,
    )
    .await;
    assert_eq!(out.failure, None);
    assert_eq!(value(&out, "http.status"), 200);
    assert_eq!(value(&out, "http.load"), 0.75);
    assert_eq!(value(&out, "http.name"), "box");
    assert_eq!(value(&out, "http.up"), true);
    assert!(value(&out, "http.response_ms").as_f64().unwrap() >= 0.0);
    assert_eq!(out.points[0].tags["target"], addr);
}

#[tokio::test]
async fn wrong_credentials_fail_with_the_status() {
    let addr = serve().await;
    let out = collect(
        "url = http://{target}/api/status\nauth = basic\nusername = admin\npassword = nope\nfield.load = /cpu/load\n",
        &addr,
    )
    .await;
    let f = out.failure.clone().unwrap();
    assert_eq!(f.kind, "status");
    assert!(f.message.contains("401"), "{}", f.message);
    assert_eq!(value(&out, "http.status"), 401, "the status is still measured");
}

#[tokio::test]
async fn bearer_post_renders_the_path_and_body() {
    let addr = serve().await;
    let out = collect(
        "url = http://{target}/api/vms/{vmid}/power\nhttp_method = POST\nauth = bearer\ntoken = tok\n\
         body = {\"action\": \"status-{vmid}\"}\nfield.vm = /vm\nfield.action = /action\n",
        &addr,
    )
    .await;
    assert_eq!(out.failure, None, "{:?}", out.points);
    assert_eq!(value(&out, "http.vm"), "42");
    assert_eq!(value(&out, "http.action"), "status-42");
}

#[tokio::test]
async fn missing_fields_non_json_timeouts_and_refusals_fail_with_their_reason() {
    let addr = serve().await;
    let out = collect(
        "url = http://{target}/api/status\nauth = basic\nusername = admin\npassword = s3cret\nfield.x = /nope\n",
        &addr,
    )
    .await;
    assert_eq!(out.failure.unwrap().kind, "output");
    let out = collect("url = http://{target}/text\nfield.x = /a\n", &addr).await;
    let f = out.failure.unwrap();
    assert_eq!(f.kind, "output");
    assert!(f.message.contains("plain words"), "{}", f.message);
    let out = collect("url = http://{target}/slow\n", &addr).await;
    assert_eq!(out.failure.unwrap().kind, "timeout");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = collect("url = http://{target}/\n", &closed.to_string()).await;
    assert_eq!(out.failure.unwrap().kind, "connect");
}

#[test]
fn bad_sections_are_refused_with_every_key() {
    let text = "[c]\nmethod = HTTP\nurl = https://x/\nhttp_method = PUT\nauth = digest\nfield.bad name = x\n";
    let ini = Ini::parse(Path::new("plugin.ini"), text).unwrap();
    let mut report = Report::default();
    let mut r = report.section(Path::new("plugin.ini"), &ini.sections[0]);
    let _ = config::read_collection(&mut r, "p", "c", Path::new("/"));
    r.finish(UnknownKeys::Error);
    let e = report.finish(()).unwrap_err().to_string();
    for needle in ["url", "http_method", "auth", "field.bad name"] {
        assert!(e.contains(needle), "{needle} not in {e}");
    }
}
