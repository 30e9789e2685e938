//! `ironwork demo`: the whole stack on a temporary home, shown working. A demo plugin (one step
//! running `wc -c` on each file, switch rules for `*.txt` and `*.csv`) is installed, the stack
//! is started, sample files are dropped into `var/in/incoming` (as `NAME.t` then renamed, the
//! writers' convention), and the demo shows them routed and processed, the file no rule
//! matched kept in the trash with its tags, the Redis counters, a killed worker replaced, the
//! status table, and an ordered stop. The demo plugin's app answers through the generated nginx
//! front and is restarted under load without a failed request. mflog2mfadmin runs too and ships the daemons' own logs
//! into `es_sink`, the in-repo Elasticsearch-compatible `_bulk` sink, started for the demo; the
//! collector runs the demo plugin's collection and its agent API answers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::home::Home;

/// The demo plugin, `etc/plugins/demo/config.ini` (loaded by a test with the plugin parser).
const DEMO_PLUGIN: &str = include_str!("../../../etc/plugins/demo/config.ini");
/// Its app's worker.
const DEMO_APP: &str = include_str!("../../../etc/plugins/demo/hello.py");
/// The file nginx serves from the app's static directory.
const DEMO_STATIC: &str = include_str!("../../../etc/plugins/demo/www/hello.txt");

const SAMPLES: &[(&str, &str)] = &[
    ("report.txt", "quarterly figures\n"),
    ("notes.txt", "remember the milk\n"),
    ("table.csv", "a,b\n1,2\n"),
    ("image.bin", "\u{1}\u{2}\u{3} not a text file\n"),
];

fn say(title: &str) {
    println!("\n== {title}");
}

/// Run the demo in a new temporary home next to `std::env::temp_dir()`; keep it if `keep`.
pub async fn run(keep: bool) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("ironwork-demo-{}", std::process::id()));
    let home = Home::init(&root)?;
    let result = show(&home).await;
    let stopped = crate::lifecycle::stop(&home, Duration::from_secs(120)).await;
    if keep {
        println!("\nthe demo home stays in {}", home.root.display());
    } else {
        let _ = std::fs::remove_dir_all(&home.root);
    }
    result?;
    stopped.map(drop)
}

