//! Shared by the reflector's tests: a real InfluxDB 1.x (Debian's `influxdb`) on free loopback
//! ports that can be stopped and started again on the same ports and data, and a `reflector`
//! process on a generated config.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ironwork_test_support::http::request;
use ironwork_test_support::{free_tcp_port, wait_for, RedisServer};

/// A real `influxd`.
pub struct Influx {
    child: Option<Child>,
    /// The HTTP port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Influx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Influx {
    /// Start one with database `metrics`.
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/bin/influxd").exists(),
            "influxd is missing: apt-get install -y influxdb"
        );
        let dir = tempfile::tempdir().unwrap();
        let (http, rpc) = (free_tcp_port(), free_tcp_port());
        let d = dir.path().display();
        let conf = format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).unwrap();
        let mut influx = Influx {
            child: None,
            port: http,
            dir,
        };
        influx.start_again();
        let r = request(&influx.addr(), "POST", "/query?q=CREATE%20DATABASE%20metrics", &[], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        influx
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop it (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same ports and data.
    pub fn start_again(&mut self) {
        let log = self.dir.path().join("influxd.log");
        let child = Command::new("/usr/bin/influxd")
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = self.addr();
        assert!(
            wait_for(Duration::from_secs(30), || request(&addr, "GET", "/ping", &[], b"")
                .is_ok_and(|a| a.status == 204)),
            "influxd did not answer: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Run an InfluxQL query on database `metrics` (timestamps in ns).
    pub fn query(&self, q: &str) -> serde_json::Value {
        let mut enc = String::new();
        for b in q.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.*".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        let path = format!("/query?db=metrics&epoch=ns&q={enc}");
        request(&self.addr(), "GET", &path, &[], b"").unwrap().json()
    }

    /// Number of points of `measurement` (0 when it does not exist or the server is away).
    pub fn count(&self, measurement: &str) -> u64 {
        let v = self.query(&format!("SELECT COUNT(\"value\") FROM \"{measurement}\""));
        v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
    }
}

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
