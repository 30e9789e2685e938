//! jsonlog2es against a real Elasticsearch-compatible server (osmem-server): every line indexed
//! exactly once across daemon kills, rotations, truncations, inode reuse and a server restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn every_line_once_across_sigterm_and_sigkill_mid_stream() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    let total = 3000u64;
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            for chunk in (0..total).step_by(50) {
                append(&path, chunk..chunk + 50);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let d = s.spawn();
    wait_for("first documents", T, || es.count("app-*") > 200);
    d.term();
    let d = s.spawn();
    wait_for("more documents", T, || es.count("app-*") > 1200);
    d.kill();
    let d = s.spawn();
    writer.join().unwrap();
    wait_for("every line", T, || es.count("app-*") >= total);
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&es.sources("app-*"), 0..total);
    assert_eq!(es.count("app-*"), total);
    d.term();
}

#[test]
fn rename_rotation_finishes_the_old_file_then_the_new_one() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    append(&path, 0..300);
    let d = s.spawn();
    wait_for("first lines", T, || es.count("app-*") == 300);
    // The writer still holds the old file when it is renamed away, and writes a little more.
    let mut old = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::fs::rename(&path, s.logs().join("app.log.1")).unwrap();
    let late: String = (300..400).map(line).collect();
    old.write_all(late.as_bytes()).unwrap();
    drop(old);
    append(&path, 400..700);
    wait_for("all lines", T, || es.count("app-*") >= 700);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.sources("app-*"), 0..700);
    d.term();
}

#[test]
fn copytruncate_and_truncation_are_read_from_the_start() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    // The same header line every time: only the truncation epoch tells generations apart.
    let header = "{\"timestamp\":\"2026-11-23T00:00:00Z\",\"header\":true}\n";
    std::fs::write(&path, header).unwrap();
    append(&path, 0..400);
    let d = s.spawn();
    wait_for("first generation", T, || es.count("app-*") == 401);
    // copytruncate: copy to a name outside the glob, then truncate in place.
    std::fs::copy(&path, s.logs().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::write(&path, header).unwrap();
    append(&path, 400..450);
    wait_for("second generation", T, || es.count("app-*") >= 452);
    // Plain truncation while stopped: shorter than the checkpoint, so read from 0 at start.
    d.term();
    std::fs::write(&path, header).unwrap();
    append(&path, 450..460);
    let d = s.spawn();
    wait_for("third generation", T, || es.count("app-*") >= 463);
    std::thread::sleep(Duration::from_millis(300));
    let sources = es.sources("app-*");
    assert_exactly_once(&sources, 0..460);
    assert_eq!(
        sources.iter().filter(|d| d["header"] == true).count(),
        3,
        "one header per generation"
    );
    d.term();
}

#[test]
fn an_elasticsearch_restart_loses_nothing() {
    let mut es = Osmem::start();
    let addr = es.addr.clone();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    append(&path, 0..500);
    let d = s.spawn();
    wait_for("before the restart", T, || es.count("app-*") == 500);
    let before = es.sources("app-*");
    es.stop();
    // Written while the server is down: held, retried, shipped once it is back.
    append(&path, 500..900);
    std::thread::sleep(Duration::from_millis(800));
    let es = Osmem::start_on(&addr);
    wait_for("after the restart", T, || es.count("app-*") >= 400);
    std::thread::sleep(Duration::from_millis(500));
    // osmem keeps nothing across a restart: the union of both lives is every line once.
    let mut all = before;
    all.extend(es.sources("app-*"));
    assert_exactly_once(&all, 0..900);
    d.term();
}

#[test]
fn long_lines_and_invalid_json_never_stop_the_flow() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "max_line_bytes = 300\nlong_lines = truncate\n");
    let path = s.logs().join("app.log");
    let mut text = String::new();
    text.push_str(&line(0));
    text.push_str(&format!("{{\"seq\":1,\"pad\":\"{}\"}}\n", "x".repeat(5000)));
    text.push_str("this is not json\n");
    text.push_str(&line(2));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"{\"seq\":3,\"bad\":\"\xff\xfe\"}\n");
    bytes.extend_from_slice(line(4).as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let d = s.spawn();
    wait_for("every line", T, || es.count("app-*") >= 6);
    std::thread::sleep(Duration::from_millis(300));
    let docs = es.sources("app-*");
    assert_eq!(docs.len(), 6, "{docs:#?}");
    let wrapped: Vec<&serde_json::Value> = docs.iter().filter(|d| d.get("parse_error").is_some()).collect();
    assert_eq!(wrapped.len(), 3, "truncated, not JSON, not UTF-8: {docs:#?}");
    assert!(
        wrapped.iter().any(|d| d["message"].as_str().unwrap().len() == 300),
        "truncated to max_line_bytes"
    );
    assert!(wrapped.iter().any(|d| d["message"] == "this is not json"));
    assert!(wrapped
        .iter()
        .any(|d| d["message"].as_str().unwrap().contains('\u{fffd}')));
    assert_eq!(seq_counts(&docs).keys().copied().collect::<Vec<_>>(), [0, 2, 4]);
    d.term();
}

