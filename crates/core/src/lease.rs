//! Leader lease on Redis: at most one holder of a named lease at a time, for singleton jobs
//! (collection manager, expiry) in a fleet of identical processes.
//!
//! Acquire is `SET key token NX PX ttl`; renew and release are Lua scripts that act only while
//! the key still holds our token, so a holder that stalled past its TTL cannot extend or delete
//! a successor's lease. [`LeaseKeeper`] runs the renew loop and publishes leadership changes; a
//! holder that cannot reach Redis gives up leadership locally before its TTL can have expired.

use std::time::Duration;

use rand::Rng;
use redis::{AsyncCommands, RedisError, Script};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::Redis;

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// One contender for a named lease.
#[derive(Debug, Clone)]
pub struct Lease {
    redis: Redis,
    key: String,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// A contender for `key` with a fresh random token. `ttl` is how long a silent holder keeps it.
    pub fn new(redis: &Redis, key: impl Into<String>, ttl: Duration) -> Self {
        let token = format!(
            "{}.{}.{:016x}",
            node_name(),
            std::process::id(),
            rand::rng().random::<u64>()
        );
        Self {
            redis: redis.clone(),
            key: key.into(),
            token,
            ttl: ttl.max(Duration::from_millis(10)),
        }
    }

    /// This contender's token (what the key holds while it leads).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lease's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease's time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Take the lease if nobody holds it (or extend it if we do). True when we hold it now.
    pub async fn try_acquire(&self) -> Result<bool, RedisError> {
        let mut c = self.redis.conn();
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut c)
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        self.renew().await
    }

    /// Extend the lease if we still hold it. False means someone else holds it (or nobody).
    pub async fn renew(&self) -> Result<bool, RedisError> {
        let mut c = self.redis.conn();
        let n: i64 = Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(self.ttl_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Give the lease up if we hold it, so a successor need not wait for the TTL.
    pub async fn release(&self) -> Result<bool, RedisError> {
        let mut c = self.redis.conn();
        let n: i64 = Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// The current holder's token, if any.
    pub async fn holder(&self) -> Result<Option<String>, RedisError> {
        let mut c = self.redis.conn();
        c.get(&self.key).await
    }
}

/// Runs a [`Lease`]'s acquire/renew loop in the background and publishes leadership.
#[derive(Debug)]
pub struct LeaseKeeper {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Start contending. The holder renews every `ttl / 3`, contenders try every `ttl / 10`;
    /// cancelling `token` releases the lease.
    pub fn spawn(lease: Lease, token: CancellationToken) -> Self {
        let (tx, leader) = watch::channel(false);
        let task = tokio::spawn(keep(lease, token, tx));
        Self { leader, task }
    }

    /// Leadership as it changes: true while this process holds the lease.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Whether this process holds the lease now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Stop contending without releasing (as if the process froze or died): for tests and for
    /// callers that must not hand over yet.
    pub fn abandon(self) {
        self.task.abort();
    }

    /// Wait for the loop to finish after its token was cancelled.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn keep(lease: Lease, token: CancellationToken, tx: watch::Sender<bool>) {
    // A holder renews every third of the TTL; a contender tries every tenth, so a dead holder's
    // successor takes over at most a tenth of the TTL after the lease expires.
    let renew_period = lease.ttl / 3;
    let acquire_period = lease.ttl / 10;
    // Stop claiming leadership this long before the lease could have expired in Redis.
    let margin = lease.ttl / 10;
    let mut last_confirmed: Option<Instant> = None;
    loop {
        let attempt_started = Instant::now();
        let leading = *tx.borrow();
        let period = if leading { renew_period } else { acquire_period };
        let outcome = tokio::select! {
            _ = token.cancelled() => break,
            r = tokio::time::timeout(period, async {
                if leading { lease.renew().await } else { lease.try_acquire().await }
            }) => r,
        };
        match outcome {
            Ok(Ok(true)) => {
                last_confirmed = Some(attempt_started);
                if !leading {
                    tracing::info!(lease = %lease.key, "became leader");
                    tx.send_replace(true);
                }
            }
            Ok(Ok(false)) => {
                if leading {
                    tracing::warn!(lease = %lease.key, "leadership lost: lease held by another process");
                    tx.send_replace(false);
                }
                last_confirmed = None;
            }
            Ok(Err(e)) => {
                tracing::debug!(lease = %lease.key, error = %e, "lease attempt failed");
            }
            Err(_) => tracing::debug!(lease = %lease.key, "lease attempt timed out"),
        }
        if *tx.borrow() {
            let expired = last_confirmed.is_none_or(|t| t.elapsed() + margin >= lease.ttl);
            if expired {
                tracing::warn!(lease = %lease.key, "leadership lost: could not renew the lease in time");
                tx.send_replace(false);
            }
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep_until(attempt_started + period) => {}
        }
    }
    if *tx.borrow() {
        tx.send_replace(false);
        match lease.release().await {
            Ok(_) => tracing::info!(lease = %lease.key, "lease released"),
            Err(e) => tracing::warn!(lease = %lease.key, error = %e, "lease release failed; it expires by itself"),
        }
    }
}

/// This node's name, for lease tokens and consumer ids: `$IRONWORK_NODE` (the module sets it
/// from `[node] name`), else the host name. Nodes sharing a Redis need different names, which
/// two nodes on one machine only get from `IRONWORK_NODE`.
pub fn node_name() -> String {
    std::env::var("IRONWORK_NODE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(hostname)
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
