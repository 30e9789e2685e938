//! `ironwork plugins create|list|install|remove`, run as the real binary on temporary homes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ironwork::plugin::Plugin;

struct Home {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Home {
    fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Everything in plugins/, dot entries (staging directories) included, sorted.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.plugins())
            .expect("read plugins/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn init() -> Home {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_ironwork"))
        .arg("init")
        .arg(&root)
        .output()
        .expect("run ironwork init");
    assert!(out.status.success(), "init: {}", text(&out));
    Home { _tmp: tmp, root }
}

fn ironwork(home: &Home, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironwork"))
        .arg("--home")
        .arg(&home.root)
        .args(args)
        .output()
        .expect("run ironwork")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(home: &Home, args: &[&str]) -> String {
    let out = ironwork(home, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(home: &Home, args: &[&str]) -> String {
    let out = ironwork(home, args);
    assert!(!out.status.success(), "{args:?} should fail: {}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `plugins list` line of `name`, split into words.
fn list_line(listing: &str, name: &str) -> Vec<String> {
    listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{listing}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

const HINT: &str = "conf_monitor applies it within a few seconds";

const INVALID: &str = "[step_a]\nnumprocesses = many\n\n[step_b]\ncmd_and_args = true\ntimeout = 0\n\n[bogus]\n";

#[test]
fn create_each_template_and_list_them() {
    let home = init();
    for template in ["step", "daemon", "collector", "app-static", "app-command", "app-rust"] {
        let name = format!("my_{}", template.replace('-', "_"));
        let out = ok(&home, &["plugins", "create", &name, "--template", template]);
        assert!(out.contains(HINT), "{out}");
        Plugin::load(&home.plugins().join(&name), None).expect("the created plugin loads");
    }
    let step = Plugin::load(&home.plugins().join("my_step"), None).expect("load");
    assert_eq!(step.steps.len(), 1);
    let main_sh = home.plugins().join("my_step/main.sh");
    assert_eq!(step.steps[0].cmd_and_args, vec![main_sh.display().to_string()]);
    assert_eq!(
        step.switch_rules[0].name,
        "switch_rules:fnmatch:first.core.original_basename"
    );
    assert_eq!(
        step.switch_rules[0].entries,
        vec![("*.my_step".to_string(), "my_step/main".to_string())]
    );
    let config = fs::read_to_string(home.plugins().join("my_step/config.ini")).expect("read");
    for key in [
        "numprocesses = 1",
        "timeout = 600",
        "max_age = 0",
        "failure_policy = keep",
        "failure_policy_move_dest_dir =",
        "retry_total = 0",
        "retry_min_wait = 10",
        "retry_max_wait = 120",
        "retry_backoff = 0",
        "rlimit_as = 0",
        "rlimit_nofile = 0",
        "rlimit_stack = 0",
        "rlimit_fsize = 0",
        "watched_directories = {MFDATA_CURRENT_STEP_DIR}",
        "debug = false",
    ] {
        assert!(config.contains(&format!("# {key}")), "{key} not listed in:\n{config}");
    }
    // main.sh is executable and prints the size of the file it is given.
    let data = home.root.join("sample.my_step");
    fs::write(&data, "12345").expect("write");
    let out = Command::new(&main_sh).arg(&data).output().expect("run main.sh");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("5 bytes"),
        "{}",
        text(&out)
    );

    let daemon = Plugin::load(&home.plugins().join("my_daemon"), None).expect("load");
    assert_eq!(daemon.extra_daemons.len(), 1);
    assert!(daemon.extra_daemons[0].cmd_and_args[0].ends_with("/my_daemon/daemon.sh"));
    let collector = Plugin::load(&home.plugins().join("my_collector"), None).expect("load");
    assert_eq!(collector.collections.len(), 1);
    assert_eq!(collector.collections[0].name, "main");

    let listing = ok(&home, &["plugins", "list"]);
    assert_eq!(list_line(&listing, "my_step"), ["my_step", "0.1.0", "main", "-", "ok"]);
    assert_eq!(
        list_line(&listing, "my_daemon"),
        ["my_daemon", "0.1.0", "-", "main", "ok"]
    );
    assert_eq!(
        list_line(&listing, "my_collector"),
        ["my_collector", "0.1.0", "-", "-", "ok"]
    );
    // What was created generates.
    ok(&home, &["generate"]);
    assert_eq!(
        home.entries(),
        [
            "my_app_command",
            "my_app_rust",
            "my_app_static",
            "my_collector",
            "my_daemon",
            "my_step"
        ]
    );
    let nginx = fs::read_to_string(home.root.join("tmp/config_auto/nginx.conf")).expect("nginx.conf");
    for routed in ["location /my_app_static/main/ {", "location /my_app_command/main/ {"] {
        assert!(nginx.contains(routed), "{routed} missing from:\n{nginx}");
    }
}

#[test]
fn create_refuses_an_existing_or_invalid_name() {
    let home = init();
    ok(&home, &["plugins", "create", "one"]);
    let before = fs::read_to_string(home.plugins().join("one/config.ini")).expect("read");
    let err = refused(&home, &["plugins", "create", "one", "--template", "daemon"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        fs::read_to_string(home.plugins().join("one/config.ini")).expect("read"),
        before
    );
    let err = refused(&home, &["plugins", "create", "switch"]);
    assert!(err.contains("reserved"), "{err}");
    for bad in ["a/b", "../x", "with space", ".hidden", ""] {
        let err = refused(&home, &["plugins", "create", bad]);
        assert!(err.contains("invalid plugin name"), "{bad:?}: {err}");
    }
    assert_eq!(home.entries(), ["one"]);
}

#[test]
fn list_shows_refused_plugins_and_their_errors() {
    let home = init();
    ok(&home, &["plugins", "create", "good"]);
    write(&home.plugins().join("broken/config.ini"), INVALID);
    let out = ironwork(&home, &["plugins", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list_line(&stdout, "good"), ["good", "0.1.0", "main", "-", "ok"]);
    assert_eq!(list_line(&stdout, "broken")[4..], ["REFUSED", "(4", "errors)"]);
    assert!(!stdout.contains("numprocesses"), "{stdout}");

    let out = ironwork(&home, &["plugins", "list", "--verbose"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let config = home.plugins().join("broken/config.ini").display().to_string();
    for expected in [
        format!("{config}:1: [step_a] cmd_and_args: missing required key"),
        format!("{config}:2: [step_a] numprocesses: "),
        format!("{config}:6: [step_b] timeout: "),
        format!("{config}:8: [bogus]: unknown section"),
    ] {
        assert!(stdout.contains(&expected), "{expected} not in:\n{stdout}");
    }
}

#[test]
fn install_from_a_directory_and_an_archive() {
    let home = init();
    let src = tempfile::tempdir().expect("tempdir");
    // A directory, with a script and a subdirectory.
    let dir = src.path().join("from_dir");
    write(
        &dir.join("config.ini"),
        "[general]\nversion = 1.2\n\n[step_main]\ncmd_and_args = run.sh\n",
    );
    write(&dir.join("run.sh"), "#!/bin/sh\nexit 0\n");
    write(&dir.join("lib/helper.txt"), "help\n");
    let out = ok(&home, &["plugins", "install", dir.to_str().expect("utf-8")]);
    assert!(out.contains("installed plugin from_dir"), "{out}");
    assert!(out.contains(HINT), "{out}");
    let installed = home.plugins().join("from_dir");
    assert_eq!(
        fs::read_to_string(installed.join("lib/helper.txt")).expect("read"),
        "help\n"
    );
    assert!(dir.join("config.ini").exists(), "the source is left alone");

    // A .tar.gz with one top-level directory, made with tar.
    let tree = src.path().join("tree");
    write(
        &tree.join("from_tgz/config.ini"),
        "[general]\nversion = 3\n\n[extra_daemon_d]\ncmd_and_args = sleep 100\n",
    );
    let archive = src.path().join("whatever-1.0.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&tree)
        .arg("from_tgz")
        .status()
        .expect("run tar");
    assert!(status.success());
    let out = ok(&home, &["plugins", "install", archive.to_str().expect("utf-8")]);
    assert!(out.contains("installed plugin from_tgz"), "{out}");

    // A .tar with config.ini at its root: the name is the archive's.
    let flat = src.path().join("flat");
    write(&flat.join("config.ini"), "[step_s]\ncmd_and_args = true\n");
    let archive = src.path().join("from_tar.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&flat)
        .arg("config.ini")
        .status()
        .expect("run tar");
    assert!(status.success());
    ok(&home, &["plugins", "install", archive.to_str().expect("utf-8")]);

    let listing = ok(&home, &["plugins", "list"]);
    assert_eq!(list_line(&listing, "from_dir"), ["from_dir", "1.2", "main", "-", "ok"]);
    assert_eq!(list_line(&listing, "from_tgz"), ["from_tgz", "3", "-", "d", "ok"]);
    assert_eq!(list_line(&listing, "from_tar"), ["from_tar", "-", "s", "-", "ok"]);
    assert_eq!(home.entries(), ["from_dir", "from_tar", "from_tgz"]);

    // Installing over an installed plugin needs --force.
    let err = refused(&home, &["plugins", "install", dir.to_str().expect("utf-8")]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(home.entries(), ["from_dir", "from_tar", "from_tgz"]);
}

#[test]
fn an_invalid_plugin_is_refused_with_every_error_and_leaves_nothing() {
    let home = init();
    let src = tempfile::tempdir().expect("tempdir");
    let dir = src.path().join("bad");
    write(&dir.join("config.ini"), INVALID);
    let err = refused(&home, &["plugins", "install", dir.to_str().expect("utf-8")]);
    let config = dir.join("config.ini").display().to_string();
    assert!(err.contains("plugin bad refused (4 errors)"), "{err}");
    for expected in [
        format!("{config}:1: [step_a] cmd_and_args: missing required key"),
        format!("{config}:2: [step_a] numprocesses: "),
        format!("{config}:6: [step_b] timeout: "),
        format!("{config}:8: [bogus]: unknown section"),
    ] {
        assert!(err.contains(&expected), "{expected} not in:\n{err}");
    }
    assert!(home.entries().is_empty(), "{:?}", home.entries());

    // The same as an archive.
    let archive = src.path().join("bad.tgz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(src.path())
        .arg("bad")
        .status()
        .expect("run tar");
    assert!(status.success());
    let err = refused(&home, &["plugins", "install", archive.to_str().expect("utf-8")]);
    assert!(err.contains("plugin bad refused (4 errors)"), "{err}");
    assert!(
        err.contains("bad.tgz:bad/config.ini:8: [bogus]: unknown section"),
        "{err}"
    );
    assert!(home.entries().is_empty(), "{:?}", home.entries());

    // An archive with two top-level entries.
    write(&src.path().join("two/a/config.ini"), "");
    write(&src.path().join("two/b/config.ini"), "");
    let archive = src.path().join("two.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(src.path().join("two"))
        .args(["a", "b"])
        .status()
        .expect("run tar");
    assert!(status.success());
    let err = refused(&home, &["plugins", "install", archive.to_str().expect("utf-8")]);
    assert!(err.contains("one top-level directory"), "{err}");
    assert!(home.entries().is_empty(), "{:?}", home.entries());

    // A directory holding plugins/ itself.
    let err = refused(&home, &["plugins", "install", home.plugins().to_str().expect("utf-8")]);
    assert!(err.contains("cannot be a plugin"), "{err}");
    assert!(home.entries().is_empty(), "{:?}", home.entries());

    // Valid on its own, but with an admin override that breaks it.
    let good = src.path().join("overridden");
    write(&good.join("config.ini"), "[step_main]\ncmd_and_args = true\n");
    write(
        &home.root.join("config/plugins/overridden.ini"),
        "[step_main]\nnumprocesses = -1\n",
    );
    let err = refused(&home, &["plugins", "install", good.to_str().expect("utf-8")]);
    assert!(err.contains("overridden.ini:2: [step_main] numprocesses"), "{err}");
    assert!(home.entries().is_empty(), "{:?}", home.entries());
}

#[test]
fn a_plugin_conflicting_with_an_installed_one_is_rolled_back() {
    let home = init();
    ok(&home, &["plugins", "create", "first"]);
    let src = tempfile::tempdir().expect("tempdir");
    // Sorted before "first", it would take first/main's directory and refuse "first".
    let dir = src.path().join("a_thief");
    write(
        &dir.join("config.ini"),
        "[step_s]\ncmd_and_args = true\nwatched_directories = step.first.main\n",
    );
    let err = refused(&home, &["plugins", "install", dir.to_str().expect("utf-8")]);
    assert!(err.contains("conflicts with the installed plugins"), "{err}");
    assert!(err.contains("is already watched for a_thief/s"), "{err}");
    assert_eq!(home.entries(), ["first"]);
    ok(&home, &["plugins", "list"]);
}

#[test]
fn force_replaces_an_installed_plugin() {
    let home = init();
    let src = tempfile::tempdir().expect("tempdir");
    let dir = src.path().join("p");
    write(
        &dir.join("config.ini"),
        "[general]\nversion = 1\n\n[step_old]\ncmd_and_args = true\n",
    );
    write(&dir.join("only_in_v1"), "");
    ok(&home, &["plugins", "install", dir.to_str().expect("utf-8")]);

    fs::remove_file(dir.join("only_in_v1")).expect("rm");
    // An invalid v2 leaves v1 in place.
    write(&dir.join("config.ini"), "[general]\nversion = 2\n\n[step_new]\n");
    let err = refused(&home, &["plugins", "install", "--force", dir.to_str().expect("utf-8")]);
    assert!(err.contains("missing required key"), "{err}");
    assert_eq!(
        list_line(&ok(&home, &["plugins", "list"]), "p"),
        ["p", "1", "old", "-", "ok"]
    );
    assert_eq!(home.entries(), ["p"]);

    write(
        &dir.join("config.ini"),
        "[general]\nversion = 2\n\n[step_new]\ncmd_and_args = true\n",
    );
    let out = ok(&home, &["plugins", "install", "--force", dir.to_str().expect("utf-8")]);
    assert!(out.contains("replaced plugin p"), "{out}");
    assert_eq!(
        list_line(&ok(&home, &["plugins", "list"]), "p"),
        ["p", "2", "new", "-", "ok"]
    );
    assert!(!home.plugins().join("p/only_in_v1").exists());
    assert_eq!(home.entries(), ["p"]);
}

#[test]
fn remove_keeps_the_admin_override() {
    let home = init();
    ok(&home, &["plugins", "create", "gone"]);
    ok(&home, &["plugins", "create", "kept"]);
    let ovr = home.root.join("config/plugins/gone.ini");
    write(&ovr, "[step_main]\nnumprocesses = 2\n");
    let out = ok(&home, &["plugins", "remove", "gone"]);
    assert!(out.contains("removed plugin gone"), "{out}");
    assert!(out.contains("gone.ini is kept"), "{out}");
    assert!(out.contains(HINT), "{out}");
    assert!(ovr.exists());
    assert_eq!(home.entries(), ["kept"]);

    let err = refused(&home, &["plugins", "remove", "gone"]);
    assert!(err.contains("no plugin gone"), "{err}");
    let err = refused(&home, &["plugins", "remove", "../config"]);
    assert!(err.contains("invalid plugin name"), "{err}");
    assert!(home.root.join("config").is_dir());
}

#[test]
fn archives_with_links_or_devices_are_refused_and_setuid_bits_dropped() {
    use std::os::unix::fs::PermissionsExt;
    let home = init();
    let src = home._tmp.path().join("src");
    let plugin = src.join("linky");
    fs::create_dir_all(&plugin).expect("mkdir");
    fs::write(plugin.join("config.ini"), "[step_main]\ncmd_and_args = /bin/true\n").expect("config");
    std::os::unix::fs::symlink("/etc/hostname", plugin.join("escape")).expect("symlink");
    let archive = home._tmp.path().join("linky.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("linky")
        .status()
        .expect("tar");
    assert!(st.success());
    let out = ironwork(&home, &["plugins", "install", archive.to_str().unwrap_or_default()]);
    assert!(
        !out.status.success() && text(&out).contains("links, devices and FIFOs are refused"),
        "{}",
        text(&out)
    );
    assert!(home.entries().is_empty(), "{:?}", home.entries());

    fs::remove_file(plugin.join("escape")).expect("rm link");
    fs::write(plugin.join("tool"), "#!/bin/sh\n").expect("tool");
    fs::set_permissions(plugin.join("tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    let archive = home._tmp.path().join("linky.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("linky")
        .status()
        .expect("tar");
    assert!(st.success());
    let out = ironwork(&home, &["plugins", "install", archive.to_str().unwrap_or_default()]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = fs::metadata(home.plugins().join("linky/tool"))
        .expect("tool")
        .permissions()
        .mode();
    assert_eq!(mode & 0o6000, 0, "setuid kept: {mode:o}");
}

#[test]
fn the_app_rust_template_builds_and_serves_http_on_its_socket() {
    use std::io::{Read, Write};
    let home = init();
    let out = ok(&home, &["plugins", "create", "hello_rs", "--template", "app-rust"]);
    assert!(out.contains("apps main"), "{out}");
    let dir = home.plugins().join("hello_rs");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo build");
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let plugin = Plugin::load(&dir, None).expect("loads");
    let cmd = &plugin.apps[0].cmd_and_args;
    assert_eq!(cmd[0], dir.join("target/release/hello_rs").display().to_string());
    assert_eq!(cmd[1], "{unix_socket_path}");

    let sock = dir.join("w.sock");
    std::fs::write(&sock, "stale").expect("a stale file where the socket goes");
    let mut worker = Command::new(&cmd[0]).arg(&sock).spawn().expect("start the worker");
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&sock) {
            c.write_all(b"GET /hello_rs/main/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .expect("send");
            c.read_to_string(&mut answer).expect("read");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
}
