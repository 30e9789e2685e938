//! Shutdown and reload: one signal task per binary turns SIGTERM/SIGINT into cancellation and
//! SIGHUP into a reload notification. `run()` functions take the token and never touch signals,
//! so tests drive them with their own token.

use std::time::Duration;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the signal task hands the daemon.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Cancelled on the first SIGTERM or SIGINT: stop taking work, drain, exit 0.
    pub token: CancellationToken,
    /// Cancelled on a second SIGTERM or SIGINT: the operator wants out now, skip the grace period.
    pub force: CancellationToken,
    /// Bumped on every SIGHUP. A watch channel holds one value, so bursts coalesce into one reload.
    pub reload: watch::Receiver<u64>,
}

/// Owns the signal task; dropping it unregisters the handlers.
#[derive(Debug)]
pub struct SignalGuard {
    handle: signal_hook_tokio::Handle,
    task: JoinHandle<()>,
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        self.handle.close();
        self.task.abort();
    }
}

/// Run `reload` at every bump of `bumps` (SIGHUP), until `token` is cancelled.
pub fn on_reload(
    mut bumps: watch::Receiver<u64>,
    token: CancellationToken,
    reload: impl Fn() + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                r = bumps.changed() => if r.is_err() { return },
            }
            reload();
        }
    })
}

/// Install the handlers and spawn the signal task. Call once, from `main`.
pub fn spawn_signal_task() -> std::io::Result<(Shutdown, SignalGuard)> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let token = CancellationToken::new();
    let force = CancellationToken::new();
    let (reload_tx, reload) = watch::channel(0u64);
    let shutdown = Shutdown {
        token: token.clone(),
        force: force.clone(),
        reload,
    };
    let task = tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => {
                    tracing::info!(signal = "SIGHUP", "reload requested");
                    reload_tx.send_modify(|generation| *generation += 1);
                }
                _ if !token.is_cancelled() => {
                    tracing::info!(signal = signal_name(signal), "shutdown requested");
                    token.cancel();
                }
                _ => {
                    tracing::warn!(
                        signal = signal_name(signal),
                        "second shutdown signal, skipping the grace period"
                    );
                    force.cancel();
                }
            }
        }
    });
    Ok((shutdown, SignalGuard { handle, task }))
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "other",
    }
}

/// Close `tracker` and wait for its tasks, at most `grace`. Returns false when the deadline
/// passed with tasks still running (the caller logs and exits non-zero).
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(grace, tracker.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    // One test for all three signals: handlers are process-wide.
    #[tokio::test]
    async fn signals_map_to_cancel_reload_and_force() {
        let (mut shutdown, _guard) = spawn_signal_task().expect("signals");
        send("HUP");
        tokio::time::timeout(Duration::from_secs(5), shutdown.reload.changed())
            .await
            .expect("reload notified")
            .expect("sender alive");
        assert_eq!(*shutdown.reload.borrow(), 1);
        assert!(!shutdown.token.is_cancelled());
        send("TERM");
        tokio::time::timeout(Duration::from_secs(5), shutdown.token.cancelled())
            .await
            .expect("cancelled");
        assert!(!shutdown.force.is_cancelled());
        send("INT");
        tokio::time::timeout(Duration::from_secs(5), shutdown.force.cancelled())
            .await
            .expect("forced");
    }

    #[tokio::test]
    async fn drain_reports_a_missed_deadline() {
        let tracker = TaskTracker::new();
        tracker.spawn(async {});
        assert!(drain(&tracker, Duration::from_secs(5)).await);
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_secs(60)));
        assert!(!drain(&tracker, Duration::from_millis(50)).await);
    }
}
