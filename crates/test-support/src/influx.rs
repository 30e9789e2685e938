//! A real InfluxDB 1.x (Debian's `influxdb`) on free loopback ports, with database `metrics`,
//! that can be stopped and started again on the same ports and data.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::request;
use crate::{free_tcp_port, wait_for};

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
        let dir = tempfile::tempdir().expect("influxd");
        let (http, rpc) = (free_tcp_port(), free_tcp_port());
        let d = dir.path().display();
        let conf = format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("influxd");
        let mut influx = Influx {
            child: None,
            port: http,
            dir,
        };
        influx.start_again();
        let r = request(&influx.addr(), "POST", "/query?q=CREATE%20DATABASE%20metrics", &[], b"").expect("influxd");
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
            .stderr(std::fs::File::create(&log).expect("influxd"))
            .spawn()
            .expect("influxd");
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
        request(&self.addr(), "GET", &path, &[], b"").expect("influxd").json()
    }

    /// Number of points of `measurement` (0 when it does not exist or the server is away).
    pub fn count(&self, measurement: &str) -> u64 {
        let v = self.query(&format!("SELECT COUNT(\"value\") FROM \"{measurement}\""));
        v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
    }
}
