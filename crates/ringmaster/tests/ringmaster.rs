//! The real ringmaster binary against temporary configurations: respawn, backoff, tree kills,
//! recycling, memory limits, sockets, reloadconfig, ordered shutdown, recovery after SIGKILL,
//! Metwork's circus.ini, Redis control and events.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmaster::control::Client;
use ringmaster::procfs;
use serde_json::{json, Map, Value};

const DEADLINE: Duration = Duration::from_secs(15);

/// A running ringmaster on a config in a temp dir; SIGKILLed with its tree when dropped.
struct Rm {
    dir: tempfile::TempDir,
    child: Option<Child>,
    config: PathBuf,
}

impl Rm {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("ringmaster.sock")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `ini` (with `@DIR@` replaced by the temp dir) and start ringmaster on it.
    fn start(ini: &str) -> Rm {
        Self::start_with(ini, &[])
    }

    /// [`Rm::start`], with `files` (name, content) written into the temp dir first.
    fn start_with(ini: &str, files: &[(&str, &str)]) -> Rm {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write file");
        }
        let config = dir.path().join("ringmaster.ini");
        std::fs::write(&config, ini.replace("@DIR@", &dir.path().display().to_string())).expect("write ini");
        let mut rm = Rm {
            dir,
            child: None,
            config,
        };
        rm.launch();
        rm
    }

    fn launch(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.path("ringmaster.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .arg("--log-format")
            .arg("json")
            .arg(&self.config)
            .env("IRONWORK_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ringmaster");
        self.child = Some(child);
        let sock = self.socket();
        assert!(
            wait_for(DEADLINE, || std::os::unix::net::UnixStream::connect(&sock).is_ok()),
            "ringmaster did not open its socket:\n{}",
            self.log()
        );
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("ringmaster.log")).unwrap_or_default()
    }

    async fn call(&self, command: &str, props: Value) -> Value {
        let mut c = match Client::connect(&self.socket()).await {
            Ok(c) => c,
            Err(e) => panic!("connect: {e}\n{}", self.log()),
        };
        let props: Map<String, Value> = match props {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let reply = match c.call(command, props).await {
            Ok(r) => r,
            Err(e) => panic!("{command}: {e}\n{}", self.log()),
        };
        serde_json::to_value(reply).expect("json")
    }

    async fn pids(&self, watcher: &str) -> Vec<i32> {
        let r = self.call("list", json!({ "name": watcher })).await;
        let mut pids: Vec<i32> = r["pids"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_i64()).map(|p| p as i32).collect())
            .unwrap_or_default();
        pids.sort_unstable();
        pids
    }

    async fn wait_pids(&self, watcher: &str, cond: impl Fn(&[i32]) -> bool) -> Vec<i32> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let p = self.pids(watcher).await;
            if cond(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "condition on {watcher} pids never held (last {p:?}):\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM and wait for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id() as i32, "TERM");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ringmaster did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL ringmaster only (its children live on).
    fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}

