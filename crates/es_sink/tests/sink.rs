//! The sink in-process over real HTTP: bulk answers as Elasticsearch gives them, counts and
//! patterns, gzip bodies, and every kind of injected fault.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bulk, get, request, statuses, try_request};
use es_sink::{BulkAction, EsSink, FaultPlan, Options, RequestFault};
use ironwork_test_support::wait_for;

fn sink() -> EsSink {
    EsSink::start(Options::default()).expect("start sink")
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(a, s)| (a.to_string(), *s)).collect()
}

#[test]
fn create_is_201_then_409_for_the_same_id() {
    let s = sink();
    let body = "{\"create\":{\"_index\":\"logs\",\"_id\":\"a1\"}}\n{\"msg\":\"one\"}\n";
    let first = bulk(s.addr(), "/_bulk", body);
    assert_eq!(first.status, 200);
    let v = first.json();
    assert_eq!(v["errors"], false);
    assert_eq!(v["items"][0]["create"]["status"], 201);
    assert_eq!(v["items"][0]["create"]["result"], "created");
    assert_eq!(v["items"][0]["create"]["_id"], "a1");
    assert_eq!(v["items"][0]["create"]["_index"], "logs");

    let again = bulk(s.addr(), "/_bulk", body).json();
    assert_eq!(again["errors"], true);
    let item = &again["items"][0]["create"];
    assert_eq!(item["status"], 409);
    assert_eq!(item["error"]["type"], "version_conflict_engine_exception");
    let reason = item["error"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("[a1]: version conflict, document already exists"),
        "{reason}"
    );
    assert_eq!(s.count("logs"), 1);
    assert_eq!(s.ids("logs"), vec!["a1".to_string()]);
    let stats = s.stats();
    assert_eq!(
        (stats.requests, stats.items, stats.created, stats.conflicts),
        (2, 2, 1, 1)
    );
}

#[test]
fn index_generates_missing_ids_and_replaces_existing_ones() {
    let s = EsSink::start(Options::keeping_documents()).expect("start sink");
    let v = bulk(
        s.addr(),
        "/logs/_bulk?refresh=false",
        "{\"index\":{}}\n{\"n\":1}\n{\"index\":{}}\n{\"n\":2}\n{\"index\":{\"_id\":\"k\"}}\n{\"n\":3}\n",
    )
    .json();
    let ids: Vec<&str> = (0..3)
        .map(|i| v["items"][i]["index"]["_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids[0].len(), 20, "generated ids look like Elasticsearch's: {ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[2], "k");
    assert_eq!(statuses(&v), pairs(&[("index", 201), ("index", 201), ("index", 201)]));

    let v = bulk(
        s.addr(),
        "/_bulk",
        "{\"index\":{\"_index\":\"logs\",\"_id\":\"k\"}}\n{\"n\":4}\n",
    )
    .json();
    assert_eq!(v["errors"], false);
    assert_eq!(v["items"][0]["index"]["status"], 200);
    assert_eq!(v["items"][0]["index"]["result"], "updated");
    assert_eq!(v["items"][0]["index"]["_version"], 2);
    assert_eq!(s.count("logs"), 3);
    assert_eq!(s.document("logs", "k"), Some(serde_json::json!({"n": 4})));
    let ns: Vec<i64> = s
        .documents("logs")
        .iter()
        .map(|d| d["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(ns, vec![1, 2, 4]);
    assert_eq!(s.stats().updated, 1);
}

#[test]
fn a_source_that_is_not_a_json_object_is_400_for_that_item_only() {
    let s = sink();
    let body = concat!(
        "{\"index\":{}}\n[1,2]\n",
        "{\"index\":{}}\n{\"ok\":true}\n",
        "{\"index\":{}}\n{\"broken\":\n",
        "{\"index\":{}}\n\"text\"\n",
        "{\"create\":{\"_id\":\"z\"}}\n{\"ok\":2} trailing\n",
    );
    let v = bulk(s.addr(), "/logs/_bulk", body).json();
    assert_eq!(v["errors"], true);
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("index", 400),
            ("index", 201),
            ("index", 400),
            ("index", 400),
            ("create", 400)
        ])
    );
    assert_eq!(v["items"][0]["index"]["error"]["type"], "mapper_parsing_exception");
    assert_eq!(s.count("logs"), 1);
    assert_eq!(s.stats().bad_documents, 4);
}

#[test]
fn items_are_answered_in_request_order_across_indices_and_actions() {
    let s = sink();
    bulk(
        s.addr(),
        "/_bulk",
        "{\"create\":{\"_index\":\"b\",\"_id\":\"2\"}}\n{}\n",
    );
    let body = concat!(
        "{\"create\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{}\n",
        "{\"create\":{\"_index\":\"b\",\"_id\":\"2\"}}\n{}\n",
        "{\"index\":{\"_index\":\"b\",\"_id\":\"2\"}}\n{}\n",
        "{\"delete\":{\"_index\":\"a\",\"_id\":\"nope\"}}\n",
        "{\"create\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{}\n",
        "{\"delete\":{\"_index\":\"a\",\"_id\":\"1\"}}\n",
        "{\"create\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{}\n",
    );
    let v = bulk(s.addr(), "/_bulk", body).json();
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("create", 201),
            ("create", 409),
            ("index", 200),
            ("delete", 404),
            ("create", 409),
            ("delete", 200),
            ("create", 201),
        ])
    );
    assert_eq!(v["items"][0]["create"]["_index"], "a");
    assert_eq!(v["items"][1]["create"]["_index"], "b");
    assert_eq!((s.count("a"), s.count("b")), (1, 1));
}