async fn show(home: &Home) -> anyhow::Result<()> {
    println!("runtime home: {}", home.root.display());
    let plugin = home.plugin_dir("demo");
    std::fs::create_dir_all(&plugin)?;
    std::fs::write(plugin.join("config.ini"), DEMO_PLUGIN)?;
    std::fs::write(plugin.join("hello.py"), DEMO_APP)?;
    std::fs::create_dir_all(plugin.join("www"))?;
    std::fs::write(plugin.join("www/hello.txt"), DEMO_STATIC)?;
    let ini = home.ironwork_ini();
    let settings = std::fs::read_to_string(&ini)?;
    // Keep what matches no rule, so the demo can show it.
    std::fs::write(
        &ini,
        settings.replace("no_match_policy = delete", "no_match_policy = keep"),
    )?;

    let (_, bins) = crate::cli::generate(home)?;
    let sink = DemoSink::start(&bins)?;
    println!("demo Elasticsearch (es_sink, the in-repo _bulk sink): {}", sink.url);
    let settings = std::fs::read_to_string(&ini)?;
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let front = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    std::fs::write(
        &ini,
        set_key(
            &settings
                .replace("mflog2mfadmin = false", "mflog2mfadmin = true")
                .replace("collector = false", "collector = true")
                .replace("reflector = false", "reflector = true")
                .replace("#listen = 127.0.0.1:9477", &format!("listen = {api}"))
                .replace("listen = 127.0.0.1:18868", &format!("listen = {front}")),
            "elasticsearch",
            "url",
            &sink.url,
        ),
    )?;

    say("ironwork start (generates tmp/config_auto/, starts ringmaster, waits for every watcher)");
    let (_, bins) = crate::cli::generate(home)?;
    let report = crate::lifecycle::start(
        home,
        &bins.join("ringmaster"),
        &home.ringmaster_ini(),
        Duration::from_secs(60),
    )
    .await?;
    print!("{report}");

    say("drop files into var/in/incoming (written as NAME.t, then renamed)");
    let incoming = home.incoming_dir();
    for (name, body) in SAMPLES {
        let part = incoming.join(format!("{name}.t"));
        std::fs::write(&part, body)?;
        std::fs::rename(&part, incoming.join(name))?;
        println!("  {name}");
    }
    let routed = SAMPLES
        .iter()
        .filter(|(n, _)| n.ends_with(".txt") || n.ends_with(".csv"))
        .count();
    let trash = home.trash_dir().join("switch.nomatch");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(counter(home, "counter.demo.main").await == routed as u64 && count(&trash) == 2) {
        anyhow::ensure!(Instant::now() < deadline, "the files did not go through within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    say("the demo step ran `wc -c FILE` on each routed file (log/step_demo_main.log)");
    for line in command_output(&home.log_dir().join("step_demo_main.log")) {
        println!("  {line}");
    }
    say("no rule matched image.bin: kept in var/in/trash/switch.nomatch/ with its tags");
    for e in std::fs::read_dir(&trash)?.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "tags") {
            let tags = std::fs::read_to_string(&path).unwrap_or_default();
            for l in tags
                .lines()
                .filter(|l| l.starts_with("first.core.") || l.contains("enter_step"))
            {
                println!("  {l}");
            }
        }
    }
    say("mflog2mfadmin shipped the daemons' own logs (log/*.log) into the demo Elasticsearch");
    let deadline = Instant::now() + Duration::from_secs(20);
    let indices = loop {
        let indices = sink.indices();
        if indices.iter().any(|(i, n)| i.starts_with("mflog-") && *n > 0) {
            break indices;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no log line reached the demo Elasticsearch within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (index, docs) in indices {
        println!("  {index}: {docs} documents");
    }

    say("the collector ran the demo plugin's collection (SYSTEM load, memory) every 2 s; the reflector reflected it");
    let deadline = Instant::now() + Duration::from_secs(20);
    let data = loop {
        if let Some(d) = sniffed_result(home).await {
            break d;
        }
        anyhow::ensure!(Instant::now() < deadline, "no collection result within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "  collector.data.sniffer.queue (copied by the reflection demo.host): {}.{} on {} (correlation_info {})",
        data["plugin"].as_str().unwrap_or(""),
        data["collection"].as_str().unwrap_or(""),
        data["target"].as_str().unwrap_or(""),
        data["correlation_info"]
    );
    for p in data["points"].as_array().into_iter().flatten().take(5) {
        println!("    {} = {}", p["name"].as_str().unwrap_or(""), p["value"]);
    }
    for (key, value) in cached(home, "reflector.cache.demo.host.*").await.into_iter().take(3) {
        println!("  reflector cache: {key} = {}", value["value"]);
    }
    let status = agent_status(&api.to_string()).unwrap_or_default();
    println!(
        "  GET http://{api}/me/status: leader {}, runs ok {}, failed {}",
        status["leader"], status["counters"]["runs_ok"], status["counters"]["runs_failed"]
    );

    show_app(home, &front).await?;

    say("Redis counters: files that entered each step");
    println!(
        "  switch/main: {}   demo/main: {}",
        counter(home, "counter.switch.main").await,
        counter(home, "counter.demo.main").await
    );

    let pids = pids(home, "step.demo.main").await?;
    let victim = *pids.first().context("no demo worker runs")?;
    say(&format!(
        "kill -9 {victim} (a demo step worker): ringmaster replaces it"
    ));
    nix_kill(victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = self::pids(home, "step.demo.main").await?;
        if now.len() == pids.len() && !now.contains(&victim) {
            println!("  workers before: {pids:?}   after: {now:?}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the worker was not replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    show_console(home);
    say("ironwork status");
    print!("{}", crate::lifecycle::status(home).await?);
    say("ironwork stop (ordered: steps first, Redis last)");
    Ok(())
}

/// The demo app: requests through nginx to both workers, a static file, a restart under load
/// without a failed request, and the per-app figures the collector gets.
async fn show_app(home: &Home, front: &str) -> anyhow::Result<()> {
    let plugin = crate::plugin::Plugin::load(&home.plugin_dir("demo"), None).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The figures count from here.
    crate::app_stats::read(home, &plugin, "demo")?;
    say(&format!(
        "the demo app: nginx on {front} in front of two workers of demo/hello (hello.py, one unix socket each)"
    ));
    for _ in 0..4 {
        let (status, body) = http_get(front, "/demo/hello/").context("the demo app does not answer")?;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        println!(
            "  GET /demo/hello/ -> {status}, worker {}, X-Request-Id {}",
            v["worker"], v["request_id"]
        );
    }
    let (status, body) = http_get(front, "/demo/hello/static/hello.txt").context("no static answer")?;
    println!(
        "  GET /demo/hello/static/hello.txt -> {status} (nginx itself): {}",
        body.trim()
    );

    let before = pids(home, "app.demo.hello").await?;
    say("ringctl restart app.demo.hello while requests flow: each worker is drained, then replaced");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, front) = (stop.clone(), front.to_string());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(&front, "/demo/hello/") {
                    Some((200, _)) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = ringmaster::control::Client::connect(&home.ringmaster_socket()).await?;
    let mut props = Map::new();
    props.insert("name".into(), json!("app.demo.hello"));
    client.call("restart", props).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = pids(home, "app.demo.hello").await?;
        if now.len() == before.len() && now.iter().all(|p| !before.contains(p)) {
            break now;
        }
        anyhow::ensure!(Instant::now() < deadline, "the app was not handed over within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    println!("  workers before: {before:?}   after: {after:?}");
    println!("  requests during the restart: {ok} answered 200, {failed} failed");

    // nginx writes its access log every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let figures = crate::app_stats::read(home, &plugin, "demo")?;
    let f = figures.get("hello").context("no figures for demo/hello")?;
    say("per-app figures for the collector (`ironwork apps stats --plugin demo`, log/nginx_access.log)");
    println!(
        "  demo.app.requests = {}   status 2xx = {}   5xx = {}   p99 = {:.1} ms",
        f.requests,
        f.classes[1],
        f.classes[4],
        f.quantile_ms(0.99).unwrap_or(0.0)
    );
    Ok(())
}

/// The console ringmaster serves: what its snapshot holds.
fn show_console(home: &Home) {
    let Some(addr) = crate::settings::Settings::load(home)
        .ok()
        .and_then(|s| s.console.listen)
    else {
        return;
    };
    say(&format!(
        "the console: http://{addr}/ (changes need var/state/console.token)"
    ));
    match http_get(&addr.to_string(), "/api/state").and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok()) {
        Some(state) => {
            let count = |k: &str| state[k].as_array().map_or(0, Vec::len);
            let files: Vec<String> = state["pipeline"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{} {}", p["step"].as_str().unwrap_or_default(), p["files"]))
                .collect();
            println!(
                "  {} watchers, {} queues, files per step: {}",
                count("watchers"),
                count("queues"),
                files.join(", ")
            );
        }
        None => println!("  not answering (is {addr} taken by another program?)"),
    }
}

/// `GET path` on `addr`: the status and the body (`Connection: close`, no chunking expected).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw.split_once("\r\n\r\n")?.1.to_string()))
}

/// `text` (an ini file) with `key = value` in `[section]`.
fn set_key(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut current = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            current = trimmed[1..trimmed.len() - 1].to_string();
        }
        let is_key = trimmed.split_once('=').is_some_and(|(k, _)| k.trim() == key);
        if current == section && is_key {
            out.push_str(&format!("{key} = {value}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `es_sink` on a free port, stopped with the demo.
struct DemoSink {
    child: std::process::Child,
    url: String,
}

impl DemoSink {
    fn start(bins: &Path) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let bin = bins.join("es_sink");
        let mut child = std::process::Command::new(&bin)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .context("es_sink did not say where it listens")?;
        Ok(Self {
            url: format!("http://{addr}"),
            child,
        })
    }

    /// `(index, documents)` from `_cat/indices`.
    fn indices(&self) -> Vec<(String, u64)> {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return Vec::new();
        };
        let request = format!("GET /_cat/indices?format=json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut raw = String::new();
        if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut raw).is_err() {
            return Vec::new();
        }
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let rows: Vec<Value> = serde_json::from_str(body).unwrap_or_default();
        let mut out: Vec<(String, u64)> = rows
            .iter()
            .filter_map(|r| {
                let docs = r.get("docs.count")?.as_str()?.parse().ok()?;
                Some((r.get("index")?.as_str()?.to_string(), docs))
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for DemoSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn command_output(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"command output\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("line").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The newest collected data the demo reflection copied to the sniffer queue, if any.
async fn sniffed_result(home: &Home) -> Option<Value> {
    let url = format!("unix://{}", home.redis_socket().display());
    let client = redis::Client::open(url.as_str()).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let raw: Option<String> = redis::cmd("LINDEX")
        .arg(ironwork_core::messages::names::COLLECTOR_DATA_SNIFFER)
        .arg(0)
        .query_async(&mut c)
        .await
        .ok()?;
    serde_json::from_str(&raw?).ok()
}

/// The reflector's cached values whose keys match `pattern`, sorted by key.
async fn cached(home: &Home, pattern: &str) -> Vec<(String, Value)> {
    let url = format!("unix://{}", home.redis_socket().display());
    let Ok(client) = redis::Client::open(url.as_str()) else {
        return Vec::new();
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let raw: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if let Some(v) = raw.and_then(|r| serde_json::from_str(&r).ok()) {
            out.push((key, v));
        }
    }
    out
}

/// `GET /me/status` of the collector's agent API.
fn agent_status(addr: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /me/status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    serde_json::from_str(raw.split_once("\r\n\r\n")?.1.trim()).ok()
}

async fn counter(home: &Home, key: &str) -> u64 {
    let url = format!("unix://{}", home.redis_socket().display());
    let Ok(client) = redis::Client::open(url.as_str()) else {
        return 0;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<u64>>(&mut c)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn pids(home: &Home, watcher: &str) -> anyhow::Result<Vec<i64>> {
    let mut client = ringmaster::control::Client::connect(&home.ringmaster_socket()).await?;
    let mut props = Map::new();
    props.insert("name".into(), json!(watcher));
    let reply = client.call("list", props).await?;
    Ok(reply
        .body
        .get("pids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default())
}

fn nix_kill(pid: i64) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_key_changes_only_its_section() {
        let text = "[redis]\nurl =\n[elasticsearch]\n# c\nurl =\n[influxdb]\nurl =\n";
        assert_eq!(
            super::set_key(text, "elasticsearch", "url", "http://x"),
            "[redis]\nurl =\n[elasticsearch]\n# c\nurl = http://x\n[influxdb]\nurl =\n"
        );
    }

    #[test]
    fn the_demo_plugin_in_etc_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/plugins/demo");
        let plugin = crate::plugin::Plugin::load(&dir, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plugin.steps.len(), 1);
        assert_eq!(plugin.apps.len(), 1);
    }
}