#[test]
fn skipped_and_dead_lettered_lines_are_counted_not_shipped() {
    let es = Osmem::start();
    let s = Setup::new(
        &es.url(),
        "max_line_bytes = 300\nlong_lines = skip\ninvalid = dead_letter\n",
    );
    let path = s.logs().join("app.log");
    let text = format!(
        "{}{{\"seq\":1,\"pad\":\"{}\"}}\nnot json at all\n{}",
        line(0),
        "x".repeat(100_000),
        line(2)
    );
    std::fs::write(&path, text).unwrap();
    let d = s.spawn();
    wait_for("valid lines", T, || es.count("app-*") >= 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.sources("app-*"), [0, 2]);
    let letters = s.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["document"], "not json at all");
    assert_eq!(letters[0]["file"], path.to_str().unwrap());
    assert_eq!(
        letters[0]["offset"].as_u64().unwrap() as usize,
        line(0).len() + 16 + 100_000 + 3
    );
    d.term();
}

#[test]
fn read_from_end_skips_old_lines_on_the_first_start_only() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "read_from = end\n");
    let path = s.logs().join("app.log");
    append(&path, 0..100);
    // A partial last line at the first start is not skipped: it is completed later.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"seq\":100,")
        .unwrap();
    let d = s.spawn();
    wait_for("the checkpoint at the end", T, || {
        s.home().join("var/state/jsonlog2es.checkpoints.json").exists()
    });
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"\"timestamp\":\"2026-11-23T00:00:00Z\"}\n")
        .unwrap();
    append(&path, 101..150);
    wait_for("new lines", T, || es.count("app-*") >= 50);
    d.term();
    // Written while stopped, and a file created while stopped: read from their start.
    append(&path, 150..200);
    append(&s.logs().join("other.log"), 200..220);
    let d = s.spawn();
    wait_for("lines written while stopped", T, || es.count("app-*") >= 120);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.sources("app-*"), 100..220);
    d.term();
}

#[test]
fn a_partial_last_line_waits_for_its_newline() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    append(&path, 0..10);
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    let next = line(10);
    let (head, rest) = next.split_at(25);
    f.write_all(head.as_bytes()).unwrap();
    let d = s.spawn();
    wait_for("complete lines", T, || es.count("app-*") >= 10);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(es.count("app-*"), 10, "the partial line is not shipped");
    f.write_all(rest.as_bytes()).unwrap();
    wait_for("the completed line", T, || es.count("app-*") >= 11);
    std::thread::sleep(Duration::from_millis(200));
    let docs = es.sources("app-*");
    assert!(docs.iter().all(|d| d.get("parse_error").is_none()), "{docs:#?}");
    assert_exactly_once(&docs, 0..11);
    d.term();
}

#[test]
fn check_prints_the_files_and_their_checkpoints() {
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "");
    append(&s.logs().join("app.log"), 0..10);
    std::fs::write(s.logs().join("waiting.log"), b"{\"no newline yet\":1").unwrap();
    let d = s.spawn();
    wait_for("documents", T, || es.count("app-*") >= 10);
    d.term();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jsonlog2es"))
        .arg("--config")
        .arg(&s.config)
        .arg("--home")
        .arg(s.home())
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let size = std::fs::metadata(s.logs().join("app.log")).unwrap().len();
    assert!(
        text.contains(&format!("app.log checkpoint {size}/{size} bytes (epoch 0)")),
        "{text}"
    );
    assert!(text.contains("waiting.log waiting for its first line"), "{text}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_jsonlog2es"))
        .args(["--check", "--config", "/nonexistent.ini"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
