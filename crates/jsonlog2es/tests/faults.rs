//! Faults a real server cannot be made to produce (429 storms, partial `"errors":true`, 413,
//! slow replies, refused requests), against the in-repo `_bulk` double `es_sink`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use es_sink::{EsSink, FaultPlan, Options, RequestFault};

const T: Duration = Duration::from_secs(60);

fn sink() -> EsSink {
    EsSink::start(Options::keeping_documents()).unwrap()
}

fn seq_of(source: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(source).ok()?["seq"].as_u64()
}

#[test]
fn storms_of_429_and_5xx_end_with_every_document_in_once() {
    let es = sink();
    es.set_faults(
        FaultPlan::new()
            .then(RequestFault::status(429).retry_after(1))
            .then(RequestFault::status(503))
            .then(RequestFault::disconnect())
            .then(RequestFault::status(429))
            // First attempts of a third of the documents are rejected, then a seventh.
            .items(|i| match (i.seen_before, i.position % 3, i.position % 7) {
                (0, 0, _) => Some(429),
                (0, _, 0) => Some(503),
                (1, 1, _) => Some(429),
                _ => None,
            }),
    );
    let s = Setup::with(&es.url(), "", "");
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("bulk_max_docs = 500", "bulk_max_docs = 500\ncompression = gzip"),
    )
    .unwrap();
    append(&s.logs().join("app.log"), 0..2000);
    let d = s.spawn();
    wait_for("every document", T, || es.count("app-*") >= 2000);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), 0..2000);
    let stats = es.stats();
    assert!(stats.injected_faults > 700, "{stats:?}");
    assert_eq!(stats.created, 2000, "{stats:?}");
    d.term();
}

#[test]
fn partial_errors_dead_letter_only_the_refused_documents() {
    let es = sink();
    es.set_faults(FaultPlan::new().items(|i| (seq_of(i.source).unwrap() % 100 == 13).then_some(400)));
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    append(&path, 0..1000);
    let d = s.spawn();
    wait_for("accepted documents", T, || es.count("app-*") >= 990);
    wait_for("dead letters", T, || s.dead_letters().len() >= 10);
    d.term();
    let letters = s.dead_letters();
    assert_eq!(letters.len(), 10);
    let text = std::fs::read_to_string(&path).unwrap();
    for l in &letters {
        assert_eq!(l["status"], 400);
        assert!(
            l["reason"].as_str().unwrap().starts_with("mapper_parsing_exception"),
            "{l}"
        );
        assert_eq!(l["file"], path.to_str().unwrap());
        assert_eq!(l["document"]["seq"].as_u64().unwrap() % 100, 13);
        let offset = l["offset"].as_u64().unwrap() as usize;
        assert!(
            text[offset..].starts_with(&line(l["document"]["seq"].as_u64().unwrap())),
            "offset points at the line"
        );
        assert!(l["index"].as_str().unwrap().starts_with("app-"));
    }
    // Refused documents count as settled: a restart sends nothing again.
    let requests = es.stats().requests;
    let d = s.spawn();
    std::thread::sleep(Duration::from_millis(700));
    d.term();
    assert_eq!(es.stats().requests, requests, "nothing re-sent after a restart");
    assert_eq!(s.dead_letters().len(), 10);
    assert_exactly_once(&es.documents("app-*"), (0..1000).filter(|n| n % 100 != 13));
}

#[test]
fn too_large_requests_are_split_and_a_lone_oversized_document_dead_lettered() {
    let es = sink();
    es.set_faults(FaultPlan::new().max_body_bytes(20_000));
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    append(&path, 0..1000);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "{{\"seq\":5000,\"pad\":\"{}\"}}", "y".repeat(30_000))
        })
        .unwrap();
    append(&path, 1000..1100);
    let d = s.spawn();
    wait_for("every document that fits", T, || es.count("app-*") >= 1100);
    wait_for("the oversized one refused", T, || !s.dead_letters().is_empty());
    d.term();
    assert_exactly_once(&es.documents("app-*"), 0..1100);
    let letters = s.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["status"], 413);
    assert_eq!(letters[0]["document"]["seq"], 5000);
}

