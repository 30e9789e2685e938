//! SCRIPT collections against scripts that misbehave: hang, fork grandchildren that keep the
//! pipe, print garbage, print nothing, exit non-zero, print too much. Each must end in time,
//! leave no process behind, and say what went wrong.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collection::{Collection, Run, RunLimits};
use collector::{collection, config, method::Outcome};
use ironwork_core::config::{Report, UnknownKeys};
use ironwork_core::ini::Ini;

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn collection(dir: &Path, cmd: &str, timeout: &str) -> Collection {
    let text =
        format!("[c]\nmethod = SCRIPT\ncmd_and_args = {cmd}\ntimeout = {timeout}\ncorrelation_info.site = paris\n");
    let ini = Ini::parse(Path::new("plugin.ini"), &text).unwrap();
    let mut report = Report::default();
    let mut r = report.section(Path::new("plugin.ini"), &ini.sections[0]);
    let c = config::read_collection(&mut r, "demo", "main", dir).unwrap();
    r.finish(UnknownKeys::Error);
    report.finish(()).unwrap();
    c
}

fn limits() -> Arc<RunLimits> {
    Arc::new(RunLimits {
        kill_grace: Duration::from_millis(500),
        drain: Duration::from_millis(300),
        stdout_max: 4096,
        stderr_max: 1024,
    })
}

async fn collect(dir: &Path, cmd: &str, timeout: &str) -> (Outcome, Duration) {
    let c = collection(dir, cmd, timeout);
    let info: BTreeMap<String, String> = c.correlation_info.clone();
    let run = Run::new(&c, "host-1", &info, limits());
    let started = Instant::now();
    let out = c.probe.collect(&run).await;
    (out, started.elapsed())
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// Our own children that are zombies.
fn own_zombies() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            z.push(stat);
        }
    }
    z
}

#[tokio::test]
async fn good_output_is_renamed_and_keeps_its_tags() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "plugin.sh",
        r#"echo "[{\"name\":\"ping.rtt\",\"timestamp\":1700000000,\"tags\":{\"to\":\"$1\",\"cwd\":\"$(basename $(pwd))\"},\"value\":1.5}]""#,
    );
    let (out, _) = collect(dir.path(), "plugin.sh {target}", "5").await;
    assert_eq!(out.failure, None);
    assert_eq!(out.points.len(), 1);
    let p = &out.points[0];
    assert_eq!(p.name, "demo.ping.rtt");
    assert_eq!(p.tags["to"], "host-1", "{{target}} is rendered into the arguments");
    assert_eq!(
        p.tags["cwd"],
        dir.path().file_name().unwrap().to_str().unwrap(),
        "runs in the plugin dir"
    );
    assert_eq!(p.timestamp, 1_700_000_000.0);
}

#[tokio::test]
async fn empty_output_is_no_data_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "quiet.sh", "exit 0");
    let (out, _) = collect(dir.path(), "quiet.sh", "5").await;
    assert_eq!(out, Outcome::default());
}

#[tokio::test]
async fn garbage_output_fails_quoting_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "garbage.sh",
        "echo 'Traceback (most recent call last): boom'",
    );
    let (out, _) = collect(dir.path(), "garbage.sh", "5").await;
    let f = out.failure.expect("garbage is a failure");
    assert_eq!(f.kind, "output");
    assert!(f.message.contains("Traceback (most recent"), "{}", f.message);
}

#[tokio::test]
async fn non_zero_exit_fails_with_stderr_and_keeps_valid_points() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "half.sh",
        r#"echo '[{"name":"a","value":1}]'; echo 'disk gone' >&2; exit 3"#,
    );
    let (out, _) = collect(dir.path(), "half.sh", "5").await;
    let f = out.failure.expect("exit 3 is a failure");
    assert_eq!(f.kind, "exit");
    assert!(
        f.message.contains('3') && f.message.contains("disk gone"),
        "{}",
        f.message
    );
    assert_eq!(out.points.len(), 1, "valid output is kept");
}

#[tokio::test]
async fn oversized_output_fails_and_the_writer_is_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "flood.sh", "head -c 1000000 /dev/zero | tr '\\0' x; echo");
    let (out, took) = collect(dir.path(), "flood.sh", "5").await;
    let f = out.failure.expect("too much output is a failure");
    assert_eq!(f.kind, "output");
    assert!(f.message.contains("longer than 4096"), "{}", f.message);
    assert!(took < Duration::from_secs(4), "the pipe kept draining: {took:?}");
}

#[tokio::test]
async fn a_hanging_script_and_its_children_are_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // Ignores SIGTERM, so the group must be SIGKILLed after the grace.
    script(
        dir.path(),
        "hang.sh",
        &format!(
            "trap '' TERM\nsleep 300 &\necho $! > {}\necho $$ >> {}\nwait",
            pids.display(),
            pids.display()
        ),
    );
    let (out, took) = collect(dir.path(), "hang.sh", "1").await;
    let f = out.failure.expect("a hang is a failure");
    assert_eq!(f.kind, "timeout");
    assert!(f.message.contains("killed"), "{}", f.message);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let pid: u32 = pid.trim().parse().unwrap();
        assert!(
            ironwork_test_support::wait_for(Duration::from_secs(2), || !alive(pid)),
            "process {pid} of the script's group still runs"
        );
    }
    assert!(own_zombies().is_empty(), "zombies: {:?}", own_zombies());
}

#[tokio::test]
async fn a_grandchild_holding_the_pipe_does_not_hang_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    // The script prints its data and exits; the background sleep inherits stdout and would
    // keep the pipe open for five minutes.
    script(
        dir.path(),
        "fork.sh",
        &format!(
            "sleep 300 &\necho $! > {}\necho '[{{\"name\":\"x\",\"value\":2}}]'",
            pidfile.display()
        ),
    );
    let (out, took) = collect(dir.path(), "fork.sh", "10").await;
    assert_eq!(out.failure, None);
    assert_eq!(out.points.len(), 1, "the output printed before exit is kept");
    assert!(took < Duration::from_secs(3), "waited for the grandchild: {took:?}");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(
        ironwork_test_support::wait_for(Duration::from_secs(2), || !alive(pid)),
        "the grandchild holding the pipe was not killed"
    );
    assert!(own_zombies().is_empty(), "zombies: {:?}", own_zombies());
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = collect(dir.path(), "./nope.sh", "5").await;
    assert_eq!(out.failure.map(|f| f.kind), Some("spawn"));
}

#[tokio::test]
async fn after_a_timeout_the_whole_group_is_killed_even_when_the_script_itself_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("stubborn");
    // The script dies on SIGTERM; its background child ignores SIGTERM and holds no pipe.
    script(
        dir.path(),
        "obey.sh",
        &format!(
            "(trap '' TERM; exec sleep 120) >/dev/null 2>&1 &\necho $! > {}\nsleep 100",
            pidfile.display()
        ),
    );
    let (out, _) = collect(dir.path(), "obey.sh", "1").await;
    assert_eq!(out.failure.map(|f| f.kind), Some("timeout"));
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(
        ironwork_test_support::wait_for(Duration::from_secs(2), || !alive(pid)),
        "a group member that ignored SIGTERM outlived the grace"
    );
}
