//! `ironwork init`, `ironwork.ini` and plugin files: defaults, and every kind of error reported
//! at once with its file, line, section and key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ironwork::home::{Home, HomeError};
use ironwork::plugin::{load_all, FailurePolicy, Plugin, WatchedDirectory};
use ironwork::settings::{NoMatchPolicy, Settings};
use ironwork_core::config::ConfigErrors;

fn home() -> (tempfile::TempDir, Home) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = Home::init(tmp.path()).expect("init");
    (tmp, home)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// The errors' first lines (a regex error goes on for several), with the home's path shortened
/// to `H`.
fn lines(errors: &ConfigErrors, home: &Home) -> Vec<String> {
    errors
        .0
        .iter()
        .map(|e| {
            let text = e.to_string().replace(&home.root.display().to_string(), "H");
            text.lines().next().unwrap_or_default().to_string()
        })
        .collect()
}

fn plugin(home: &Home, name: &str, config: &str) -> Result<Plugin, ConfigErrors> {
    let dir = home.plugin_dir(name);
    write(&dir.join("config.ini"), config);
    let ovr = home.plugin_override(name);
    Plugin::load(&dir, ovr.is_file().then_some(ovr.as_path()))
}

#[test]
fn init_creates_the_tree_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("home");
    let home = Home::init(&root).expect("init");
    for dir in [
        home.config_dir(),
        home.plugin_overrides_dir(),
        home.plugins_dir(),
        home.config_auto_dir(),
        home.var_dir(),
        home.incoming_dir(),
        home.data_tmp_dir(),
        home.trash_dir(),
        home.retry_dir(),
        home.state_dir(),
        home.log_dir(),
    ] {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    for private in [home.config_dir(), home.var_dir(), home.config_auto_dir()] {
        let mode = std::fs::metadata(&private).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", private.display());
    }
    let written = std::fs::read_to_string(home.ironwork_ini()).expect("read ini");
    write(&home.ironwork_ini(), "[switch]\nno_match_policy = keep\n");
    match Home::init(&root) {
        Err(HomeError::AlreadyInitialised(p)) => assert_eq!(p, home.ironwork_ini()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let kept = std::fs::read_to_string(home.ironwork_ini()).expect("read ini");
    assert_eq!(
        kept, "[switch]\nno_match_policy = keep\n",
        "the existing file is untouched"
    );
    assert!(written.contains("maxmemory = 2gb"));
    let message = Home::init(&root).expect_err("refused").to_string();
    assert!(message.contains("already exists"), "{message}");
}

#[test]
fn init_into_an_existing_directory_keeps_what_is_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(
        &tmp.path().join("plugins/mine/config.ini"),
        "[step_main]\ncmd_and_args = true\n",
    );
    let home = Home::init(tmp.path()).expect("init over existing dirs");
    assert!(home.plugin_dir("mine").join("config.ini").is_file());
}

#[test]
fn settings_default_when_missing_and_from_the_init_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bare = Home::new(tmp.path());
    let defaults = Settings::load(&bare).expect("missing file = defaults");
    assert_eq!(defaults, Settings::default());
    assert!(defaults.redis.managed());
    assert_eq!(defaults.redis.maxmemory, 2 << 30);
    assert!(defaults.daemons.directory_observer && defaults.daemons.conf_monitor && defaults.daemons.gc);
    assert!(!defaults.daemons.jsonlog2es && !defaults.daemons.collector && !defaults.daemons.reflector);
    assert_eq!(defaults.switch.no_match_policy, NoMatchPolicy::Delete);
    assert_eq!(defaults.gc.trash_max_age, Duration::from_secs(86400));
    assert_eq!(defaults.gc.every, Duration::from_secs(300));
    assert_eq!(defaults.binaries.dir, None);
    assert_eq!(defaults.zabbix.port, 10051);

    let (_tmp, home) = home();
    assert_eq!(
        Settings::load(&home).expect("init file loads"),
        Settings::default(),
        "the commented file ironwork init writes says exactly the defaults"
    );
}

