//! Every call of the agent HTTP API against a running collector and a real Redis, including
//! bad parameters, missing or wrong tokens and path traversal.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Agent;
use ironwork_test_support::http::request;
use ironwork_test_support::{wait_for, RedisServer};

const COLLECTIONS: &str = "\
[collection:demo.echo]
plugin_dir = @PLUGIN@
method = SCRIPT
interval = 0
targets = alpha, beta
correlation_info.site = paris
cmd_and_args = echo.sh {target} {site}

[collection:demo.slow]
plugin_dir = @PLUGIN@
method = SCRIPT
interval = 0
cmd_and_args = slow.sh
";

fn agent() -> Agent {
    Agent::start(
        RedisServer::start(),
        "disable_for = 2s\n",
        COLLECTIONS,
        &[
            ("echo.sh", r#"echo "[{\"name\":\"args\",\"value\":\"$*\"}]""#),
            ("slow.sh", "sleep 2; echo '[]'"),
        ],
    )
}

#[test]
fn lists_namespaces_status_and_health() {
    let a = agent();
    let list = a.get("/plugins/list").json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["ns"], "demo");
    assert_eq!(list[0]["repo"], "echo");
    assert_eq!(list[0]["method"], "SCRIPT");
    assert_eq!(list[0]["enabled"], true);
    assert_eq!(a.get("/me/ns").json(), serde_json::json!(["demo"]));
    let status = a.get("/me/status").json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_s"].as_f64().unwrap() >= 0.0);
    assert!(status["counters"]["runs_ok"].is_u64());
    // Healthy once it has talked to Redis (a moment after start on a loaded machine).
    assert!(wait_for(Duration::from_secs(5), || a.get("/health").status == 200));
    assert!(a.get("/metrics").text().contains("collector_runs_ok_total"));
    assert_eq!(a.get("/nope").status, 404);
    assert_eq!(a.post("/plugins/list", b"").status, 405, "list is a GET");
    assert_eq!(a.get("/plugins/run?ns=demo&repo=echo").status, 405, "run is a POST");
}