impl Drop for Rm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            let tree = procfs::descendants(pid);
            let _ = c.kill();
            let _ = c.wait();
            for p in tree {
                signal(p, "KILL");
            }
        }
    }
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn alive(pid: i32) -> bool {
    procfs::stat(pid).is_some_and(|s| !s.zombie)
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

fn cpu_seconds(pid: i32) -> f64 {
    procfs::stat(pid)
        .map(|s| s.cpu_ticks as f64 / procfs::ticks_per_second() as f64)
        .unwrap_or(0.0)
}

const SLEEPERS: &str = "[circus]\ncheck_delay = 5\n\n[watcher:sleepers]\ncmd = sleep 3600\nnumprocesses = 2\n";

#[tokio::test]
async fn a_crashed_process_is_replaced_at_once() {
    let rm = Rm::start(SLEEPERS);
    let before = rm.wait_pids("sleepers", |p| p.len() == 2).await;
    let killed = Instant::now();
    signal(before[0], "KILL");
    let after = rm
        .wait_pids("sleepers", |p| p.len() == 2 && !p.contains(&before[0]))
        .await;
    let took = killed.elapsed();
    assert!(after.contains(&before[1]), "the other process was left alone");
    // Reaping is event-driven: far below circus's check_delay (5 s here).
    assert!(took < Duration::from_secs(2), "respawn took {took:?}");
    let status = rm.call("stats", json!({"name": "sleepers"})).await;
    assert_eq!(status["info"]["sleepers"]["restarts"], 1);
}

#[tokio::test]
async fn a_command_that_cannot_start_backs_off_without_spinning() {
    let rm = Rm::start(
        "[watcher:broken]\ncmd = /nonexistent/program --flag\nmax_retry = -1\n\n[watcher:ok]\ncmd = sleep 3600\n",
    );
    rm.wait_pids("ok", |p| p.len() == 1).await;
    let cpu_before = cpu_seconds(rm.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_seconds(rm.pid()) - cpu_before;
    assert!(cpu < 0.5, "ringmaster used {cpu:.2} s of CPU in 3 s while retrying");
    let out = Command::new(env!("CARGO_BIN_EXE_ringctl"))
        .arg("--socket")
        .arg(rm.socket())
        .arg("status")
        .output()
        .expect("ringctl");
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().find(|l| l.starts_with("broken")).expect("broken listed");
    assert!(line.contains("backoff"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("ok") && l.contains("active")),
        "{table}"
    );
    let attempts = rm.log().matches("cannot start, will retry").count();
    assert!((2..40).contains(&attempts), "{attempts} attempts in 3 s");
    // Still answering while it retries.
    assert_eq!(rm.call("status", json!({"name": "broken"})).await["state"], "backoff");
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_with_its_grandchildren_after_graceful_timeout() {
    let rm = Rm::start(
        "[watcher:stubborn]\ncmd = /bin/sh\nargs = -c 'trap \"\" TERM; sleep 3600 & sleep 3600 & wait'\ngraceful_timeout = 1\n",
    );
    let pids = rm.wait_pids("stubborn", |p| p.len() == 1).await;
    let sh = pids[0];
    assert!(wait_for(DEADLINE, || procfs::descendants(sh).len() == 2));
    let tree = procfs::descendants(sh);
    let started = Instant::now();
    let r = rm.call("stop", json!({"name": "stubborn", "waiting": true})).await;
    assert_eq!(r["status"], "ok");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "killed before graceful_timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(
        wait_for(Duration::from_secs(2), || !alive(sh) && tree.iter().all(|p| !alive(*p))),
        "tree survived"
    );
}

#[tokio::test]
async fn max_age_recycles_with_the_replacement_started_first() {
    let rm = Rm::start("[watcher:aging]\ncmd = sleep 3600\nmax_age = 1\nmax_age_variance = 0\n");
    let first = rm.wait_pids("aging", |p| p.len() == 1).await[0];
    let started = Instant::now();
    let second = rm.wait_pids("aging", |p| !p.contains(&first)).await;
    assert!(started.elapsed() >= Duration::from_millis(500), "recycled too early");
    assert_eq!(second.len(), 1);
    assert!(!alive(first));
    // The log shows the replacement's spawn before the old process was stopped.
    let log = rm.log();
    let recycle = log.find("recycling (max_age").expect("recycle logged");
    let spawn_after = log[recycle..]
        .find("\"event\":\"spawned\"")
        .expect("spawn after recycle");
    let stop_after = log[recycle..].find("stopping process").expect("stop after recycle");
    assert!(
        spawn_after < stop_after,
        "replacement must start before the old process is stopped"
    );
}

#[tokio::test]
async fn memory_limit_restarts_the_offender_and_says_so() {
    let rm = Rm::start(
        "[watcher:hog]\ncmd = python3\nargs = -c 'import time; x = bytearray(120 * 1024 * 1024); time.sleep(3600)'\nmemory_limit = 50M\n\n[watcher:calm]\ncmd = sleep 3600\nmemory_limit = 50M\n",
    );
    let first = rm.wait_pids("hog", |p| p.len() == 1).await[0];
    let calm = rm.wait_pids("calm", |p| p.len() == 1).await;
    rm.wait_pids("hog", |p| p.len() == 1 && p[0] != first).await;
    let stats = rm.call("stats", json!({})).await;
    assert!(
        stats["info"]["hog"]["memory_restarts"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert_eq!(stats["info"]["calm"]["memory_restarts"], 0);
    assert_eq!(rm.pids("calm").await, calm, "a process under its limit is left alone");
    assert!(rm.log().contains("memory limit exceeded"));
}

#[tokio::test]
async fn children_inherit_the_listening_sockets() {
    let rm = Rm::start(
        "[socket:web]\npath = @DIR@/web.sock\n\n[watcher:web]\ncmd = python3\nargs = -c 'import os, socket, sys; s = socket.socket(fileno=int(sys.argv[1])); exec(\"while True:\\n c, _ = s.accept(); c.sendall(str(os.getpid()).encode()); c.close()\")' $(circus.sockets.web)\nuse_sockets = true\nnumprocesses = 2\n",
    );
    let pids = rm.wait_pids("web", |p| p.len() == 2).await;
    let path = rm.path("web.sock");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + DEADLINE;
    while seen.is_empty() && Instant::now() < deadline {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) {
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
            if let Ok(pid) = out.trim().parse::<i32>() {
                seen.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!seen.is_empty(), "nobody answered on the shared socket:\n{}", rm.log());
    assert!(
        seen.iter().all(|p| pids.contains(p)),
        "answered by {seen:?}, workers are {pids:?}"
    );
}

#[tokio::test]
async fn reloadconfig_restarts_only_what_changed() {
    let ini = "[watcher:same]\ncmd = sleep 3600\n\n[watcher:scaled]\ncmd = sleep 3601\n\n[watcher:changed]\ncmd = sleep 3602\n\n[watcher:dropped]\ncmd = sleep 3603\n";
    let rm = Rm::start(ini);
    let same = rm.wait_pids("same", |p| p.len() == 1).await;
    let scaled = rm.wait_pids("scaled", |p| p.len() == 1).await;
    let changed = rm.wait_pids("changed", |p| p.len() == 1).await;
    let dropped = rm.wait_pids("dropped", |p| p.len() == 1).await;
    std::fs::write(
        &rm.config,
        "[watcher:same]\ncmd = sleep 3600\n\n[watcher:scaled]\ncmd = sleep 3601\nnumprocesses = 3\n\n[watcher:changed]\ncmd = sleep 3700\n\n[watcher:added]\ncmd = sleep 3604\n",
    )
    .expect("rewrite");
    let r = rm.call("reloadconfig", json!({})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let now_scaled = rm.wait_pids("scaled", |p| p.len() == 3).await;
    assert!(now_scaled.contains(&scaled[0]), "numprocesses changes in place");
    rm.wait_pids("changed", |p| p.len() == 1 && p[0] != changed[0]).await;
    rm.wait_pids("added", |p| p.len() == 1).await;
    assert_eq!(rm.pids("same").await, same, "an unchanged watcher keeps its processes");
    assert!(wait_for(DEADLINE, || !alive(dropped[0])));
    let list = rm.call("list", json!({})).await;
    let names: Vec<&str> = list["watchers"]
        .as_array()
        .expect("watchers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!names.contains(&"dropped"), "{names:?}");

    // A broken edit is refused and everything keeps running.
    std::fs::write(&rm.config, "[watcher:same]\nnumprocesses = lots\n").expect("rewrite");
    let r = rm.call("reloadconfig", json!({})).await;
    assert_eq!(r["status"], "error");
    assert!(r["reason"].as_str().unwrap_or("").contains("numprocesses"), "{r}");
    assert_eq!(rm.pids("same").await, same);
}

#[tokio::test]
async fn sigterm_stops_lowest_priority_first_then_exits_zero() {
    let ini = "[watcher:low]\ncmd = /bin/sh\nargs = -c 'trap \"echo low >> @DIR@/order; exit 0\" TERM; while true; do sleep 0.05; done'\npriority = 1\n\n\
[watcher:high]\ncmd = /bin/sh\nargs = -c 'trap \"echo high >> @DIR@/order; exit 0\" TERM; while true; do sleep 0.05; done'\npriority = 10\n\n\
[watcher:mid]\ncmd = /bin/sh\nargs = -c 'trap \"echo mid >> @DIR@/order; exit 0\" TERM; while true; do sleep 0.05; done'\npriority = 5\n";
    let mut rm = Rm::start(ini);
    for w in ["low", "mid", "high"] {
        rm.wait_pids(w, |p| p.len() == 1).await;
    }
    let log = rm.log();
    let pos = |n: &str| {
        log.find(&format!("\"watcher\":\"{n}\",\"event\":\"watcher started\""))
            .or_else(|| log.find(&format!("watcher started\",\"watcher\":\"{n}\"")))
    };
    assert!(
        pos("high") < pos("mid") && pos("mid") < pos("low"),
        "start order by priority:\n{log}"
    );
    let status = rm.terminate();
    assert!(status.success(), "exit status {status}");
    let order = std::fs::read_to_string(rm.path("order")).expect("order file");
    assert_eq!(order.split_whitespace().collect::<Vec<_>>(), ["low", "mid", "high"]);
}

#[tokio::test]
async fn a_restarted_ringmaster_leaves_no_duplicates_after_a_sigkill() {
    let mut rm = Rm::start(SLEEPERS);
    let old = rm.wait_pids("sleepers", |p| p.len() == 2).await;
    rm.crash();
    assert!(old.iter().all(|p| alive(*p)), "children outlive a SIGKILLed supervisor");
    rm.launch();
    let new = rm.wait_pids("sleepers", |p| p.len() == 2).await;
    assert!(new.iter().all(|p| !old.contains(p)));
    assert!(
        wait_for(DEADLINE, || old.iter().all(|p| !alive(*p))),
        "old workers still running next to the new ones"
    );
    assert!(rm.log().contains("stopping a process left by a previous ringmaster"));
}

#[tokio::test]
async fn a_second_ringmaster_on_the_same_config_is_refused() {
    let rm = Rm::start(SLEEPERS);
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg(&rm.config)
        .output()
        .expect("second ringmaster");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another ringmaster"), "{err}");
}

#[tokio::test]
async fn invalid_config_is_refused_listing_every_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.ini");
    std::fs::write(
        &path,
        "[watcher:a]\nnumprocesses = x\nstop_signal = SIGNOPE\n\n[watcher:b]\nargs = 1\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["numprocesses", "stop_signal", "[watcher:b] cmd"] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
}

#[tokio::test]
async fn commands_queue_instead_of_failing_and_quit_exits() {
    let mut rm = Rm::start(
        "[watcher:slow]\ncmd = /bin/sh\nargs = -c 'trap \"sleep 0.5; exit 0\" TERM; while true; do sleep 0.05; done'\n",
    );
    let first = rm.wait_pids("slow", |p| p.len() == 1).await;
    // Two commands back to back: both succeed, in order (no "already running" conflict).
    let (a, b) = tokio::join!(
        rm.call("restart", json!({"name": "slow", "waiting": true})),
        rm.call("incr", json!({"name": "slow", "waiting": true})),
    );
    assert_eq!(a["status"], "ok", "{a}");
    assert_eq!(b["status"], "ok", "{b}");
    let now = rm.wait_pids("slow", |p| p.len() == 2).await;
    assert!(!now.contains(&first[0]));
    let q = rm.call("quit", json!({})).await;
    assert_eq!(q["status"], "ok");
    let mut child = rm.child.take().expect("running");
    assert!(wait_for(DEADLINE, || child.try_wait().ok().flatten().is_some()));
    assert!(now.iter().all(|p| !alive(*p)));
}

#[tokio::test]
async fn hooks_run_as_shell_commands_and_can_veto_a_start() {
    let rm = Rm::start(
        "[watcher:hooked]\ncmd = sleep 3600\nhooks.before_start = echo before >> @DIR@/hooks\nhooks.after_stop = echo after >> @DIR@/hooks\n\n\
[watcher:vetoed]\ncmd = sleep 3600\nhooks.before_start = exit 1\n",
    );
    rm.wait_pids("hooked", |p| p.len() == 1).await;
    assert_eq!(
        std::fs::read_to_string(rm.path("hooks")).expect("hook ran").trim(),
        "before"
    );
    assert_eq!(rm.pids("vetoed").await, Vec::<i32>::new());
    assert_eq!(rm.call("status", json!({"name": "vetoed"})).await["state"], "stopped");
    assert!(rm.log().contains("hook failed, action aborted"));
    let r = rm.call("stop", json!({"name": "hooked", "waiting": true})).await;
    assert_eq!(r["status"], "ok");
    assert!(
        wait_for(DEADLINE, || std::fs::read_to_string(rm.path("hooks"))
            .is_ok_and(|t| t.split_whitespace().eq(["before", "after"]))),
        "after_stop did not run once the processes were gone"
    );
}

#[tokio::test]
async fn output_goes_to_rotated_files_and_to_tail() {
    let rm = Rm::start(
        "[watcher:talker]\ncmd = /bin/sh\nargs = -c 'i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; sleep 3600'\n\
stdout_stream.class = FileStream\nstdout_stream.filename = @DIR@/talker.log\nstdout_stream.max_bytes = 4096\nstdout_stream.backup_count = 2\n",
    );
    assert!(wait_for(DEADLINE, || std::fs::read_to_string(rm.path("talker.log"))
        .is_ok_and(|t| t.contains("line-199-"))));
    assert!(rm.path("talker.log.1").exists() && rm.path("talker.log.2").exists());
    assert!(!rm.path("talker.log.3").exists());
    for f in ["talker.log", "talker.log.1", "talker.log.2"] {
        let len = std::fs::metadata(rm.path(f)).expect("meta").len();
        assert!(len <= 4096, "{f} is {len} bytes");
    }
    let tail = rm.call("tail", json!({"name": "talker", "lines": 3})).await;
    let lines: Vec<&str> = tail["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("line-199-"), "{lines:?}");
}

#[tokio::test]
async fn metwork_circus_ini_loads_and_runs() {
    // Metwork's generated shape (see tests/data/metwork_circus.ini), with its wrappers replaced by
    // commands present here: keys such as async_kill, rlimit_as and the Python hook are accepted.
    let rm = Rm::start(
        "[circus]\nendpoint = ipc://@DIR@/ringmaster.sock\npubsub_endpoint = ipc://@DIR@/circus_pubsub.socket\ncheck_delay = 15\nstatsd = False\nloglevel = INFO\n\n\
[watcher:redis]\ncmd = redis-server\nargs = --port 0 --unixsocket @DIR@/redis.socket --save ''\nautostart = True\nrespawn = True\nmax_retry = -1\nhooks.before_start = mfext.circus_hooks.before_start_shell\ncopy_env = True\nworking_dir = @DIR@\npriority = 10\n\n\
[watcher:directory_observer]\ncmd = sleep\nargs = 3600\ncopy_env = True\nmax_retry = -1\ngraceful_timeout = 10\n\n\
[watcher:conf_monitor]\ncmd = sleep 3600\nstop_signal = 9\ncopy_env = True\nmax_retry = -1\n\n\
[watcher:step.ungzip.main]\ncmd = sleep\nargs = 36$(circus.wid)0\nnumprocesses = 2\nworking_dir = @DIR@\ncopy_env = True\nshell = True\nasync_kill = True\nautostart = True\nrespawn = True\nmax_retry = -1\nautorestart_kill_signal = 2\ngraceful_timeout = 600\nmfdata_plugin = ungzip\nmax_age = 3600\nmax_age_variance = 3600\nrlimit_as = 1000000000\nrlimit_nofile = 1000\nrlimit_stack = 10000000\nrlimit_fsize = 10000000000\n\n\
[env:step.ungzip.main]\nHOTSWAP = 0\nMFDATA_CURRENT_APP_DEBUG = 0\n",
    );
    rm.wait_pids("redis", |p| p.len() == 1).await;
    let steps = rm.wait_pids("step.ungzip.main", |p| p.len() == 2).await;
    rm.wait_pids("conf_monitor", |p| p.len() == 1).await;
    assert!(wait_for(DEADLINE, || rm.path("redis.socket").exists()));
    // rlimits applied to the step processes.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", steps[0])).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile line");
    assert!(nofile.contains("1000"), "{nofile}");
    let log = rm.log();
    for key in ["async_kill", "autorestart_kill_signal", "mfdata_plugin"] {
        assert!(log.contains(key), "no warning for {key}");
    }
}

#[tokio::test]
async fn commands_from_redis_are_answered_and_events_published() {
    let redis = ironwork_test_support::RedisServer::start();
    let rm = Rm::start(&format!(
        "[ringmaster]\nredis_url = {}\n\n[watcher:worker]\ncmd = sleep 3600\n",
        redis.url()
    ));
    rm.wait_pids("worker", |p| p.len() == 1).await;
    // Listen to the event channel with redis-cli.
    let mut sub = Command::new("redis-cli")
        .arg("-s")
        .arg(redis.socket_path())
        .args(["SUBSCRIBE", "ringmaster.events"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli subscribe");
    let out = sub.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    redis.cli(&[
        "LPUSH",
        "ringmaster.control",
        r#"{"id":"c1","command":"incr","properties":{"name":"worker","reply_to":"replies.c1"}}"#,
    ]);
    redis.cli(&["LPUSH", "ringmaster.control", "not json"]);
    assert!(
        wait_for(DEADLINE, || redis.cli(&["LLEN", "replies.c1"]).trim() == "1"),
        "no reply:\n{}",
        rm.log()
    );
    let reply: Value = serde_json::from_str(redis.cli(&["RPOP", "replies.c1"]).trim()).expect("reply json");
    assert_eq!(reply["id"], "c1");
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["numprocesses"], 2);
    rm.wait_pids("worker", |p| p.len() == 2).await;
    assert!(wait_for(DEADLINE, || redis
        .cli(&["LLEN", "{ringmaster.control}.dead"])
        .trim()
        == "1"));

    let deadline = Instant::now() + DEADLINE;
    let mut spawn_event = None;
    while Instant::now() < deadline && spawn_event.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("watcher.worker.spawn") && line.starts_with('{') {
                spawn_event = Some(line);
            }
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let ev: Value = serde_json::from_str(&spawn_event.expect("a spawn event was published")).expect("event json");
    assert_eq!(ev["topic"], "watcher.worker.spawn");
    assert!(ev["pid"].as_i64().is_some());
}

fn ringctl(rm: &Rm, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringctl"))
        .arg("--socket")
        .arg(rm.socket())
        .args(args)
        .output()
        .expect("ringctl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn ringctl_adds_scales_signals_and_removes_watchers() {
    let rm = Rm::start("[watcher:base]\ncmd = sleep 3600\n");
    rm.wait_pids("base", |p| p.len() == 1).await;
    let (ok, out) = ringctl(&rm, &["add", "extra", "sleep 3605", "--start"]);
    assert!(ok, "{out}");
    rm.wait_pids("extra", |p| p.len() == 1).await;
    let (ok, out) = ringctl(&rm, &["--json", "incr", "extra", "2"]);
    assert!(ok, "{out}");
    let reply: Value = serde_json::from_str(out.trim()).expect("json reply");
    assert_eq!(reply["numprocesses"], 3);
    let three = rm.wait_pids("extra", |p| p.len() == 3).await;
    let (ok, _) = ringctl(&rm, &["decr", "extra"]);
    assert!(ok);
    let two = rm.wait_pids("extra", |p| p.len() == 2).await;
    assert!(
        two.iter().all(|p| three.contains(p)),
        "decr stops the highest slot only"
    );
    // A signal that kills: the processes are replaced.
    let (ok, out) = ringctl(&rm, &["signal", "extra", "KILL"]);
    assert!(ok, "{out}");
    rm.wait_pids("extra", |p| p.len() == 2 && p.iter().all(|x| !two.contains(x)))
        .await;
    let (ok, out) = ringctl(&rm, &["stats", "extra"]);
    assert!(ok && out.contains("extra"), "{out}");
    let (ok, _) = ringctl(&rm, &["rm", "extra"]);
    assert!(ok);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, list) = ringctl(&rm, &["list"]);
        if !list.lines().any(|l| l == "extra") {
            break;
        }
        assert!(Instant::now() < deadline, "extra never removed: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out) = ringctl(&rm, &["start", "nope"]);
    assert!(!ok && out.contains("not found"), "{out}");
}

#[tokio::test]
async fn sighup_rereads_the_configuration() {
    let rm = Rm::start("[watcher:one]\ncmd = sleep 3600\n");
    let one = rm.wait_pids("one", |p| p.len() == 1).await;
    std::fs::write(
        &rm.config,
        "[watcher:one]\ncmd = sleep 3600\n\n[watcher:two]\ncmd = sleep 3601\n",
    )
    .expect("rewrite");
    signal(rm.pid(), "HUP");
    rm.wait_pids("two", |p| p.len() == 1).await;
    assert_eq!(rm.pids("one").await, one);
}

#[tokio::test]
async fn health_and_metrics_on_loopback() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let rm = Rm::start(&format!(
        "[ringmaster]\nhttp = {port}\n\n[watcher:w]\ncmd = sleep 3600\nnumprocesses = 2\n"
    ));
    rm.wait_pids("w", |p| p.len() == 2).await;
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .expect("write");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).expect("read");
        out
    };
    assert!(get("/health").starts_with("HTTP/1.1 200"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = get("/metrics");
        if m.contains("ringmaster_processes{watcher=\"w\"} 2") {
            assert!(m.contains("ringmaster_spawns_total{watcher=\"w\"} 2"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_crash_loop_pauses_then_gives_up_until_started_by_hand() {
    let rm = Rm::start(
        "[watcher:crashy]\ncmd = /bin/sh -c 'exit 3'\nflapping.retry_in = 0.5\nflapping.max_retry = 1\n\n[watcher:steady]\ncmd = sleep 3600\n",
    );
    let deadline = Instant::now() + DEADLINE;
    let mut seen_backoff = false;
    loop {
        let s = rm.call("status", json!({"name": "crashy"})).await["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        seen_backoff |= s == "backoff";
        if s == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never gave up (last state {s}):\n{}",
            rm.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_backoff, "paused before giving up");
    let spawns = rm.log().matches("\"event\":\"spawned\"").count();
    // Two bursts of two exits before giving up, plus the steady watcher's one.
    assert!(spawns <= 6, "{spawns} spawns: the crash loop was not contained");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        rm.log().matches("\"event\":\"spawned\"").count(),
        spawns,
        "a failed watcher stays stopped"
    );
    assert_eq!(rm.pids("steady").await.len(), 1, "other watchers unaffected");
    let r = rm.call("start", json!({"name": "crashy"})).await;
    assert_eq!(r["status"], "ok");
    assert!(
        wait_for(DEADLINE, || rm.log().matches("\"event\":\"spawned\"").count() > spawns),
        "started again by hand"
    );
}

#[tokio::test]
async fn a_second_sigterm_skips_the_graceful_timeout() {
    let mut rm = Rm::start("[watcher:stubborn]\ncmd = /bin/sh\nargs = -c 'trap \"\" TERM; while true; do sleep 0.05; done'\ngraceful_timeout = 600\n");
    let pid = rm.wait_pids("stubborn", |p| p.len() == 1).await[0];
    signal(rm.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(pid), "the first SIGTERM waits for the graceful timeout");
    let started = Instant::now();
    let status = rm.terminate();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "second SIGTERM took {:?}",
        started.elapsed()
    );
    assert!(wait_for(Duration::from_secs(2), || !alive(pid)));
}

#[tokio::test]
async fn supervision_goes_on_while_redis_is_unreachable() {
    let rm =
        Rm::start("[ringmaster]\nredis_url = redis+unix://@DIR@/no-redis-here.sock\n\n[watcher:w]\ncmd = sleep 3600\n");
    let before = rm.wait_pids("w", |p| p.len() == 1).await;
    signal(before[0], "KILL");
    rm.wait_pids("w", |p| p.len() == 1 && p[0] != before[0]).await;
    assert_eq!(rm.call("status", json!({"name": "w"})).await["state"], "active");
}

#[tokio::test]
async fn uid_is_dropped_after_the_rlimits_are_set() {
    let rm = Rm::start("[watcher:unprivileged]\ncmd = sleep 3600\nuid = nobody\nrlimit_nofile = 4242\n");
    let pid = rm.wait_pids("unprivileged", |p| p.len() == 1).await[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("uid line");
    assert!(uid_line.split_whitespace().nth(1) == Some("65534"), "{uid_line}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains("4242")),
        "{limits}"
    );
}

#[tokio::test]
async fn scaling_is_bounded_and_redis_commands_run_once() {
    let redis = ironwork_test_support::RedisServer::start();
    let rm = Rm::start(&format!(
        "[ringmaster]\nredis_url = {}\n\n[watcher:w]\ncmd = sleep 3600\n",
        redis.url()
    ));
    rm.wait_pids("w", |p| p.len() == 1).await;
    let r = rm.call("incr", json!({"name": "w", "nb": 5_000_000})).await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(rm.pids("w").await.len(), 1);
    redis.cli(&[
        "LPUSH",
        "ringmaster.control",
        r#"{"id":"once","command":"incr","properties":{"name":"w","reply_to":"r.once"}}"#,
    ]);
    assert!(wait_for(DEADLINE, || redis.cli(&["LLEN", "r.once"]).trim() == "1"));
    // Acknowledged before it ran: nothing left in flight to be replayed by the next ringmaster.
    let keys = redis.cli(&["KEYS", "{ringmaster.control}.processing.*"]);
    for key in keys.split_whitespace() {
        assert_eq!(redis.cli(&["LLEN", key]).trim(), "0", "{key} still holds the command");
    }
}

/// A worker serving on the unix socket it is given: each connection sends a line and gets
/// `done <pid>` one second later. It takes half a second to start listening, and SIGTERM kills
/// it at once, whatever it is doing.
const SLOW_WORKER: &str = r#"
import os, socket, sys, threading, time
time.sleep(0.5)
path = sys.argv[1]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
ballast = b"x" * (int(os.environ.get("BALLAST_MB", "0")) << 20)
def serve(c):
    try:
        c.recv(100)
        time.sleep(1)
        c.sendall(b"done %d\n" % os.getpid())
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Connect to `path`. Each new worker replaces the socket file by unlink then bind: a window of
/// a few microseconds that is the worker's own, not ringmaster's. A miss inside it is tried again
/// once, 5 ms later; a path that stays away is an error.
async fn connect_across_a_rebind(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tokio::time::sleep(Duration::from_millis(5)).await;
            std::os::unix::net::UnixStream::connect(path)
        }
        r => r,
    }
}

/// Send a request to the worker on `path`; the answer comes back on the join handle.
fn slow_request(path: &std::path::Path) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(path).expect("connect to the worker");
    c.write_all(b"go\n").expect("send");
    std::thread::spawn(move || {
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    })
}

const DRAINED_WATCHER: &str = "[watcher:app]\ncmd = python3 @DIR@/worker.py @DIR@/app_$(circus.wid).sock\n\
     drain_socket = @DIR@/app_$(circus.wid).sock\ndrain_timeout = 20\ngraceful_timeout = 5\n";

#[tokio::test]
async fn a_drained_worker_finishes_its_requests_before_the_stop_signal() {
    let rm = Rm::start_with(DRAINED_WATCHER, &[("worker.py", SLOW_WORKER)]);
    let sock = rm.path("app_1.sock");
    let pid = rm.wait_pids("app", |p| p.len() == 1).await[0];
    assert!(wait_for(DEADLINE, || std::os::unix::net::UnixStream::connect(&sock).is_ok()));

    let answer = slow_request(&sock);
    tokio::time::sleep(Duration::from_millis(100)).await;
    rm.call("stop", json!({"name": "app", "waiting": false})).await;
    // The path is gone at once: a front moves new requests to another worker.
    assert!(
        wait_for(Duration::from_secs(1), || !sock.exists()),
        "socket still there"
    );
    assert!(alive(pid), "signalled before its request was answered");
    assert_eq!(answer.join().expect("client"), format!("done {pid}\n"));
    assert!(wait_for(DEADLINE, || !alive(pid)), "not stopped once drained");
}

#[tokio::test]
async fn a_restart_hands_each_slot_over_without_refusing_a_connection() {
    let rm = Rm::start_with(DRAINED_WATCHER, &[("worker.py", SLOW_WORKER)]);
    let sock = rm.path("app_1.sock");
    let old = rm.wait_pids("app", |p| p.len() == 1).await[0];
    assert!(wait_for(DEADLINE, || std::os::unix::net::UnixStream::connect(&sock).is_ok()));

    let in_flight = slow_request(&sock);
    tokio::time::sleep(Duration::from_millis(100)).await;
    rm.call("restart", json!({"name": "app", "waiting": false})).await;
    // Connections keep being accepted all through the handover, by the old worker or the new.
    let mut answers = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        answers.push(slow_request(&sock));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(in_flight.join().expect("client"), format!("done {old}\n"));
    let mut served_by_new = 0;
    for a in answers {
        let a = a.join().expect("client");
        assert!(a.starts_with("done "), "a request failed during the handover: {a:?}");
        served_by_new += usize::from(a != format!("done {old}\n"));
    }
    assert!(served_by_new > 0, "the replacement never took over");
    assert!(wait_for(DEADLINE, || !alive(old)), "the old worker was not stopped");
    assert_eq!(rm.pids("app").await.len(), 1);
}

#[tokio::test]
async fn back_to_back_restarts_wait_for_each_successor_not_an_older_listener() {
    let rm = Rm::start_with(DRAINED_WATCHER, &[("worker.py", SLOW_WORKER)]);
    let sock = rm.path("app_1.sock");
    let first = rm.wait_pids("app", |p| p.len() == 1).await[0];
    assert!(wait_for(DEADLINE, || std::os::unix::net::UnixStream::connect(&sock).is_ok()));
    // The first worker keeps draining (a request in flight) while the second restart comes.
    let in_flight = slow_request(&sock);
    tokio::time::sleep(Duration::from_millis(100)).await;
    rm.call("restart", json!({"name": "app", "waiting": false})).await;
    // The second worker listens after half a second; the first still has its request then.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pids = rm.pids("app").await;
    assert_eq!(pids.len(), 2, "{pids:?}");
    let second = *pids.iter().find(|p| **p != first).expect("the second worker");
    rm.call("restart", json!({"name": "app", "waiting": false})).await;
    // No traffic for a moment: the second worker has nothing open, and only the third
    // listening may end its drain (the first one's listener does not count).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut later = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match connect_across_a_rebind(&sock).await {
            Ok(_) => later.push(slow_request(&sock)),
            Err(e) => panic!("a connection was refused between two generations: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight.join().expect("client"), format!("done {first}\n"));
    for a in later {
        let a = a.join().expect("client");
        assert!(a.starts_with("done "), "a request failed: {a:?}");
    }
    assert!(wait_for(DEADLINE, || !alive(first) && !alive(second)));
}

#[tokio::test]
async fn a_drained_worker_over_its_memory_limit_is_replaced_first_then_stopped() {
    let ini = format!(
        "{DRAINED_WATCHER}memory_limit = 40M\n[ringmaster]\nmemory_check_interval = 0.2\n\
         [env:app]\nBALLAST_MB = 80\n"
    );
    let rm = Rm::start_with(&ini, &[("worker.py", SLOW_WORKER)]);
    let sock = rm.path("app_1.sock");
    let first = rm.wait_pids("app", |p| p.len() == 1).await[0];
    // Each worker goes over the limit once it listens: replaced again and again, and the path
    // must accept connections all along.
    assert!(wait_for(DEADLINE, || std::os::unix::net::UnixStream::connect(&sock).is_ok()));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if let Err(e) = connect_across_a_rebind(&sock).await {
            panic!(
                "refused while a worker over its memory limit was replaced: {e}\n{}",
                rm.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(first), "the first worker was never replaced:\n{}", rm.log());
    assert!(rm.log().contains("memory limit exceeded"));
}