#[test]
fn settings_values_are_read() {
    let (_tmp, home) = home();
    write(
        &home.ironwork_ini(),
        "[redis]\nurl = redis://10.0.0.1:6380\n[daemons]\ngc = no\ncollector = on\n\
         [binaries]\ndir = /usr/lib/ironwork\n[influxdb]\nurl = http://db:8086\ndatabase = metrics\n",
    );
    let s = Settings::load(&home).expect("load");
    assert!(!s.redis.managed());
    assert_eq!(s.redis.url_for_daemons(&home), "redis://10.0.0.1:6380");
    assert!(!s.daemons.gc && s.daemons.collector);
    assert_eq!(s.bin_dir().expect("bin dir"), Path::new("/usr/lib/ironwork"));
    assert_eq!(s.influxdb.database.as_deref(), Some("metrics"));
}

#[test]
fn the_shared_redis_may_be_a_cluster_or_sentinel_but_the_nodes_own_may_not() {
    let (_tmp, home) = home();
    write(
        &home.ironwork_ini(),
        "[redis]\nshared_url = redis+cluster://10.0.0.1:7000,10.0.0.2:7000\n[node]\nname = node-a\n",
    );
    let s = Settings::load(&home).expect("load");
    assert!(s.redis.managed());
    assert_eq!(
        s.redis.shared_url_for_daemons(&home),
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    );
    assert_eq!(s.node_name.as_deref(), Some("node-a"));
    let generated = ironwork::generate::generate(&home, &s, &[], Path::new("/b"));
    for ini in [&generated.collector_ini, &generated.reflector_ini] {
        assert!(
            ini.contains("redis = redis+cluster://10.0.0.1:7000,10.0.0.2:7000"),
            "{ini}"
        );
    }
    assert!(generated.ringmaster_ini.contains("\nIRONWORK_NODE = node-a\n"));
    assert!(
        generated.ringmaster_ini.contains("[watcher:redis]"),
        "the node's own Redis is managed"
    );

    write(
        &home.ironwork_ini(),
        "[redis]\nurl = redis+cluster://a:1\nshared_url = redis+sentinel://s1\n[node]\nname = a b\n",
    );
    let errors = Settings::load(&home).expect_err("refused");
    assert_eq!(
        lines(&errors, &home),
        [
            "H/config/ironwork.ini:2: [redis] url: this node's own Redis (file pipeline, ringmaster) is one server: put a Redis Cluster or Sentinel in shared_url (found \"redis+cluster://a:1\")",
            "H/config/ironwork.ini:3: [redis] shared_url: name the master after the sentinels: redis+sentinel://host:26379/mymaster (found \"redis+sentinel://s1\")",
            "H/config/ironwork.ini:5: [node] name: letters, digits, '-', '_' or '.' (found \"a b\")",
        ]
    );
}

#[test]
fn settings_errors_are_all_reported_with_file_section_key_and_line() {
    let (_tmp, home) = home();
    write(
        &home.ironwork_ini(),
        "[redis]\nurl = http://nope\nmaxmemory = lots\n\
         [daemons]\ngc = maybe\ncolector = true\n\
         [switch]\nno_match_policy = drop\nnumprocesses = 0\n\
         [gc]\nevery = 0\n\
         [zabbix]\nport = 99999\n\
         [mystery]\nx = 1\n",
    );
    let errors = Settings::load(&home).expect_err("refused");
    assert_eq!(
        lines(&errors, &home),
        [
            "H/config/ironwork.ini:2: [redis] url: expected redis://host:port, unix:///path or redis+unix:///path (found \"http://nope\")",
            "H/config/ironwork.ini:3: [redis] maxmemory: expected a size like 1048576, 512K, 100M or 1GiB (found \"lots\")",
            "H/config/ironwork.ini:5: [daemons] gc: expected a boolean (true/false, yes/no, on/off, 1/0) (found \"maybe\")",
            "H/config/ironwork.ini:6: [daemons] colector: unknown key",
            "H/config/ironwork.ini:8: [switch] no_match_policy: expected delete or keep (found \"drop\")",
            "H/config/ironwork.ini:9: [switch] numprocesses: must be at least 1 (found \"0\")",
            "H/config/ironwork.ini:11: [gc] every: must be longer than 0 (found \"0\")",
            "H/config/ironwork.ini:13: [zabbix] port: expected a port (1-65535) (found \"99999\")",
            "H/config/ironwork.ini:14: [mystery]: unknown section (expected one of redis, node, data, daemons, switch, gc, binaries, elasticsearch, influxdb, zabbix, collector, reflector, nginx, console)",
        ]
    );
}

