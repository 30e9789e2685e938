//! The observer in-process against a real Redis: what lands in the queues for each way a file
//! can arrive, and that nothing is lost when Redis, the kernel queue or a directory goes away.

mod common;

use std::time::Duration;

use common::{names, shell, write_aged, Daemon, Env, DEADLINE};
use ironwork_test_support::wait_for;

const Q: &str = "step.test.main";

fn section(dir: &str, extra: &str) -> String {
    format!("[step_test_main]\nactive=true\ndirectory={dir}\nqueue={Q}\n{extra}\n")
}

/// Start on `step.test.main` and wait for the startup scan, so files written afterwards are
/// seen by inotify only.
fn start(env: &Env, common_extra: &str, extra: &str) -> Daemon {
    let d = Daemon::start(env.config(common_extra, &section("step.test.main", extra)));
    d.wait_metric("directory_observer_rescans_total", 1);
    d
}

/// Write a sentinel and wait for it: every event before it has been handled.
fn settle(env: &Env, dir: &std::path::Path, name: &str) {
    std::fs::write(dir.join(name), b"s").expect("write sentinel");
    env.wait_names(Q, &[name.to_string()]);
}

#[test]
fn write_in_place_posts_exactly_one_created_in_metwork_format() {
    let env = Env::new();
    let d = start(&env, "", "");
    let dir = env.dir("step.test.main");
    shell(&dir, "printf 'a,b\\n1,2\\n' > data.csv && printf s > zz-sentinel");
    env.wait_names(Q, &["zz-sentinel".to_string()]);
    let msgs = env.queue(Q);
    let ours: Vec<_> = msgs.iter().filter(|m| m["filename"] == "data.csv").collect();
    assert_eq!(ours.len(), 1, "{msgs:?}");
    let m = ours[0].as_object().expect("object");
    let keys: Vec<_> = m.keys().map(String::as_str).collect();
    assert_eq!(keys, ["directory", "filename", "event", "event_timestamp"]);
    assert_eq!(m["directory"], dir.to_str().expect("utf8"));
    assert_eq!(m["event"], "created");
    assert!(m["event_timestamp"].is_f64(), "{m:?}");
    let raw = env.redis.cli(&["LINDEX", Q, "-1"]);
    assert!(
        raw.starts_with(&format!(
            r#"{{"directory": "{}", "filename": "data.csv", "event": "created", "event_timestamp": "#,
            dir.display()
        )),
        "Python json.dumps bytes expected: {raw}"
    );
    assert_eq!(d.metric("directory_observer_events_total"), 2);
    d.stop().expect("clean stop");
}

#[test]
fn temp_name_then_rename_posts_only_the_final_name() {
    let env = Env::new();
    let _d = start(&env, "", "");
    let dir = env.dir("step.test.main");
    // Metwork's writer convention, as its integration tests do it: `cp x.t && mv x.t x`.
    shell(
        &dir,
        "for i in $(seq 0 19); do printf payload > f$i.t && mv f$i.t f$i; done; \
         printf x > ignored.tmp; printf x > busy.working; printf s > zz-sentinel",
    );
    env.wait_names(Q, &["zz-sentinel".to_string()]);
    let mut got = env.names(Q);
    got.retain(|n| n != "zz-sentinel");
    assert_eq!(
        got,
        names("f", 20),
        "one created per final name, nothing for .t/.tmp/.working"
    );
    assert!(env.queue(Q).iter().all(|m| m["event"] == "created"));
}

#[test]
fn startup_scan_posts_existing_files_oldest_mtime_first() {
    let env = Env::new();
    let dir = env.dir("step.test.main");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_aged(&dir.join("b-newest"), Duration::from_secs(10));
    write_aged(&dir.join("c-oldest"), Duration::from_secs(3000));
    write_aged(&dir.join("a-middle"), Duration::from_secs(200));
    write_aged(&dir.join("x.t"), Duration::from_secs(5000));
    std::fs::create_dir(dir.join("subdir")).expect("mkdir");
    let _d = start(&env, "", "");
    env.wait_names(Q, &["b-newest".to_string()]);
    assert_eq!(env.names(Q), ["c-oldest", "a-middle", "b-newest"]);
    assert!(env.queue(Q).iter().all(|m| m["event"] == "exists"));
}

