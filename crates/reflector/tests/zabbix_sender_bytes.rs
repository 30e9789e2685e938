//! Our Zabbix sender writes the very bytes the real `zabbix_sender` (Debian's `zabbix-agent`
//! package) writes for the same items, and both are accepted by an in-test trapper that answers
//! like Zabbix 6.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use reflector::zabbix::{parse_answer, request, unframe, Item};

/// Accept `n` connections; record each request; answer like a Zabbix 6 trapper.
fn trapper(n: usize) -> (u16, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut head = [0u8; 13];
            s.read_exact(&mut head).unwrap();
            let len = u64::from_le_bytes(head[5..13].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).unwrap();
            let mut whole = head.to_vec();
            whole.extend_from_slice(&body);
            let req: serde_json::Value = serde_json::from_slice(&unframe(&whole).unwrap()).unwrap();
            let n = req["data"].as_array().map_or(0, Vec::len);
            let answer = format!(
                r#"{{"response":"success","info":"processed: {n}; failed: 0; total: {n}; seconds spent: 0.000042"}}"#
            );
            s.write_all(&reflector::zabbix::frame(answer.as_bytes())).unwrap();
            got.push(whole);
        }
        got
    });
    (port, h)
}

fn zabbix_sender() -> &'static str {
    let path = "/usr/bin/zabbix_sender";
    assert!(
        std::path::Path::new(path).exists(),
        "zabbix_sender is missing: apt-get install -y zabbix-agent (it ships zabbix_sender)"
    );
    path
}

#[test]
fn one_value_without_a_timestamp_is_byte_identical() {
    let (port, h) = trapper(1);
    let out = Command::new(zabbix_sender())
        .args([
            "-z",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-s",
            "web 1",
            "-k",
            "app.load[1m]",
            "-o",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("processed: 1; failed: 0"),
        "it accepted our answer"
    );
    let theirs = h.join().unwrap().remove(0);
    let ours = request(
        &[Item {
            host: "web 1".into(),
            key: "app.load[1m]".into(),
            value: "0.5".into(),
            clock: None,
            ns: None,
        }],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    assert_eq!(ours, theirs);
}

#[test]
fn timestamped_values_match_except_the_request_clock() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(
        &input,
        "\"web 1\" app.load 1700000000 0.75\nweb2 \"disk free\" 1700000001 \"12 GB\"\n",
    )
    .unwrap();
    let (port, h) = trapper(1);
    let out = Command::new(zabbix_sender())
        .args(["-z", "127.0.0.1", "-p", &port.to_string(), "-T", "-i"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let theirs = h.join().unwrap().remove(0);
    // The request's own clock/ns is the sending time: take it from theirs.
    let json: serde_json::Value = serde_json::from_slice(&unframe(&theirs).unwrap()).unwrap();
    let sent_at = (json["clock"].as_i64().unwrap(), json["ns"].as_u64().unwrap() as u32);
    let item = |host: &str, key: &str, value: &str, clock| Item {
        host: host.into(),
        key: key.into(),
        value: value.into(),
        clock: Some(clock),
        ns: None,
    };
    let ours = request(
        &[
            item("web 1", "app.load", "0.75", 1_700_000_000),
            item("web2", "disk free", "12 GB", 1_700_000_001),
        ],
        Some(sent_at),
    );
    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    // And the trapper's answer to ours reads back.
    let payload = br#"{"response":"success","info":"processed: 2; failed: 0; total: 2; seconds spent: 0.000042"}"#;
    assert_eq!(parse_answer(payload).unwrap().processed, 2);
}