#[test]
fn a_plugin_step_is_read_with_metwork_keys_and_defaults() {
    let (_tmp, home) = home();
    write(&home.plugin_dir("p").join("bin/run.sh"), "#!/bin/sh\n");
    let p = plugin(
        &home,
        "p",
        "[step_main]\n_cmd_and_args = bin/run.sh 'a b' {STANDARD_STEP_ARGUMENTS}\n\
         [step_other]\ncmd_and_args = missing/tool x\nwatched_directories = {MFDATA_CURRENT_STEP_DIR},/abs/dir, rel\n\
         failure_policy = move\nfailure_policy_move_dest_dir = /var/failed\nrlimit_fsize = 0\nrlimit_stack = 1e7\n",
    )
    .expect("valid");
    let main = &p.steps[0];
    assert_eq!(main.name, "main");
    assert_eq!(
        main.cmd_and_args,
        [
            home.plugin_dir("p").join("bin/run.sh").display().to_string(),
            "a b".to_string()
        ]
    );
    assert_eq!(main.numprocesses, 1);
    assert_eq!(main.timeout, Duration::from_secs(600));
    assert_eq!(main.max_age, Duration::ZERO);
    assert_eq!(main.failure_policy, FailurePolicy::Keep);
    assert_eq!(
        (main.retry_total, main.retry_min_wait, main.retry_max_wait),
        (0, Duration::from_secs(10), Duration::from_secs(120))
    );
    assert_eq!(main.watched_dirs(&home, "p"), [home.step_dir("p", "main")]);
    let other = &p.steps[1];
    assert_eq!(
        other.cmd_and_args[0], "missing/tool",
        "not in the plugin dir: left as written"
    );
    assert_eq!(other.failure_policy, FailurePolicy::Move("/var/failed".into()));
    assert_eq!(other.rlimits.fsize, None, "0 means no limit, as in Metwork");
    assert_eq!(other.rlimits.stack, Some(10_000_000));
    assert_eq!(other.watched_directories[0], WatchedDirectory::StepDir);
    assert_eq!(
        other.watched_dirs(&home, "p"),
        [
            home.step_dir("p", "other"),
            "/abs/dir".into(),
            home.data_dir().join("rel")
        ]
    );
}

