//! Two nodes on one machine: two runtime homes, each under its own ringmaster with its own Redis
//! for the file pipeline, sharing a real three-master Redis Cluster (`[redis] shared_url`) for
//! the collector and the reflector, which run on both.
//!
//! - Files dropped on a node are processed on that node; the cluster holds no file-pipeline key.
//! - One collection manager and one reflector leader across both nodes.
//! - Node A's collector (the manager) is SIGKILLed while its ringmaster is frozen, so it stays
//!   dead: node B's collector takes the lease and the schedule goes on. Every collected result is
//!   reflected exactly once (the sniffer copy), every point reaches the real InfluxDB (through
//!   an InfluxDB outage: the shared unsent table and the leader's resend), and no job or result
//!   is left in flight.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_test_support::cluster::RedisCluster;
use ironwork_test_support::http::request;
use ironwork_test_support::influx::Influx;
use ironwork_test_support::{free_tcp_port, wait_for};

mod common;
use common::{bin_dir, init, ironwork, text, wait, Running};

const PLUGIN: &str = "\
[step_main]
cmd_and_args = sh -c 'cp \"$1\" \"$IRONWORK_HOME/done/$IRONWORK_ORIGINAL_BASENAME\"' sh

[switch_rules:fnmatch:first.core.original_basename]
*.txt = tick/main

[collection_tick]
method = SCRIPT
interval = 1
targets = t1 t2 t3
cmd_and_args = tick.sh

[reflection_tick]
collection = tick
actions = push_metrics, sniff
";

const TICK: &str = "#!/bin/sh\necho '[{\"name\":\"tick\",\"value\":1}]'\n";

const TTL: Duration = Duration::from_secs(2);

struct Node {
    home: PathBuf,
    collector_api: String,
    reflector_api: String,
    _running: Running,
}

impl Node {
    fn start(home: &Path, name: &str, cluster: &RedisCluster, influx: &Influx) -> Node {
        init(home, &bin_dir());
        let plugin = home.join("plugins/tick");
        std::fs::create_dir_all(&plugin).expect("plugin dir");
        std::fs::write(plugin.join("config.ini"), PLUGIN).expect("plugin");
        std::fs::write(plugin.join("tick.sh"), TICK).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(plugin.join("tick.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir_all(home.join("done")).expect("done dir");
        let collector_api = format!("127.0.0.1:{}", free_tcp_port());
        let reflector_api = format!("127.0.0.1:{}", free_tcp_port());
        let ini = home.join("config/ironwork.ini");
        let mut settings = std::fs::read_to_string(&ini).expect("ironwork.ini");
        for (section, key, value) in [
            ("redis", "shared_url", cluster.url()),
            ("node", "name", name.to_string()),
            ("daemons", "collector", "true".into()),
            ("daemons", "reflector", "true".into()),
            ("collector", "listen", collector_api.clone()),
            ("collector", "leader_ttl", "2s".into()),
            ("reflector", "listen", reflector_api.clone()),
            ("reflector", "metrics_send_retry_count", "1".into()),
            ("reflector", "metrics_send_retry_interval", "200ms".into()),
            ("reflector", "metrics_sent_backup_mode", "yes".into()),
            ("influxdb", "url", format!("http://{}", influx.addr())),
            ("influxdb", "database", "metrics".into()),
        ] {
            settings = set(&settings, section, key, &value);
        }
        std::fs::write(&ini, settings).expect("write ironwork.ini");
        let running = Running(home.to_path_buf());
        let out = ironwork(home, &["start", "--timeout", "60"]);
        assert!(out.status.success(), "{name} did not start: {}", text(&out));
        Node {
            home: home.to_path_buf(),
            collector_api,
            reflector_api,
            _running: running,
        }
    }

    fn collector_status(&self) -> serde_json::Value {
        request(&self.collector_api, "GET", "/me/status", &[], b"")
            .map(|a| a.json())
            .unwrap_or_default()
    }

    /// Whether this node's reflector runs the leader's jobs (resend, expiry).
    fn reflector_leads(&self) -> bool {
        request(&self.reflector_api, "GET", "/metrics", &[], b"")
            .map(|a| a.text().lines().any(|l| l.trim() == "reflector_leader 1"))
            .unwrap_or(false)
    }

    fn leads(&self) -> bool {
        self.collector_status()["leader"] == true
    }

    /// The pid of this node's process whose command line holds `program` and this home.
    fn pid_of(&self, program: &str) -> Option<i32> {
        let home = self.home.display().to_string();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let runs = args.first()?.ends_with(&format!("/{program}"));
            (runs && args.iter().any(|a| a.contains(&home))).then_some(pid)
        })
    }