#[test]
fn slow_replies_time_out_and_are_sent_again_without_duplicates() {
    let es = sink();
    // Answers that never come in time: without its request timeout the daemon would wait forever.
    es.set_faults(FaultPlan::new().delay(Duration::from_secs(3600)));
    let s = Setup::new(&es.url(), "");
    append(&s.logs().join("app.log"), 0..800);
    let d = s.spawn();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(es.count("app-*"), 0);
    es.set_faults(FaultPlan::new());
    wait_for("every document", T, || es.count("app-*") >= 800);
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&es.documents("app-*"), 0..800);
    assert!(d.log_text().contains("no answer within 2s"), "{}", d.log_text());
    d.term();
}

#[test]
fn a_refused_request_is_dead_lettered_not_retried_forever() {
    let es = sink();
    es.set_faults(FaultPlan::new().then(RequestFault::status(403)));
    let s = Setup::new(&es.url(), "");
    append(&s.logs().join("app.log"), 0..300);
    let d = s.spawn();
    wait_for("dead letters", T, || !s.dead_letters().is_empty());
    append(&s.logs().join("app.log"), 300..400);
    wait_for("later documents", T, || es.count("app-*") >= 100);
    std::thread::sleep(Duration::from_millis(300));
    d.term();
    let refused: Vec<u64> = s
        .dead_letters()
        .iter()
        .map(|l| l["document"]["seq"].as_u64().unwrap())
        .collect();
    assert!(s.dead_letters().iter().all(|l| l["status"] == 403));
    let shipped = es.documents("app-*");
    let expected: Vec<u64> = (0..400).filter(|n| !refused.contains(n)).collect();
    assert_eq!(refused.len() + shipped.len(), 400);
    assert_exactly_once(&shipped, expected);
}

