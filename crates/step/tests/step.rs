//! The `step` binary against a real Redis: claiming, commands, failure policies, retries,
//! timeouts, the switch, shutdown, and recovery from every crash point.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ironwork_test_support::{wait_for, RedisServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(20);

struct Harness {
    redis: RedisServer,
    _home: tempfile::TempDir,
    data: PathBuf,
    work: PathBuf,
    children: Vec<Child>,
}

impl Harness {
    fn new() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let data = home.path().join("var/in");
        let work = home.path().join("work");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&work).expect("work dir");
        Self {
            redis: RedisServer::start(),
            _home: home,
            data,
            work,
            children: Vec::new(),
        }
    }

    fn step_dir(&self, plugin: &str, step: &str) -> PathBuf {
        let d = self.data.join(format!("step.{plugin}.{step}"));
        std::fs::create_dir_all(&d).expect("step dir");
        d
    }

    /// Drop `name` into a step directory and queue the Metwork message for it.
    fn drop_file(&self, plugin: &str, step: &str, name: &str, body: &str) -> String {
        let dir = self.step_dir(plugin, step);
        std::fs::write(dir.join(name), body).expect("write");
        let msg = format!(
            r#"{{"directory": "{}", "filename": "{name}", "event": "created", "event_timestamp": 1700000000.25}}"#,
            dir.display()
        );
        self.redis.cli(&["LPUSH", &format!("step.{plugin}.{step}"), &msg]);
        msg
    }

    fn spawn(&mut self, args: &[&str]) -> u32 {
        let (head, tail) = match args.iter().position(|a| *a == "--") {
            Some(i) => args.split_at(i),
            None => (args, &[][..]),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_step"))
            .args(head)
            .arg("--redis")
            .arg(self.redis.url())
            .arg("--data-dir")
            .arg(&self.data)
            .args(tail)
            .env("IRONWORK_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn step");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn llen(&self, key: &str) -> u64 {
        self.redis.cli(&["LLEN", key]).trim().parse().unwrap_or(u64::MAX)
    }

    fn files(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn stop(&mut self, pid: u32) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let child = self.children.iter_mut().find(|c| c.id() == pid).expect("known child");
        for _ in 0..400 {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("step {pid} did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["--".into(), "sh".into(), "-c".into(), script.into(), "sh".into()]
}

fn run_args<'a>(plugin: &'a str, extra: &[&'a str], cmd: &'a [String]) -> Vec<&'a str> {
    let mut v = vec!["run", "--plugin", plugin];
    v.extend_from_slice(extra);
    v.extend(cmd.iter().map(String::as_str));
    v
}

#[test]
fn a_metwork_message_is_consumed_the_command_runs_and_the_file_leaves_tmp() {
    let mut h = Harness::new();
    let out = h.work.join("out");
    h.drop_file("p", "s", "data.txt", "hello\n");
    let cmd = sh(&format!(
        r#"cat "$1" >> {out}; echo "$IRONWORK_ORIGINAL_BASENAME $MFDATA_CURRENT_PLUGIN_NAME" >> {out}"#,
        out = out.display()
    ));
    h.spawn(&run_args("p", &["--step", "s"], &cmd));
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&out)
        .is_ok_and(|s| s.lines().count() == 2)));
    assert!(wait_for(DEADLINE, || h.files(&h.data.join("tmp/p.s")).is_empty()));
    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default(), "hello\ndata.txt p\n");
    assert!(h.files(&h.data.join("step.p.s")).is_empty());
    assert!(wait_for(DEADLINE, || h.redis.cli(&["GET", "counter.p.s"]).trim() == "1"));
    assert!(!h.redis.cli(&["GET", "latest.p.s"]).trim().is_empty());
    // The tags went with the file: nothing left behind in Redis.
    assert!(wait_for(DEADLINE, || h
        .redis
        .cli(&["KEYS", "xattr_*"])
        .trim()
        .is_empty()));
}

