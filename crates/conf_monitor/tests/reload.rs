//! conf_monitor against a real Redis and a temporary home: edits regenerate the files and
//! reach ringmaster's control queue; a broken edit changes nothing and is reported.

use std::path::Path;
use std::time::Duration;

use ironwork::home::Home;
use ironwork_core::{CancellationToken, Redis};
use ironwork_test_support::RedisServer;

const PLUGIN: &str = "[step_main]\ncmd_and_args = /bin/cat\nnumprocesses = 1\n";

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// conf_monitor on `home`, polling fast, against `server`.
fn spawn(server: &RedisServer, home: &Home) -> (tokio::task::JoinHandle<anyhow::Result<()>>, CancellationToken) {
    let redis = Redis::open(&server.url()).expect("redis");
    let token = CancellationToken::new();
    let options = conf_monitor::Options {
        bin_dir: "/opt/ironwork/bin".into(),
        poll: Duration::from_millis(50),
        quiet: Duration::from_millis(200),
    };
    let task = tokio::spawn(conf_monitor::run(Home::new(&home.root), redis, options, token.clone()));
    (task, token)
}

#[tokio::test]
async fn edits_are_regenerated_announced_and_broken_ones_refused() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::init(&dir.path().join("home")).expect("init");
    write(&home.plugin_dir("demo").join("config.ini"), PLUGIN);
    let (task, token) = spawn(&server, &home);
    let ini = home.ringmaster_ini();
    let control = || server.cli(&["LRANGE", "ringmaster.control", "0", "-1"]);
    let status = || server.cli(&["GET", "conf_monitor.status"]);

    // First look: everything generated, ringmaster told to reload, the observer to re-read.
    until("first generation", || {
        control().contains("reloadconfig") && control().contains("\"HUP\"")
    })
    .await;
    assert!(std::fs::read_to_string(&ini).is_ok_and(|t| t.contains("[watcher:step.demo.main]")));
    assert!(status().contains("\"ok\":true"), "{}", status());

    // numprocesses 1 → 3: one more reloadconfig, the new value in the generated file.
    server.cli(&["DEL", "ringmaster.control"]);
    write(
        &home.plugin_dir("demo").join("config.ini"),
        &PLUGIN.replace("numprocesses = 1", "numprocesses = 3"),
    );
    until("regeneration", || control().contains("reloadconfig")).await;
    let text = std::fs::read_to_string(&ini).unwrap_or_default();
    assert!(text.contains("numprocesses = 3"), "{text}");
    assert!(
        !control().contains("\"HUP\""),
        "the observer's file did not change: {}",
        control()
    );

    // A broken edit: nothing regenerated, nothing announced, the errors published.
    server.cli(&["DEL", "ringmaster.control"]);
    write(
        &home.plugin_dir("demo").join("config.ini"),
        "[step_main]\nnumprocesses = many\n",
    );
    until("refusal", || status().contains("\"ok\":false")).await;
    let s = status();
    assert!(
        s.contains("numprocesses") && s.contains("cmd_and_args"),
        "every error listed: {s}"
    );
    assert_eq!(
        std::fs::read_to_string(&ini).unwrap_or_default(),
        text,
        "the last good files stay"
    );
    assert!(control().trim().is_empty(), "nothing announced: {}", control());

    // Fixed again: accepted.
    write(&home.plugin_dir("demo").join("config.ini"), PLUGIN);
    until("acceptance", || status().contains("\"ok\":true")).await;

    token.cancel();
    task.await.expect("join").expect("conf_monitor ran cleanly");
}

#[tokio::test]
async fn files_generated_while_conf_monitor_was_away_are_still_announced() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::init(&dir.path().join("home")).expect("init");
    write(&home.plugin_dir("demo").join("config.ini"), PLUGIN);
    // Generated (e.g. by `ironwork generate`) before conf_monitor runs: no file will change.
    conf_monitor::regenerate(&home, Path::new("/opt/ironwork/bin")).expect("generated");
    let (task, token) = spawn(&server, &home);
    let control = || server.cli(&["LRANGE", "ringmaster.control", "0", "-1"]);
    until("the first pass to announce", || {
        control().contains("reloadconfig") && control().contains("\"HUP\"")
    })
    .await;
    token.cancel();
    task.await.expect("join").expect("conf_monitor ran cleanly");
}

