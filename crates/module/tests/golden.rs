//! The generated configuration of a fixture home (two plugins, one with an admin override),
//! compared byte for byte with the files under `tests/golden/expected/`, and loaded by the
//! daemons that read it. `IRONWORK_BLESS=1 cargo test -p ironwork --test golden` rewrites the
//! expected files after an intended change.

use std::path::{Path, PathBuf};

use ironwork::generate::{generate, Generated};
use ironwork::home::Home;
use ironwork::plugin::{load_all, Plugin};
use ironwork::settings::Settings;

const BIN_DIR: &str = "/opt/ironwork/bin";
const HOME_PLACEHOLDER: &str = "@HOME@";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(home: &Home) -> (Settings, Vec<Plugin>) {
    let settings = Settings::load(home).expect("fixture settings load");
    let (plugins, errors) = load_all(home);
    assert!(errors.is_empty(), "fixture plugins have errors:\n{errors}");
    (settings, plugins)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn generated_files_match_the_golden_files() {
    let home = Home::new(golden_dir().join("home"));
    let (settings, plugins) = load(&home);
    assert_eq!(
        plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["archive", "demo"]
    );
    let generated = generate(&home, &settings, &plugins, Path::new(BIN_DIR));
    let root = home.root.display().to_string();
    let bless = std::env::var_os("IRONWORK_BLESS").is_some_and(|v| v == "1");
    let expected_dir = golden_dir().join("expected");
    let mut mismatches = Vec::new();
    for (name, text) in [
        ("ringmaster.ini", &generated.ringmaster_ini),
        ("directory_observer.ini", &generated.directory_observer_ini),
        ("switch_rules.ini", &generated.switch_rules_ini),
        ("collector.ini", &generated.collector_ini),
        ("reflector.ini", &generated.reflector_ini),
        ("nginx.conf", &generated.nginx_conf),
    ] {
        // nginx's workers run as the home's owner, whoever checked the fixture out.
        let actual: String = text
            .replace(&root, HOME_PLACEHOLDER)
            .lines()
            .map(|l| {
                if l.starts_with("user ") {
                    "user @USER@;\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let path = expected_dir.join(name);
        if bless {
            std::fs::create_dir_all(&expected_dir).expect("mkdir expected");
            std::fs::write(&path, &actual).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with IRONWORK_BLESS=1 to create it)", path.display()));
        if expected != actual {
            mismatches.push(format!(
                "--- {name} expected\n{expected}\n--- {name} generated\n{actual}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "generated files differ from the golden files (IRONWORK_BLESS=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn generated_files_load_in_the_daemons_that_read_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_tree(&golden_dir().join("home"), tmp.path());
    let home = Home::new(tmp.path());
    let (settings, plugins) = load(&home);
    let generated = generate(&home, &settings, &plugins, Path::new(BIN_DIR));
    assert!(generated.write(&home).expect("write"), "first write changes the files");
    assert!(
        !generated.write(&home).expect("rewrite"),
        "same content: nothing rewritten"
    );

    let rm = ringmaster::config::Config::load(&home.ringmaster_ini())
        .unwrap_or_else(|e| panic!("ringmaster refuses the generated file:\n{e}"));
    assert!(rm.warnings.is_empty(), "ringmaster warnings: {:?}", rm.warnings);
    let names: Vec<&str> = rm.watchers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "redis",
            "directory_observer",
            "conf_monitor",
            "jsonlog2es",
            "collector",
            "reflector",
            "gc",
            "step.switch.main",
            "nginx",
            "step.archive.failed",
            "step.archive.main",
            "extra_daemon.archive.web",
            "step.demo.main",
            "app.demo.web",
        ]
    );
    let web = rm.watcher("app.demo.web").expect("app watcher");
    assert_eq!(web.numprocesses, 3);
    assert_eq!(web.memory_limit, Some(256 << 20));
    let socket = home
        .var_dir()
        .join("apps/demo.web.$(circus.wid).sock")
        .display()
        .to_string();
    assert_eq!(web.drain_socket.as_deref(), Some(socket.as_str()));
    assert_eq!(web.drain_timeout, std::time::Duration::from_secs(30));
    assert!(
        web.args.contains(&format!("--listen {socket}")) || web.args.contains(&format!("--listen '{socket}'")),
        "{}",
        web.args
    );
    assert!(web.env.iter().any(|(k, v)| k == "IRONWORK_APP_SOCKET" && *v == socket));
    let nginx = rm.watcher("nginx").expect("nginx watcher");
    assert_eq!(nginx.stop_signal, 3, "SIGQUIT: nginx finishes its requests");
    assert!(nginx.priority < web.priority, "nginx stops before the apps");
    let main = rm.watcher("step.archive.main").expect("archive step");
    assert_eq!(main.numprocesses, 4, "the admin override wins");
    assert_eq!(main.graceful_timeout, std::time::Duration::from_secs(120));
    assert_eq!(main.max_age, std::time::Duration::from_secs(3600));
    assert_eq!(main.working_dir.as_deref(), Some(home.plugin_dir("archive").as_path()));
    assert!(main
        .env
        .iter()
        .any(|(k, v)| k == "MFDATA_CURRENT_PLUGIN_NAME" && v == "archive"));
    assert!(main
        .env
        .iter()
        .any(|(k, v)| k == "IRONWORK_HOME" && Path::new(v) == home.root));
    // The quoted argument survives ringmaster's shell-style split as one word.
    let words = shlex::split(&format!("{} {}", main.cmd, main.args)).expect("split");
    let dashdash = words.iter().position(|w| w == "--").expect("--");
    assert_eq!(
        words[dashdash + 1..],
        [
            home.plugin_dir("archive").join("archive.sh").display().to_string(),
            "--dest".into(),
            "/srv/my archive".into(),
        ]
    );
    let redis = rm.watcher("redis").expect("redis");
    assert_eq!(redis.priority, 100);
    assert!(redis.args.contains("--maxmemory-policy noeviction"));

    let obs = directory_observer::config::Config::load_with_home(&home.directory_observer_ini(), Some(&home.root))
        .unwrap_or_else(|e| panic!("directory_observer refuses the generated file:\n{e}"));
    assert!(obs.warnings.is_empty(), "observer warnings: {:?}", obs.warnings);
    let watched: Vec<(String, String)> = obs
        .steps
        .iter()
        .map(|s| (s.directory.display().to_string(), s.queue.clone()))
        .collect();
    let d = |p: PathBuf| p.display().to_string();
    assert_eq!(
        watched,
        [
            (d(home.incoming_dir()), "step.switch.main".to_string()),
            (d(home.step_dir("archive", "failed")), "step.archive.failed".into()),
            (d(home.step_dir("archive", "main")), "step.archive.main".into()),
            (d(home.step_dir("demo", "main")), "step.demo.main".into()),
            (d(home.data_dir().join("extra/demo")), "step.demo.main".into()),
        ]
    );

    let rules = ironwork_step::switch_rules::RuleSet::load(&home.switch_rules_ini())
        .unwrap_or_else(|e| panic!("the switch refuses the generated rules:\n{e}"));
    assert_eq!(rules.len(), 5, "3 archive rules (one from the override) + 2 demo rules");

    let col = collector::config::Config::load(&home.collector_ini())
        .unwrap_or_else(|e| panic!("the collector refuses the generated file:\n{e}"));
    assert_eq!(
        col.settings.concurrency, 8,
        "[collector] of ironwork.ini is carried over"
    );
    assert_eq!(col.settings.token_file, home.state_dir().join("collector.token"));
    assert_eq!(col.settings.log_roots, [home.log_dir()]);
    let ids: Vec<String> = col.collections.iter().map(|c| c.id()).collect();
    assert_eq!(ids, ["archive.disk", "demo.apps"]);
    assert_eq!(col.collections[0].plugin_dir, home.plugin_dir("archive"));
    assert_eq!(col.collections[0].correlation_info["role"], "archive");

    let refl = reflector::config::Config::load(&home.reflector_ini())
        .unwrap_or_else(|e| panic!("the reflector refuses the generated file:\n{e}"));
    assert_eq!(
        refl.settings.endpoints,
        [("127.0.0.1".to_string(), 8086)],
        "[influxdb] url"
    );
    assert_eq!(
        refl.settings.retry_count, 5,
        "[reflector] of ironwork.ini is carried over"
    );
    let ids: Vec<&str> = refl.reflections.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["demo.alerts", "demo.all"], "file order, the order they fire in");
}

#[test]
fn generation_is_deterministic_and_independent_of_plugin_order() {
    let home = Home::new(golden_dir().join("home"));
    let (settings, plugins) = load(&home);
    let bin = Path::new(BIN_DIR);
    let first: Generated = generate(&home, &settings, &plugins, bin);
    assert_eq!(first, generate(&home, &settings, &plugins, bin));
    let mut reversed = plugins.clone();
    reversed.reverse();
    assert_eq!(first, generate(&home, &settings, &reversed, bin));
}

#[test]
fn plugins_are_loaded_in_name_order_whatever_the_directory_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = Home::init(tmp.path()).expect("init");
    for name in ["zeta", "alpha", "mid-1", "beta_2"] {
        let dir = home.plugin_dir(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.ini"), "[step_main]\ncmd_and_args = true\n").expect("write");
    }
    let (plugins, errors) = load_all(&home);
    assert!(errors.is_empty(), "{errors}");
    let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta_2", "mid-1", "zeta"]);
}

#[test]
fn the_data_directory_can_live_elsewhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = Home::init(&tmp.path().join("home")).expect("init");
    std::fs::create_dir_all(home.plugin_dir("p")).expect("plugin dir");
    std::fs::write(
        home.plugin_dir("p").join("config.ini"),
        "[step_main]\ncmd_and_args = /bin/true\n",
    )
    .expect("plugin");
    let ini = std::fs::read_to_string(home.ironwork_ini()).expect("ironwork.ini");
    std::fs::write(home.ironwork_ini(), ini.replace("\nin_dir =\n", "\nin_dir = data\n")).expect("write");
    let settings = Settings::load(&home).expect("settings");
    let home = settings.apply(home);
    let data = tmp.path().join("home/data");
    assert_eq!(home.data_dir(), data);
    let (plugins, errors) = load_all(&home);
    assert!(errors.is_empty(), "{errors}");
    let g = generate(&home, &settings, &plugins, Path::new(BIN_DIR));
    let d = data.display().to_string();
    assert!(
        g.directory_observer_ini
            .contains(&format!("directory = {d}/step.p.main")),
        "{}",
        g.directory_observer_ini
    );
    assert!(g.directory_observer_ini.contains(&format!("directory = {d}/incoming")));
    assert!(
        g.ringmaster_ini.contains(&format!("--data-dir {d}")),
        "{}",
        g.ringmaster_ini
    );
    let stray: Vec<&str> = g
        .ringmaster_ini
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("var/in"))
        .collect();
    assert!(stray.is_empty(), "no trace of the default left: {stray:?}");
}