#[test]
fn plugin_errors_are_all_reported_with_file_section_key_and_line() {
    let (_tmp, home) = home();
    let errors = plugin(
        &home,
        "bad",
        "[general]\ndescription = x\nauthor = me\n\
         [step_a]\nnumprocesses = many\ntimeout = 0\nfailure_policy = move\nretry_min_wait = 300\n\
         [step_b]\ncmd_and_args = x {STANDARD_STEP_ARGUMENTS} y\nfailure_policy = keep\nfailure_policy_move_dest_dir = a/b\n\
         [step_c]\ncmd_and_args = 'unclosed\nwatched_directories = ../up\n\
         [switch_rules:fnmatch]\n*.x = a/b\n\
         [switch_rules:regex:t]\n( = a/b\nok = not a target\n\
         [extra_daemon_d]\nnumprocesses = 2\n\
         [collection_bad name]\nx = 1\n\
         [bogus]\n",
    )
    .expect_err("refused");
    assert_eq!(
        lines(&errors, &home),
        [
            "H/plugins/bad/config.ini:3: [general] author: unknown key",
            "H/plugins/bad/config.ini:4: [step_a] cmd_and_args: missing required key",
            "H/plugins/bad/config.ini:5: [step_a] numprocesses: invalid value: invalid digit found in string (found \"many\")",
            "H/plugins/bad/config.ini:6: [step_a] timeout: must be longer than 0 (found \"0\")",
            "H/plugins/bad/config.ini:4: [step_a] failure_policy_move_dest_dir: required with failure_policy = move",
            "H/plugins/bad/config.ini:8: [step_a] retry_min_wait: must not be longer than retry_max_wait",
            "H/plugins/bad/config.ini:10: [step_b] cmd_and_args: {STANDARD_STEP_ARGUMENTS} is accepted only as the last word",
            "H/plugins/bad/config.ini:12: [step_b] failure_policy_move_dest_dir: only meaningful with failure_policy = move",
            "H/plugins/bad/config.ini:14: [step_c] cmd_and_args: cannot split into words: unbalanced quotes or a trailing backslash",
            "H/plugins/bad/config.ini:15: [step_c] watched_directories: \"../up\": '..' is not allowed (found \"../up\")",
            "H/plugins/bad/config.ini:16: [switch_rules:fnmatch]: fnmatch rules need a tag name: [switch_rules:fnmatch:<tag>]",
            "H/plugins/bad/config.ini:19: [switch_rules:regex:t] (: bad regex: regex parse error:",
            "H/plugins/bad/config.ini:20: [switch_rules:regex:t] ok: bad action: \"not a target\" is not of the form plugin/step",
            "H/plugins/bad/config.ini:21: [extra_daemon_d] cmd_and_args: missing required key",
            "H/plugins/bad/config.ini:23: [collection_bad name]: collection name \"bad name\" must be letters, digits, '_' or '-'",
            "H/plugins/bad/config.ini:25: [bogus]: unknown section (expected general, step_<name>, switch_rules:<type>[:<tag>], extra_daemon_<name>, app_<name>, collection_<name> or reflection_<name>)",
        ]
    );
}

#[test]
fn an_override_replaces_keys_and_its_own_errors_name_the_override_file() {
    let (_tmp, home) = home();
    let config = "[step_main]\ncmd_and_args = true\nnumprocesses = 1\n";
    write(
        &home.plugin_override("p"),
        "[step_main]\nnumprocesses = 3\ntimeout = 30\n",
    );
    let p = plugin(&home, "p", config).expect("valid override");
    assert_eq!(p.steps[0].numprocesses, 3);
    assert_eq!(p.steps[0].timeout, Duration::from_secs(30));
    assert_eq!(p.override_file, Some(home.plugin_override("p")));

    write(
        &home.plugin_override("p"),
        "# admin\n[step_main]\nnumprocesses = lots\nnew_key = 1\n[step_ghost]\nnumprocesses = 2\n",
    );
    let errors = plugin(&home, "p", config).expect_err("refused");
    assert_eq!(
        lines(&errors, &home),
        [
            "H/config/plugins/p.ini:5: [step_ghost]: overrides a section H/plugins/p/config.ini does not have",
            "H/config/plugins/p.ini:3: [step_main] numprocesses: invalid value: invalid digit found in string (found \"lots\")",
            "H/config/plugins/p.ini:4: [step_main] new_key: unknown key",
        ]
    );
}

#[test]
fn bad_plugin_names_and_the_reserved_switch_name_are_refused() {
    let (_tmp, home) = home();
    for name in ["has space", "switch"] {
        let errors = plugin(&home, name, "[step_main]\ncmd_and_args = true\n").expect_err(name);
        assert_eq!(errors.len(), 1, "{errors}");
        assert!(errors.0[0].file.ends_with(name), "{errors}");
    }
}