#[tokio::test]
async fn notifications_wait_for_redis_and_watching_goes_on() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::init(&dir.path().join("home")).expect("init");
    write(&home.plugin_dir("demo").join("config.ini"), PLUGIN);
    let (task, token) = spawn(&server, &home);
    until("first generation", || {
        server
            .cli(&["LRANGE", "ringmaster.control", "0", "-1"])
            .contains("reloadconfig")
    })
    .await;
    server.kill();
    write(
        &home.plugin_dir("demo").join("config.ini"),
        &PLUGIN.replace("numprocesses = 1", "numprocesses = 2"),
    );
    // Still watching while Redis is away: the files are regenerated.
    until("regeneration without Redis", || {
        std::fs::read_to_string(home.ringmaster_ini()).is_ok_and(|t| t.contains("numprocesses = 2"))
    })
    .await;
    server.start_again();
    until("the held reload", || {
        let all = server.cli(&["LRANGE", "ringmaster.control", "0", "-1"]);
        all.contains("reloadconfig")
    })
    .await;
    token.cancel();
    task.await.expect("join").expect("conf_monitor ran cleanly");
}

#[tokio::test]
async fn a_changed_collection_sends_sighup_to_the_collector_only_when_it_runs() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::init(&dir.path().join("home")).expect("init");
    let settings = std::fs::read_to_string(home.ironwork_ini()).expect("settings");
    write(
        &home.ironwork_ini(),
        &settings.replace("collector = false", "collector = true"),
    );
    let with_collection = format!("{PLUGIN}\n[collection_ping]\nmethod = TCP\nport = 22\ninterval = 10\n");
    write(&home.plugin_dir("demo").join("config.ini"), &with_collection);
    let (task, token) = spawn(&server, &home);
    let control = || server.cli(&["LRANGE", "ringmaster.control", "0", "-1"]);
    let collector_hup = |c: &str| c.lines().any(|l| l.contains("\"collector\"") && l.contains("\"HUP\""));
    until("the first pass to tell the collector", || collector_hup(&control())).await;
    let generated = std::fs::read_to_string(home.collector_ini()).expect("collector.ini");
    assert!(generated.contains("[collection:demo.ping]"), "{generated}");

    // The collection's interval changes: only the collector's file changes, and it hears of it.
    server.cli(&["DEL", "ringmaster.control"]);
    write(
        &home.plugin_dir("demo").join("config.ini"),
        &with_collection.replace("interval = 10", "interval = 20"),
    );
    until("the collector told again", || collector_hup(&control())).await;
    assert!(
        !control().contains("reloadconfig"),
        "ringmaster.ini did not change: {}",
        control()
    );
    token.cancel();
    task.await.expect("join").expect("conf_monitor ran cleanly");

    // Without a collector watcher, nobody is told.
    write(&home.ironwork_ini(), &settings);
    server.cli(&["DEL", "ringmaster.control"]);
    let (task, token) = spawn(&server, &home);
    until("the first pass", || control().contains("reloadconfig")).await;
    assert!(!collector_hup(&control()), "{}", control());
    token.cancel();
    task.await.expect("join").expect("conf_monitor ran cleanly");
}

#[tokio::test]
async fn a_changed_reflection_sends_sighup_to_the_reflector_and_nobody_else() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = Home::init(&dir.path().join("home")).expect("init");
    let settings = std::fs::read_to_string(home.ironwork_ini()).expect("settings");
    write(
        &home.ironwork_ini(),
        &settings
            .replace("collector = false", "collector = true")
            .replace("reflector = false", "reflector = true"),
    );
    let with_reflection = format!("{PLUGIN}\n[reflection_hot]\nitem = temp\nvalue = > 50\nactions = cache\n");
    write(&home.plugin_dir("demo").join("config.ini"), &with_reflection);
    let (task, token) = spawn(&server, &home);
    let control = || server.cli(&["LRANGE", "ringmaster.control", "0", "-1"]);
    let hup = |name: &str| {
        let c = control();
        c.lines()
            .any(|l| l.contains(&format!("\"{name}\"")) && l.contains("\"HUP\""))
    };
    until("the first pass to tell the reflector", || hup("reflector")).await;
    let generated = std::fs::read_to_string(home.reflector_ini()).expect("reflector.ini");
    assert!(generated.contains("[reflection:demo.hot]"), "{generated}");

    // The reflection's threshold changes: only the reflector's file changes, and it hears of it.
    server.cli(&["DEL", "ringmaster.control"]);
    write(
        &home.plugin_dir("demo").join("config.ini"),
        &with_reflection.replace("> 50", "> 60"),
    );
    until("the reflector told again", || hup("reflector")).await;
    assert!(!hup("collector"), "collector.ini did not change: {}", control());
    assert!(!control().contains("reloadconfig"), "{}", control());
    token.cancel();
    task.await.expect("join").expect("conf_monitor ran cleanly");
}
