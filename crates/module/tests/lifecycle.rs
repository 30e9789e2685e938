//! `ironwork init`, `start`, `status` and `stop` on a temporary home with the real daemons:
//! a plugin step runs under ringmaster, raising its numprocesses makes conf_monitor reload
//! ringmaster into three workers, a broken plugin edit changes nothing and shows in `status`,
//! files dropped into `var/in/incoming` flow through the switch into the plugin step.

use std::time::{Duration, Instant};

mod common;
use common::{bin_dir, init, ironwork, text, wait, Running, DEMO_STEP as PLUGIN};

#[test]
fn init_start_reload_status_stop() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    init(&home, &bins);
    std::fs::create_dir_all(home.join("plugins/demo")).expect("plugin dir");
    std::fs::write(home.join("plugins/demo/config.ini"), PLUGIN).expect("plugin");

    let _running = Running(home.clone());
    let out = ironwork(&home, &["start", "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = text(&out);
    for w in [
        "redis",
        "directory_observer",
        "conf_monitor",
        "step.switch.main",
        "step.demo.main",
    ] {
        assert!(status.contains(w), "{w} missing from:\n{status}");
    }

    // Files flow: incoming → switch → demo/main.
    std::fs::write(home.join("var/in/incoming/hello.txt.t"), "hello\n").expect("write");
    std::fs::rename(
        home.join("var/in/incoming/hello.txt.t"),
        home.join("var/in/incoming/hello.txt"),
    )
    .expect("mv");
    wait("the file to reach the plugin step", Duration::from_secs(30), || {
        std::fs::read_to_string(home.join("out")).is_ok_and(|s| s == "hello\n")
    });

    // numprocesses 1 → 3: conf_monitor regenerates, ringmaster reloads, three workers run.
    std::fs::write(
        home.join("plugins/demo/config.ini"),
        PLUGIN.replace("numprocesses = 1", "numprocesses = 3"),
    )
    .expect("edit");
    wait("three demo workers", Duration::from_secs(30), || {
        text(&ironwork(&home, &["status"]))
            .lines()
            .any(|l| l.starts_with("step.demo.main") && l.contains("3/3"))
    });

    // A new plugin and switch rule arrive while files flow: the new rule routes the next files
    // to the new step, and none of the files in flight is lost.
    let incoming = home.join("var/in/incoming");
    let writer = {
        let incoming = incoming.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                let part = incoming.join(format!("f{i}.txt.t"));
                std::fs::write(&part, format!("{i}\n")).expect("write");
                std::fs::rename(&part, incoming.join(format!("f{i}.txt"))).expect("mv");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::fs::create_dir_all(home.join("plugins/extra")).expect("plugin dir");
    std::fs::write(
        home.join("plugins/extra/config.ini"),
        PLUGIN
            .replace("/out", "/extra_out")
            .replace("*.txt = demo/main", "*.log = extra/main"),
    )
    .expect("plugin");
    wait("the new step", Duration::from_secs(30), || {
        text(&ironwork(&home, &["status"]))
            .lines()
            .any(|l| l.starts_with("step.extra.main") && l.contains("active"))
    });
    // The switch applies new rules once the file has settled (about a second).
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(incoming.join("new.log"), "routed by the new rule\n").expect("write");
    wait("the new rule to route", Duration::from_secs(30), || {
        std::fs::read_to_string(home.join("extra_out")).is_ok_and(|s| s == "routed by the new rule\n")
    });
    writer.join().expect("writer");
    wait("every file in flight", Duration::from_secs(60), || {
        std::fs::read_to_string(home.join("out")).is_ok_and(|s| s.lines().count() == 301)
    });
    let mut seen: Vec<String> = std::fs::read_to_string(home.join("out"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 301, "a file was processed twice or lost");

    // A broken edit changes nothing and shows in `ironwork status`, which then fails.
    std::fs::write(
        home.join("plugins/demo/config.ini"),
        "[step_main]\nnumprocesses = lots\n",
    )
    .expect("edit");
    wait("the refusal in status", Duration::from_secs(30), || {
        let o = ironwork(&home, &["status"]);
        !o.status.success() && text(&o).contains("REFUSED")
    });
    let status = text(&ironwork(&home, &["status"]));
    assert!(status.contains("numprocesses"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("step.demo.main") && l.contains("3/3")),
        "{status}"
    );

    let out = ironwork(&home, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stopped"));
    let out = ironwork(&home, &["status"]);
    assert!(
        !out.status.success() && text(&out).contains("not running"),
        "{}",
        text(&out)
    );
}

#[test]
fn start_reports_a_supervisor_that_dies_at_once_without_waiting_out_the_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let fake = dir.path().join("bin");
    std::fs::create_dir_all(&fake).expect("bin dir");
    std::fs::write(
        fake.join("ringmaster"),
        "#!/bin/sh\necho 'cannot bind the control socket' >&2\nexit 3\n",
    )
    .expect("fake ringmaster");
    std::fs::set_permissions(fake.join("ringmaster"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    init(&home, &fake);
    let started = Instant::now();
    let out = ironwork(&home, &["start", "--timeout", "60"]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?}",
        started.elapsed()
    );
    let t = text(&out);
    assert!(
        t.contains("exited at once") && t.contains("cannot bind the control socket"),
        "{t}"
    );
}

/// `ironwork exec`: what the systemd units and containers run, one watcher in the foreground in
/// place of the `ironwork` process, with ringmaster's environment and working directory.
#[test]
fn exec_runs_one_watcher_in_place_and_lists_every_worker() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    init(&home, &bins);
    std::fs::create_dir_all(home.join("plugins/demo")).expect("plugin dir");
    let plugin = format!(
        "{}\n[extra_daemon_probe]\ncmd_and_args = sh -c 'echo \"$$ $RINGMASTER_WID $MFDATA_CURRENT_PLUGIN_NAME $(pwd)\"'\nnumprocesses = 2\n",
        PLUGIN.replace("numprocesses = 1", "numprocesses = 3")
    );
    std::fs::write(home.join("plugins/demo/config.ini"), plugin).expect("plugin");

    let out = ironwork(&home, &["exec", "--list"]);
    assert!(!out.status.success(), "listed without a generated configuration");
    assert!(text(&out).contains("ironwork generate"), "{}", text(&out));
    let out = ironwork(&home, &["generate"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = ironwork(&home, &["exec", "--list"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Vec<&str> = std::str::from_utf8(&out.stdout).expect("utf8").lines().collect();
    for worker in [
        "redis:1",
        "directory_observer:1",
        "conf_monitor:1",
        "gc:1",
        "step.switch.main:1",
    ] {
        assert!(listed.contains(&worker), "{worker} missing from {listed:?}");
    }
    let plugin_workers: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|w| w.starts_with("step.demo") || w.starts_with("extra_daemon."))
        .collect();
    assert_eq!(
        plugin_workers,
        [
            "step.demo.main:1",
            "step.demo.main:2",
            "step.demo.main:3",
            "extra_daemon.demo.probe:1",
            "extra_daemon.demo.probe:2"
        ]
    );

    // The shell prints its own pid: the pid of the `ironwork` process that exec'd it.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ironwork"))
        .arg("--home")
        .arg(&home)
        .args(["exec", "extra_daemon.demo.probe:2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    let plugin_dir = home.join("plugins/demo");
    assert_eq!(
        printed.trim(),
        format!("{pid} 2 demo {}", plugin_dir.display()),
        "not exec'd in place with ringmaster's environment"
    );

    for (spec, says) in [
        ("nope", "no watcher \"nope\""),
        ("extra_daemon.demo.probe:3", "no worker 3"),
        ("extra_daemon.demo.probe:0", "1 or more"),
    ] {
        let out = ironwork(&home, &["exec", spec]);
        assert!(!out.status.success(), "{spec} accepted");
        assert!(text(&out).contains(says), "{spec}: {}", text(&out));
    }
}
