//! The `TCP` method: does the target accept connections on a port, and how fast.
//!
//! Keys:
//! - `port` (required): 1–65535. `{var}` placeholders are allowed (`{port}` from the
//!   correlation info, say); the value is then rendered and checked at each run, and a run whose
//!   rendered value is not a port fails with kind `config`.
//! - `connect_timeout` (optional, a duration): how long a connect may take before the port
//!   counts as down; the run's `timeout` by default, and never longer than it.
//!
//! Points, tagged `target` and `port`:
//! - `tcp.up`: 1 when a connection was established (and closed at once), else 0 with a tag
//!   `error` giving the short reason (`refused`, `timeout`, `unreachable`, `resolve`, …). A
//!   closed port or an unknown host is a measurement, not a failed run.
//! - `tcp.connect_ms`: the connect's duration in milliseconds (after name resolution), only
//!   when up.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironwork_core::config::SectionReader;
use ironwork_core::messages::DataPoint;
use tokio::net::TcpStream;

use super::{point_with, Outcome, Probe, ProbeFuture};
use crate::collection::Run;

/// Compile a `TCP` section.
pub fn compile(r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    let port = r.required("port").unwrap_or_default().trim().to_string();
    if !port.is_empty() && !port.contains('{') {
        if let Err(msg) = parse_port(&port) {
            r.error("port", format!("{msg} (found {port:?})"));
        }
    }
    let connect_timeout = r
        .str("connect_timeout")
        .is_some()
        .then(|| r.duration("connect_timeout", Duration::ZERO));
    Arc::new(Tcp { port, connect_timeout })
}

/// A compiled `TCP` section.
#[derive(Debug)]
struct Tcp {
    /// The port, or a template of it.
    port: String,
    /// None: the run's timeout.
    connect_timeout: Option<Duration>,
}

impl Probe for Tcp {
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async move {
            let rendered = run.render(&self.port);
            let port = match parse_port(&rendered) {
                Ok(p) => p,
                Err(msg) => return Outcome::failed("config", format!("port {rendered:?}: {msg}")),
            };
            let limit = self.connect_timeout.unwrap_or(run.timeout).min(run.timeout);
            let tags = BTreeMap::from([("port".to_string(), port.to_string())]);
            let points = match tokio::time::timeout(limit, connect(&run.target, port)).await {
                Ok(Ok(took)) => vec![
                    point_with(run, "tcp.up", 1, tags.clone()),
                    point_with(run, "tcp.connect_ms", took.as_secs_f64() * 1000.0, tags),
                ],
                Ok(Err(reason)) => vec![down(run, tags, reason)],
                Err(_) => vec![down(run, tags, "timeout".into())],
            };
            Outcome::ok(points)
        })
    }
}

/// `tcp.up = 0` with the reason.
fn down(run: &Run, mut tags: BTreeMap<String, String>, reason: String) -> DataPoint {
    tags.insert("error".into(), reason);
    point_with(run, "tcp.up", 0, tags)
}

/// A TCP port: 1–65535.
fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err("expected a port number from 1 to 65535".into()),
        Ok(p) => Ok(p),
    }
}

/// Resolve `host` and connect to its addresses in turn; how long the successful connect took,
/// or the short reason of the last failure.
async fn connect(host: &str, port: u16) -> Result<Duration, String> {
    // `[::1]` as a target means the address, as in a URL.
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => return Err("resolve".into()),
    };
    let mut last = String::from("resolve");
    for addr in addrs {
        let start = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(_stream) => return Ok(start.elapsed()),
            Err(e) => last = reason(&e),
        }
    }
    Err(last)
}

/// A short, stable word for a connect error (the `error` tag).
fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing;

    fn tag<'a>(p: &'a DataPoint, key: &str) -> Option<&'a str> {
        p.tags.get(key).map(String::as_str)
    }

    #[test]
    fn port_must_be_a_port_unless_templated() {
        let (_, errors) = testing::compile(compile, "port = 0");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("port: expected a port number"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "port = 70000");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (_, errors) = testing::compile(compile, "connect_timeout = 1s");
        assert!(errors[0].contains("port: missing required key"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "port = {svc_port}\nconnect_timeout = 250ms");
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = testing::compile(compile, "port = 22\nconnect_timeout = soon");
        assert!(errors[0].contains("connect_timeout: expected a duration"), "{errors:?}");
    }

    #[tokio::test]
    async fn an_open_port_is_up_with_its_connect_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (probe, errors) = testing::compile(compile, &format!("port = {port}"));
        assert!(errors.is_empty(), "{errors:?}");
        let out = probe.collect(&testing::run("127.0.0.1")).await;
        assert_eq!(out.failure, None);
        assert_eq!(out.points.len(), 2, "{:?}", out.points);
        assert_eq!(out.points[0].name, "tcp.up");
        assert_eq!(out.points[0].value, 1);
        assert_eq!(tag(&out.points[0], "target"), Some("127.0.0.1"));
        assert_eq!(tag(&out.points[0], "port"), Some(port.to_string().as_str()));
        assert_eq!(out.points[1].name, "tcp.connect_ms");
        assert!(
            out.points[1].value.as_f64().is_some_and(|ms| ms >= 0.0),
            "{:?}",
            out.points[1]
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_down_and_refused_not_a_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let (probe, _) = testing::compile(compile, &format!("port = {port}"));
        let out = probe.collect(&testing::run("localhost")).await;
        assert_eq!(out.failure, None);
        assert_eq!(out.points.len(), 1, "{:?}", out.points);
        assert_eq!(out.points[0].name, "tcp.up");
        assert_eq!(out.points[0].value, 0);
        assert_eq!(tag(&out.points[0], "error"), Some("refused"));
    }

    #[tokio::test]
    async fn an_unknown_host_is_down() {
        let (probe, _) = testing::compile(compile, "port = 80");
        let out = probe.collect(&testing::run("no-such-host.invalid")).await;
        assert_eq!(out.failure, None);
        assert_eq!(out.points.len(), 1, "{:?}", out.points);
        assert_eq!(out.points[0].value, 0);
        assert_eq!(tag(&out.points[0], "error"), Some("resolve"));
    }

    #[tokio::test]
    async fn a_port_that_never_answers_is_down_after_connect_timeout() {
        // A listener that never accepts, with its accept queue full: the kernel drops further
        // SYNs, so a connect hangs as it would behind a firewall.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        for _ in 0..3 {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                queued.push(s);
            }
        }
        let (probe, _) = testing::compile(compile, &format!("port = {}\nconnect_timeout = 300ms", addr.port()));
        let start = Instant::now();
        let out = probe.collect(&testing::run("127.0.0.1")).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(out.failure, None);
        assert_eq!(out.points.len(), 1, "{:?}", out.points);
        assert_eq!(out.points[0].value, 0);
        assert_eq!(tag(&out.points[0], "error"), Some("timeout"));
    }

    #[tokio::test]
    async fn a_templated_port_is_rendered_and_checked_per_run() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (probe, _) = testing::compile(compile, "port = {svc_port}");
        let mut run = testing::run("127.0.0.1");
        run.vars.insert("svc_port".into(), port.to_string());
        let out = probe.collect(&run).await;
        assert_eq!(out.points[0].value, 1, "{:?}", out.points);
        run.vars.insert("svc_port".into(), "http".into());
        let out = probe.collect(&run).await;
        let failure = out.failure.expect("not a port");
        assert_eq!(failure.kind, "config");
        assert!(failure.message.contains("\"http\""), "{}", failure.message);
    }
}
