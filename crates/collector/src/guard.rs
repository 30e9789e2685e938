//! Overlap guards: a run of a (collection, target) holds the key
//! `collector.running.<plugin>.<collection>.<target>` while it goes, anywhere in the fleet, so a
//! job arriving meanwhile is skipped (and counted) instead of starting a second run.
//!
//! Each guard holds a token unique to its run and is released with a compare-and-delete, so a
//! run whose guard expired (a Redis outage delayed its result) can never release the guard of
//! the run that came after it. Taking and releasing go in pipelines: one round trip per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ironwork_core::messages::names;
use redis::RedisError;

use crate::collection::RunLimits;
use crate::shared::Shared;

/// Deletes the key only while it holds the token. Single-key, so it works on Redis Cluster.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// One held guard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Guard {
    /// The key.
    pub key: String,
    /// This run's token.
    pub token: String,
}

/// The deadline that ends any run whose probe ignores its own timeout: the run's timeout plus
/// the time its kill sequence may take.
pub fn outer_timeout(limits: &RunLimits, timeout: Duration) -> Duration {
    timeout + limits.kill_grace + limits.drain + Duration::from_secs(1)
}

/// How long a guard lives: two outer timeouts (a job may wait in this process for one run to
/// end before its own starts) and a margin. A guard outliving its run is released at once;
/// this bound only matters when the process dies mid-run.
pub fn ttl(limits: &RunLimits, timeout: Duration) -> Duration {
    outer_timeout(limits, timeout) * 2 + Duration::from_secs(1)
}

/// Try to take the guard of each `(plugin, collection, target, timeout)`, in one round trip;
/// `None` where a run is going.
pub async fn take(shared: &Shared, wanted: &[(&str, &str, &str, Duration)]) -> Result<Vec<Option<Guard>>, RedisError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let limits = &shared.settings.limits;
    let mut pipe = redis::pipe();
    let mut guards = Vec::with_capacity(wanted.len());
    for &(plugin, collection, target, timeout) in wanted {
        let guard = Guard {
            key: names::collector_running(plugin, collection, target),
            token: format!("{}.{}", shared.id, SEQ.fetch_add(1, Ordering::Relaxed)),
        };
        pipe.cmd("SET")
            .arg(&guard.key)
            .arg(&guard.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl(limits, timeout).as_millis() as u64);
        guards.push(guard);
    }
    let mut c = shared.redis.conn();
    let replies: Vec<Option<String>> = pipe.query_async(&mut c).await?;
    Ok(guards.into_iter().zip(replies).map(|(g, r)| r.map(|_| g)).collect())
}

/// Add the release of `guards` to `pipe` (replies ignored).
pub fn release_in(pipe: &mut redis::Pipeline, guards: &[Guard]) {
    for g in guards {
        pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&g.key).arg(&g.token).ignore();
    }
}

/// Release `guards` in one round trip (best effort: an unreleased guard expires by itself).
pub async fn release(shared: &Shared, guards: &[Guard]) {
    if guards.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    release_in(&mut pipe, guards);
    let mut c = shared.redis.conn();
    if let Err(e) = pipe.query_async::<()>(&mut c).await {
        tracing::debug!(error = %e, guards = guards.len(), "guard release failed; they expire by themselves");
    }
}
