//! The `reflector` daemon against real Redis and a real InfluxDB 1.x: collected data goes
//! through the reflection tree to InfluxDB exactly; an InfluxDB outage sends batches to the
//! unsent backup and the leader resends them when it returns, none lost and none delivered
//! twice; expiry removes old rows; malformed messages go to `<queue>.dead`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{data, len, Influx, Reflector};
use ironwork_core::messages::{epoch_seconds, MetricBatch};
use ironwork_test_support::{wait_for, RedisServer};

const PUSH_ALL: &str = "[reflection:p.all]\nitem = *\nactions = push_metrics\nmetric_tag.site = {site}\n";

fn influx_settings(influx: &Influx, extra: &str) -> String {
    format!(
        "metrics_server_endpoints = 127.0.0.1:{}\ninfluxdb_database = metrics\n{extra}",
        influx.port
    )
}

#[test]
fn collected_data_reaches_influxdb_exactly_and_bad_messages_are_dead_lettered() {
    let redis = RedisServer::start();
    let influx = Influx::start();
    let _r = Reflector::start(&redis, &influx_settings(&influx, ""), PUSH_ALL);
    let base = 1_700_000_000;
    for i in 0..30 {
        redis.cli(&[
            "LPUSH",
            "collector.data.queue",
            &data(&format!("web{i}"), "load", base, 10),
        ]);
    }
    redis.cli(&["LPUSH", "collector.data.queue", "{not json"]);
    // A point InfluxDB cannot carry (a measurement starting with '#') goes to the dead list.
    redis.cli(&[
        "LPUSH",
        "metrics.send.queue",
        r##"{"name":"#comment","tags":{},"fields":{"value":1.0},"timestamp_ns":1}"##,
    ]);
    assert!(
        wait_for(Duration::from_secs(20), || influx.count("load") == 300),
        "{} points",
        influx.count("load")
    );
    let one = influx.query("SELECT * FROM load WHERE host = 'web7' ORDER BY time LIMIT 2");
    let s = &one["results"][0]["series"][0];
    assert_eq!(
        s["columns"],
        serde_json::json!(["time", "cpu", "host", "site", "value"])
    );
    assert_eq!(
        s["values"],
        serde_json::json!([
            [base * 1_000_000_000, "0", "web7", "paris", 0.5],
            [(base + 1) * 1_000_000_000, "0", "web7", "paris", 1.5]
        ])
    );
    assert!(wait_for(Duration::from_secs(5), || len(
        &redis,
        "LLEN",
        "{collector.data.queue}.dead"
    ) == 1
        && len(&redis, "LLEN", "{metrics.send.queue}.dead") == 1));
    let dead = redis.cli(&["LINDEX", "{metrics.send.queue}.dead", "0"]);
    assert!(dead.contains("cannot be sent") && dead.contains('#'), "{dead}");
    assert_eq!(len(&redis, "LLEN", "metrics.send.queue"), 0);
    assert_eq!(len(&redis, "ZCARD", "metrics.unsent"), 0);
}

