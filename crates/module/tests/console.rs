//! ringmaster's console in a real headless Chromium (Debian's `chromium`, driven through
//! `chromedriver`), against a running home: the page shows the watchers, its restart button
//! restarts a step (its pid changes on the page), a dropped file moves the step's counter, and
//! a screenshot is written to `<target>/tmp/console.png`. The collection manager it names is the
//! one `ironwork status` names. With JavaScript off, the same page still lists the watchers, and
//! an action link leads to a page that asks for the token and a confirmation, then acts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use ironwork_test_support::http::request;
use ironwork_test_support::{free_tcp_port, wait_for};

mod common;
use common::{bin_dir, init, ironwork, text, Running, DEMO_STEP as PLUGIN};

/// chromedriver on a free port, killed with its browsers at drop.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = free_tcp_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: apt-get install -y chromium chromium-driver");
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "chromedriver did not answer");
        Driver(child, port)
    }

    async fn browser(&self, javascript: bool) -> Client {
        let mut caps = serde_json::Map::new();
        let mut options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"],
        });
        if !javascript {
            options["prefs"] = serde_json::json!({"profile.managed_default_content_settings.javascript": 2});
        }
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.1))
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn cell(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_steers_a_running_home_in_a_real_browser() {
    let bins = bin_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    init(&home, &bins);
    std::fs::create_dir_all(home.join("plugins/demo")).expect("plugin dir");
    std::fs::write(home.join("plugins/demo/config.ini"), PLUGIN).expect("plugin");
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let ini = home.join("config/ironwork.ini");
    let settings = std::fs::read_to_string(&ini)
        .expect("ironwork.ini")
        .replace("listen = 127.0.0.1:18870", &format!("listen = {addr}"))
        .replace("\ncollector = false\n", "\ncollector = true\n")
        .replace("\nreflector = false\n", "\nreflector = true\n")
        .replace("[collector]\n", "[collector]\nlisten =\n")
        .replace("[reflector]\n", "[reflector]\nlisten =\n");
    std::fs::write(&ini, settings).expect("write");
    let _running = Running(home.clone());
    let out = ironwork(&home, &["start", "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    let token = std::fs::read_to_string(home.join("var/state/console.token")).expect("console token");
    let token = token.trim();

    let driver = Driver::start();
    let c = driver.browser(true).await;
    c.goto(&format!("http://{addr}/")).await.expect("the page loads");
    let row = "tr[data-watcher='step.demo.main']";
    eventually("the live page", Duration::from_secs(10), || async {
        cell(&c, "#live").await == "live"
    })
    .await;
    for w in ["redis", "directory_observer", "step.switch.main", "step.demo.main"] {
        assert!(
            !cell(&c, &format!("tr[data-watcher='{w}'] td")).await.is_empty(),
            "{w} missing from the page"
        );
    }
    // The collector's and reflector's leaders, as `ironwork status` names them.
    eventually(
        "the collection manager on the page",
        Duration::from_secs(20),
        || async { cell(&c, "#metric tr:first-child td").await.contains('.') },
    )
    .await;
    let manager = cell(&c, "#metric tr:first-child td").await;
    assert!(manager.contains('.'), "{manager:?}");
    let status = text(&ironwork(&home, &["status"]));
    assert!(
        status.contains(&format!("collection manager: {manager}")),
        "{manager} vs\n{status}"
    );

    let workers = cell(&c, &format!("{row} ul")).await;
    let pid_before = workers.split_whitespace().nth(2).unwrap_or_default().to_string();
    assert!(pid_before.parse::<u32>().is_ok(), "no pid in {workers:?}");

    // The restart button: confirmed, with the token, the worker gets a new pid on the page.
    c.execute(
        "sessionStorage.setItem('ironwork-token', arguments[0]); window.confirm = () => true;",
        vec![token.into()],
    )
    .await
    .expect("script");
    // The live page replaces its rows every 2 s: find the link afresh at each try.
    let restart = format!("{row} a.act[data-action='restart']");
    eventually("the restart link to be clicked", Duration::from_secs(10), || async {
        match c.find(Locator::Css(&restart)).await {
            Ok(link) => link.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    eventually("a new pid on the page", Duration::from_secs(20), || async {
        let w = cell(&c, &format!("{row} ul")).await;
        let pid = w.split_whitespace().nth(2).unwrap_or_default().to_string();
        pid.parse::<u32>().is_ok() && pid != pid_before
    })
    .await;

    // A dropped file moves the step's counter.
    let pipeline_row = "#pipeline tr:has(td:first-child)";
    let files = || async {
        let rows = c.find_all(Locator::Css(pipeline_row)).await.unwrap_or_default();
        for r in rows {
            let t = r.text().await.unwrap_or_default();
            if let Some(rest) = t.strip_prefix("step.demo.main") {
                return rest.split_whitespace().next().and_then(|n| n.parse::<u64>().ok());
            }
        }
        None
    };
    let before = files().await.unwrap_or(0);
    let incoming = home.join("var/in/incoming");
    std::fs::write(incoming.join("hello.txt.t"), "hello\n").expect("write");
    std::fs::rename(incoming.join("hello.txt.t"), incoming.join("hello.txt")).expect("mv");
    eventually("the step counter to move", Duration::from_secs(30), || async {
        files().await.is_some_and(|n| n > before)
    })
    .await;

    let shot = c.screenshot().await.expect("screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&path, shot).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
    c.close().await.expect("close");

    // Without JavaScript: the page is complete as served, and an action link leads to a page
    // that asks for the token and a confirmation.
    let nojs = driver.browser(false).await;
    nojs.goto(&format!("http://{addr}/")).await.expect("the page loads");
    assert_eq!(cell(&nojs, "#live").await, "snapshot", "the script ran");
    assert!(!cell(&nojs, &format!("{row} td")).await.is_empty());
    nojs.find(Locator::Css(&format!("{row} a.act[data-action='incr']")))
        .await
        .expect("the incr link")
        .click()
        .await
        .expect("click");
    assert_eq!(cell(&nojs, "h1").await, "incr step.demo.main?");
    let form = nojs
        .form(Locator::Css("form.confirm"))
        .await
        .expect("the confirmation form");
    form.set_by_name("token", token).await.expect("token");
    form.submit().await.expect("submit");
    eventually("two workers after incr", Duration::from_secs(20), || async {
        nojs.refresh().await.ok();
        cell(&nojs, &format!("{row} td:nth-child(3)")).await == "2/2"
    })
    .await;
    nojs.close().await.expect("close");

    // The token is needed: a change without it is refused.
    let refused = request(
        &addr,
        "POST",
        "/action/stop/step.demo.main",
        &[("content-type", "text/plain")],
        b"confirm=yes",
    )
    .expect("request");
    assert_eq!(refused.status, 401);
}