#[test]
fn a_failing_command_keeps_the_file_in_trash_with_its_tags_and_reason() {
    let mut h = Harness::new();
    h.drop_file("p", "main", "bad.csv", "x");
    let cmd = sh("echo 'cannot parse line 3' >&2; exit 3");
    h.spawn(&run_args("p", &[], &cmd));
    let trash = h.data.join("trash/p.main");
    assert!(wait_for(DEADLINE, || h.files(&trash) == ["bad.csv", "bad.csv.tags"]));
    let tags = std::fs::read_to_string(trash.join("bad.csv.tags")).unwrap_or_default();
    assert!(tags.contains("first.core.original_basename = bad.csv"), "{tags}");
    assert!(
        tags.contains("latest.p.main.failure_reason = sh exited with exit status: 3: cannot parse line 3"),
        "{tags}"
    );
    assert!(tags.contains("0.p.main.enter_step = "), "{tags}");
    assert_eq!(std::fs::read_to_string(trash.join("bad.csv")).unwrap_or_default(), "x");
}

#[test]
fn delete_and_move_policies() {
    let mut h = Harness::new();
    h.drop_file("p", "del", "a", "x");
    h.drop_file("p", "mv", "b", "y");
    let fail = sh("exit 1");
    h.spawn(&run_args("p", &["--step", "del", "--failure-policy", "delete"], &fail));
    h.spawn(&run_args(
        "p",
        &[
            "--step",
            "mv",
            "--failure-policy",
            "move",
            "--failure-policy-move-dest-dir",
            "errors/main",
        ],
        &fail,
    ));
    let dest = h.data.join("step.errors.main");
    assert!(wait_for(DEADLINE, || h.files(&dest).len() == 1));
    let moved = dest.join(&h.files(&dest)[0]);
    assert_eq!(std::fs::read_to_string(moved).unwrap_or_default(), "y");
    assert!(wait_for(DEADLINE, || h.llen("step.p.del") == 0
        && h.files(&h.data.join("tmp/p.del")).is_empty()));
    assert!(h.files(&h.data.join("trash")).is_empty());
}

#[test]
fn retries_with_backoff_until_the_command_succeeds() {
    let mut h = Harness::new();
    h.drop_file("p", "main", "flaky", "z");
    let count = h.work.join("count");
    // Fails twice, then succeeds.
    let cmd = sh(&format!(
        r#"echo x >> {c}; [ "$(wc -l < {c})" -ge 3 ] && cp "$1" {ok}"#,
        c = count.display(),
        ok = h.work.join("ok").display()
    ));
    h.spawn(&run_args(
        "p",
        &[
            "--retry-total",
            "3",
            "--retry-min-wait",
            "0.2",
            "--retry-max-wait",
            "1",
            "--retry-backoff",
            "0.1",
        ],
        &cmd,
    ));
    assert!(wait_for(DEADLINE, || h.work.join("ok").exists()));
    assert_eq!(std::fs::read_to_string(&count).unwrap_or_default().lines().count(), 3);
    assert!(wait_for(DEADLINE, || h.files(&h.data.join("retry/p.main")).is_empty()));
    assert_eq!(h.redis.cli(&["ZCARD", "{step.p.main}.delayed"]).trim(), "0");
    assert!(h.files(&h.data.join("trash/p.main")).is_empty());
}

