//! Reflections in the running daemon, against real Redis: cache (read back with `reflector
//! cache`), forward, sniff (capped), drop and stop, value and tag conditions, a SIGHUP that
//! swaps the reflection set, and the Zabbix sender end to end against an in-test trapper that
//! answers like Zabbix 6 (and reports a failed value).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{len, Reflector};
use ironwork_core::messages::CollectedData;
use ironwork_test_support::{wait_for, RedisServer};
use reflector::zabbix::{frame, unframe};

fn message(target: &str, points: serde_json::Value) -> String {
    serde_json::json!({"plugin": "p", "collection": "c", "target": target, "collected_at": 1.7e9,
        "correlation_info": {"site": "paris"}, "points": points})
    .to_string()
}

fn point(name: &str, value: serde_json::Value, tags: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"name": name, "timestamp": 1.7e9, "tags": tags, "value": value})
}

#[test]
fn actions_fire_in_order_until_drop_or_stop_and_sighup_swaps_the_set() {
    let redis = RedisServer::start();
    let reflections = "\
[reflection:p.hot]
item = temp
value = > 50
tag.zone = ~^z[0-9]$
actions = forward, cache
forward_queue = alerts
cache_ttl = 1h
stop = yes

[reflection:p.noise]
item = debug.*
actions = drop

[reflection:p.rest]
actions = sniff
";
    let mut r = Reflector::start(&redis, "collection_sniffer_queue_max_size = 3\n", reflections);
    redis.cli(&[
        "LPUSH",
        "collector.data.queue",
        &message(
            "h1",
            serde_json::json!([
                point("temp", 70.into(), serde_json::json!({"zone": "z1"})),
                point("temp", 20.into(), serde_json::json!({"zone": "z1"})),
                point("temp", 90.into(), serde_json::json!({"zone": "north"})),
                point("debug.x", 1.into(), serde_json::json!({})),
            ]),
        ),
    ]);
    assert!(wait_for(Duration::from_secs(10), || len(
        &redis,
        "LLEN",
        "collector.data.sniffer.queue"
    ) == 1));
    // The hot point was forwarded and cached and stopped there; the two others were sniffed;
    // the debug point was dropped.
    let alerts: CollectedData = serde_json::from_str(redis.cli(&["LINDEX", "alerts", "0"]).trim()).unwrap();
    assert_eq!(alerts.points.len(), 1);
    assert_eq!(alerts.points[0].value, serde_json::json!(70));
    assert_eq!(alerts.correlation_info["site"], "paris");
    let sniffed: CollectedData =
        serde_json::from_str(redis.cli(&["LINDEX", "collector.data.sniffer.queue", "0"]).trim()).unwrap();
    let values: Vec<_> = sniffed.points.iter().map(|p| p.value.clone()).collect();
    assert_eq!(values, [serde_json::json!(20), serde_json::json!(90)]);
    let cache = r.cli(&["cache", "--match", "p.c.h1.*"]);
    assert!(cache.starts_with("reflector.cache.p.c.h1.temp,zone=z1 "), "{cache}");
    assert!(
        cache.contains(r#""value":70"#) && cache.contains(r#""reflection":"p.hot""#),
        "{cache}"
    );
    let ttl: i64 = redis
        .cli(&["PTTL", "reflector.cache.p.c.h1.temp,zone=z1"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 3_500_000, "cache_ttl = 1h, PTTL {ttl}");

    // The sniffer queue keeps its newest entries only.
    for i in 0..5 {
        redis.cli(&[
            "LPUSH",
            "collector.data.queue",
            &message(
                &format!("s{i}"),
                serde_json::json!([point("x", 1.into(), serde_json::json!({}))]),
            ),
        ]);
    }
    assert!(wait_for(Duration::from_secs(10), || redis
        .cli(&["LINDEX", "collector.data.sniffer.queue", "0"])
        .contains("\"s4\"")));
    assert_eq!(len(&redis, "LLEN", "collector.data.sniffer.queue"), 3);

    // A new set on SIGHUP: everything is forwarded now.
    std::fs::write(
        &r.config,
        std::fs::read_to_string(&r.config).unwrap().replace(
            reflections,
            "[reflection:p.all]\nactions = forward\nforward_queue = everything\n",
        ),
    )
    .unwrap();
    r.signal("HUP");
    assert!(wait_for(Duration::from_secs(10), || r
        .log()
        .contains("reflections reloaded")));
    redis.cli(&[
        "LPUSH",
        "collector.data.queue",
        &message(
            "h2",
            serde_json::json!([point("debug.y", 1.into(), serde_json::json!({}))]),
        ),
    ]);
    assert!(wait_for(Duration::from_secs(10), || len(&redis, "LLEN", "everything") == 1));
    // A broken file is refused and the set in force stays.
    std::fs::write(
        &r.config,
        std::fs::read_to_string(&r.config).unwrap() + "[reflection:p.bad]\nactions = explode\n",
    )
    .unwrap();
    r.signal("HUP");
    assert!(wait_for(Duration::from_secs(10), || r.log().contains("reload refused")));
    redis.cli(&[
        "LPUSH",
        "collector.data.queue",
        &message("h3", serde_json::json!([point("z", 1.into(), serde_json::json!({}))])),
    ]);
    assert!(wait_for(Duration::from_secs(10), || len(&redis, "LLEN", "everything") == 2));
    let t = std::time::Instant::now();
    assert!(r.stop().success());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "an idle reflector stopped in {:?}",
        t.elapsed()
    );
}

/// A trapper that records requests and answers like Zabbix 6, reporting one failed value.
fn trapper() -> (u16, std::sync::mpsc::Receiver<serde_json::Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            let mut head = [0u8; 13];
            if s.read_exact(&mut head).is_err() {
                continue;
            }
            let n = u64::from_le_bytes(head[5..13].try_into().unwrap()) as usize;
            let mut body = vec![0u8; n];
            s.read_exact(&mut body).unwrap();
            let mut whole = head.to_vec();
            whole.extend_from_slice(&body);
            let req: serde_json::Value = serde_json::from_slice(&unframe(&whole).unwrap()).unwrap();
            let total = req["data"].as_array().map_or(0, Vec::len);
            let answer = format!(
                r#"{{"response":"success","info":"processed: {}; failed: 1; total: {total}; seconds spent: 0.000042"}}"#,
                total - 1
            );
            s.write_all(&frame(answer.as_bytes())).unwrap();
            let _ = tx.send(req);
        }
    });
    (port, rx)
}

