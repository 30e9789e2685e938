//! Test helpers shared by every ironwork crate.
//!
//! - [`RedisServer`]: a private `redis-server` per test on a unix socket in a temp dir (no TCP
//!   port), killed when dropped; restartable in place, optionally with AOF.
//! - [`wait_for`]: poll a condition until a deadline instead of sleeping.
//! - [`http`]: a tiny blocking HTTP/1.1 client.
//! - [`cluster`]: a real three-master Redis Cluster and a Sentinel setup on loopback.
//! - [`influx`]: a real InfluxDB 1.x.

pub mod cluster;
pub mod http;
pub mod influx;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a [`RedisServer`] persists data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// Nothing on disk: `--save '' --appendonly no` (the default, fastest).
    #[default]
    None,
    /// Append-only file fsynced on every write: acknowledged writes survive a crash.
    AofAlways,
}

/// A private redis-server listening only on `<tempdir>/redis.sock`.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistence: Persistence,
}

/// How long a server may take to answer PING after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Start a server with no persistence. Panics with a clear message if `redis-server` is
    /// not installed or does not come up.
    pub fn start() -> Self {
        Self::start_with(Persistence::None)
    }

    /// Start a server with the given persistence.
    pub fn start_with(persistence: Persistence) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironwork-redis-")
            .tempdir()
            .expect("create temp dir for redis-server");
        let mut server = Self {
            dir,
            child: None,
            persistence,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let sock = self.socket_path();
        let _ = std::fs::remove_file(&sock);
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--maxmemory-policy")
            .arg("noeviction")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        match self.persistence {
            Persistence::None => cmd.args(["--appendonly", "no"]),
            Persistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the ironwork tests need a real Redis. \
                 Install it with `apt-get install -y redis-server` (or run `bash .ci/run`)."
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited at start ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server did not answer PING on {} within {START_TIMEOUT:?}",
            sock.display()
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.socket_path()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(s.read_exact(&mut buf), Ok(()) if &buf == b"+PONG\r\n")
    }

    /// The unix socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix://<socket>`, for `ironwork_core::Redis::open`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// The server's working directory (AOF files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the server with SIGKILL (a crash: no final save) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Crash the server and start it again on the same socket and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Start the server again after [`RedisServer::kill`].
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Run `redis-cli` against this server with `args`, returning its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket_path())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port of 127.0.0.1 free at the time of the call (bound, then released), for servers a
/// test starts that cannot be told to use port 0.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Poll `cond` every few milliseconds until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_answers_and_dies_with_its_guard() {
        let server = RedisServer::start();
        assert!(server.ping());
        assert_eq!(server.cli(&["SET", "k", "v"]).trim(), "OK");
        assert_eq!(server.cli(&["GET", "k"]).trim(), "v");
        let sock = server.socket_path();
        let pid = server.pid().expect("running");
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || !sock.exists());
    }

    #[test]
    fn aof_server_keeps_data_across_a_crash() {
        let mut server = RedisServer::start_with(Persistence::AofAlways);
        server.cli(&["RPUSH", "q", "a", "b"]);
        server.restart();
        assert_eq!(server.cli(&["LRANGE", "q", "0", "-1"]).trim(), "a\nb");
    }
}
