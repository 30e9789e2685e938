//! The SNMP method against a real net-snmp agent: each test starts its own `snmpd` on a free
//! UDP port of 127.0.0.1, with a config of its own in a temp dir.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::collection::{Run, RunLimits};
use collector::method::{snmp, Outcome, Probe};
use ironwork_core::config::{Report, UnknownKeys};
use ironwork_core::ini::Ini;

const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
const SYS_UPTIME: &str = "1.3.6.1.2.1.1.3.0";
const SYS_LOCATION: &str = "1.3.6.1.2.1.1.6.0";

/// How long snmpd may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private snmpd, killed when dropped.
struct Snmpd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl Snmpd {
    /// Start snmpd with community `public` for 127.0.0.1 and a known sysLocation; panics with
    /// the install command if snmpd is missing, or with its log if it does not come up.
    async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironwork-snmpd-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(
            dir.path().join("snmpd.conf"),
            "rocommunity public 127.0.0.1\nsysLocation ironwork-test\nsysContact ops@example.invalid\n",
        )
        .expect("write snmpd.conf");
        let mut agent = Self {
            dir,
            child: None,
            port: 0,
        };
        // Bind port 0 to learn a free port and release it for snmpd. Another process could take
        // it in between: snmpd then exits, and we try again on another port.
        for _ in 0..3 {
            agent.port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("free UDP port")
                .port();
            agent.spawn();
            if agent.wait_ready().await {
                return agent;
            }
            agent.kill();
        }
        panic!("snmpd exited at start on three ports:\n{}", agent.log());
    }

    fn spawn(&mut self) {
        let log = File::create(self.dir.path().join("snmpd.log")).expect("log file");
        let spawned = Command::new("snmpd")
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(self.dir.path().join("snmpd.conf"))
            .arg(format!("udp:127.0.0.1:{}", self.port))
            // Persistent state (engine boots, …) in the temp dir, not /var/lib/snmp.
            .env("SNMP_PERSISTENT_DIR", self.dir.path().join("persist"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn();
        self.child = Some(match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "snmpd is not installed: the SNMP tests need the real net-snmp agent. \
                 Install it with `apt-get install -y snmpd`."
            ),
            Err(e) => panic!("cannot start snmpd: {e}"),
        });
    }

    /// Poll with GET sysUpTime until the agent answers; false if it exited (port taken).
    async fn wait_ready(&mut self) -> bool {
        let probe = self.probe(&format!("oids = {SYS_UPTIME}"));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if probe.collect(&run(Duration::from_millis(200))).await.failure.is_none() {
                return true;
            }
        }
        panic!("snmpd did not answer within {START_TIMEOUT:?}:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("snmpd.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A probe of this agent with `keys` besides the port.
    fn probe(&self, keys: &str) -> Arc<dyn Probe> {
        compile(&format!("port = {}\n{keys}", self.port))
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `SNMP` section of `keys`; panics on config errors.
fn compile(keys: &str) -> Arc<dyn Probe> {
    let path = Path::new("snmp.ini");
    let ini = Ini::parse(path, &format!("[collection_snmp]\n{keys}\n")).expect("INI syntax");
    let mut report = Report::default();
    let mut r = report.section(path, &ini.sections[0]);
    let probe = snmp::compile(&mut r);
    r.finish(UnknownKeys::Error);
    report.finish(probe).expect("valid SNMP section")
}

/// A run against 127.0.0.1 with `timeout`.
fn run(timeout: Duration) -> Run {
    Run {
        plugin: "test".into(),
        collection: "snmp".into(),
        plugin_dir: std::env::temp_dir(),
        target: "127.0.0.1".into(),
        items: Vec::new(),
        timeout,
        param: vec![],
        vars: BTreeMap::from([("target".to_string(), "127.0.0.1".to_string())]),
        limits: Arc::new(RunLimits::default()),
    }
}

/// The points' values by name; panics if the run failed.
fn values(out: &Outcome) -> BTreeMap<String, serde_json::Value> {
    assert_eq!(out.failure, None, "{out:?}");
    out.points.iter().map(|p| (p.name.clone(), p.value.clone())).collect()
}

#[tokio::test]
async fn get_returns_system_group_values() {
    let agent = Snmpd::start().await;
    let probe = agent.probe(&format!("oids = {SYS_DESCR}, {SYS_LOCATION} {SYS_UPTIME}"));
    let out = probe.collect(&run(Duration::from_secs(2))).await;
    let values = values(&out);
    assert_eq!(values.len(), 3, "{values:?}");
    let descr = &values[&format!("snmp.{SYS_DESCR}")];
    assert!(descr.as_str().is_some_and(|d| !d.is_empty()), "{descr:?}");
    assert_eq!(values[&format!("snmp.{SYS_LOCATION}")], "ironwork-test");
    assert!(values[&format!("snmp.{SYS_UPTIME}")].is_u64(), "{values:?}");
    let location = out
        .points
        .iter()
        .find(|p| p.name.ends_with(SYS_LOCATION))
        .expect("location");
    assert_eq!(location.tags["oid"], SYS_LOCATION);
    assert_eq!(location.tags["target"], "127.0.0.1");
}

#[tokio::test]
async fn bulk_returns_the_variables_after_an_oid() {
    let agent = Snmpd::start().await;
    let probe = agent.probe("snmp_method = bulk\noids = 1.3.6.1.2.1.1\nmax_repetitions = 6");
    let values = values(&probe.collect(&run(Duration::from_secs(2))).await);
    assert_eq!(values.len(), 6, "{values:?}");
    assert!(values.contains_key(&format!("snmp.{SYS_DESCR}")), "{values:?}");
    assert!(values.keys().all(|k| k.starts_with("snmp.1.3.6.1.2.1.")), "{values:?}");
}

#[tokio::test]
async fn bulk_stops_at_the_end_of_the_mib() {
    let agent = Snmpd::start().await;
    // Past everything net-snmp serves: every repetition is endOfMibView.
    let probe = agent.probe("snmp_method = bulk\noids = 2.39\nmax_repetitions = 3");
    assert_eq!(values(&probe.collect(&run(Duration::from_secs(2))).await).len(), 0);
}

#[tokio::test]
async fn a_wrong_community_times_out() {
    let agent = Snmpd::start().await;
    let probe = agent.probe(&format!("community = private\noids = {SYS_DESCR}"));
    let start = Instant::now();
    let out = probe.collect(&run(Duration::from_millis(500))).await;
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    let failure = out.failure.expect("no answer to a wrong community");
    assert_eq!(failure.kind, "timeout", "{failure:?}");
    assert!(out.points.is_empty());
}

#[tokio::test]
async fn a_nonexistent_oid_yields_no_point() {
    let agent = Snmpd::start().await;
    let probe = agent.probe(&format!(
        "oids = 1.3.6.1.2.1.1.99.0 {SYS_LOCATION} 1.3.6.1.4.1.99999.1.0"
    ));
    let values = values(&probe.collect(&run(Duration::from_secs(2))).await);
    assert_eq!(values.keys().collect::<Vec<_>>(), [&format!("snmp.{SYS_LOCATION}")]);
}