#[test]
fn mflog2mfadmin_ships_the_daemons_logs_but_not_its_own() {
    let es = sink();
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let mflog = |name: &str, seq: u64| {
        format!("{{\"timestamp\":\"2026-11-23T13:12:59.123456Z\",\"level\":\"info\",\"name\":\"{name}\",\"pid\":7,\"event\":\"e\",\"seq\":{seq}}}\n")
    };
    std::fs::write(
        log.join("step.log"),
        (0..50).map(|n| mflog("step", n)).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        log.join("mflog2mfadmin.log"),
        (50..60).map(|n| mflog("mflog2mfadmin", n)).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        log.join("redis.log"),
        "1:M 23 Nov 2026 13:12:59.123 * Ready to accept connections\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mflog2mfadmin"))
        .args([
            "--home",
            home.path().to_str().unwrap(),
            "--url",
            &es.url(),
            "--log-format",
            "json",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("step logs", T, || es.count("mflog-2026.11.23") >= 50);
    std::thread::sleep(Duration::from_millis(2500));
    let _ = child.kill();
    let _ = child.wait();
    let docs = es.documents("mflog-*");
    assert_exactly_once(&docs, 0..50);
    for d in &docs {
        assert_eq!(d["module"], "ironwork");
        assert_eq!(d["module_version"], env!("CARGO_PKG_VERSION"));
        assert!(d["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    }
    assert!(home.path().join("var/state/mflog2mfadmin.checkpoints.json").exists());
}

/// A loopback address nothing listens on.
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// One value from the daemon's `/metrics`.
fn metric(addr: &str, name: &str) -> u64 {
    let (_, body) = http("GET", &format!("http://{addr}/metrics"), b"").unwrap();
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_full_queue_pauses_reading_while_rotations_are_still_followed() {
    let es = sink();
    // Elasticsearch answers nothing but 503 for now.
    let mut plan = FaultPlan::new();
    for _ in 0..100_000 {
        plan = plan.then(RequestFault::status(503));
    }
    es.set_faults(plan);
    let listen = free_addr();
    let s = Setup::with(&es.url(), &format!("queue_bytes = 64KiB\nhttp_listen = {listen}\n"), "");
    let path = s.logs().join("app.log");
    append(&path, 0..5000);
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let d = s.spawn();
    wait_for("the queue to fill", T, || {
        metric(&listen, "jsonlog2es_queued_bytes") >= 64 << 10
    });
    std::thread::sleep(Duration::from_millis(500));
    let read = metric(&listen, "jsonlog2es_read_bytes_total");
    assert!(
        read < file_bytes / 2,
        "reading paused: {read} of {file_bytes} bytes read"
    );
    // Rotated and a new file while paused: both followed, nothing lost.
    std::fs::rename(&path, s.logs().join("app.log.1")).unwrap();
    append(&path, 5000..5500);
    append(&s.logs().join("other.log"), 5500..5600);
    wait_for("the new files followed", T, || metric(&listen, "jsonlog2es_files") == 3);
    es.set_faults(FaultPlan::new());
    wait_for("every document", T, || es.count("app-*") >= 5600);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), 0..5600);
    d.term();
}

#[test]
fn more_files_than_the_open_file_cap_are_all_read() {
    let es = sink();
    let listen = free_addr();
    let s = Setup::with(
        &es.url(),
        &format!("http_listen = {listen}\n[tail]\nmax_open_files = 2\nclose_inactive = 50ms\npoll_interval = 20ms\nscan_interval = 100ms\n"),
        "",
    );
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("[tail]\npoll_interval = 20ms\nscan_interval = 100ms\n", ""),
    )
    .unwrap();
    let d = s.spawn();
    for round in 0..3u64 {
        for f in 0..6u64 {
            let first = (round * 6 + f) * 20;
            append(&s.logs().join(format!("f{f}.log")), first..first + 20);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    wait_for("every document", T, || es.count("app-*") >= 360);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), 0..360);
    assert_eq!(metric(&listen, "jsonlog2es_files"), 6);
    assert!(metric(&listen, "jsonlog2es_open_files") <= 2);
    d.term();
}

#[test]
fn a_rewrite_to_the_same_size_with_the_same_first_line_is_read_again() {
    let es = sink();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    let rewrite = |seq: u64| {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(format!("{{\"header\":0}}\n{}", line(seq)).as_bytes())
            .unwrap();
    };
    rewrite(0);
    let d = s.spawn();
    wait_for("the first generation", T, || es.count("app-*") >= 2);
    let size = std::fs::metadata(&path).unwrap().len();
    rewrite(1);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "same size, same first line"
    );
    wait_for("the second generation", T, || es.count("app-*") >= 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), 0..2);
    d.term();
}

#[test]
fn a_file_rewritten_while_stopped_with_the_same_first_line_is_read_again() {
    let es = sink();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    let write = |range: std::ops::Range<u64>| {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"{\"header\":0}\n").unwrap();
        f.write_all(range.map(line).collect::<String>().as_bytes()).unwrap();
    };
    write(0..50);
    let d = s.spawn();
    wait_for("the first generation", T, || es.count("app-*") >= 51);
    d.term();
    // Same inode, same first line, longer than the checkpoint: only the bytes before the
    // checkpoint show the difference.
    let before = std::fs::metadata(&path).unwrap().len();
    write(100..160);
    assert!(std::fs::metadata(&path).unwrap().len() > before);
    let d = s.spawn();
    wait_for("the second generation", T, || es.count("app-*") >= 112);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), (0..50).chain(100..160));
    d.term();
}

#[test]
fn an_empty_file_renamed_away_before_its_first_line_is_still_read() {
    let es = sink();
    let listen = free_addr();
    let s = Setup::with(&es.url(), &format!("http_listen = {listen}\n"), "");
    let path = s.logs().join("app.log");
    let mut writer = std::fs::File::create(&path).unwrap();
    let d = s.spawn();
    wait_for("the empty file followed", T, || {
        metric(&listen, "jsonlog2es_files") == 1
    });
    std::fs::create_dir_all(s.home().join("rotated")).unwrap();
    std::fs::rename(&path, s.home().join("rotated/app.log.1")).unwrap();
    {
        use std::io::Write;
        writer
            .write_all((0..20).map(line).collect::<String>().as_bytes())
            .unwrap();
    }
    wait_for("the lines written after the rename", T, || es.count("app-*") >= 20);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), 0..20);
    d.term();
}
