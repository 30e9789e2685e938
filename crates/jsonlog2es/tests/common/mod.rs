//! Shared helpers: a real osmem-server, the jsonlog2es binary, log writers, a tiny HTTP client.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `cond` until it holds; panics naming `what` after `timeout`. Polls every 50 ms: most
/// conditions here are HTTP requests to a server that is busy indexing.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let paced = || {
        cond() || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    };
    assert!(
        ironwork_test_support::wait_for(timeout, paced),
        "timed out waiting for {what}"
    );
}

/// One request to `url` (`http://host:port/path`); returns status and body.
pub fn http(method: &str, url: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let answer =
        ironwork_test_support::http::request(authority, method, path, &[("content-type", "application/json")], body)?;
    Ok((answer.status, answer.body))
}

/// The osmem-server binary: `$OSMEM_SERVER_BIN`, else the one bundled with `pip install osmem-server`.
pub fn osmem_binary() -> PathBuf {
    if let Some(b) = std::env::var_os("OSMEM_SERVER_BIN") {
        return PathBuf::from(b);
    }
    let out = Command::new("python3")
        .args(["-c", "import osmem_server; print(osmem_server.resolve_binary())"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "osmem-server is needed for these tests: pip install osmem-server ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A real Elasticsearch-compatible server (in memory).
pub struct Osmem {
    child: Child,
    pub addr: String,
}

impl Osmem {
    /// Start on a free port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// Start on `addr` (to come back on the same port after [`Osmem::stop`]).
    pub fn start_on(addr: &str) -> Self {
        let mut child = Command::new(osmem_binary())
            .args(["--addr", addr, "--no-stdin-watch", "--no-ja"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn osmem-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).expect("osmem prints its url");
        let addr = info["url"].as_str().unwrap().trim_start_matches("http://").to_string();
        Self { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Documents in indices matching `pattern`, after a refresh.
    pub fn count(&self, pattern: &str) -> u64 {
        let _ = http("POST", &format!("{}/_refresh", self.url()), b"");
        match http("GET", &format!("{}/{pattern}/_count", self.url()), b"") {
            Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body).unwrap()["count"]
                .as_u64()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Every document's source in indices matching `pattern`.
    pub fn sources(&self, pattern: &str) -> Vec<serde_json::Value> {
        let _ = http("POST", &format!("{}/_refresh", self.url()), b"");
        let (status, body) = http("GET", &format!("{}/{pattern}/_search?size=10000", self.url()), b"").unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_source"].clone())
            .collect()
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many times each `seq` was indexed.
pub fn seq_counts(sources: &[serde_json::Value]) -> BTreeMap<u64, u32> {
    let mut m = BTreeMap::new();
    for s in sources {
        if let Some(n) = s["seq"].as_u64() {
            *m.entry(n).or_insert(0) += 1;
        }
    }
    m
}

/// Assert that `seqs` were each indexed exactly once, and nothing else with a seq was.
pub fn assert_exactly_once(sources: &[serde_json::Value], seqs: impl IntoIterator<Item = u64>) {
    let counts = seq_counts(sources);
    let expected: Vec<u64> = seqs.into_iter().collect();
    let missing: Vec<u64> = expected.iter().copied().filter(|s| !counts.contains_key(s)).collect();
    let dups: Vec<(u64, u32)> = counts.iter().filter(|(_, c)| **c > 1).map(|(s, c)| (*s, *c)).collect();
    let extra: Vec<u64> = counts.keys().copied().filter(|s| !expected.contains(s)).collect();
    assert!(
        missing.is_empty() && dups.is_empty() && extra.is_empty(),
        "missing {} {:?}…, duplicated {} {:?}…, unexpected {:?}",
        missing.len(),
        &missing[..missing.len().min(10)],
        dups.len(),
        &dups[..dups.len().min(10)],
        &extra[..extra.len().min(10)]
    );
}

/// One mflog-shaped line with a unique `seq`.
pub fn line(seq: u64) -> String {
    format!(
        "{{\"timestamp\":\"2026-11-23T10:{:02}:{:02}.000001Z\",\"level\":\"info\",\"name\":\"step\",\"pid\":42,\"event\":\"line {seq}\",\"seq\":{seq}}}\n",
        (seq / 60) % 60,
        seq % 60
    )
}

/// Append lines `range` to `path`.
pub fn append(path: &Path, range: std::ops::Range<u64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = range.map(line).collect();
    f.write_all(text.as_bytes()).unwrap();
}

/// A runtime home with a jsonlog2es config.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// A home whose `logs/` directory is read with `extra` added to `[input:app]`.
    pub fn new(url: &str, input_extra: &str) -> Self {
        Self::with(url, "", input_extra)
    }

    /// Same, with extra top-level sections.
    pub fn with(url: &str, sections: &str, input_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let config = dir.path().join("jsonlog2es.ini");
        std::fs::write(
            &config,
            format!(
                "[elasticsearch]\nurl = {url}\nindex = app-%Y.%m.%d\ntimestamp_field = timestamp\nflush_interval = 100ms\nretry_initial = 50ms\nretry_max = 500ms\nrequest_timeout = 2s\nbulk_max_docs = 500\n\n\
                 [tail]\npoll_interval = 20ms\nscan_interval = 100ms\n\n[state]\ncheckpoint_interval = 100ms\nshutdown_grace = 3s\n{sections}\n\
                 [input:app]\npaths = logs/*.log\n{input_extra}\n"
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Start the binary.
    pub fn spawn(&self) -> Daemon {
        Daemon::spawn(env!("CARGO_BIN_EXE_jsonlog2es"), &self.config, self.home())
    }

    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        let path = self.home().join("var/state/jsonlog2es.dead-letter.ndjson");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A running daemon; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(bin: &str, config: &Path, home: &Path) -> Self {
        let log = home.join(format!(
            "daemon-{}.log",
            Instant::now().elapsed().as_nanos() ^ std::process::id() as u128
        ));
        let log = unique(log);
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("--home")
            .arg(home)
            .args(["--log-format", "json"])
            .env("IRONWORK_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn jsonlog2es");
        let d = Self { child, log };
        // Ready once it logged its start (signal handlers are installed before that).
        wait_for("the daemon to start", Duration::from_secs(20), || {
            d.log_text().contains("\"event\":\"starting\"")
        });
        d
    }

    /// SIGTERM and wait for a clean exit.
    pub fn term(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}; log:\n{}", self.log_text());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn unique(mut p: PathBuf) -> PathBuf {
    let mut n = 0;
    while p.exists() {
        n += 1;
        p.set_extension(format!("{n}.log"));
    }
    p
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