#[test]
fn load_all_refuses_only_the_broken_plugins_and_directory_conflicts() {
    let (_tmp, home) = home();
    write(
        &home.plugin_dir("a").join("config.ini"),
        "[step_main]\ncmd_and_args = true\n",
    );
    write(
        &home.plugin_dir("b").join("config.ini"),
        "[step_main]\nnumprocesses = x\n",
    );
    write(
        &home.plugin_dir("c").join("config.ini"),
        "[step_main]\ncmd_and_args = true\nwatched_directories = step.a.main\n",
    );
    write(
        &home.plugin_dir("d").join("config.ini"),
        "[step_main]\ncmd_and_args = true\nwatched_directories = incoming\n",
    );
    // An override for a plugin that is not installed is left alone.
    write(&home.plugin_override("gone"), "[step_main]\nnumprocesses = 2\n");
    let (plugins, errors) = load_all(&home);
    assert_eq!(plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        lines(&errors, &home),
        [
            "H/plugins/b/config.ini:1: [step_main] cmd_and_args: missing required key",
            "H/plugins/b/config.ini:2: [step_main] numprocesses: invalid value: invalid digit found in string (found \"x\")",
            "H/plugins/c/config.ini: [step_main] watched_directories: H/var/in/step.a.main is already watched for a/main",
            "H/plugins/d/config.ini: [step_main] watched_directories: H/var/in/incoming is already watched for the switch (switch/main)",
        ]
    );
}

#[test]
fn supervisor_references_in_commands_are_refused() {
    let (_tmp, home) = home();
    let errors = plugin(
        &home,
        "p",
        "[step_main]\ncmd_and_args = /bin/echo '$(circus.env.HOME)' w$(CIRCUS.wid)\n",
    )
    .expect_err("refused");
    let text = errors.to_string();
    assert!(
        text.contains("[step_main] cmd_and_args") && text.contains("rewritten by the supervisor"),
        "{text}"
    );
}