#[test]
fn mutating_calls_need_the_token() {
    let a = agent();
    for path in [
        "/plugins/run?ns=demo&repo=echo",
        "/plugins/disable?ns=demo&repo=echo",
        "/post?ns=x",
        "/update",
    ] {
        let none = request(&a.addr, "POST", path, &[], b"[]").unwrap();
        assert_eq!(none.status, 401, "{path} without a token: {}", none.text());
        assert!(none.text().contains("Bearer"), "{}", none.text());
        let wrong = request(&a.addr, "POST", path, &[("authorization", "Bearer nope")], b"[]").unwrap();
        assert_eq!(wrong.status, 403, "{path} with a wrong token");
    }
    let log = request(&a.addr, "GET", "/log/offset?fpath=/etc/passwd", &[], b"").unwrap();
    assert_eq!(log.status, 401, "reading logs needs the token too");
    let mode = std::fs::metadata(a.dir.path().join("state/collector.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600, "the token file is private");
}

#[test]
fn on_demand_runs_answer_the_result_and_push_it() {
    let a = agent();
    let r = a.post(
        "/plugins/run?ns=demo&repo=echo&param=--verbose%20%22two%20words%22",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.json();
    assert_eq!(data["target"], "alpha", "the first target by default");
    assert_eq!(data["points"][0]["name"], "demo.args");
    assert_eq!(data["points"][0]["value"], "alpha paris --verbose two words");
    assert_eq!(data["correlation_info"]["site"], "paris");
    let r = a.post("/plugins/run?ns=demo&repo=echo&target=beta", b"");
    assert_eq!(r.json()["points"][0]["value"], "beta paris");
    let queued = a.list("collector.data.queue");
    assert_eq!(queued.len(), 2, "both results were pushed for the reflector");
    assert_eq!(queued[1]["target"], "beta");

    // Bad parameters say what is wrong.
    let r = a.post("/plugins/run?repo=echo", b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("missing parameter ns"), "{}", r.text());
    let r = a.post("/plugins/run?ns=demo&repo=nope", b"");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nope"), "{}", r.text());
    let r = a.post("/plugins/run?ns=demo&repo=echo&timeout=abc", b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("timeout"), "{}", r.text());
    let r = a.post("/plugins/run?ns=demo&repo=echo&param=%22unbalanced", b"");
    assert_eq!(r.status, 400);
}

#[test]
fn a_concurrent_run_answers_that_the_plugin_is_running() {
    let a = agent();
    let (addr, auth) = (a.addr.clone(), format!("Bearer {}", a.api_token));
    let first = std::thread::spawn(move || {
        request(
            &addr,
            "POST",
            "/plugins/run?ns=demo&repo=slow",
            &[("authorization", &auth)],
            b"",
        )
        .unwrap()
    });
    assert!(wait_for(Duration::from_secs(5), || a.get("/me/status").json()
        ["counters"]["runs_active"]
        == 1));
    let second = a.post("/plugins/run?ns=demo&repo=slow", b"");
    assert_eq!(second.status, 409);
    assert!(second.text().contains("plugin is running"), "{}", second.text());
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(
        a.post("/plugins/run?ns=demo&repo=slow", b"").status,
        200,
        "free again once done"
    );
}

#[test]
fn disable_and_enable_and_the_automatic_reenable() {
    let a = agent();
    let r = a.post("/plugins/disable?ns=demo&repo=echo", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = a.get("/plugins/list").json();
    assert_eq!(list[0]["enabled"], false);
    assert!(list[0]["disabled_until"].as_f64().is_some());
    assert_eq!(a.post("/plugins/enable?ns=demo&repo=echo", b"").status, 200);
    assert_eq!(a.get("/plugins/list").json()[0]["enabled"], true);
    // disable_for = 2s: it comes back by itself.
    a.post("/plugins/disable?ns=demo&repo=echo", b"");
    assert_eq!(a.get("/plugins/list").json()[0]["enabled"], false);
    assert!(wait_for(Duration::from_secs(5), || a.get("/plugins/list").json()[0]
        ["enabled"]
        == true));
    assert_eq!(a.post("/plugins/disable?ns=demo", b"").status, 400);
    assert_eq!(a.post("/plugins/enable?ns=x&repo=y", b"").status, 404);
}

#[test]
fn posted_points_reach_the_send_queue_with_host_and_now() {
    let a = agent();
    let body = br#"[{"name":"app.requests","timestamp":0,"tags":{"path":"/"},"value":12},
                    {"name":"app.ratio","timestamp":1700000000,"tags":{"host":"web-1"},"value":0.5},
                    {"name":"app.ms","timestamp":1700000000123,"value":true}]"#;
    let r = a.post("/post?ns=shop", body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["queued"], 3);
    let sent = a.list("metrics.send.queue");
    assert_eq!(sent.len(), 3);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert_eq!(sent[0]["name"], "app.requests");
    assert_eq!(sent[0]["database"], "shop");
    assert_eq!(sent[0]["fields"]["value"], 12);
    assert!(
        (now_ns - sent[0]["timestamp_ns"].as_i64().unwrap()).abs() < 60_000_000_000,
        "0 became now"
    );
    assert!(!sent[0]["tags"]["host"].as_str().unwrap().is_empty(), "host added");
    assert_eq!(sent[1]["tags"]["host"], "web-1", "a given host is kept");
    assert_eq!(sent[1]["timestamp_ns"], 1_700_000_000_000_000_000i64);
    assert!(
        (now_ns - sent[2]["timestamp_ns"].as_i64().unwrap()).abs() < 60_000_000_000,
        "ms became now"
    );

    for (path, body, needle) in [
        ("/post", &b"[]"[..], "missing parameter ns"),
        ("/post?ns=a%20b", b"[]", "ns"),
        ("/post?ns=x", b"{not json", "not a JSON list"),
        ("/post?ns=x", br#"[{"name":"bad name","value":1}]"#, "refused"),
    ] {
        let r = a.post(path, body);
        assert_eq!(r.status, 400, "{path}");
        assert!(r.text().contains(needle), "{path}: {}", r.text());
    }
    assert_eq!(a.llen("metrics.send.queue"), 3, "refused posts queue nothing");
}

#[test]
fn update_reloads_and_a_broken_file_changes_nothing() {
    let a = agent();
    let path = a.dir.path().join("collector.ini");
    let more = format!(
        "{COLLECTIONS}\n[collection:demo.extra]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 0\ncmd_and_args = echo.sh\n"
    );
    std::fs::write(&path, Agent::config_text(&a.redis, a.dir.path(), "", &more)).unwrap();
    let r = a.post("/update", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["collections"], 3);
    assert_eq!(a.get("/plugins/list").json().as_array().unwrap().len(), 3);

    std::fs::write(&path, "[collector]\nredis = x\n[collection:demo.bad]\nmethod = NOPE\n").unwrap();
    let r = a.post("/update", b"");
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("NOPE") && r.text().contains("plugin_dir"),
        "{}",
        r.text()
    );
    assert_eq!(
        a.get("/plugins/list").json().as_array().unwrap().len(),
        3,
        "the old definitions stay"
    );
}

#[test]
fn log_offset_reads_whole_lines_inside_the_log_roots_only() {
    let a = agent();
    let log = a.dir.path().join("log/app.log");
    std::fs::write(&log, "one\ntwo\nthree\npartial").unwrap();
    let q = |s: &str| a.get_auth(&format!("/log/offset?{s}"));
    let r = q(&format!("fpath={}&num=2", log.display()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["lines"], serde_json::json!(["one", "two"]));
    assert_eq!(r.json()["next_offset"], 8);
    let r = q(&format!("fpath={}&offset=8", log.display()));
    assert_eq!(
        r.json()["lines"],
        serde_json::json!(["three"]),
        "a partial last line waits"
    );
    assert_eq!(r.json()["next_offset"], 14);

    let traversal = format!("{}/../collector.ini", a.dir.path().join("log").display());
    let r = q(&format!("fpath={traversal}"));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = q("fpath=/etc/passwd");
    assert_eq!(r.status, 403);
    std::os::unix::fs::symlink("/etc/passwd", a.dir.path().join("log/escape")).unwrap();
    let r = q(&format!("fpath={}", a.dir.path().join("log/escape").display()));
    assert_eq!(r.status, 403, "a symlink out of the roots is refused");
    let r = q(&format!("fpath={}", a.dir.path().join("log/absent").display()));
    assert_eq!(r.status, 404);
    assert_eq!(q("offset=3").status, 400);
    let r = q(&format!("fpath={}&num=0", log.display()));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("num"), "{}", r.text());
    let r = q(&format!("fpath={}&offset=-1", log.display()));
    assert_eq!(r.status, 400);
}

#[test]
fn a_client_that_hangs_up_does_not_leave_the_collection_running() {
    use std::io::Write;
    let a = agent();
    let mut s = std::net::TcpStream::connect(&a.addr).unwrap();
    write!(
        s,
        "POST /plugins/run?ns=demo&repo=slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\n\r\n",
        a.api_token
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(5), || a.get("/me/status").json()
        ["counters"]["runs_active"]
        == 1));
    drop(s);
    // The run goes on to its end, its result is pushed and the collection is free again.
    assert!(wait_for(Duration::from_secs(5), || a.llen("collector.data.queue") == 1));
    assert!(wait_for(Duration::from_secs(2), || a.get("/me/status").json()
        ["counters"]["runs_active"]
        == 0));
    assert_eq!(
        a.redis.cli(&["EXISTS", "collector.running.demo.slow.localhost"]).trim(),
        "0"
    );
    assert_eq!(a.post("/plugins/run?ns=demo&repo=slow", b"").status, 200);
}

#[test]
fn on_demand_targets_are_the_collections_own() {
    let a = agent();
    let r = a.post("/plugins/run?ns=demo&repo=echo&target=evil.example", b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("alpha, beta"), "{}", r.text());
}
