//! Event-driven reaping: every SIGCHLD wakes one task that collects every exited child with
//! `waitpid(-1, WNOHANG)` and hands each status to whoever registered for that pid.
//!
//! ringmaster is a child subreaper, so orphaned grandchildren are reparented to it: they are
//! reaped here too (nobody registered for them), so no zombie is ever left behind. ringmaster
//! never uses another way of waiting for children (no `tokio::process`), or statuses would be stolen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl Exit {
    /// A shell-style status: the code, or 128 + signal.
    pub fn as_status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s)
                    .map(|s| s.as_str())
                    .unwrap_or("?");
                write!(f, "killed by {name}")
            }
        }
    }
}

/// Held (shared) while children are being spawned, and (exclusive) by the reaper while it reaps.
/// std's `spawn` waits for a child whose exec failed by itself; without this lock the reaper could
/// collect that status first and std would panic.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// Take the spawn lock around every `Command::spawn` in ringmaster (spawns may overlap).
pub fn spawn_lock() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWN_LOCK.read().unwrap_or_else(|p| p.into_inner())
}

/// How long the status of a child nobody registered for is kept (it may be registered late:
/// a child can exit before its spawner has registered it).
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Hands out exit statuses by pid. Cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    // A std Mutex: held for a map operation, never across an await.
    table: Arc<Mutex<Table>>,
}

impl Reaper {
    /// Install the SIGCHLD handler and spawn the reaping task.
    pub fn start() -> std::io::Result<Reaper> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper { table: Arc::default() };
        let r = reaper.clone();
        tokio::spawn(async move {
            // A periodic pass as a safety net; SIGCHLD is what makes reaping prompt.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    s = sigchld.recv() => if s.is_none() { break },
                    _ = tick.tick() => {}
                }
                r.reap_all();
            }
        });
        Ok(reaper)
    }

    /// Drop any status kept for `pid`: call it for a child just spawned (under the spawn lock,
    /// so the reaper cannot have collected the new child yet): a status found now belongs to an
    /// earlier process that had the same pid.
    pub fn forget(&self, pid: i32) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.unclaimed.remove(&pid);
    }

    /// A receiver for `pid`'s exit status (already complete if it exited before this call).
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match t.unclaimed.remove(&pid) {
            Some((exit, _)) => {
                let _ = tx.send(exit);
            }
            None => {
                t.waiting.insert(pid, tx);
            }
        }
        rx
    }

    fn reap_all(&self) {
        let _spawning = SPAWN_LOCK.write().unwrap_or_else(|p| p.into_inner());
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid.as_raw(), Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.deliver(pid.as_raw(), Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.unclaimed.retain(|_, (_, at)| at.elapsed() < UNCLAIMED_TTL);
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match t.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => {
                tracing::debug!(pid, %exit, "reaped a child nobody waits for (yet)");
                t.unclaimed.insert(pid, (exit, Instant::now()));
            }
        }
    }
}