#[test]
fn filter_path_keeps_what_the_client_asked_for_like_elasticsearch() {
    let s = sink();
    bulk(s.addr(), "/x/_bulk", "{\"create\":{\"_id\":\"dup\"}}\n{}\n");
    let body = "{\"create\":{\"_id\":\"new\"}}\n{}\n{\"create\":{\"_id\":\"dup\"}}\n{}\n";
    let v = bulk(
        s.addr(),
        "/x/_bulk?filter_path=errors,items.*.status,items.*.error",
        body,
    )
    .json();
    assert_eq!(v["errors"], true);
    assert!(v.get("took").is_none(), "{v}");
    assert_eq!(v["items"][0], serde_json::json!({"create": {"status": 201}}));
    assert_eq!(v["items"][1]["create"]["status"], 409);
    assert_eq!(
        v["items"][1]["create"]["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert!(v["items"][1]["create"].get("_id").is_none(), "{v}");

    let body = "{\"index\":{}}\n{}\n";
    let v = bulk(s.addr(), "/x/_bulk?filter_path=items.*.error", body).json();
    assert_eq!(v, serde_json::json!({}), "items left empty are dropped, then the key");
    let v = bulk(s.addr(), "/x/_bulk?filter_path=took,errors", body).json();
    assert_eq!(v["errors"], false);
    assert!(v["took"].is_u64() && v.get("items").is_none(), "{v}");
    let v = bulk(s.addr(), "/x/_bulk?filter_path=-took", body).json();
    assert_eq!(
        v["items"][0]["index"]["result"], "created",
        "not understood: unfiltered"
    );
    assert_eq!(s.count("x"), 5);
}

#[test]
fn gzip_bodies_are_accepted() {
    let s = sink();
    let body = "{\"index\":{}}\n{\"msg\":\"compressed\"}\n".repeat(1000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < body.len() / 10);
    let a = try_request(
        s.addr(),
        "POST",
        "/gz/_bulk",
        &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")],
        &gz,
    )
    .expect("request");
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["errors"], false);
    assert_eq!(s.count("gz"), 1000);
    assert_eq!(
        s.stats().bytes,
        body.len() as u64,
        "bytes are counted after decompression"
    );
}

#[test]
fn count_takes_patterns_and_lists() {
    let s = sink();
    for (index, n) in [("mflog-2026.11.23", 3), ("mflog-2026.11.24", 2), ("other", 1)] {
        bulk(s.addr(), &format!("/{index}/_bulk"), &"{\"index\":{}}\n{}\n".repeat(n));
    }
    let count = |path: &str| {
        let a = get(s.addr(), path);
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        a.json()["count"].as_u64().expect("count")
    };
    assert_eq!(count("/_count"), 6);
    assert_eq!(count("/mflog-*/_count"), 5);
    assert_eq!(count("/mflog-2026.11.24,other/_count"), 3);
    assert_eq!(count("/mflog-*,-*.23/_count"), 2);
    assert_eq!(count("/nothing-*/_count"), 0);
    assert_eq!(request(s.addr(), "POST", "/mflog-*/_count", b"{}").json()["count"], 5);
    let missing = get(s.addr(), "/missing/_count");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["type"], "index_not_found_exception");
    assert_eq!(s.count("mflog-*"), 5);
    assert_eq!(s.count("missing"), 0);

    assert_eq!(request(s.addr(), "POST", "/mflog-*/_refresh", b"").status, 200);
    assert_eq!(request(s.addr(), "POST", "/_refresh", b"").status, 200);
    let cat = get(s.addr(), "/_cat/indices?format=json").json();
    let rows: Vec<(String, String)> = cat
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            (
                r["index"].as_str().expect("index").into(),
                r["docs.count"].as_str().expect("count").into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("mflog-2026.11.23".into(), "3".into()),
            ("mflog-2026.11.24".into(), "2".into()),
            ("other".into(), "1".into())
        ]
    );
}

