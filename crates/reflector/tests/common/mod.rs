//! Shared by the reflector's tests: a `reflector` process on a generated config, and the real
//! InfluxDB of the test support crate.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use ironwork_test_support::http::request;
#[allow(unused_imports)]
pub use ironwork_test_support::influx::Influx;
use ironwork_test_support::RedisServer;

/// A `reflector` process.
pub struct Reflector {
    child: Child,
    /// Its config file.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reflector {
    /// Start one on `redis` with `settings` added to `[reflector]` and `reflections` after it.
    pub fn start(redis: &RedisServer, settings: &str, reflections: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("reflector.ini");
        std::fs::write(
            &config,
            format!(
                "[reflector]\nredis = {}\nleader_ttl = 2s\n{}{settings}\n{reflections}",
                redis.url(),
                if settings.contains("listen") { "" } else { "listen =\n" }
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_reflector"))
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("reflector.log")).unwrap())
            .spawn()
            .unwrap();
        Reflector {
            child,
            config,
            _dir: dir,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("reflector.log")).unwrap_or_default()
    }

    /// Send a signal.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap()
    }

    /// Run `reflector <args> --config <its config>`; stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_reflector"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A `collector.data.queue` message: `n` points named `name` of plugin `p`, collection `c`.
pub fn data(target: &str, name: &str, first_ts: u64, n: usize) -> String {
    let points: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"name": name, "timestamp": (first_ts + i as u64) as f64,
                "tags": {"cpu": "0"}, "value": i as f64 + 0.5})
        })
        .collect();
    serde_json::json!({"plugin": "p", "collection": "c", "target": target,
        "collected_at": 1.0e9, "correlation_info": {"site": "paris"}, "points": points})
    .to_string()
}

/// LLEN / ZCARD as a number.
pub fn len(redis: &RedisServer, cmd: &str, key: &str) -> u64 {
    redis.cli(&[cmd, key]).trim().parse().unwrap_or(0)
}

/// `/metrics` of a reflector listening on `port`.
pub fn metrics(port: u16) -> String {
    request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[], b"")
        .map(|a| a.text())
        .unwrap_or_default()
}

/// A counter's value in a `/metrics` text (0 when absent).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
