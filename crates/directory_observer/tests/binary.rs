//! The real `directory_observer` binary: `--check`, Metwork's `--config=PATH` form, relative
//! configs under the runtime home, SIGHUP reload, and SIGTERM → exit 0 within a deadline.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use common::{Env, DEADLINE};
use ironwork_test_support::wait_for;

const Q: &str = "step.bin.main";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_directory_observer"));
    c.env_remove("IRONWORK_HOME").env("IRONWORK_LOG", "debug");
    c
}

fn check(args: &[&str], home: Option<&std::path::Path>) -> Output {
    let mut c = bin();
    c.arg("--check").args(args);
    if let Some(h) = home {
        c.env("IRONWORK_HOME", h);
    }
    c.output().expect("run --check")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig}");
}

#[test]
fn check_reports_every_error_and_exits_2() {
    let env = Env::new();
    let path = env.write_config(
        "bogus=1\n",
        "[step_bin_main]\nactive=true\nqueue=q\nforced_poll=soon\n[step_other]\nactive=true\ndirectory=/x\n",
    );
    let out = check(&["--config", path.to_str().expect("utf8")], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "[common] bogus: unknown key",
        "[step_bin_main] directory: missing required key",
        "[step_bin_main] forced_poll: expected a duration",
        "[step_other] queue: missing required key",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
}

#[test]
fn check_accepts_metwork_equals_form_and_relative_config_under_home() {
    let env = Env::new();
    env.write_config(
        "",
        &format!("[step_bin_main]\nactive=true\ndirectory=step.bin.main\nqueue={Q}\n"),
    );
    let auto = env.home().join("tmp/config_auto");
    std::fs::create_dir_all(&auto).expect("mkdir");
    std::fs::copy(env.config_path(), auto.join("directory_observer.ini")).expect("copy");
    let out = check(&["--config=directory_observer.ini"], Some(env.home()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "[step_bin_main] {} -> {Q}",
            env.dir("step.bin.main").display()
        )),
        "{stdout}"
    );
    // Without a home, a relative path is relative to the working directory: not found here.
    let out = check(&["--config=directory_observer.ini"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn runs_reloads_on_sighup_and_exits_zero_on_sigterm() {
    let env = Env::new();
    let config = env.write_config(
        "",
        &format!("[step_bin_main]\nactive=true\ndirectory=step.bin.main\nqueue={Q}\n"),
    );
    let log = std::fs::File::create(env.home().join("observer.log")).expect("log");
    let mut child = bin()
        .env("IRONWORK_HOME", env.home())
        .arg(format!("--config={}", config.display()))
        .args(["--log-format", "json", "--grace", "3s"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let read_log = || std::fs::read_to_string(env.home().join("observer.log")).unwrap_or_default();
    let dir = env.dir("step.bin.main");
    assert!(
        wait_for(DEADLINE, || read_log().contains("directory_observer running")),
        "never started:\n{}",
        read_log()
    );
    std::fs::write(dir.join("one"), b"x").expect("write");
    env.wait_names(Q, &["one".to_string()]);

    // SIGHUP: a second directory appears.
    env.write_config(
        "",
        &format!(
            "[step_bin_main]\nactive=true\ndirectory=step.bin.main\nqueue={Q}\n\
             [step_bin_two]\nactive=true\ndirectory=step.bin.two\nqueue={Q}\n"
        ),
    );
    signal(&child, "HUP");
    let two = env.dir("step.bin.two");
    assert!(
        wait_for(DEADLINE, || read_log().contains("configuration reloaded")),
        "{}",
        read_log()
    );
    std::fs::write(two.join("two"), b"x").expect("write");
    env.wait_names(Q, &["two".to_string()]);

    let sent = Instant::now();
    signal(&child, "TERM");
    assert!(
        wait_for(DEADLINE, || matches!(child.try_wait(), Ok(Some(_)))),
        "no exit after SIGTERM:\n{}",
        read_log()
    );
    let status = child.wait().expect("status");
    assert!(status.success(), "{status}:\n{}", read_log());
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
    let log = read_log();
    let first = log.lines().next().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["name"], "directory_observer");
}