#[test]
fn root_info_head_and_stats_answer_like_elasticsearch() {
    let s = sink();
    let root = get(s.addr(), "/");
    assert_eq!(root.status, 200);
    assert_eq!(root.json()["version"]["number"], "8.11.0");
    assert_eq!(root.header("x-elastic-product"), Some("Elasticsearch"));
    let head = request(s.addr(), "HEAD", "/", b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    bulk(s.addr(), "/x/_bulk", "{\"index\":{}}\n{}\n");
    let stats = get(s.addr(), "/_sink/stats").json();
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["created"], 1);
    assert_eq!(stats["bytes"], 16);
    assert_eq!(get(s.addr(), "/_nothing/here").status, 400);
}

#[test]
fn a_malformed_action_line_refuses_the_whole_request() {
    let s = sink();
    let a = bulk(s.addr(), "/x/_bulk", "{\"index\":{}}\n{}\n{\"index\":\n{}\n");
    assert_eq!(a.status, 400);
    let v = a.json();
    assert_eq!(v["status"], 400);
    assert_eq!(v["error"]["type"], "illegal_argument_exception");
    assert!(
        v["error"]["reason"].as_str().expect("reason").contains("line [3]"),
        "{v}"
    );
    assert_eq!(s.count("*"), 0, "nothing of a refused request is stored");
    let unterminated = bulk(s.addr(), "/x/_bulk", "{\"index\":{}}\n{}");
    assert_eq!(unterminated.status, 400);
}

#[test]
fn a_queued_429_with_retry_after_answers_one_request_then_bulk_succeeds() {
    let s = sink();
    s.set_faults(
        FaultPlan::new()
            .then(RequestFault::status(429).retry_after(7))
            .then(RequestFault::status(503)),
    );
    let body = "{\"create\":{\"_id\":\"r\"}}\n{}\n";
    let first = bulk(s.addr(), "/x/_bulk", body);
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("7"));
    let v = first.json();
    assert_eq!(v["status"], 429);
    assert_eq!(v["error"]["type"], "es_rejected_execution_exception");
    assert_eq!(s.count("x"), 0, "a rejected request is not indexed");

    let second = bulk(s.addr(), "/x/_bulk", body);
    assert_eq!(second.status, 503);
    assert_eq!(second.header("retry-after"), None);
    assert_eq!(s.pending_request_faults(), 0);

    let third = bulk(s.addr(), "/x/_bulk", body);
    assert_eq!(third.status, 200);
    assert_eq!(
        third.json()["items"][0]["create"]["status"],
        201,
        "the retry is the first create"
    );
    assert_eq!(s.count("x"), 1);
    assert_eq!(s.stats().injected_faults, 2);
}

#[test]
fn a_body_over_max_body_bytes_is_413_after_decompression() {
    let s = sink();
    s.set_faults(FaultPlan::new().max_body_bytes(1000));
    let small = "{\"index\":{}}\n{\"a\":1}\n".repeat(10);
    assert_eq!(bulk(s.addr(), "/x/_bulk", &small).status, 200);
    let big = "{\"index\":{}}\n{\"a\":1}\n".repeat(100);
    let a = bulk(s.addr(), "/x/_bulk", &big);
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["status"], 413);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(big.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 1000, "compressed it fits, decompressed it does not");
    let a = try_request(s.addr(), "POST", "/x/_bulk", &[("content-encoding", "gzip")], &gz).expect("request");
    assert_eq!(a.status, 413);
    assert_eq!(s.count("x"), 10);
}

#[test]
fn the_item_fault_closure_fails_chosen_items_and_sees_retries() {
    let s = sink();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    s.set_faults(FaultPlan::new().items(move |item| {
        seen.fetch_add(1, Ordering::Relaxed);
        assert_eq!(item.action, BulkAction::Create);
        match (item.id, item.seen_before) {
            (Some("busy"), 0) => Some(429),
            (Some("down"), n) if n < 2 => Some(503),
            (Some("bad"), _) => Some(400),
            _ if item.document().is_some_and(|d| d["poison"] == true) => Some(400),
            _ => None,
        }
    }));
    let body = concat!(
        "{\"create\":{\"_id\":\"busy\"}}\n{}\n",
        "{\"create\":{\"_id\":\"down\"}}\n{}\n",
        "{\"create\":{\"_id\":\"fine\"}}\n{}\n",
        "{\"create\":{\"_id\":\"bad\"}}\n{}\n",
        "{\"create\":{}}\n{\"poison\":true}\n",
    );
    let v = bulk(s.addr(), "/x/_bulk", body).json();
    assert_eq!(v["errors"], true);
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("create", 429),
            ("create", 503),
            ("create", 201),
            ("create", 400),
            ("create", 400)
        ])
    );
    assert_eq!(
        v["items"][0]["create"]["error"]["type"],
        "es_rejected_execution_exception"
    );
    assert_eq!(v["items"][1]["create"]["error"]["type"], "unavailable_shards_exception");
    assert_eq!(v["items"][3]["create"]["error"]["type"], "mapper_parsing_exception");
    assert_eq!(s.ids("x"), vec!["fine".to_string()]);

    let retry = concat!(
        "{\"create\":{\"_id\":\"busy\"}}\n{}\n",
        "{\"create\":{\"_id\":\"down\"}}\n{}\n",
        "{\"create\":{\"_id\":\"fine\"}}\n{}\n",
    );
    let v = bulk(s.addr(), "/x/_bulk", retry).json();
    assert_eq!(
        statuses(&v),
        pairs(&[("create", 201), ("create", 503), ("create", 409)])
    );
    let v = bulk(s.addr(), "/x/_bulk", "{\"create\":{\"_id\":\"down\"}}\n{}\n").json();
    assert_eq!(
        statuses(&v),
        pairs(&[("create", 201)]),
        "third sighting of `down` passes"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 9);
    assert_eq!(s.count("x"), 3);
    assert_eq!(s.stats().injected_faults, 5);

    s.set_faults(FaultPlan::new());
    let v = bulk(s.addr(), "/x/_bulk", "{\"create\":{\"_id\":\"bad\"}}\n{}\n").json();
    assert_eq!(
        statuses(&v),
        pairs(&[("create", 201)]),
        "a new plan replaces the closure"
    );
}

