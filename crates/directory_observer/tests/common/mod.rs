//! Shared rig of the integration tests: a private Redis, a temp runtime home, and the observer
//! running in-process on its own runtime thread (so tests stay synchronous and use `wait_for`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use directory_observer::{Config, RunOptions};
use ironwork_core::metrics::Metrics;
use ironwork_core::CancellationToken;
use ironwork_test_support::{wait_for, RedisServer};
use serde_json::Value;

/// Longest wait for anything in these tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A Redis and a runtime home (`<tmp>/var/in/...`).
pub struct Env {
    pub redis: RedisServer,
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            redis: RedisServer::start(),
            tmp: tempfile::tempdir().expect("tmp"),
        }
    }

    /// The runtime home.
    pub fn home(&self) -> &Path {
        self.tmp.path()
    }

    /// A watched directory by its relative name.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.home().join("var/in").join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.home().join("directory_observer.ini")
    }

    /// `[common]` pointing at this Redis, then `sections` (with `@HOME@` and `@SOCK@` replaced).
    pub fn write_config(&self, common_extra: &str, sections: &str) -> PathBuf {
        let text = format!(
            "[common]\nactive=false\nforced_poll=0\npoll_queue_limit=0\nmonitor_inactivitytimeout=300\n\
             redis_server=127.0.0.1\nredis_port=6379\nredis_unix_socket=@SOCK@\ntimeout=10\n\
             ignore=^.*\\.t$;^.*\\.tmp$\nonly=^.*$\n{common_extra}\n{sections}"
        )
        .replace("@HOME@", &self.home().display().to_string())
        .replace("@SOCK@", &self.redis.socket_path().display().to_string());
        let path = self.config_path();
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn config(&self, common_extra: &str, sections: &str) -> Config {
        let path = self.write_config(common_extra, sections);
        Config::load_with_home(&path, Some(self.home())).unwrap_or_else(|e| panic!("config refused:\n{e}"))
    }

    /// The queue's messages, oldest first (the order consumers pop them).
    pub fn queue(&self, name: &str) -> Vec<Value> {
        let out = self.redis.cli(&["LRANGE", name, "0", "-1"]);
        let mut v: Vec<Value> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        v.reverse();
        v
    }

    /// File names in the queue, oldest first.
    pub fn names(&self, queue: &str) -> Vec<String> {
        self.queue(queue)
            .iter()
            .map(|m| m["filename"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn llen(&self, queue: &str) -> usize {
        self.redis.cli(&["LLEN", queue]).trim().parse().unwrap_or(0)
    }

    /// Wait until `queue` holds every name in `names` (at least once).
    pub fn wait_names(&self, queue: &str, names: &[String]) {
        let ok = wait_for(DEADLINE, || {
            let got = self.names(queue);
            names.iter().all(|n| got.contains(n))
        });
        if !ok {
            let got = self.names(queue);
            let missing: Vec<_> = names.iter().filter(|n| !got.contains(n)).collect();
            panic!("{queue} never received {missing:?}; it has {got:?}");
        }
    }
}

/// The observer running in-process on its own runtime.
pub struct Daemon {
    pub token: CancellationToken,
    pub reload: tokio::sync::watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    pub fn start(config: Config) -> Self {
        Self::start_with(config, |_| {})
    }

    pub fn start_with(config: Config, tweak: impl FnOnce(&mut RunOptions)) -> Self {
        // Through the test harness's capture: a failing test shows its daemon's log.
        let _ = ironwork_core::telemetry::init_with_writer(
            "directory_observer",
            ironwork_core::telemetry::LogFormat::Human,
            tracing_subscriber::fmt::TestWriter::new(),
        );
        let token = CancellationToken::new();
        let (reload, reload_rx) = tokio::sync::watch::channel(0u64);
        let metrics = Metrics::new();
        let mut options = RunOptions::new(token.clone());
        options.reload = Some(reload_rx);
        options.metrics = metrics.clone();
        tweak(&mut options);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(directory_observer::run_with(config, options))
        });
        let d = Self {
            token,
            reload,
            metrics,
            thread: Some(thread),
        };
        assert!(
            wait_for(DEADLINE, || d.metric("directory_observer_watches") > 0 || d.finished()),
            "observer never watched anything"
        );
        d
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// The current value of a series (0 when absent).
    pub fn metric(&self, name: &str) -> i64 {
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Wait until the series reaches `at_least`.
    pub fn wait_metric(&self, name: &str, at_least: i64) {
        assert!(
            wait_for(DEADLINE, || self.metric(name) >= at_least),
            "{name} stayed at {} (< {at_least})",
            self.metric(name)
        );
    }

    /// Cancel and wait for `run` to return.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        let thread = self.thread.take().expect("running");
        assert!(wait_for(DEADLINE, || thread.is_finished()), "observer did not stop");
        thread.join().expect("no panic")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Create `path` with content, setting its mtime `age` in the past.
pub fn write_aged(path: &Path, age: Duration) {
    std::fs::write(path, b"data").expect("write");
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - age))
        .expect("mtime");
}

/// Run `script` with `sh` in `dir`. Tests that count events write files this way: a file
/// written by the test process itself can have its descriptor inherited by a process another
/// test thread is spawning at that moment, and its last close (IN_CLOSE_WRITE) then happens
/// late, after a rename, under the new name.
pub fn shell(dir: &Path, script: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("sh");
    assert!(status.success(), "{script}: {status}");
}

/// Names `prefix0..prefixN`.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}
