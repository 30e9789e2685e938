//! Helpers of the module's end-to-end tests: the built daemons, the `ironwork` binary on a
//! home, waiting, and a guard that stops the stack.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A plugin `demo` with one step appending each file to `$IRONWORK_HOME/out`, fed `*.txt` by the
/// switch.
pub const DEMO_STEP: &str = "\
[step_main]
cmd_and_args = /bin/sh -c 'cat \"$1\" >> \"$IRONWORK_HOME/out\"' sh
numprocesses = 1

[switch_rules:fnmatch:first.core.original_basename]
*.txt = demo/main
";

/// The daemons, built beside the `ironwork` binary by `cargo test --workspace`.
pub fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_ironwork"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    for b in ["ringmaster", "ringctl", "directory_observer", "step", "conf_monitor"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run the workspace's tests (cargo test --workspace) so every daemon is built",
            dir.join(b).display()
        );
    }
    dir
}

pub fn ironwork(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironwork"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run ironwork")
}

/// `ironwork init HOME`, with `[binaries] dir` set to `bins`.
pub fn init(home: &Path, bins: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_ironwork"))
        .arg("init")
        .arg(home)
        .output()
        .expect("init");
    assert!(out.status.success(), "{}", text(&out));
    let ini = home.join("config/ironwork.ini");
    let settings = std::fs::read_to_string(&ini).expect("ironwork.ini");
    let settings = settings.replace("\ndir =\n", &format!("\ndir = {}\n", bins.display()));
    std::fs::write(&ini, settings).expect("write");
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the stack even when an assertion fails.
pub struct Running(pub PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = ironwork(&self.0, &["stop"]);
    }
}
