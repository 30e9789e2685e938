//! Two real collector processes on one Redis: exactly one runs the manager; SIGKILL it and the
//! other takes the lease within its TTL (plus one acquisition period) and the schedule goes on,
//! each slot enqueued once. SIGTERM ends a collector with exit 0.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ironwork_test_support::http::request;
use ironwork_test_support::{free_tcp_port, wait_for, RedisServer};

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, log: &Path) -> Proc {
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(&addr)
        .arg("--log-format")
        .arg("json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let p = Proc { child, addr };
    assert!(
        wait_for(Duration::from_secs(10), || request(&p.addr, "GET", "/health", &[], b"")
            .is_ok()),
        "collector did not come up: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    p
}

fn status(p: &Proc) -> serde_json::Value {
    request(&p.addr, "GET", "/me/status", &[], b"")
        .map(|a| a.json())
        .unwrap_or_default()
}

fn is_leader(p: &Proc) -> bool {
    status(p)["leader"] == true
}

#[test]
fn one_manager_and_the_other_takes_over_after_a_sigkill() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugin");
    std::fs::create_dir_all(&plugin).unwrap();
    let script = plugin.join("tick.sh");
    std::fs::write(&script, "#!/bin/sh\necho '[{\"name\":\"tick\",\"value\":1}]'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ttl = Duration::from_secs(2);
    let config = dir.path().join("collector.ini");
    std::fs::write(
        &config,
        format!(
            "[collector]\nredis = {}\ntoken_file = {}\nleader_ttl = 2s\ntrigger_interval = 500ms\n\
             [collection:p.tick]\nplugin_dir = {}\nmethod = SCRIPT\ninterval = 1\ntargets = a b c\ncmd_and_args = tick.sh\n",
            redis.url(),
            dir.path().join("token").display(),
            plugin.display()
        ),
    )
    .unwrap();
    let a = spawn(&config, &dir.path().join("a.log"));
    let b = spawn(&config, &dir.path().join("b.log"));
    assert!(wait_for(Duration::from_secs(10), || is_leader(&a) || is_leader(&b)));
    // Both consume; one manages.
    std::thread::sleep(Duration::from_secs(3));
    let (sa, sb) = (status(&a), status(&b));
    assert_ne!(sa["leader"], sb["leader"], "exactly one leader: {sa} {sb}");
    let (leader, follower) = if sa["leader"] == true { (a, b) } else { (b, a) };
    assert_eq!(
        status(&follower)["counters"]["jobs_enqueued"],
        0,
        "the follower enqueues nothing"
    );
    let holder = redis.cli(&["GET", "collector.manager.lease"]);
    assert!(
        holder.contains(&format!(".{}.", leader.child.id())),
        "lease holder {holder}"
    );

    // Three targets every second: about three results a second, not six.
    let before = redis
        .cli(&["LLEN", "collector.data.queue"])
        .trim()
        .parse::<u64>()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let during = redis
        .cli(&["LLEN", "collector.data.queue"])
        .trim()
        .parse::<u64>()
        .unwrap()
        - before;
    assert!(
        (9..=15).contains(&during),
        "{during} results in 4 s for 3 targets at 1/s"
    );

    let mut leader = leader;
    let killed_at = Instant::now();
    leader.child.kill().unwrap();
    let _ = leader.child.wait();
    assert!(
        wait_for(ttl * 3, || is_leader(&follower)),
        "no takeover: {}",
        std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
    );
    let took = killed_at.elapsed();
    eprintln!("takeover after SIGKILL: {took:?} (lease TTL {ttl:?})");
    assert!(redis
        .cli(&["GET", "collector.manager.lease"])
        .contains(&format!(".{}.", follower.child.id())));
    assert!(
        // The lease outlives its holder by at most the TTL; a contender tries every tenth of it.
        took <= ttl + ttl / 10 + Duration::from_millis(500),
        "takeover took {took:?}"
    );

    // The schedule goes on from the survivor.
    let n = redis
        .cli(&["LLEN", "collector.data.queue"])
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || {
        redis
            .cli(&["LLEN", "collector.data.queue"])
            .trim()
            .parse::<u64>()
            .unwrap()
            >= n + 3
    }));

    // Every slot of every target was enqueued once, before and after the takeover, and the
    // new leader kept the old one's phase.
    let raw = redis.cli(&["LRANGE", "collector.data.queue", "0", "-1"]);
    let mut slots: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for line in raw.lines().filter(|l| !l.is_empty()) {
        let d: serde_json::Value = serde_json::from_str(line).unwrap();
        slots
            .entry(d["target"].as_str().unwrap().to_string())
            .or_default()
            .push(d["scheduled_at"].as_f64().unwrap());
    }
    assert_eq!(slots.len(), 3);
    for (target, mut at) in slots {
        at.sort_by(f64::total_cmp);
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap > 0.5, "{target}: slot {} enqueued twice", pair[0]);
            assert!(
                (gap - gap.round()).abs() < 0.002,
                "{target}: phase moved ({gap} s between slots)"
            );
        }
    }

    // SIGTERM: exit 0, lease released.
    let mut follower = follower;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(s) = follower.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "collector did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
    assert_eq!(redis.cli(&["EXISTS", "collector.manager.lease"]).trim(), "0");
}

#[test]
fn check_lists_collections_and_a_bad_file_exits_2_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.ini");
    std::fs::write(
        &good,
        "[collector]\nredis = unix:///nowhere\n[collection:p.t]\nplugin_dir = /tmp\nmethod = TCP\nport = 22\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("p.t TCP"));
    let bad = dir.path().join("bad.ini");
    std::fs::write(&bad, "[collector]\nconcurrency = -1\n[collection:p.t]\nmethod = FTP\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["redis", "concurrency", "FTP", "plugin_dir", "bad.ini"] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}