/// Every batch the sent table holds, by id, with its points.
fn sent_batches(redis: &RedisServer) -> Vec<MetricBatch> {
    let rows = redis.cli(&["ZRANGE", "metrics.sent", "0", "-1"]);
    rows.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_influxdb_outage_loses_nothing_and_delivers_nothing_twice() {
    let redis = RedisServer::start();
    let mut influx = Influx::start();
    let listen = ironwork_test_support::free_tcp_port();
    let r = Reflector::start(
        &redis,
        &influx_settings(
            &influx,
            &format!(
                "metrics_send_retry_count = 1\nmetrics_send_retry_interval = 200ms\n\
                 metrics_sent_backup_mode = yes\nmetrics_send_bulk_size = 50\nlisten = 127.0.0.1:{listen}\n"
            ),
        ),
        PUSH_ALL,
    );
    let base = 1_700_000_000;
    redis.cli(&["LPUSH", "collector.data.queue", &data("before", "up", base, 20)]);
    // Recorded as sent: the sender is done with it (InfluxDB holding the points is not enough:
    // a write can land after the client gave up on its answer).
    assert!(wait_for(Duration::from_secs(20), || len(
        &redis,
        "ZCARD",
        "metrics.sent"
    ) == 1));
    assert_eq!(influx.count("up"), 20);

    influx.stop();
    for i in 0..10 {
        redis.cli(&[
            "LPUSH",
            "collector.data.queue",
            &data(&format!("during{i}"), "up", base, 30),
        ]);
    }
    // 300 points in batches of at most 50 wait in the unsent table.
    assert!(
        wait_for(Duration::from_secs(30), || {
            let rows = r.cli(&["unsent"]);
            let points: usize = rows
                .lines()
                .map(|l| serde_json::from_str::<MetricBatch>(l).unwrap().points.len())
                .sum();
            points == 300
        }),
        "unsent: {}\n{}",
        r.cli(&["unsent"]),
        r.log()
    );
    assert_eq!(len(&redis, "LLEN", "metrics.send.queue"), 0);
    std::thread::sleep(Duration::from_secs(1));

    influx.start_again();
    assert!(
        wait_for(Duration::from_secs(30), || len(&redis, "ZCARD", "metrics.unsent") == 0
            && influx.count("up") == 320),
        "{} points in InfluxDB, {} unsent rows\n{}",
        influx.count("up"),
        len(&redis, "ZCARD", "metrics.unsent"),
        r.log()
    );
    // Each batch was delivered once: one sent row per batch id, 320 points in all.
    std::thread::sleep(Duration::from_millis(500));
    let sent = sent_batches(&redis);
    let mut ids: Vec<&str> = sent.iter().map(|b| b.batch_id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a batch was delivered twice");
    assert_eq!(sent.iter().map(|b| b.points.len()).sum::<usize>(), 320);
    assert!(
        sent.iter().any(|b| b.attempts > 1),
        "resent batches count their attempts"
    );
    // InfluxDB keeps one point per series and time whatever it is sent, so the writes are
    // counted at the source: every point written exactly once, by the sender or a resend.
    let metrics = common::metrics(listen);
    let counter = |name: &str| common::counter(&metrics, name);
    assert_eq!(
        counter("reflector_points_sent_total") + counter("reflector_points_resent_total"),
        320,
        "{metrics}"
    );
    // And InfluxDB holds each point once, with its value.
    let v = influx.query("SELECT SUM(\"value\") FROM up WHERE host =~ /during/");
    assert_eq!(
        v["results"][0]["series"][0]["values"][0][1].as_f64(),
        Some(10.0 * 450.0)
    );
}

#[test]
fn expiry_removes_old_rows_only_and_the_cli_lists_by_time() {
    let redis = RedisServer::start();
    let now = epoch_seconds();
    let row = |id: &str, at: f64| {
        serde_json::json!({"batch_id": id, "endpoint": "x:1", "attempted_at": at, "attempts": 1, "points": []})
            .to_string()
    };
    let day = 86_400.0;
    for (table, id, at) in [
        ("metrics.sent", "sent-old", now - 8.0 * day),
        ("metrics.sent", "sent-young", now - 6.0 * day),
        ("metrics.unsent", "unsent-old", now - 31.0 * day),
        ("metrics.unsent", "unsent-young", now - 2.0 * day),
    ] {
        redis.cli(&["ZADD", table, &at.to_string(), &row(id, at)]);
    }
    let r = Reflector::start(
        &redis,
        "metrics_sent_expire_days = 7\nmetrics_unsent_expire_days = 30\nexpiry_interval = 1s\n",
        "",
    );
    assert!(wait_for(Duration::from_secs(10), || len(
        &redis,
        "ZCARD",
        "metrics.sent"
    ) == 1
        && len(&redis, "ZCARD", "metrics.unsent") == 1));
    assert!(r.cli(&["sent"]).contains("sent-young"));
    assert!(r.cli(&["unsent"]).contains("unsent-young"));
    assert_eq!(r.cli(&["sent", "--since", "1d"]), "");
    assert!(r
        .cli(&["sent", "--since", "7d", "--until", "5d"])
        .contains("sent-young"));
    let at = (now - 6.0 * day) as u64;
    assert_eq!(r.cli(&["sent", "--until", &(at - 10).to_string()]), "");
}

#[test]
fn a_redis_crash_is_ridden_out_and_nothing_acknowledged_is_lost() {
    let mut redis = RedisServer::start_with(ironwork_test_support::Persistence::AofAlways);
    let influx = Influx::start();
    let _r = Reflector::start(&redis, &influx_settings(&influx, ""), PUSH_ALL);
    let base = 1_700_000_000;
    redis.cli(&["LPUSH", "collector.data.queue", &data("a", "ride", base, 10)]);
    assert!(wait_for(Duration::from_secs(20), || influx.count("ride") == 10));
    redis.restart();
    redis.cli(&["LPUSH", "collector.data.queue", &data("b", "ride", base, 10)]);
    assert!(
        wait_for(Duration::from_secs(30), || influx.count("ride") == 20),
        "{} points",
        influx.count("ride")
    );
}

#[test]
fn sigterm_during_retries_stops_at_once_and_keeps_the_batch() {
    let redis = RedisServer::start();
    let away = ironwork_test_support::free_tcp_port();
    let mut r = Reflector::start(
        &redis,
        &format!(
            "metrics_server_endpoints = 127.0.0.1:{away}\nmetrics_send_retry_count = 10\n\
             metrics_send_retry_interval = 5s\nshutdown_grace = 20s\n"
        ),
        PUSH_ALL,
    );
    redis.cli(&["LPUSH", "collector.data.queue", &data("a", "kept", 1_700_000_000, 7)]);
    // The sender holds the points and waits 5 s before its first retry.
    assert!(wait_for(Duration::from_secs(10), || len(
        &redis,
        "LLEN",
        "metrics.send.queue"
    ) == 0
        && redis
            .cli(&["KEYS", "{metrics.send.queue}.processing.*"])
            .trim()
            .lines()
            .count()
            == 1));
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert!(r.stop().success());
    assert!(t.elapsed() < Duration::from_secs(3), "stopped in {:?}", t.elapsed());
    // Recorded as unsent (in the queue or already in the table): nothing lost, nothing in flight.
    let mut rows = redis.cli(&["LRANGE", "metrics.unsent.queue", "0", "-1"]);
    rows.push_str(&redis.cli(&["ZRANGE", "metrics.unsent", "0", "-1"]));
    let points: usize = rows
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str::<MetricBatch>(l).unwrap().points.len())
        .sum();
    assert_eq!(points, 7, "{rows}\n{}", r.log());
    for key in redis
        .cli(&["KEYS", "{metrics.send.queue}.processing.*"])
        .lines()
        .filter(|k| !k.is_empty())
    {
        assert_eq!(len(&redis, "LLEN", key), 0, "{key}");
    }
}

#[test]
fn every_endpoint_gets_every_point_and_keeps_its_own_backlog() {
    let redis = RedisServer::start();
    let influx = Influx::start();
    let away = ironwork_test_support::free_tcp_port();
    let _r = Reflector::start(
        &redis,
        &format!(
            "metrics_server_endpoints = 127.0.0.1:{}, 127.0.0.1:{away}\ninfluxdb_database = metrics\n\
             metrics_send_retry_count = 0\nmetrics_send_retry_interval = 10s\n",
            influx.port
        ),
        PUSH_ALL,
    );
    redis.cli(&["LPUSH", "collector.data.queue", &data("a", "both", 1_700_000_000, 30)]);
    assert!(wait_for(Duration::from_secs(20), || influx.count("both") == 30));
    assert!(wait_for(Duration::from_secs(10), || len(
        &redis,
        "ZCARD",
        "metrics.unsent"
    ) == 1));
    let row: MetricBatch = serde_json::from_str(redis.cli(&["ZRANGE", "metrics.unsent", "0", "0"]).trim()).unwrap();
    assert_eq!(
        row.endpoint,
        format!("127.0.0.1:{away}"),
        "only the endpoint that missed it keeps it"
    );
    assert_eq!(row.points.len(), 30);
}