#[test]
fn files_created_while_starting_are_not_lost() {
    let env = Env::new();
    let dir = env.dir("step.test.main");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let writer_dir = dir.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) || n < 200 {
            std::fs::write(writer_dir.join(format!("w{n}")), b"x").expect("write");
            n += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        n
    });
    let d = Daemon::start(env.config("", &section("step.test.main", "")));
    d.wait_metric("directory_observer_rescans_total", 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("writer");
    env.wait_names(Q, &names("w", written));
}

#[test]
fn recursive_watches_subdirectories_including_ones_filled_at_once() {
    let env = Env::new();
    let _d = start(&env, "", "recursive=true");
    let dir = env.dir("step.test.main");
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    // Files written right after mkdir may beat the new watch: the subdirectory scan finds them.
    std::fs::write(dir.join("sub/early"), b"x").expect("write");
    std::fs::create_dir_all(dir.join("a/b/c")).expect("mkdir -p");
    std::fs::write(dir.join("a/b/c/deep"), b"x").expect("write");
    env.wait_names(Q, &["early".to_string(), "deep".to_string()]);
    std::fs::write(dir.join("sub/later"), b"x").expect("write");
    env.wait_names(Q, &["later".to_string()]);
    let by_name = |n: &str| {
        env.queue(Q)
            .into_iter()
            .find(|m| m["filename"] == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(by_name("deep")["directory"], format!("{}/a/b/c", dir.display()));
    assert_eq!(by_name("later")["directory"], format!("{}/sub", dir.display()));
    assert_eq!(by_name("later")["event"], "created");
}

#[test]
fn deleted_and_recreated_directory_is_watched_again() {
    let env = Env::new();
    let d = start(&env, "", "");
    let dir = env.dir("step.test.main");
    std::fs::remove_dir_all(&dir).expect("rm -r");
    d.wait_metric("directory_observer_missing_directories", 1);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("first"), b"x").expect("write");
    env.wait_names(Q, &["first".to_string()]);
    assert!(wait_for(DEADLINE, || d
        .metric("directory_observer_missing_directories")
        == 0));
    std::fs::write(dir.join("second"), b"x").expect("write");
    env.wait_names(Q, &["second".to_string()]);
}

#[test]
fn redis_outage_loses_nothing() {
    let mut env = Env::new();
    let d = start(&env, "", "");
    let dir = env.dir("step.test.main");
    settle(&env, &dir, "before");
    env.redis.kill();
    let files = names("during", 25);
    for f in &files {
        std::fs::write(dir.join(f), b"x").expect("write");
    }
    d.wait_metric("directory_observer_buffered_events", 25);
    env.redis.start_again();
    env.wait_names(Q, &files);
    assert_eq!(d.metric("directory_observer_dropped_total"), 0);
    assert!(wait_for(DEADLINE, || d.metric("directory_observer_buffered_events") == 0));
}

#[test]
fn a_push_refused_by_redis_is_kept_and_retried() {
    let env = Env::new();
    let d = start(&env, "", "");
    let dir = env.dir("step.test.main");
    // Someone made the queue key a string: every LPUSH fails with WRONGTYPE.
    env.redis.cli(&["SET", Q, "not a list"]);
    let files = names("held", 5);
    for f in &files {
        std::fs::write(dir.join(f), b"x").expect("write");
    }
    d.wait_metric("directory_observer_buffered_events", 5);
    assert_eq!(d.metric("directory_observer_pushed_total"), 0);
    env.redis.cli(&["DEL", Q]);
    env.wait_names(Q, &files);
    assert_eq!(d.metric("directory_observer_dropped_total"), 0);
}

#[test]
fn overflowing_a_tiny_buffer_is_counted_and_a_rescan_recovers_every_file() {
    let mut env = Env::new();
    let d = start(&env, "buffer_size=3", "");
    let dir = env.dir("step.test.main");
    env.redis.kill();
    let files = names("f", 40);
    for f in &files {
        std::fs::write(dir.join(f), b"x").expect("write");
    }
    d.wait_metric("directory_observer_dropped_total", 1);
    let rescans_before = d.metric("directory_observer_rescans_total");
    env.redis.start_again();
    env.wait_names(Q, &files);
    assert!(d.metric("directory_observer_rescans_total") > rescans_before);
    assert!(d.metric("directory_observer_scan_posted_total") >= 37 - 3);
}

#[test]
fn poll_queue_limit_bounds_the_queue_for_scans_and_events() {
    let env = Env::new();
    let dir = env.dir("step.test.main");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let before = names("old", 20);
    for (i, f) in before.iter().enumerate() {
        write_aged(&dir.join(f), Duration::from_secs(1000 - i as u64));
    }
    let _d = Daemon::start(env.config("", &section("step.test.main", "poll_queue_limit=5")));
    assert!(
        wait_for(DEADLINE, || env.llen(Q) == 5),
        "startup scan fills up to the limit"
    );
    let after = names("new", 20);
    for f in &after {
        std::fs::write(dir.join(f), b"x").expect("write");
    }
    // A slow consumer: pop one at a time, checking the bound at every step.
    let mut seen = Vec::new();
    let mut max_len = 0;
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    let done = wait_for(DEADLINE, || {
        max_len = max_len.max(env.llen(Q));
        let popped = env.redis.cli(&["RPOP", Q]);
        if let Ok(m) = serde_json::from_str::<serde_json::Value>(popped.trim()) {
            seen.push(m["filename"].as_str().unwrap_or_default().to_string());
        }
        all.iter().all(|n| seen.contains(n))
    });
    let missing: Vec<_> = all.iter().filter(|n| !seen.contains(n)).collect();
    assert!(done, "never received {missing:?}");
    assert!(max_len <= 5, "queue grew to {max_len}");
    // Scans resumed where they stopped: the old files came out oldest first, once each.
    let olds: Vec<_> = seen.iter().filter(|n| n.starts_with("old")).cloned().collect();
    assert_eq!(olds, before);
}

#[test]
fn forced_poll_posts_a_file_whose_event_was_missed() {
    let env = Env::new();
    let d = start(&env, "", "forced_poll=1");
    let dir = env.dir("step.test.main");
    let outside = env.home().join("outside");
    std::fs::write(&outside, b"x").expect("write");
    // link() fires only IN_CREATE, which is not watched: only a scan can see this file.
    std::fs::hard_link(&outside, dir.join("linked")).expect("link");
    env.wait_names(Q, &["linked".to_string()]);
    let m = env
        .queue(Q)
        .into_iter()
        .find(|m| m["filename"] == "linked")
        .expect("posted");
    assert_eq!(m["event"], "exists");
    assert!(d.metric("directory_observer_rescans_total") >= 2);
}

#[test]
fn reload_adds_and_removes_directories_and_refuses_a_bad_file() {
    let env = Env::new();
    let d = start(&env, "", "");
    let (a, b) = (env.dir("step.test.main"), env.dir("step.test.other"));
    let other = format!("[step_test_other]\nactive=true\ndirectory=step.test.other\nqueue={Q}\n");
    env.write_config("", &other);
    d.reload.send_modify(|g| *g += 1);
    // The new directory is created, watched, and its existing content scanned.
    assert!(wait_for(DEADLINE, || b.is_dir()), "new directory created");
    std::fs::write(b.join("in-b"), b"x").expect("write");
    env.wait_names(Q, &["in-b".to_string()]);
    // `a` is no longer watched.
    std::fs::write(a.join("in-a"), b"x").expect("write");
    settle(&env, &b, "sentinel-b");
    assert!(!env.names(Q).contains(&"in-a".to_string()));
    // A broken file is refused and the running configuration stays.
    std::fs::write(env.config_path(), "[common]\nbogus=1\n").expect("write");
    d.reload.send_modify(|g| *g += 1);
    std::fs::write(b.join("still"), b"x").expect("write");
    env.wait_names(Q, &["still".to_string()]);
    d.stop().expect("clean stop");
}

#[test]
fn health_and_metrics_are_served() {
    let env = Env::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let d = Daemon::start_with(env.config("", &section("step.test.main", "")), |o| {
        o.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    });
    d.wait_metric("directory_observer_redis_up", 1);
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    let h = get("/health");
    assert!(h.starts_with("HTTP/1.1 200") && h.contains(r#""redis":"up""#), "{h}");
    let m = get("/metrics");
    for series in [
        "directory_observer_events_total",
        "directory_observer_pushed_total",
        "directory_observer_dropped_total",
        "directory_observer_rescans_total",
        "directory_observer_scan_posted_total",
        "directory_observer_buffered_events",
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }
}
