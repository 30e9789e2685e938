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
use tokio::process::Command;
use tokio::task::JoinHandle;

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
    let stdout = reader(child.stdout.take(), limits.stdout_max);
    let stderr = reader(child.stderr.take(), limits.stderr_max);

    let mut timed_out = false;
    let mut killed = false;
    let status = match tokio::time::timeout(exec.timeout, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            timed_out = true;
            guard.signal(Signal::SIGTERM);
            let grace_end = tokio::time::Instant::now() + limits.kill_grace;
            let status = match tokio::time::timeout_at(grace_end, child.wait()).await {
                Ok(status) => Some(status?),
                Err(_) => None,
            };
            // The script may be gone while a member of its group ignores SIGTERM: the whole
            // group gets the grace, then SIGKILL.
            while status.is_some() && guard.alive() && tokio::time::Instant::now() < grace_end {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if status.is_none() || guard.alive() {
                killed = true;
                guard.signal(Signal::SIGKILL);
            }
            match status {
                Some(s) => s,
                None => child.wait().await?,
            }
        }
    };

    // The child is reaped. Its pipes close when every process holding them is gone; give
    // lingering grandchildren `drain`, then kill what is left of the group.
    let deadline = tokio::time::Instant::now() + limits.drain;
    let (stdout, stderr) = (stdout, stderr);
    let mut outputs = [stdout, stderr];
    let mut results: [Option<(Vec<u8>, bool)>; 2] = [None, None];
    for (i, handle) in outputs.iter_mut().enumerate() {
        match tokio::time::timeout_at(deadline, &mut *handle).await {
            Ok(r) => results[i] = Some(r.unwrap_or_default()),
            Err(_) => {
                killed = true;
                guard.signal(Signal::SIGKILL);
                // SIGKILL closes the holders' descriptors at once; a holder outside the group
                // (setsid) is not ours to kill: stop reading from it.
                match tokio::time::timeout(Duration::from_millis(200), &mut *handle).await {
                    Ok(r) => results[i] = Some(r.unwrap_or_default()),
                    Err(_) => {
                        handle.abort();
                        results[i] = Some((Vec::new(), false));
                    }
                }
            }
        }
    }
    guard.0 = None;
    let [out, err] = results;
    let (stdout, stdout_truncated) = out.unwrap_or_default();
    let (stderr, _) = err.unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stdout_truncated,
        stderr,
        timed_out,
        killed,
        elapsed: started.elapsed(),
    })
}

/// Read `pipe` to its end, keeping the first `max` bytes: the rest is drained (so the writer
/// never blocks on a full pipe) and reported as truncation.
fn reader<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>, max: usize) -> JoinHandle<(Vec<u8>, bool)> {
    tokio::spawn(async move {
        let Some(mut pipe) = pipe else {
            return (Vec::new(), false);
        };
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = vec![0u8; 8192];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    truncated |= n > room;
                }
            }
        }
        (kept, truncated)
    })
}