#[test]
fn retries_run_out_then_the_failure_policy_applies() {
    let mut h = Harness::new();
    h.drop_file("p", "main", "never", "z");
    let cmd = sh("exit 1");
    h.spawn(&run_args("p", &["--retry-total", "2", "--retry-min-wait", "0.1"], &cmd));
    let trash = h.data.join("trash/p.main");
    assert!(wait_for(DEADLINE, || h.files(&trash) == ["never", "never.tags"]));
    let tags = std::fs::read_to_string(trash.join("never.tags")).unwrap_or_default();
    assert!(tags.contains("latest.p.main.attempt = 2"), "{tags}");
    assert!(tags.contains("latest.core.step_counter = 2"), "{tags}");
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_children() {
    let mut h = Harness::new();
    h.drop_file("p", "main", "slow", "z");
    let pidfile = h.work.join("grandchild.pid");
    let cmd = sh(&format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
    h.spawn(&run_args("p", &["--timeout", "0.5", "--kill-grace", "0.5"], &cmd));
    let trash = h.data.join("trash/p.main");
    assert!(wait_for(DEADLINE, || h.files(&trash).len() == 2));
    let tags = std::fs::read_to_string(trash.join("slow.tags")).unwrap_or_default();
    assert!(tags.contains("timed out after 0.5s"), "{tags}");
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(grandchild > 0);
    assert!(
        wait_for(DEADLINE, || kill(Pid::from_raw(grandchild), None).is_err()),
        "the command's child survived"
    );
}

#[test]
fn duplicates_and_bad_messages_are_harmless() {
    let mut h = Harness::new();
    let out = h.work.join("out");
    let msg = h.drop_file("p", "main", "once", "1");
    h.redis.cli(&["LPUSH", "step.p.main", &msg]);
    h.redis.cli(&["LPUSH", "step.p.main", "{not json"]);
    let outside = r#"{"directory": "/etc", "filename": "passwd", "event": "created", "event_timestamp": 1.0}"#;
    h.redis.cli(&["LPUSH", "step.p.main", outside]);
    let sneaky = format!(
        r#"{{"directory": "{}", "filename": "../../x", "event": "created", "event_timestamp": 1.0}}"#,
        h.data.display()
    );
    h.redis.cli(&["LPUSH", "step.p.main", &sneaky]);
    let cmd = sh(&format!(r#"cat "$1" >> {}"#, out.display()));
    h.spawn(&run_args("p", &[], &cmd));
    assert!(wait_for(DEADLINE, || h.llen("{step.p.main}.dead") == 3));
    assert!(wait_for(DEADLINE, || h.llen("step.p.main") == 0));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default(), "1");
    let dead = h.redis.cli(&["LRANGE", "{step.p.main}.dead", "0", "-1"]);
    assert!(dead.contains("invalid StepEvent"), "{dead}");
    assert!(dead.contains("is not a file of this step's directories"), "{dead}");
}

#[test]
fn sigterm_finishes_the_current_file_and_hands_back_the_rest() {
    let mut h = Harness::new();
    let started = h.work.join("started");
    let out = h.work.join("out");
    for i in 0..4 {
        h.drop_file("p", "main", &format!("f{i}"), "x");
    }
    let cmd = sh(&format!(
        r#"touch {}; sleep 1; echo "$1" >> {}"#,
        started.display(),
        out.display()
    ));
    let pid = h.spawn(&run_args("p", &[], &cmd));
    assert!(wait_for(DEADLINE, || started.exists()));
    let status = h.stop(pid);
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default().lines().count(), 1);
    assert_eq!(h.llen("step.p.main"), 3);
    let processing = h.redis.cli(&["KEYS", "{step.p.main}.processing.*"]);
    for key in processing.lines().filter(|k| !k.is_empty()) {
        assert_eq!(h.llen(key), 0, "{key} still holds messages");
    }
    assert_eq!(h.files(&h.data.join("step.p.main")).len(), 3);
}

#[test]
fn a_replayed_message_resumes_its_claimed_file_and_finishes_committed_routes() {
    let mut h = Harness::new();
    let dir = h.step_dir("p", "main");
    // Crash after the claim: the file sits in tmp under its claim id, the message is in flight.
    let msg = format!(
        r#"{{"directory": "{}", "filename": "claimed", "event": "created", "event_timestamp": 1.5}}"#,
        dir.display()
    );
    let id = md5_hex(msg.as_bytes());
    let tmp = h.data.join("tmp/p.main");
    std::fs::create_dir_all(&tmp).expect("tmp");
    std::fs::write(tmp.join(&id), "resumed").expect("claimed file");
    h.redis.cli(&["LPUSH", "{step.p.main}.processing.w1", &msg]);
    // Crash after the commit point of a two-route transaction: one rename done, one pending.
    let msg2 = format!(
        r#"{{"directory": "{}", "filename": "routed", "event": "created", "event_timestamp": 2.5}}"#,
        dir.display()
    );
    let id2 = md5_hex(msg2.as_bytes());
    let stage = tmp.join(format!("{id2}.out"));
    std::fs::create_dir_all(&stage).expect("stage");
    std::fs::write(stage.join("1"), "second").expect("staged");
    let a = h.data.join("step.a.main/x");
    let b = h.data.join("step.b.main/x");
    std::fs::create_dir_all(a.parent().expect("parent")).expect("a");
    std::fs::write(&a, "first").expect("already renamed");
    let manifest = serde_json::json!({"renames": [[stage.join("0"), a], [stage.join("1"), b]], "delayed": null});
    std::fs::write(tmp.join(format!("{id2}.routes")), manifest.to_string()).expect("manifest");
    std::fs::write(tmp.join(&id2), "source").expect("source");
    h.redis.cli(&["LPUSH", "{step.p.main}.processing.w1", &msg2]);

    let out = h.work.join("out");
    let cmd = sh(&format!(r#"cat "$1" >> {}"#, out.display()));
    h.spawn(&run_args("p", &["--consumer", "w1"], &cmd));
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&out).is_ok_and(|s| s == "resumed")));
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&b).is_ok_and(|s| s == "second")));
    assert_eq!(std::fs::read_to_string(&a).unwrap_or_default(), "first");
    assert!(wait_for(DEADLINE, || h.files(&tmp).is_empty()), "{:?}", h.files(&tmp));
    assert!(wait_for(DEADLINE, || h.llen("{step.p.main}.processing.w1") == 0));
}

