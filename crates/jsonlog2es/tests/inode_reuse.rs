//! Inode reuse: a deleted file's inode number handed to a new file at the same path must not
//! resume at the old file's checkpoint. Alone in its test binary, so no other test of this
//! process takes the freed inode first (its two tests take turns).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// A file of lines 0..100, shipped; then deleted and a new one of lines 1000..1300 created on
/// the same inode, both starting with `header` when given.
fn reuse(header: Option<&str>) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let es = Osmem::start();
    let s = Setup::new(&es.url(), "");
    let path = s.logs().join("app.log");
    let write = |range: std::ops::Range<u64>| {
        if let Some(h) = header {
            std::fs::write(&path, h).unwrap();
        }
        append(&path, range);
    };
    write(0..100);
    let d = s.spawn();
    let headers = u64::from(header.is_some());
    wait_for("first file", T, || es.count("app-*") == 100 + headers);
    d.term();
    let ino = std::fs::metadata(&path).unwrap().ino();
    // Made first, so the directory does not take the inode about to be freed.
    let aside = s.home().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::remove_file(&path).unwrap();
    // ext4 hands a freed inode out again once the journal committed its release, lowest free
    // number first: create empty files (cheap) until one gets the old number, then fill it.
    nix::unistd::sync();
    for attempt in 0.. {
        std::fs::File::create(&path).unwrap();
        if std::fs::metadata(&path).unwrap().ino() == ino {
            break;
        }
        assert!(attempt < 50_000, "this filesystem did not reuse the inode");
        std::fs::rename(&path, aside.join(attempt.to_string())).unwrap();
        if attempt % 500 == 499 {
            nix::unistd::sync();
        }
    }
    write(1000..1300);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    let d = s.spawn();
    wait_for("second file", T, || es.count("app-*") >= 400 + 2 * headers);
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&es.sources("app-*"), (0..100).chain(1000..1300));
    d.term();
}

#[test]
fn a_new_file_on_a_reused_inode_is_read_from_its_start() {
    reuse(None);
}

#[test]
fn a_new_file_on_a_reused_inode_with_the_same_first_line_is_read_from_its_start() {
    // Same inode, same header: only the birth time tells the files apart.
    reuse(Some("{\"timestamp\":\"2026-11-23T00:00:00Z\",\"header\":\"app v1\"}\n"));
}
