//! Property test: random sequences of writes, rotations, truncations, deletions and daemon
//! restarts/kills, each followed by a pause long enough for the daemon to catch up; what the
//! `_bulk` double indexed must be exactly the model's lines, each once.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use es_sink::{EsSink, Options};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append n new lines.
    Write(u64),
    /// Rename the file away (outside the glob) and keep writing n lines to it, then start a new one.
    Rotate(u64),
    /// Rename the file away, let the daemon catch up, then write n late lines through the
    /// writer's old descriptor (as a writer does until it reopens its log), then a new file.
    RotateLate(u64),
    /// Truncate and start again with one of two header lines (identities come back: A, B, A…).
    Rewrite(u8),
    /// Copy it away, then truncate it in place.
    CopyTruncate,
    /// Truncate it in place.
    Truncate,
    /// Delete it.
    Delete,
    /// SIGTERM and start again.
    Restart,
    /// SIGKILL and start again.
    Kill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..80).prop_map(Op::Write),
        1 => (0u64..20).prop_map(Op::Rotate),
        1 => (1u64..20).prop_map(Op::RotateLate),
        1 => (0u8..2).prop_map(Op::Rewrite),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        1 => Just(Op::Restart),
        1 => Just(Op::Kill),
    ]
}

fn write_lines(file: &mut std::fs::File, seqs: std::ops::Range<u64>) {
    let text: String = seqs.map(line).collect();
    file.write_all(text.as_bytes()).unwrap();
}

fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn run(ops: Vec<Op>) {
    let es = EsSink::start(Options::keeping_documents()).unwrap();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    let away = s.home().join("rotated");
    std::fs::create_dir_all(&away).unwrap();
    let mut next = 0u64;
    let mut rotations = 0;
    let mut daemon = Some(s.spawn());
    for op in ops {
        match op {
            Op::Write(n) => {
                write_lines(&mut open_append(&path), next..next + n);
                next += n;
            }
            Op::Rotate(late) => {
                if path.exists() {
                    let mut old = open_append(&path);
                    rotations += 1;
                    std::fs::rename(&path, away.join(format!("app.log.{rotations}"))).unwrap();
                    write_lines(&mut old, next..next + late);
                    next += late;
                }
                write_lines(&mut open_append(&path), next..next + 1);
                next += 1;
            }
            Op::RotateLate(late) => {
                if path.exists() {
                    let mut old = open_append(&path);
                    rotations += 1;
                    std::fs::rename(&path, away.join(format!("app.log.{rotations}"))).unwrap();
                    // Longer than a scan: the daemon has seen the rename and read to the end.
                    std::thread::sleep(Duration::from_millis(400));
                    write_lines(&mut old, next..next + late);
                    next += late;
                }
                write_lines(&mut open_append(&path), next..next + 1);
                next += 1;
            }
            Op::Rewrite(header) => {
                let mut f = std::fs::File::create(&path).unwrap();
                writeln!(f, "{{\"header\":{header}}}").unwrap();
                write_lines(&mut f, next..next + 1);
                next += 1;
            }
            Op::CopyTruncate => {
                if path.exists() {
                    rotations += 1;
                    std::fs::copy(&path, away.join(format!("app.log.{rotations}"))).unwrap();
                    open_append(&path).set_len(0).unwrap();
                }
            }
            Op::Truncate => {
                if path.exists() {
                    open_append(&path).set_len(0).unwrap();
                }
            }
            Op::Delete => {
                let _ = std::fs::remove_file(&path);
            }
            Op::Restart => {
                daemon.take().unwrap().term();
                daemon = Some(s.spawn());
            }
            Op::Kill => {
                daemon.take().unwrap().kill();
                daemon = Some(s.spawn());
            }
        }
        // Let the daemon catch up before the next operation (header lines carry no seq).
        wait_for("the daemon to catch up", Duration::from_secs(15), || {
            seq_counts(&es.documents("app-*")).len() as u64 >= next
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.documents("app-*"), 0..next);
    daemon.take().unwrap().term();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn indexed_lines_match_the_model(ops in proptest::collection::vec(op(), 1..10)) {
        run(ops);
    }
}