#[test]
fn messages_held_by_a_dead_consumer_are_recovered_by_a_live_one() {
    let mut h = Harness::new();
    let msg = h.drop_file("p", "main", "orphan", "o");
    // Another (registered) worker popped it and died: its liveness key is gone.
    h.redis.cli(&["SADD", "{step.p.main}.consumers", "gone"]);
    h.redis
        .cli(&["LMOVE", "step.p.main", "{step.p.main}.processing.gone", "RIGHT", "LEFT"]);
    assert_eq!(h.llen("{step.p.main}.processing.gone"), 1, "{msg}");
    let out = h.work.join("out");
    let cmd = sh(&format!(r#"cat "$1" >> {}"#, out.display()));
    h.spawn(&run_args("p", &["--consumer", "alive"], &cmd));
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&out).is_ok_and(|s| s == "o")));
    assert_eq!(h.llen("{step.p.main}.processing.gone"), 0);
    assert_eq!(h.redis.cli(&["SMEMBERS", "{step.p.main}.consumers"]).trim(), "alive");
}

#[test]
fn the_switch_routes_by_rules_carries_tags_and_reloads_its_rules() {
    let mut h = Harness::new();
    let rules = h.work.join("switch_rules.ini");
    std::fs::write(
        &rules,
        "[switch_rules:fnmatch:first.core.original_basename]\n*.csv = csv/main, copies/main\n*.gz = gz/main*, archive/main*\n",
    )
    .expect("rules");
    let pid = h.spawn(&[
        "switch",
        "--rules",
        rules.to_str().unwrap_or_default(),
        "--no-match-policy",
        "keep",
    ]);
    h.drop_file("switch", "main", "a.csv", "csv");
    h.drop_file("switch", "main", "b.gz", "gz");
    h.drop_file("switch", "main", "c.txt", "txt");
    let csv = h.data.join("step.csv.main");
    let gz = h.data.join("step.gz.main");
    let archive = h.data.join("step.archive.main");
    let nomatch = h.data.join("trash/switch.nomatch");
    assert!(wait_for(DEADLINE, || h.files(&csv).len() == 1
        && h.files(&gz).len() == 1
        && h.files(&archive).len() == 1
        && h.files(&nomatch).len() == 2));
    let routed = csv.join(&h.files(&csv)[0]);
    assert_eq!(std::fs::read_to_string(&routed).unwrap_or_default(), "csv");
    let tag_key = format!("xattr_{}", md5_hex(routed.as_os_str().as_encoded_bytes()));
    assert_eq!(
        h.redis.cli(&["HGET", &tag_key, "first.core.original_basename"]).trim(),
        "a.csv"
    );
    assert_eq!(
        h.redis.cli(&["HGET", &tag_key, "first.core.original_dirname"]).trim(),
        "step.switch.main"
    );
    use std::os::unix::fs::MetadataExt;
    let g = std::fs::metadata(gz.join(&h.files(&gz)[0]))
        .map(|m| m.nlink())
        .unwrap_or(0);
    assert_eq!(g, 2, "the two hard-linked outputs share one inode");
    let copies = h.data.join("step.copies.main");
    assert!(wait_for(DEADLINE, || h.files(&copies).len() == 1));
    let c = std::fs::metadata(copies.join(&h.files(&copies)[0]))
        .map(|m| m.nlink())
        .unwrap_or(0);
    assert_eq!(c, 1, "copied outputs are independent files");

    // New rules take effect for the next files; a broken edit is refused and the last good
    // rules stay in force.
    std::fs::write(&rules, "[switch_rules:alwaystrue]\n* = all/main\n").expect("rules");
    std::thread::sleep(Duration::from_millis(3000));
    h.drop_file("switch", "main", "d.csv", "d");
    let all = h.data.join("step.all.main");
    assert!(wait_for(DEADLINE, || h.files(&all).len() == 1));
    std::fs::write(&rules, "[switch_rules:bogus]\n* = all/main\n").expect("rules");
    std::thread::sleep(Duration::from_millis(3000));
    h.drop_file("switch", "main", "e.csv", "e");
    assert!(wait_for(DEADLINE, || h.files(&all).len() == 2));
    assert_eq!(h.files(&csv).len(), 1);
    assert!(h.stop(pid).success());
}

