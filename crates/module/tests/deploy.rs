//! `deploy/`: `deploy/check` (systemd units, sysusers/tmpfiles, the compose file, the Dockerfile,
//! the watcher names) passes on the repository's files and fails, naming the file, on each kind
//! of mistake; the `ironwork.ini` files shipped there are accepted by the module.
//!
//! `deploy/check` needs systemd-analyze, check-jsonschema and hadolint (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use ironwork::settings::Settings;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `deploy/check [DIR]`: its exit code and its output (stdout then stderr).
fn check(dir: Option<&Path>) -> (Option<i32>, String) {
    let mut cmd = Command::new(repo().join("deploy/check"));
    if let Some(dir) = dir {
        cmd.arg(dir);
    }
    let out = cmd.output().expect("run deploy/check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(2),
        "deploy/check could not run (a tool is missing or the directory is wrong):\n{text}"
    );
    (out.status.code(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read deploy/") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Check a copy of `deploy/` whose `file` (relative to `deploy/`) has its first `from` replaced
/// by `to`: it must fail, with a FAIL line naming the file. Returns the output.
fn check_broken(file: &str, from: &str, to: &str) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    copy_dir(&repo().join("deploy"), &dir);
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read the file to break");
    assert!(text.contains(from), "{file} has no {from:?} to break");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write the broken file");
    let (code, out) = check(Some(&dir));
    assert_eq!(
        code,
        Some(1),
        "deploy/check accepted {file} with {from:?} changed to {to:?}:\n{out}"
    );
    let name = Path::new(file).file_name().and_then(|n| n.to_str()).expect("file name");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL") && l.contains(name)),
        "no FAIL line names {name}:\n{out}"
    );
    out
}

#[test]
fn the_repository_deploy_directory_passes() {
    let (code, out) = check(None);
    assert_eq!(code, Some(0), "deploy/check failed:\n{out}");
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn a_misspelt_unit_key_fails() {
    let out = check_broken("systemd/ironwork-gc.service", "ProtectSystem=", "ProtectSytem=");
    assert!(out.contains("ProtectSytem"), "{out}");
}

#[test]
fn a_bad_unit_value_fails() {
    let out = check_broken(
        "systemd/ironwork-reflector.service",
        "Restart=on-failure",
        "Restart=sometimes",
    );
    assert!(out.contains("sometimes"), "{out}");
}

#[test]
fn a_missing_executable_fails() {
    let out = check_broken(
        "systemd/ironwork-directory-observer.service",
        "ExecStart=/usr/local/bin/ironwork ",
        "ExecStart=/usr/local/bin/ironwrok ",
    );
    assert!(out.contains("/usr/local/bin/ironwrok"), "{out}");
}

#[test]
fn a_weaker_sandbox_fails() {
    let out = check_broken(
        "systemd/ironwork-gc.service",
        "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged\n",
        "",
    );
    assert!(out.contains("exposure score"), "{out}");
}

#[test]
fn an_undeclared_user_fails() {
    let out = check_broken("systemd/ironwork-gc.service", "User=ironwork", "User=ironwrk");
    assert!(out.contains("ironwrk"), "{out}");
}

#[test]
fn a_bad_depends_on_condition_fails() {
    let out = check_broken(
        "compose/compose.yaml",
        "    depends_on: *after-init",
        "    depends_on: {x: {condition: nope}}",
    );
    assert!(out.contains("nope"), "{out}");
}

#[test]
fn apt_get_install_with_recommends_fails() {
    let out = check_broken("Dockerfile", "--no-install-recommends ", "");
    assert!(out.contains("DL3015"), "{out}");
}

#[test]
fn an_unknown_watcher_name_fails() {
    let out = check_broken("compose/compose.yaml", "exec collector", "exec colector");
    assert!(out.contains("exec colector"), "{out}");
}

fn load(rel: &str) -> Settings {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Settings::parse(&path, &text).unwrap_or_else(|e| panic!("{} refused:\n{e}", path.display()))
}

#[test]
fn the_shipped_ironwork_ini_files_are_accepted() {
    let systemd = load("deploy/config/ironwork.ini");
    assert_eq!(systemd.redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
    assert!(
        !systemd.daemons.conf_monitor,
        "nothing reads conf_monitor's notifications without ringmaster"
    );

    let compose = load("deploy/compose/config/ironwork.ini");
    assert_eq!(compose.redis.url.as_deref(), Some("redis://redis:6379"));
    assert_eq!(compose.elasticsearch.url.as_deref(), Some("http://elasticsearch:9200"));
    assert_eq!(compose.influxdb.url.as_deref(), Some("http://influxdb:8086"));
    assert_eq!(compose.influxdb.database.as_deref(), Some("ironwork"));

    // Each daemon the stack's ironwork.ini turns on has its service, and only those.
    let yaml = std::fs::read_to_string(repo().join("deploy/compose/compose.yaml")).expect("read compose.yaml");
    let d = compose.daemons;
    for (name, on) in [
        ("directory_observer", d.directory_observer),
        ("conf_monitor", d.conf_monitor),
        ("jsonlog2es", d.jsonlog2es),
        ("mflog2mfadmin", d.mflog2mfadmin),
        ("collector", d.collector),
        ("reflector", d.reflector),
        ("gc", d.gc),
    ] {
        assert_eq!(
            yaml.contains(&format!("exec {name}\n")),
            on,
            "[daemons] {name} = {on} in deploy/compose/config/ironwork.ini, but compose.yaml says otherwise"
        );
    }
}
