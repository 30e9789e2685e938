//! The InfluxDB writer against a real InfluxDB 1.x (Debian's `influxdb`), started by the test on
//! free loopback ports: the points written are exactly the points read back through its query
//! API, escaping included; a refused body is told apart from a server that is away.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::Influx;
use ironwork_core::messages::{FieldValue, MetricPoint};
use ironwork_test_support::free_tcp_port;
use ironwork_test_support::http::request;
use reflector::influx::{body, Api, Endpoint, WriteError};

fn endpoint(port: u16, db: &str) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
        api: Api::V1 {
            db: db.into(),
            rp: None,
            auth: None,
        },
        timeout: Duration::from_secs(5),
    }
}

fn point(name: &str, tags: &[(&str, &str)], field: FieldValue, ts: i64) -> MetricPoint {
    MetricPoint {
        name: name.into(),
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        fields: BTreeMap::from([("value".to_string(), field)]),
        timestamp_ns: ts,
        database: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_points_read_back_exactly() {
    let influx = Influx::start();
    let base = 1_700_000_000_000_000_000i64;
    let points = vec![
        point(
            "cpu load",
            &[("host", "web 1"), ("dc", "par,is")],
            FieldValue::Float(0.25),
            base,
        ),
        point(
            "cpu load",
            &[("host", "web 1"), ("dc", "par,is")],
            FieldValue::Float(0.5),
            base + 1_000,
        ),
        point("disk=free", &[("mount", "/var lib")], FieldValue::Int(42), base + 2_000),
        point(
            "log",
            &[("app", "a=b")],
            FieldValue::Str(r#"said "hi" \o/"#.into()),
            base + 3_000,
        ),
        point("up", &[], FieldValue::Bool(true), base + 4_000),
    ];
    let (lines, refused) = body(&points);
    assert!(refused.is_empty(), "{refused:?}");
    endpoint(influx.port, "metrics").write(lines).await.unwrap();

    let addr = format!("127.0.0.1:{}", influx.port);
    let q = |query: &str| {
        let path = format!(
            "/query?db=metrics&epoch=ns&q={}",
            query.replace(' ', "%20").replace('"', "%22")
        );
        request(&addr, "GET", &path, &[], b"").unwrap().json()
    };
    let cpu = q(r#"SELECT * FROM "cpu load""#);
    let series = &cpu["results"][0]["series"][0];
    assert_eq!(series["columns"], serde_json::json!(["time", "dc", "host", "value"]));
    assert_eq!(
        series["values"],
        serde_json::json!([[base, "par,is", "web 1", 0.25], [base + 1_000, "par,is", "web 1", 0.5]])
    );
    let disk = q(r#"SELECT * FROM "disk=free""#);
    assert_eq!(
        disk["results"][0]["series"][0]["values"],
        serde_json::json!([[base + 2_000, "/var lib", 42]])
    );
    let log = q(r#"SELECT * FROM "log""#);
    assert_eq!(
        log["results"][0]["series"][0]["values"],
        serde_json::json!([[base + 3_000, "a=b", r#"said "hi" \o/"#]])
    );
    let up = q(r#"SELECT * FROM "up""#);
    assert_eq!(
        up["results"][0]["series"][0]["values"],
        serde_json::json!([[base + 4_000, true]])
    );

    // Refused data (a field type conflict: `up` holds booleans) is told apart from a server
    // that is away or not ready for it (no such database): those are kept for a resend.
    let conflict = "up value=\"text\" 1700000000000009000\n".to_string();
    let bad = endpoint(influx.port, "metrics").write(conflict).await;
    assert!(
        matches!(bad, Err(WriteError::Refused(ref e)) if e.contains("conflict")),
        "{bad:?}"
    );
    let missing = endpoint(influx.port, "no_such_db").write(points_line()).await;
    assert!(matches!(missing, Err(WriteError::Retry(_))), "{missing:?}");
    let away = endpoint(free_tcp_port(), "metrics").write(points_line()).await;
    assert!(matches!(away, Err(WriteError::Retry(_))), "{away:?}");
}

fn points_line() -> String {
    "m value=1 1700000000000000000\n".to_string()
}

/// The v2 write API, against an in-test HTTP double (Debian's InfluxDB 1.6 has no v2 API): the
/// path, the token header and the body are what InfluxDB 2 expects, and its 204 is success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_api_sends_org_bucket_and_token() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let len: usize = head
            .iter()
            .find_map(|h| {
                h.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.parse().unwrap())
            })
            .unwrap();
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    let e = Endpoint {
        host: "127.0.0.1".into(),
        port,
        api: Api::V2 {
            org: "my org".into(),
            bucket: "b/1".into(),
            token: "s3cret".into(),
        },
        timeout: Duration::from_secs(5),
    };
    let p = point("m", &[("h", "a")], FieldValue::Float(1.5), 7);
    e.write(body(&[p]).0).await.unwrap();
    let (head, sent) = server.join().unwrap();
    assert_eq!(
        head[0],
        "POST /api/v2/write?org=my%20org&bucket=b%2F1&precision=ns HTTP/1.1"
    );
    assert!(
        head.iter()
            .any(|h| h.eq_ignore_ascii_case("authorization: Token s3cret")),
        "{head:?}"
    );
    assert!(head
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-type: text/plain; charset=utf-8")));
    assert_eq!(sent, "m,h=a value=1.5 7\n");
}
