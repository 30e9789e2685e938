//! Plugin apps behind the generated nginx front, with the real nginx from Debian and the real
//! daemons: two apps of two workers serve their prefixes, nginx serves a static directory
//! itself, and under a steady load from a test client no request fails while a worker is
//! SIGKILLed, while a plugin edit reloads ringmaster and nginx, and while a broken nginx
//! template is refused (the old configuration keeps serving). The access log and the per-app
//! figures for the collector count every request.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironwork_test_support::http::request;

mod common;
use common::{bin_dir, init, ironwork, text, wait, Running};

/// A worker of app `shop/api`: answers `{"app", "pid", "path", "request_id"}`, slowly enough
/// (20 ms) that a killed or stopped worker has requests in flight.
const SHOP_WORKER: &str = r#"#!/usr/bin/env python3
import json, os, socketserver, sys, time
from http.server import BaseHTTPRequestHandler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def address_string(self):
        return "-"
    def log_message(self, *args):
        pass
    def do_GET(self):
        time.sleep(0.02)
        body = json.dumps({"app": os.environ["IRONWORK_APP_NAME"], "pid": os.getpid(),
                           "path": self.path, "request_id": self.headers.get("X-Request-Id")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

try:
    os.unlink(sys.argv[1])
except FileNotFoundError:
    pass
Server(sys.argv[1], Handler).serve_forever()
"#;

const SHOP_CONFIG: &str = "\
[app_api]
cmd_and_args = worker.py {unix_socket_path}
numprocesses = 2
timeout = 20
static = static
";

/// A steady load on `path` from two client threads; counts answers by status and the pids
/// that served them.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    pids: Arc<Mutex<Vec<(Instant, u64)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, path: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, failures, pids) = (stop.clone(), ok.clone(), failures.clone(), pids.clone());
                let (addr, path) = (addr.to_string(), path.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match request(&addr, "GET", &path, &[], b"") {
                            Ok(a) if a.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                let pid = a.json()["pid"].as_u64().unwrap_or(0);
                                pids.lock().expect("pids").push((Instant::now(), pid));
                            }
                            Ok(a) => failures
                                .lock()
                                .expect("failures")
                                .push(format!("{}: {}", a.status, a.text())),
                            Err(e) => failures.lock().expect("failures").push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            pids,
            threads,
        }
    }

    /// The pids that answered since `since`.
    fn pids_since(&self, since: Instant) -> BTreeSet<u64> {
        self.pids
            .lock()
            .expect("pids")
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, p)| *p)
            .collect()
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("load thread");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// The worker processes of the nginx master in `var/nginx.pid`.
fn nginx_workers(home: &Path) -> BTreeSet<i32> {
    let Ok(master) = std::fs::read_to_string(home.join("var/nginx.pid")) else {
        return BTreeSet::new();
    };
    let master = master.trim();
    std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn apps_serve_behind_nginx_and_no_request_fails_through_kills_reloads_and_a_bad_template() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    init(&home, &bins);
    let port = ironwork_test_support::free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let ini = home.join("config/ironwork.ini");
    let settings = std::fs::read_to_string(&ini)
        .expect("ironwork.ini")
        .replace("listen = 127.0.0.1:18868", &format!("listen = {addr}"))
        .replace("worker_processes = auto", "worker_processes = 1");
    std::fs::write(&ini, settings).expect("write settings");

    // shop/api: a worker written here, and a static directory. blog/main: the app-command template.
    let shop = home.join("plugins/shop");
    std::fs::create_dir_all(shop.join("static")).expect("plugin dir");
    std::fs::write(shop.join("config.ini"), SHOP_CONFIG).expect("config");
    std::fs::write(shop.join("worker.py"), SHOP_WORKER).expect("worker");
    std::fs::write(shop.join("static/hello.txt"), "served by nginx\n").expect("static");
    let exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    exec(&shop.join("worker.py"));
    let out = ironwork(&home, &["plugins", "create", "blog", "--template", "app-command"]);
    assert!(out.status.success(), "{}", text(&out));

    let _running = Running(home.clone());
    let out = ironwork(&home, &["start", "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    for w in ["nginx", "app.shop.api", "app.blog.main"] {
        assert!(text(&out).contains(w), "{w} missing from:\n{}", text(&out));
    }
    let get = |path: &str| request(&addr, "GET", path, &[], b"");
    wait("both apps to answer through nginx", Duration::from_secs(30), || {
        get("/shop/api/").is_ok_and(|a| a.status == 200) && get("/blog/main/").is_ok_and(|a| a.status == 200)
    });

    // Each app at its prefix, both workers used, the request id given to the app and back.
    let mut shop_pids = BTreeSet::new();
    for _ in 0..20 {
        let a = get("/shop/api/items?x=1").expect("shop");
        assert_eq!(a.status, 200);
        let body = a.json();
        assert_eq!(body["app"], "api");
        assert_eq!(body["path"], "/shop/api/items?x=1");
        let id = a.header("x-request-id").expect("X-Request-Id on the answer");
        assert_eq!(body["request_id"], id, "the app saw another request id");
        shop_pids.insert(body["pid"].as_u64().expect("pid"));
    }
    assert_eq!(shop_pids.len(), 2, "both workers of shop/api serve: {shop_pids:?}");
    let a = request(&addr, "GET", "/blog/main/", &[("X-Request-Id", "given-by-client")], b"").expect("blog");
    assert_eq!(a.json()["app"], "blog/main");
    assert_eq!(a.json()["request_id"], "given-by-client");
    assert_eq!(get("/blog/main/healthz").expect("health").text(), "ok\n");
    let a = get("/shop/api/static/hello.txt").expect("static");
    assert_eq!((a.status, a.text().as_str()), (200, "served by nginx\n"));
    assert_eq!(get("/nowhere/").expect("unknown").status, 404);

    // The access log: one JSON object per request in the mflog shape, with plugin and app.
    let log = home.join("log/nginx_access.log");
    wait("the access log", Duration::from_secs(10), || {
        // Each nginx worker flushes its own buffer every second.
        std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("\"uri\":\"/blog/main/healthz\"") && t.contains("/shop/api/static/hello.txt"))
    });
    let line = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .find(|l| l.contains("/shop/api/static/hello.txt"))
        .expect("static request logged")
        .to_string();
    let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON access log line");
    for (k, v) in [("plugin", "shop"), ("app", "api"), ("level", "info"), ("name", "nginx")] {
        assert_eq!(entry[k], v, "{k} in {line}");
    }
    assert_eq!(entry["status"], 200);
    assert!(
        entry["timestamp"].is_string() && entry["request_id"].is_string(),
        "{line}"
    );

    // Per-app figures for the collector start counting here.
    let stats_of = |plugin: &str| -> serde_json::Value {
        let out = ironwork(&home, &["apps", "stats", "--plugin", plugin]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("stats are JSON")
    };
    let stats = |_: &Path| stats_of("shop");
    stats(&home);
    // blog/main has a health path: both workers answer it.
    let blog = stats_of("blog");
    let up = blog
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["name"] == "app.workers_up")
        .unwrap_or_else(|| panic!("no app.workers_up in {blog}"));
    assert_eq!(
        (up["tags"]["app"].as_str(), up["value"].as_f64()),
        (Some("main"), Some(2.0))
    );

    let load = Load::start(&addr, "/shop/api/");
    std::thread::sleep(Duration::from_millis(500));

    // 1. SIGKILL a worker: nginx sends its requests to the other one, ringmaster replaces it.
    let victim = *shop_pids.iter().next().expect("a pid");
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill");
    let killed_at = Instant::now();
    wait("a replacement worker to serve", Duration::from_secs(30), || {
        let seen = load.pids_since(killed_at);
        seen.len() >= 2 && !seen.contains(&victim)
    });

    // 2. A plugin edit: conf_monitor regenerates; ringmaster hands each slot over to a new
    // worker and nginx reloads its new timeouts, without a failed request.
    let before: BTreeSet<u64> = load.pids_since(Instant::now() - Duration::from_millis(300));
    let nginx_workers_before = nginx_workers(&home);
    assert!(!nginx_workers_before.is_empty());
    std::fs::write(
        shop.join("config.ini"),
        SHOP_CONFIG.replace("timeout = 20", "timeout = 25"),
    )
    .expect("edit");
    let nginx_conf = home.join("tmp/config_auto/nginx.conf");
    wait("nginx.conf regenerated", Duration::from_secs(30), || {
        std::fs::read_to_string(&nginx_conf).is_ok_and(|t| t.contains("proxy_read_timeout 25s"))
    });
    let edited = Instant::now();
    wait("new workers only", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(300));
        let seen = load.pids_since(Instant::now() - Duration::from_millis(300));
        seen.len() == 2 && seen.is_disjoint(&before) && edited.elapsed() > Duration::from_secs(1)
    });
    // SIGHUP: nginx starts new workers on the new file and lets the old ones finish.
    wait("nginx to reload", Duration::from_secs(30), || {
        let now = nginx_workers(&home);
        !now.is_empty() && now.is_disjoint(&nginx_workers_before)
    });

    // 3. A broken template is refused by `nginx -t`; the running configuration stays.
    let good = std::fs::read_to_string(&nginx_conf).expect("nginx.conf");
    std::fs::write(
        home.join("config/nginx.conf.template"),
        ironwork::nginx::TEMPLATE.replace("sendfile on;", "sendfile maybe;"),
    )
    .expect("template");
    wait("the refusal in status", Duration::from_secs(30), || {
        let o = ironwork(&home, &["status"]);
        !o.status.success() && text(&o).contains("nginx refuses")
    });
    assert_eq!(std::fs::read_to_string(&nginx_conf).expect("nginx.conf"), good);
    std::thread::sleep(Duration::from_secs(1));

    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests (of {}): {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 100, "too few requests under load: {ok}");

    // Every request of the load is in shop/api's figures, all 2xx, from two live workers.
    std::thread::sleep(Duration::from_secs(2));
    let points = stats(&home);
    let value = |name: &str| -> f64 {
        points
            .as_array()
            .expect("a list")
            .iter()
            .find(|p| p["name"] == name && p["tags"]["app"] == "api")
            .unwrap_or_else(|| panic!("{name} missing from {points}"))["value"]
            .as_f64()
            .expect("a number")
    };
    assert_eq!(value("app.requests") as usize, ok, "{points}");
    assert_eq!(value("app.status_2xx") as usize, ok, "{points}");
    assert_eq!(value("app.status_5xx"), 0.0);
    assert!(value("app.latency_ms.p50") >= 20.0, "the worker takes 20 ms: {points}");
    assert!(value("app.latency_ms.p99") >= value("app.latency_ms.p50"));
    assert_eq!((value("app.workers"), value("app.workers_up")), (2.0, 2.0));

    // A good template is picked up again, and the operator's text is in force.
    std::fs::write(
        home.join("config/nginx.conf.template"),
        ironwork::nginx::TEMPLATE.replace("server_tokens off;", "server_tokens off;\n    # operator template"),
    )
    .expect("template");
    wait("the operator's template", Duration::from_secs(30), || {
        std::fs::read_to_string(&nginx_conf).is_ok_and(|t| t.contains("# operator template"))
    });
    assert_eq!(get("/shop/api/").expect("after").status, 200);

    let out = ironwork(&home, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
}
