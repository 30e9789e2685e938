//! Real multi-server Redis setups on loopback for the scale-out tests: a three-master Redis
//! Cluster ([`RedisCluster`]) and a master, a replica and a sentinel ([`RedisSentinel`]). Every
//! server runs in the foreground as a child of the test, in a temp dir, and dies with its guard.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// How long a setup may take to become usable.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One loopback redis-server (or sentinel) started by a test.
#[derive(Debug)]
pub struct Node {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
    dir: std::path::PathBuf,
}

impl Node {
    fn start(dir: &Path, port: u16, extra: &[String]) -> Self {
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut args = vec![
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--save".into(),
            String::new(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut node = Self {
            port,
            child: None,
            args,
            dir,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (apt-get install -y redis-server): {e}"));
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(10), || self.cli(&["PING"]).trim() == "PONG");
        assert!(up, "redis-server on port {} did not start:\n{}", self.port, self.log());
    }

    /// `redis-cli -p <port> args…` (no cluster redirection), its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port free on 127.0.0.1 whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = crate::free_tcp_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Three masters, no replicas, every slot covered: `redis-server --cluster-enabled yes` ×3 and
/// `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Start the servers, create the cluster and wait until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironwork-cluster-")
            .tempdir()
            .expect("temp dir");
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                let port = free_port_pair();
                let conf = dir.path().join(format!("nodes-{port}.conf"));
                Node::start(
                    dir.path(),
                    port,
                    &[
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf.display().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                        "--appendonly".into(),
                        "no".into(),
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = wait_for(READY_TIMEOUT, || {
            nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        assert!(ok, "cluster did not reach cluster_state:ok");
        Self { nodes, _dir: dir }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// `redis-cli -c` (following redirections) against the first node.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &self.nodes[0].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key of the cluster (`KEYS pattern` on each master).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| {
                n.cli(&["KEYS", pattern])
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    /// How many keys each master holds (`DBSIZE`), in node order.
    pub fn sizes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.cli(&["DBSIZE"]).trim().parse().unwrap_or(0))
            .collect()
    }
}

/// A master, one replica and one sentinel (quorum 1, down after 1 s) watching the master as
/// `ironwork`.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The master at start.
    pub master: Node,
    /// Its replica (promoted by a failover).
    pub replica: Node,
    /// The sentinel.
    pub sentinel: Node,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Start all three and wait until the sentinel knows the replica.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironwork-sentinel-")
            .tempdir()
            .expect("temp dir");
        let master = Node::start(
            dir.path(),
            crate::free_tcp_port(),
            &[
                "--repl-diskless-sync".into(),
                "yes".into(),
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ],
        );
        let replica = Node::start(
            dir.path(),
            crate::free_tcp_port(),
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
                "--repl-diskless-sync".into(),
                "yes".into(),
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ],
        );
        let sentinel_port = crate::free_tcp_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                 sentinel monitor ironwork 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds ironwork 1000\n\
                 sentinel failover-timeout ironwork 5000\n",
                dir.path().display(),
                dir.path().join("sentinel.log").display(),
                master.port
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Node {
            port: sentinel_port,
            child: None,
            args: vec![conf.display().to_string(), "--sentinel".into()],
            dir: dir.path().to_path_buf(),
        };
        let mut sentinel = sentinel;
        sentinel.spawn();
        let known = wait_for(READY_TIMEOUT, || {
            replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
                && sentinel
                    .cli(&["SENTINEL", "REPLICAS", "ironwork"])
                    .contains(&replica.port.to_string())
        });
        assert!(known, "sentinel did not see the replica");
        Self {
            master,
            replica,
            sentinel,
            _dir: dir,
        }
    }

    /// `redis+sentinel://127.0.0.1:<sentinel>/ironwork`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/ironwork", self.sentinel.port)
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.sentinel.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "ironwork"]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}