    fn drop_files(&self, prefix: &str, n: usize) {
        for i in 0..n {
            let tmp = self.home.join(format!("var/in/incoming/{prefix}{i}.txt.t"));
            std::fs::write(&tmp, format!("{prefix}{i}\n")).expect("write");
            std::fs::rename(&tmp, tmp.with_extension("")).expect("rename");
        }
    }

    fn done(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.home.join("done"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// `ini` with `key = value` in `[section]`: the key's line replaced, or added after the header.
fn set(ini: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]\n");
    let start = ini.find(&header).expect("section") + header.len();
    let end = ini[start..].find("\n[").map_or(ini.len(), |i| start + i + 1);
    let body: Vec<&str> = ini[start..end].lines().collect();
    let line = format!("{key} = {value}");
    let mut replaced = false;
    let mut lines: Vec<String> = body
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if k.trim() == key && !l.starts_with('#') => {
                replaced = true;
                line.clone()
            }
            _ => l.to_string(),
        })
        .collect();
    if !replaced {
        lines.insert(0, line);
    }
    format!("{}{}\n{}", &ini[..start], lines.join("\n"), &ini[end..])
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal");
}

/// Each sniffed result: (target, scheduled_at) → how many times it was reflected.
fn sniffed(cluster: &RedisCluster) -> BTreeMap<(String, i64), usize> {
    let mut seen = BTreeMap::new();
    for line in cluster
        .cli(&["LRANGE", "collector.data.sniffer.queue", "0", "-1"])
        .lines()
        .filter(|l| !l.is_empty())
    {
        let d: serde_json::Value = serde_json::from_str(line).expect("sniffed json");
        let target = d["target"].as_str().unwrap_or_default().to_string();
        let at = (d["scheduled_at"].as_f64().unwrap_or_default() * 1000.0).round() as i64;
        *seen.entry((target, at)).or_insert(0) += 1;
    }
    seen
}

