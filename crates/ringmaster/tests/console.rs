//! The console over plain HTTP against a real ringmaster: bound beyond loopback every request
//! needs the token; actions need it and a confirmation; the token file is private; a stop shows
//! as a stopped watcher and a recent event; log tails and server-sent events answer.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ironwork_test_support::http::request;
use ironwork_test_support::{free_tcp_port, wait_for};

struct Rm(Child, tempfile::TempDir);

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ringmaster with a console on `listen` (`ip:port`), once it answers; and `127.0.0.1:<port>`.
fn start(listen: &str) -> (Rm, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let ini = format!(
        "[circus]\nendpoint = ipc://{d}/ringmaster.sock\n\n[ringmaster]\nconsole = {listen}\n\n\
         [watcher:talker]\ncmd = sh\nargs = -c 'echo hello from the talker; exec sleep 1000'\n",
        d = dir.path().display()
    );
    let config = dir.path().join("ringmaster.ini");
    std::fs::write(&config, ini).expect("ini");
    let child = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringmaster");
    let rm = Rm(child, dir);
    let port = listen.rsplit(':').next().unwrap_or_default();
    let addr = format!("127.0.0.1:{port}");
    assert!(wait_for(Duration::from_secs(10), || request(
        &addr,
        "GET",
        "/",
        &[],
        b""
    )
    .is_ok()));
    (rm, addr)
}

#[test]
fn beyond_loopback_the_token_guards_every_page_and_actions_need_a_confirmation() {
    let port = free_tcp_port();
    let (rm, addr) = start(&format!("0.0.0.0:{port}"));
    let token_file = rm.1.path().join("console.token");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    let mode = std::fs::metadata(&token_file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bearer = format!("Bearer {}", token.trim());
    let auth = [("authorization", bearer.as_str())];

    assert_eq!(request(&addr, "GET", "/", &[], b"").expect("get").status, 401);
    assert_eq!(
        request(&addr, "GET", "/api/state", &[("authorization", "Bearer nope")], b"")
            .expect("get")
            .status,
        401
    );
    // A browser opens `/?token=…` once and reads with the cookie it gets.
    let login = request(&addr, "GET", &format!("/?token={}", token.trim()), &[], b"").expect("login");
    assert_eq!(login.status, 303);
    let cookie = login
        .header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    assert_eq!(
        request(&addr, "GET", "/api/state", &[("cookie", cookie.as_str())], b"")
            .expect("get")
            .status,
        200
    );
    let cookie_only = [("cookie", cookie.as_str()), ("content-type", "text/plain")];
    let no_token = request(&addr, "POST", "/action/stop/talker", &cookie_only, b"confirm=yes").expect("post");
    assert_eq!(no_token.status, 401, "the cookie alone must not change anything");
    let page = request(&addr, "GET", "/", &auth, b"").expect("page");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.status, 200);
    assert!(page.text().contains("data-watcher=\"talker\""), "{}", page.text());

    let ready = wait_for(Duration::from_secs(10), || {
        request(&addr, "GET", "/logs/talker?lines=5", &auth, b"")
            .is_ok_and(|a| a.text().contains("hello from the talker"))
    });
    assert!(ready, "no log tail");

    let plain = [("authorization", bearer.as_str()), ("content-type", "text/plain")];
    let unconfirmed = request(&addr, "POST", "/action/stop/talker", &plain, b"").expect("post");
    assert_eq!(unconfirmed.status, 400);
    assert_eq!(
        request(&addr, "POST", "/action/kill/talker", &plain, b"confirm=yes")
            .expect("post")
            .status,
        404
    );
    let stopped = request(&addr, "POST", "/action/stop/talker", &plain, b"confirm=yes").expect("post");
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    assert_eq!(stopped.json()["status"], "ok");
    let state = || request(&addr, "GET", "/api/state", &auth, b"").expect("state").json();
    assert!(wait_for(Duration::from_secs(10), || state()["watchers"][0]["status"]
        == "stopped"));
    // The snapshot is at most 2 s old; the next one has every event of the stop.
    std::thread::sleep(Duration::from_millis(2500));
    let state = state();
    let events: Vec<&str> = state["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["watcher"] == "talker")
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(events.contains(&"stop"), "{state}");
    // Neither the stop signal nor an exit ringmaster asked for crowds the list.
    assert!(!events.contains(&"reap") && !events.contains(&"kill"), "{state}");
    // Without JavaScript an action is a page that asks first; patterns are refused.
    let confirm = request(&addr, "GET", "/action/start/talker", &auth, b"").expect("confirm page");
    assert!(
        confirm
            .text()
            .contains("form method=\"post\" action=\"/action/start/talker\""),
        "{}",
        confirm.text()
    );
    for bad in ["/action/stop/", "/action/stop/t%2A", "/action/stop/*"] {
        assert_eq!(
            request(&addr, "POST", bad, &plain, b"confirm=yes")
                .expect("post")
                .status,
            404,
            "{bad}"
        );
    }

    // Server-sent events: the first snapshot comes at once, with the page's parts rendered.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    use std::io::{Read, Write};
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n\r\n").expect("write");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("watchers-body") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("text/event-stream") && text.contains("event: state"),
        "{text}"
    );
}

#[test]
fn a_loopback_console_reads_without_a_token_but_only_under_its_own_host_names() {
    let port = free_tcp_port();
    let (_rm, addr) = start(&format!("127.0.0.1:{port}"));
    assert_eq!(request(&addr, "GET", "/", &[], b"").expect("page").status, 200);
    let get = |host: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "GET /api/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    assert!(get(&format!("localhost:{port}")).starts_with("HTTP/1.1 200"));
    // A name a hostile page's DNS points at 127.0.0.1 (rebinding) is refused.
    assert!(get(&format!("evil.example:{port}")).starts_with("HTTP/1.1 421"));
}