#[test]
fn the_zabbix_sender_delivers_items_and_counts_the_failed_ones() {
    let redis = RedisServer::start();
    let (port, requests) = trapper();
    let listen = ironwork_test_support::free_tcp_port();
    let _r = Reflector::start(
        &redis,
        &format!(
            "metrics_server_type = zabbix\nmetrics_server_endpoints = 127.0.0.1:{port}\nlisten = 127.0.0.1:{listen}\n"
        ),
        "[reflection:p.z]\nactions = push_metrics\nmetric_name = {collection}.{name}\nmetric_host = {target}.example\n",
    );
    redis.cli(&[
        "LPUSH",
        "collector.data.queue",
        &message(
            "web1",
            serde_json::json!([
                {"name": "load", "timestamp": 1700000000.25, "value": 1.5},
                {"name": "state", "timestamp": 1700000001.0, "value": "up"},
            ]),
        ),
    ]);
    let req = requests
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}: {}", _r.log()));
    assert_eq!(req["request"], "sender data");
    assert_eq!(
        req["data"],
        serde_json::json!([
            {"host": "web1.example", "key": "c.load", "value": "1.5", "clock": 1700000000, "ns": 250000000},
            {"host": "web1.example", "key": "c.state", "value": "up", "clock": 1700000001, "ns": 0},
        ])
    );
    let metrics = || common::metrics(listen);
    assert!(
        wait_for(Duration::from_secs(5), || metrics()
            .contains("reflector_zabbix_failed_total 1")),
        "{}",
        metrics()
    );
    assert!(metrics().contains("reflector_points_sent_total 2"));
}