#[test]
fn delay_holds_a_request_before_it_is_processed() {
    let s = sink();
    s.set_faults(FaultPlan::new().delay(Duration::from_millis(600)));
    let addr = s.addr();
    let t = Instant::now();
    let client = std::thread::spawn(move || bulk(addr, "/x/_bulk", "{\"index\":{}}\n{}\n").status);
    assert!(
        wait_for(Duration::from_secs(5), || s.stats().requests == 1),
        "counted on arrival"
    );
    assert_eq!(s.count("x"), 0, "nothing stored during the delay");
    assert_eq!(client.join().expect("client"), 200);
    assert!(t.elapsed() >= Duration::from_millis(600), "{:?}", t.elapsed());
    assert_eq!(s.count("x"), 1);
}

#[test]
fn delay_answer_stores_first_so_a_retry_meets_a_conflict() {
    let s = sink();
    s.set_faults(FaultPlan::new().delay_answer(Duration::from_millis(800)));
    let addr = s.addr();
    let body = "{\"create\":{\"_id\":\"slow\"}}\n{}\n";
    let t = Instant::now();
    let client = std::thread::spawn(move || bulk(addr, "/x/_bulk", body).json());
    assert!(
        wait_for(Duration::from_secs(5), || s.count("x") == 1),
        "stored before the answer"
    );
    assert!(t.elapsed() < Duration::from_millis(800), "{:?}", t.elapsed());
    let first = client.join().expect("client");
    assert!(t.elapsed() >= Duration::from_millis(800), "{:?}", t.elapsed());
    assert_eq!(first["items"][0]["create"]["status"], 201);
    s.set_faults(FaultPlan::new());
    let retry = bulk(addr, "/x/_bulk", body).json();
    assert_eq!(retry["items"][0]["create"]["status"], 409);
}

#[test]
fn disconnect_drops_the_connection_without_storing() {
    let s = sink();
    s.set_faults(FaultPlan::new().then(RequestFault::disconnect()));
    let r = try_request(s.addr(), "POST", "/x/_bulk", &[], b"{\"index\":{}}\n{}\n");
    assert!(r.is_err(), "expected no answer, got {r:?}");
    assert_eq!(s.count("x"), 0);
    assert_eq!(bulk(s.addr(), "/x/_bulk", "{\"index\":{}}\n{}\n").status, 200);
    assert_eq!(s.count("x"), 1);
    assert_eq!(s.stats().requests, 2);
}

#[test]
fn dropping_the_sink_closes_its_port_and_a_new_one_can_take_it() {
    let s = sink();
    let addr = s.addr();
    bulk(addr, "/x/_bulk", "{\"index\":{}}\n{}\n");
    drop(s);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "port still open after drop"
    );
    let again = EsSink::start_on(addr, Options::default()).expect("restart on the same port");
    assert_eq!(again.count("x"), 0, "a new sink starts empty");
    assert_eq!(bulk(addr, "/x/_bulk", "{\"index\":{}}\n{}\n").status, 200);
}

#[tokio::test]
async fn a_sink_works_inside_a_tokio_test_and_drops_there() {
    let s = sink();
    let addr = s.addr();
    let answer = tokio::task::spawn_blocking(move || bulk(addr, "/x/_bulk", "{\"index\":{}}\n{}\n"))
        .await
        .expect("request task");
    assert_eq!(answer.status, 200);
    assert_eq!(s.count("x"), 1);
    drop(s);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "port still open after drop"
    );
}