#[test]
fn gc_once_removes_old_leftovers_only() {
    let h = Harness::new();
    std::fs::create_dir_all(h.data.join("tmp/p.s")).expect("tmp");
    std::fs::write(h.data.join("tmp/p.s/left"), "x").expect("leftover");
    let status = Command::new(env!("CARGO_BIN_EXE_step"))
        .args(["gc", "--once", "--tmp-max-age", "0", "--data-dir"])
        .arg(&h.data)
        .status()
        .expect("gc");
    assert!(status.success());
    assert!(!h.data.join("tmp/p.s/left").exists());
}

fn md5_hex(bytes: &[u8]) -> String {
    ironwork_step::tags::hex(&<md5::Md5 as md5::Digest>::digest(bytes))
}

#[test]
fn a_duplicate_of_a_message_in_progress_does_not_run_the_command_twice() {
    let mut h = Harness::new();
    let out = h.work.join("out");
    let msg = h.drop_file("p", "main", "dup", "1");
    h.redis.cli(&["LPUSH", "step.p.main", &msg]);
    let cmd = sh(&format!(r#"echo "run $$" >> {}; sleep 1"#, out.display()));
    h.spawn(&run_args("p", &["--consumer", "a", "--batch", "1"], &cmd));
    h.spawn(&run_args("p", &["--consumer", "b", "--batch", "1"], &cmd));
    assert!(wait_for(DEADLINE, || h.llen("step.p.main") == 0
        && h.files(&h.data.join("tmp/p.main")).is_empty()));
    std::thread::sleep(Duration::from_millis(1500));
    let runs = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(runs.lines().count(), 1, "the command ran more than once:\n{runs}");
}

#[test]
fn fifos_symlinks_and_directories_are_never_opened_and_never_stop_the_switch() {
    let mut h = Harness::new();
    let rules = h.work.join("switch_rules.ini");
    std::fs::write(&rules, "[switch_rules:alwaystrue]\n* = a/main, b/main\n").expect("rules");
    let dir = h.step_dir("switch", "main");
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::os::unix::fs::symlink(&h.work, dir.join("dirlink")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("secret")).expect("symlink");
    std::fs::create_dir(dir.join("subdir")).expect("mkdir");
    for name in ["fifo", "dirlink", "secret", "subdir"] {
        let msg = format!(
            r#"{{"directory": "{}", "filename": "{name}", "event": "created", "event_timestamp": 1.0}}"#,
            dir.display()
        );
        h.redis.cli(&["LPUSH", "step.switch.main", &msg]);
    }
    let rules_s = rules.display().to_string();
    let pid = h.spawn(&["switch", "--rules", &rules_s]);
    h.drop_file("switch", "main", "real", "data");
    let a = h.data.join("step.a.main");
    assert!(wait_for(DEADLINE, || h.files(&a).len() == 1), "the switch stopped");
    let trash = h.data.join("trash/switch.main");
    assert!(
        wait_for(DEADLINE, || h.files(&trash).len() == 6),
        "{:?}",
        h.files(&trash)
    );
    let tags = std::fs::read_to_string(trash.join("secret.tags")).unwrap_or_default();
    assert!(tags.contains("failure_reason = not a regular file"), "{tags}");
    assert!(std::fs::symlink_metadata(trash.join("secret")).is_ok_and(|m| m.file_type().is_symlink()));
    assert!(dir.join("subdir").is_dir(), "a directory is never claimed");
    assert!(h
        .redis
        .cli(&["LRANGE", "{step.switch.main}.dead", "0", "-1"])
        .contains("it is a directory"));
    assert!(h.stop(pid).success());
}

#[test]
fn a_file_that_cannot_be_routed_is_trashed_and_the_worker_goes_on() {
    let mut h = Harness::new();
    // `<name>.tags` would not fit in 255 bytes: the file is kept under its claim id.
    let long = "n".repeat(252);
    h.drop_file("p", "main", &long, "x");
    h.drop_file("p", "main", "x.tags", "PRECIOUS");
    let cmd = sh("exit 1");
    let pid = h.spawn(&run_args("p", &[], &cmd));
    let trash = h.data.join("trash/p.main");
    assert!(
        wait_for(DEADLINE, || h.files(&trash).len() == 4),
        "{:?}",
        h.files(&trash)
    );
    h.drop_file("p", "main", "x", "later");
    assert!(
        wait_for(DEADLINE, || h.files(&trash).len() == 6),
        "{:?}",
        h.files(&trash)
    );
    assert_eq!(
        std::fs::read_to_string(trash.join("x.tags")).unwrap_or_default(),
        "PRECIOUS"
    );
    assert!(h.files(&trash).iter().all(|n| n.len() <= 255));
    assert!(h.stop(pid).success());
}

#[test]
fn the_loop_guard_stops_a_file_that_circulates_between_succeeding_steps() {
    let mut h = Harness::new();
    let rules = h.work.join("switch_rules.ini");
    std::fs::write(&rules, "[switch_rules:alwaystrue]\n* = switch/main\n").expect("rules");
    let rules_s = rules.display().to_string();
    // The switch sends every file back to itself; nothing queues the new copies, so this test
    // plays the observer: each copy is queued as it appears.
    h.spawn(&["switch", "--rules", &rules_s, "--step-limit", "5"]);
    h.drop_file("switch", "main", "loop", "x");
    let dir = h.step_dir("switch", "main");
    let trash = h.data.join("trash/switch.main");
    assert!(wait_for(DEADLINE, || {
        for name in h.files(&dir) {
            let msg = format!(
                r#"{{"directory": "{}", "filename": "{name}", "event": "created", "event_timestamp": 2.0}}"#,
                dir.display()
            );
            h.redis.cli(&["LPUSH", "step.switch.main", &msg]);
        }
        h.files(&trash).len() == 2
    }));
    let tags = std::fs::read_to_string(trash.join("loop.tags")).unwrap_or_default();
    assert!(tags.contains("step_limit 5 exceeded"), "{tags}");
    assert!(tags.contains("latest.core.step_counter = 6"), "{tags}");
}

#[test]
fn hard_links_of_one_file_in_two_steps_are_processed_by_both() {
    let mut h = Harness::new();
    let out = h.work.join("out");
    let (a, b) = (h.step_dir("p", "a"), h.step_dir("p", "b"));
    std::fs::write(a.join("f"), "shared").expect("write");
    std::fs::hard_link(a.join("f"), b.join("f")).expect("link");
    for (step, dir) in [("a", &a), ("b", &b)] {
        let msg = format!(
            r#"{{"directory": "{}", "filename": "f", "event": "created", "event_timestamp": 1.0}}"#,
            dir.display()
        );
        h.redis.cli(&["LPUSH", &format!("step.p.{step}"), &msg]);
    }
    let cmd = sh(&format!(r#"sleep 0.5; echo "$IRONWORK_STEP" >> {}"#, out.display()));
    h.spawn(&run_args("p", &["--step", "a"], &cmd));
    h.spawn(&run_args("p", &["--step", "b"], &cmd));
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(&out)
        .is_ok_and(|s| s.lines().count() == 2)));
    assert!(wait_for(DEADLINE, || h.files(&h.data.join("tmp/p.a")).is_empty()
        && h.files(&h.data.join("tmp/p.b")).is_empty()));
}

#[test]
fn commands_run_in_the_plugin_directory_as_it_is_now() {
    let h = Harness::new();
    let plugin = h.work.join("plugin");
    std::fs::create_dir_all(&plugin).expect("plugin dir");
    h.drop_file("p", "main", "f", "x");
    let out = h.work.join("out");
    // The worker runs elsewhere: the command still starts in the plugin directory, by path.
    let mut child = Command::new(env!("CARGO_BIN_EXE_step"))
        .args(["run", "--plugin", "p", "--redis", &h.redis.url(), "--data-dir"])
        .arg(&h.data)
        .args([
            "--",
            "sh",
            "-c",
            // Written aside and renamed: `out` appears whole or not at all.
            &format!("pwd > {o}.part; ls >> {o}.part; mv {o}.part {o}", o = out.display()),
            "sh",
        ])
        .env("MFDATA_CURRENT_PLUGIN_DIR", &plugin)
        .current_dir(&h.work)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(wait_for(DEADLINE, || out.exists()));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(text.lines().next(), Some(plugin.to_str().unwrap_or_default()), "{text}");
}
