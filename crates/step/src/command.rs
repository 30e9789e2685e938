//! A step that runs a plugin command on each file: the file's path is the last argument (never
//! through a shell), the tags are in the environment, stdout and stderr go to the step's log
//! line by line, and a timeout sends SIGTERM to the command's process group, then SIGKILL. A
//! command dies with its worker (`PR_SET_PDEATHSIG`).

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::file::{Failure, Step, StepFile};
use crate::tags::{ORIGINAL_BASENAME, ORIGINAL_DIRNAME, ORIGINAL_UID};

/// Longest output line logged as is; longer lines are cut.
const MAX_LINE: usize = 4096;

/// Runs `argv` + the file path for every file.
#[derive(Debug, Clone)]
pub struct CommandStep {
    argv: Vec<String>,
    timeout: Duration,
    kill_grace: Duration,
    /// `MFDATA_CURRENT_PLUGIN_DIR`: each command runs there, resolved by path at every spawn,
    /// so a plugin replaced on disk is used at once (the worker's own working directory would
    /// still be the old, deleted one).
    plugin_dir: Option<std::path::PathBuf>,
}

impl CommandStep {
    /// `argv` must not be empty. A command still running after `timeout` gets SIGTERM, and
    /// SIGKILL `kill_grace` later.
    pub fn new(argv: Vec<String>, timeout: Duration, kill_grace: Duration) -> Self {
        Self {
            argv,
            timeout,
            kill_grace,
            plugin_dir: std::env::var_os("MFDATA_CURRENT_PLUGIN_DIR")
                .filter(|d| !d.is_empty())
                .map(Into::into),
        }
    }

    fn command(&self, file: &StepFile) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        if let Some(dir) = &self.plugin_dir {
            cmd.current_dir(dir);
        }
        cmd.args(&self.argv[1..])
            .arg(file.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("IRONWORK_FILE", file.path())
            .env("IRONWORK_PLUGIN", &*file.plugin)
            .env("IRONWORK_STEP", &*file.step)
            .env("IRONWORK_CLAIM_ID", file.claim_id())
            .env("IRONWORK_CLAIMED_FROM", file.claimed_from())
            .env("IRONWORK_TAGS", file.tags().to_json())
            .env("MFDATA_CURRENT_PLUGIN_NAME", &*file.plugin)
            .env("MFDATA_CURRENT_STEP_NAME", &*file.step);
        for (var, tag) in [
            ("IRONWORK_ORIGINAL_BASENAME", ORIGINAL_BASENAME),
            ("IRONWORK_ORIGINAL_UID", ORIGINAL_UID),
            ("IRONWORK_ORIGINAL_DIRNAME", ORIGINAL_DIRNAME),
        ] {
            if let Some(v) = file.tag(tag) {
                cmd.env(var, v);
            }
        }
        // A worker killed outright takes its command with it, so a restarted worker never
        // races a leftover command on the same claimed file.
        #[allow(unsafe_code)]
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        cmd
    }
}

impl Step for CommandStep {
    async fn process(&mut self, file: &mut StepFile) -> Result<(), Failure> {
        let mut child = self
            .command(file)
            .spawn()
            .map_err(|e| Failure::new(format!("cannot start {}: {e}", self.argv[0])))?;
        let path = file.path().display().to_string();
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, "stdout", path.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, "stderr", path.clone())));
        let outcome = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("{} exited with {status}", self.argv[0])),
            Ok(Err(e)) => Err(format!("cannot wait for {}: {e}", self.argv[0])),
            Err(_) => {
                self.terminate(&mut child).await;
                Err(format!(
                    "{} timed out after {}s",
                    self.argv[0],
                    self.timeout.as_secs_f64()
                ))
            }
        };
        collect(stdout).await;
        let last_err = collect(stderr).await;
        outcome.map_err(|mut reason| {
            if let Some(line) = last_err {
                reason.push_str(": ");
                reason.push_str(&line);
            }
            Failure::new(reason)
        })
    }
}

impl CommandStep {
    /// SIGTERM the command's process group, SIGKILL it after the grace period.
    async fn terminate(&self, child: &mut Child) {
        let Some(pid) = child.id() else { return };
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(self.kill_grace, child.wait()).await.is_err() {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

/// The result of an output pump, waiting at most a second once the command is gone (a child it
/// left behind may hold the pipe open).
async fn collect(pump: Option<tokio::task::JoinHandle<Option<String>>>) -> Option<String> {
    let mut pump = pump?;
    match tokio::time::timeout(Duration::from_secs(1), &mut pump).await {
        Ok(result) => result.ok().flatten(),
        Err(_) => {
            pump.abort();
            None
        }
    }
}

/// Log each line of `stream` at INFO; returns the last non-empty line (for failure reasons).
async fn pump(mut stream: impl AsyncRead + Unpin, name: &'static str, file: String) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut last: Option<String> = None;
    let emit = |line: &mut Vec<u8>, last: &mut Option<String>| {
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        line.clear();
        if !text.is_empty() {
            tracing::info!(stream = name, %file, line = %text, "command output");
            *last = Some(text);
        }
    };
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line, &mut last);
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    emit(&mut line, &mut last);
    last
}