#[test]
fn two_nodes_share_a_cluster_and_survive_the_managers_death() {
    let cluster = RedisCluster::start();
    let mut influx = Influx::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(&dir.path().join("a"), "node-a", &cluster, &influx);
    wait("node A's collector to lead", Duration::from_secs(20), || a.leads());
    let b = Node::start(&dir.path().join("b"), "node-b", &cluster, &influx);
    wait("node B's collector to answer", Duration::from_secs(20), || {
        b.collector_status()["leader"] == false
    });

    // The file pipeline stays on each node.
    a.drop_files("a", 5);
    b.drop_files("b", 5);
    wait("both nodes to process their own files", Duration::from_secs(30), || {
        a.done().len() == 5 && b.done().len() == 5
    });
    assert!(a.done().iter().all(|f| f.starts_with('a')), "{:?}", a.done());
    assert!(b.done().iter().all(|f| f.starts_with('b')), "{:?}", b.done());
    let stray: Vec<String> = ["step.*", "{step.*", "xattr_*", "ringmaster.*", "conf_monitor.*"]
        .iter()
        .flat_map(|p| cluster.keys(p))
        .collect();
    assert!(stray.is_empty(), "node-local keys on the cluster: {stray:?}");

    // One manager, one reflector leader, across both nodes.
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.leads() && !b.leads());
    assert_eq!(
        b.collector_status()["counters"]["jobs_enqueued"],
        0,
        "the follower enqueued jobs"
    );
    assert!(
        a.reflector_leads() != b.reflector_leads(),
        "exactly one reflector leads: A {}, B {}",
        a.reflector_leads(),
        b.reflector_leads()
    );
    let reflector_lease = cluster.cli(&["GET", "reflector.leader.lease"]);
    assert!(
        reflector_lease.starts_with("node-a.") || reflector_lease.starts_with("node-b."),
        "reflector lease: {reflector_lease}"
    );
    assert!(cluster.cli(&["GET", "collector.manager.lease"]).starts_with("node-a."));

    // Node A's collector dies and stays dead (its ringmaster is frozen): B takes over.
    let ringmaster_a = a.pid_of("ringmaster").expect("node A's ringmaster");
    let collector_a = a.pid_of("collector").expect("node A's collector");
    signal(ringmaster_a, nix::sys::signal::Signal::SIGSTOP);
    signal(collector_a, nix::sys::signal::Signal::SIGKILL);
    let took_over = wait_for(TTL * 3, || b.leads());
    signal(ringmaster_a, nix::sys::signal::Signal::SIGCONT);
    assert!(took_over, "node B's collector did not take the lease");
    assert!(cluster.cli(&["GET", "collector.manager.lease"]).starts_with("node-b."));
    std::thread::sleep(Duration::from_secs(4));
    // Node A's ringmaster restarts its collector, which now follows.
    wait("node A's collector back", Duration::from_secs(20), || {
        a.collector_status()["leader"] == false
    });
    assert!(b.leads());
    let status = ironwork(&a.home, &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(!text(&status).contains("UNREACHABLE"), "{}", text(&status));

    // An InfluxDB outage: what cannot be sent waits in the shared unsent table, and the
    // reflector leader (on either node) resends it when InfluxDB is back.
    influx.stop();
    wait("points to wait in metrics.unsent", Duration::from_secs(20), || {
        cluster
            .cli(&["ZCARD", "metrics.unsent"])
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            >= 3
    });
    influx.start_again();
    wait("the unsent points to be resent", Duration::from_secs(30), || {
        cluster.cli(&["ZCARD", "metrics.unsent"]).trim() == "0"
    });

    // The collection is disabled (through the leader's agent API: the state is shared), the runs
    // under way end, and everything collected drains.
    let token = std::fs::read_to_string(b.home.join("var/state/collector.token")).expect("token");
    let auth = format!("Bearer {}", token.trim());
    let disabled = request(
        &b.collector_api,
        "POST",
        "/plugins/disable?ns=tick&repo=tick",
        &[("authorization", &auth)],
        b"",
    )
    .expect("disable");
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    std::thread::sleep(Duration::from_secs(2));
    wait("nothing queued or in flight", Duration::from_secs(30), || {
        let empty = |cmd: &str, key: &str| matches!(cluster.cli(&[cmd, key]).trim(), "0" | "");
        ["collector.job.queue", "collector.data.queue", "metrics.send.queue"]
            .iter()
            .all(|q| empty("LLEN", q))
            && cluster.keys("{*}.processing.*").iter().all(|k| empty("LLEN", k))
            && empty("ZCARD", "metrics.unsent")
    });

    // Every result was reflected exactly once and reached InfluxDB.
    let seen = sniffed(&cluster);
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "results reflected more than once: {twice:?}");
    let mut per_target: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (target, at) in seen.keys() {
        per_target.entry(target).or_default().push(*at);
    }
    assert_eq!(per_target.len(), 3, "{per_target:?}");
    for (target, slots) in &per_target {
        // Slots follow each other every second. Only the takeover may skip some: the lease's
        // TTL, or up to a run guard's TTL (16 s here) when the killed collector held that
        // target's guard.
        let gaps: Vec<i64> = slots.windows(2).map(|w| w[1] - w[0]).collect();
        let long: Vec<&i64> = gaps.iter().filter(|&&g| g != 1000).collect();
        assert!(
            long.len() <= 1 && long.iter().all(|&&g| g % 1000 == 0 && g <= 20_000),
            "{target}: gaps between slots {gaps:?}"
        );
        assert!(slots.len() >= 5, "{target}: {} slots", slots.len());
    }
    let results = seen.len() as u64;
    let points_arrived = wait_for(Duration::from_secs(20), || influx.count("tick.tick") >= results);
    assert!(
        points_arrived,
        "{} points in InfluxDB for {results} results; measurements {}; node A's reflector:\n{}",
        influx.count("tick.tick"),
        influx.query("SHOW MEASUREMENTS"),
        std::fs::read_to_string(a.home.join("log/reflector.log")).unwrap_or_default()
    );
}