#[test]
fn a_config_that_is_not_a_regular_file_is_refused_without_being_read() {
    let (_tmp, home) = home();
    let dir = home.plugin_dir("fifo");
    std::fs::create_dir_all(&dir).expect("mkdir");
    nix::unistd::mkfifo(&dir.join("config.ini"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let errors = Plugin::load(&dir, None).expect_err("refused");
    assert!(errors.to_string().contains("not a regular file"), "{errors}");
}

#[test]
fn collections_are_checked_with_the_collectors_own_reader() {
    let (_tmp, home) = home();
    let errors = plugin(
        &home,
        "p",
        "[collection_a]\nmethod = FTP\n\n[collection_b]\nmethod = SCRIPT\ninterval = 0.2\ncolour = red\n\n\
         [collection_ok]\nmethod = TCP\nport = 22\ntargets = a, b\n",
    )
    .expect_err("refused");
    let text = lines(&errors, &home).join("\n");
    for needle in [
        ":2: [collection_a] method: unknown method \"FTP\"",
        "[collection_b] interval",
        "[collection_b] cmd_and_args: missing required key",
        ":7: [collection_b] colour: unknown key",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    assert!(!text.contains("collection_ok"), "{text}");
    let p = plugin(&home, "q", "[collection_ok]\nmethod = TCP\nport = 22\n").expect("valid");
    assert_eq!(p.collections[0].name, "ok");
}

#[test]
fn reflections_are_checked_with_the_reflectors_own_reader_and_keep_their_order() {
    let (_tmp, home) = home();
    let errors = plugin(
        &home,
        "p",
        "[reflection_a]\nactions = cache, explode\n\n[reflection_b]\nitem = ~(\nactions = forward\ncolour = red\n\n\
         [reflection_ok]\nactions = cache\n",
    )
    .expect_err("refused");
    let text = lines(&errors, &home).join("\n");
    for needle in [
        ":2: [reflection_a] actions: unknown action \"explode\"",
        ":5: [reflection_b] item: bad regex",
        "[reflection_b] forward_queue: the forward action needs forward_queue",
        ":7: [reflection_b] colour: unknown key",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    assert!(!text.contains("reflection_ok"), "{text}");
    let p = plugin(
        &home,
        "q",
        "[reflection_z]\nactions = cache\n\n[reflection_a]\nactions = drop\n",
    )
    .expect("valid");
    let names: Vec<&str> = p.reflections.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["z", "a"], "file order: the order they fire in");
}

#[test]
fn an_app_is_read_with_its_defaults_and_its_errors_named() {
    let (_tmp, home) = home();
    write(&home.plugin_dir("shop").join("www/index.html"), "hi");
    let p = plugin(
        &home,
        "shop",
        "[app_api]\ncmd_and_args = python3 -m http.server {unix_socket_path}\n\n[app_site]\nstatic = www\n",
    )
    .expect("loads");
    let api = &p.apps[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.cmd_and_args, ["python3", "-m", "http.server", "{unix_socket_path}"]);
    assert_eq!(
        (
            api.numprocesses,
            api.timeout,
            api.prefix.as_str(),
            api.static_prefix.as_str()
        ),
        (2, std::time::Duration::from_secs(60), "/shop/api/", "/shop/api/static/")
    );
    let site = &p.apps[1];
    assert!(!site.has_workers());
    assert_eq!(
        (site.prefix.as_str(), site.static_prefix.as_str()),
        ("/shop/site/", "/shop/site/")
    );

    let errors = plugin(
        &home,
        "bad",
        "[app_a]\nprefix = nope\nstatic = ../etc\nhealth = healthz\nmemory_limit = lots\n\
         client_max_body_size = 10 MB\nnumprocesses = 0\n",
    )
    .expect_err("refused");
    assert_eq!(
        lines(&errors, &home),
        [
            "H/plugins/bad/config.ini:2: [app_a] prefix: must start and end with '/' (found \"nope\")",
            "H/plugins/bad/config.ini:3: [app_a] static: must be a directory of the plugin (relative, no '..') (found \"../etc\")",
            "H/plugins/bad/config.ini:1: [app_a] cmd_and_args: missing: give cmd_and_args, or static alone for a static-only app",
            "H/plugins/bad/config.ini:4: [app_a] health: expected a path starting with '/' (found \"healthz\")",
            "H/plugins/bad/config.ini:6: [app_a] client_max_body_size: expected an nginx size such as 10m, 512k or 0 (no limit) (found \"10 MB\")",
            "H/plugins/bad/config.ini:7: [app_a] numprocesses: must be at least 1 (found \"0\")",
            "H/plugins/bad/config.ini:5: [app_a] memory_limit: expected a size like 1048576, 512K, 100M or 1GiB (found \"lots\")",
        ]
    );
}

#[test]
fn two_apps_on_one_url_prefix_refuse_the_later_plugin() {
    let (_tmp, home) = home();
    write(
        &home.plugin_dir("a").join("config.ini"),
        "[app_x]\ncmd_and_args = true\nprefix = /shared/\n",
    );
    write(
        &home.plugin_dir("b").join("config.ini"),
        "[app_y]\ncmd_and_args = true\nprefix = /shared/\n",
    );
    write(
        &home.plugin_dir("c").join("config.ini"),
        "[app_z]\ncmd_and_args = true\nprefix = /\n",
    );
    let (plugins, errors) = load_all(&home);
    assert_eq!(plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        lines(&errors, &home),
        [
            "H/plugins/b/config.ini: [app_y] prefix: URL prefix /shared/ is already served by a/x",
            "H/plugins/c/config.ini: [app_z] prefix: URL prefix / is already served by nginx itself (the 404 for unknown paths)",
        ]
    );
}
