//! The real `es_sink` binary: one `listening on ADDR` line once bound, bulk over HTTP, and
//! SIGTERM → exit 0 within a deadline.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bulk, get};
use ironwork_test_support::wait_for;

#[test]
fn prints_its_address_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_es_sink"))
        .args(["--listen", "127.0.0.1:0", "--threads", "2", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn es_sink");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the first line");
    let addr: SocketAddr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert_ne!(addr.port(), 0);

    let v = bulk(addr, "/mflog-x/_bulk", "{\"create\":{\"_id\":\"1\"}}\n{\"a\":1}\n").json();
    assert_eq!(v["items"][0]["create"]["status"], 201);
    assert_eq!(get(addr, "/mflog-*/_count").json()["count"], 1);

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    let mut status = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        }),
        "es_sink still running 10 s after SIGTERM"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    assert_eq!(rest, "", "exactly one line on stdout");
}
