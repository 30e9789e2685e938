//! Running one external program the way a monitoring agent must: in its own process group,
//! stdout and stderr read concurrently with size caps, a deadline that ends with SIGTERM to
//! the whole group, then SIGKILL to the group after a grace period, and the child always reaped.
//!
//! The two classic failures of exec runners are handled here (Telegraf #2476, #2526; categraf's
//! `WaitDelay`): a timed-out script leaves no zombie and no orphaned grandchildren (the group is
//! signalled, not just the child), and a grandchild that keeps the stdout pipe open after the
//! script exited cannot hang the reader: after `drain` the group is killed and the output is
//! taken as it is. A process that leaves the group on purpose (`setsid`) is beyond reach.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::collection::RunLimits;

/// One program to run.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The program (absolute, or found on PATH).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Deadline before SIGTERM to the group.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status (always known: the child is always reaped).
    pub status: ExitStatus,
    /// Up to `stdout_max` bytes of stdout.
    pub stdout: Vec<u8>,
    /// True when stdout was longer than `stdout_max`.
    pub stdout_truncated: bool,
    /// Up to `stderr_max` bytes of stderr.
    pub stderr: Vec<u8>,
    /// True when the deadline passed and the group was signalled.
    pub timed_out: bool,
    /// True when the group had to be SIGKILLed (after the grace, or because a grandchild held
    /// the pipes past `drain`).
    pub killed: bool,
    /// Wall time from spawn to the end of the output.
    pub elapsed: Duration,
}

/// Kills the group if the run is abandoned half-way (the collector shutting down): no script
/// outlives the future that started it.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    /// Whether any process of the group is left (a group id cannot be reused while it is).
    fn alive(&self) -> bool {
        self.0.is_some_and(|pgid| killpg(pgid, None).is_ok())
    }

    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH: the group is already gone, which is what we want.
            let _ = killpg(pgid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Run `exec` to the end under `limits`. An `Err` means it could not be started.
pub async fn run(exec: &Exec, limits: &RunLimits) -> std::io::Result<Finished> {
    let started = Instant::now();
    let mut cmd = Command::new(&exec.program);
    cmd.args(&exec.args)
        .current_dir(&exec.cwd)
        .envs(exec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let mut out = Capped::new(limits.stdout_max);
    let mut err = Capped::new(limits.stderr_max);
    // Reading and waiting go on together in this task; the buffers outlive an abandoned read.
    let exited = Notify::new();
    let (exit, holders_killed) = {
        let exit = async {
            let r = wait_exit(&mut child, exec.timeout, limits.kill_grace, &guard).await;
            exited.notify_one();
            r
        };
        let reading = async {
            let both = async { tokio::join!(out.fill(stdout), err.fill(stderr)) };
            tokio::pin!(both);
            tokio::select! {
                _ = &mut both => false,
                // The child is reaped but its pipes stay open: a grandchild holds them. It gets
                // `drain`, then the group is killed; a holder outside the group (setsid) is not
                // ours to kill, and after 200 ms more it is no longer read.
                _ = async { exited.notified().await; tokio::time::sleep(limits.drain).await } => {
                    guard.signal(Signal::SIGKILL);
                    let _ = tokio::time::timeout(Duration::from_millis(200), &mut both).await;
                    true
                }
            }
        };
        tokio::join!(exit, reading)
    };
    let (status, timed_out, killed) = exit?;
    guard.0 = None;
    Ok(Finished {
        status,
        stdout: out.kept,
        stdout_truncated: out.truncated,
        stderr: err.kept,
        timed_out,
        killed: killed || holders_killed,
        elapsed: started.elapsed(),
    })
}

/// Wait for `child` until `timeout`; then SIGTERM to the group, the grace for the whole group,
/// SIGKILL to what is left. Returns the status, whether the deadline passed, whether SIGKILL
/// was needed.
async fn wait_exit(
    child: &mut Child,
    timeout: Duration,
    kill_grace: Duration,
    guard: &GroupGuard,
) -> std::io::Result<(ExitStatus, bool, bool)> {
    if let Ok(status) = tokio::time::timeout(timeout, child.wait()).await {
        return Ok((status?, false, false));
    }
    guard.signal(Signal::SIGTERM);
    let grace_end = tokio::time::Instant::now() + kill_grace;
    let status = match tokio::time::timeout_at(grace_end, child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => None,
    };
    // The script may be gone while a member of its group ignores SIGTERM: the whole group gets
    // the grace, then SIGKILL.
    while status.is_some() && guard.alive() && tokio::time::Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = status.is_none() || guard.alive();
    if killed {
        guard.signal(Signal::SIGKILL);
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().await?,
    };
    Ok((status, true, killed))
}

/// One output stream: the first `max` bytes kept, the rest read and dropped (so the writer never
/// blocks on a full pipe) and reported as truncation.
struct Capped {
    kept: Vec<u8>,
    truncated: bool,
    max: usize,
}

impl Capped {
    fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            truncated: false,
            max,
        }
    }

    /// Read `pipe` to its end into the buffer.
    async fn fill<R: AsyncRead + Unpin>(&mut self, pipe: Option<R>) {
        let Some(mut pipe) = pipe else { return };
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = self.max.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    self.truncated |= n > room;
                }
            }
        }
    }
}
