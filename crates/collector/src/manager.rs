//! The collection manager: only in the process holding the leader lease. It sleeps until the
//! next due slot, then pushes every job due at that instant to `collector.job.queue` in one
//! round trip. Every `trigger_interval` it checks that consumers keep up: a queue whose oldest
//! job was scheduled a whole trigger interval ago is stale, so it is cleared and the discarded
//! count is logged and counted (Qmonus semantics: late jobs are dropped, not run late). It also
//! refreshes the disabled set, re-enabling collections whose `disable_for` has passed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ironwork_core::messages::{epoch_seconds, names, CollectionJob};
use ironwork_core::Queue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::schedule::Schedule;
use crate::shared::Shared;

fn now_ms() -> u64 {
    (epoch_seconds() * 1000.0) as u64
}

/// Run the manager whenever `leader` says this process leads, until `token` is cancelled.
pub async fn run(shared: Arc<Shared>, mut leader: watch::Receiver<bool>, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            r = leader.wait_for(|l| *l) => if r.is_err() { return },
        }
        shared.stats.leader.set(1);
        tracing::info!("collection manager active");
        lead(&shared, &mut leader, &token).await;
        shared.stats.leader.set(0);
        if token.is_cancelled() {
            return;
        }
        tracing::info!("collection manager standing by");
    }
}

/// One term as leader: returns when leadership is lost or `token` is cancelled.
async fn lead(shared: &Shared, leader: &mut watch::Receiver<bool>, token: &CancellationToken) {
    let jobs = Queue::new(&shared.redis, names::COLLECTOR_JOB);
    let mut defs_rx = shared.defs.subscribe();
    let mut schedule = Schedule::new(&defs_rx.borrow_and_update().collections, now_ms());
    tracing::info!(entries = schedule.len(), "schedule built");
    let trigger = shared.settings.trigger_interval;
    let mut next_check = tokio::time::Instant::now();
    let mut disabled: HashSet<String> = HashSet::new();
    loop {
        if !*leader.borrow() || token.is_cancelled() {
            return;
        }
        let wake = match schedule.next_due() {
            Some(due) => {
                let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                next_check.min(tokio::time::Instant::now() + wait)
            }
            None => next_check,
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = leader.changed() => continue,
            r = defs_rx.changed() => {
                if r.is_ok() {
                    schedule = Schedule::new(&defs_rx.borrow_and_update().collections, now_ms());
                    tracing::info!(entries = schedule.len(), "schedule rebuilt");
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + trigger;
            // Leadership lost or shutdown mid-way: stop before touching the queue.
            let checked = tokio::select! {
                _ = token.cancelled() => return,
                _ = leader.wait_for(|l| !*l) => return,
                d = async {
                    clear_if_stale(shared, &jobs, trigger).await;
                    refresh_disabled(shared).await
                } => d,
            };
            if let Some(d) = checked {
                disabled = d;
            }
        }
        let (due, skipped) = schedule.take_due(now_ms());
        if skipped > 0 {
            shared.stats.slots_skipped.add(skipped);
            tracing::warn!(skipped, "schedule slots missed and skipped (the manager was late)");
        }
        if due.is_empty() {
            continue;
        }
        let mut payloads = Vec::with_capacity(due.len());
        for d in &due {
            let c = &d.entry.collection;
            if disabled.contains(&c.id()) {
                shared.stats.jobs_disabled.inc();
                continue;
            }
            let job = CollectionJob {
                plugin: c.plugin.clone(),
                collection: c.name.clone(),
                target: d.entry.target.clone(),
                scheduled_at: d.due_ms as f64 / 1000.0,
                correlation_info: c.correlation_info.clone(),
            };
            payloads.push(serde_json::to_vec(&job).unwrap_or_default());
        }
        let pushed = tokio::select! {
            _ = token.cancelled() => return,
            _ = leader.wait_for(|l| !*l) => return,
            r = jobs.push_batch(&payloads) => r,
        };
        match pushed {
            Ok(_) => {
                shared.stats.jobs_enqueued.add(payloads.len() as u64);
                // The running total operators see (`ironwork status`, the console), off the
                // scheduling path: one attempt, a lost count is only a figure.
                let (mut c, n) = (shared.redis.conn(), payloads.len());
                tokio::spawn(async move {
                    let r: Result<u64, _> = redis::cmd("INCRBY")
                        .arg(names::COLLECTOR_JOBS_ENQUEUED)
                        .arg(n)
                        .query_async(&mut c)
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "could not count the enqueued jobs");
                    }
                });
                let pushed = now_ms();
                for d in &due {
                    shared.stats.lateness.record(pushed.saturating_sub(d.due_ms));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = payloads.len(), "could not enqueue due jobs; their slots are lost")
            }
        }
    }
}

/// Clear `collector.job.queue` when its oldest job waited a whole trigger interval.
async fn clear_if_stale(shared: &Shared, jobs: &Queue, trigger: Duration) {
    let mut c = shared.redis.conn();
    // Producers LPUSH, consumers RPOP: the oldest job is the last element.
    let oldest: Option<Vec<u8>> = match redis::cmd("LINDEX").arg(jobs.name()).arg(-1).query_async(&mut c).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "stale check failed");
            return;
        }
    };
    let Some(oldest) = oldest else { return };
    let stale = match serde_json::from_slice::<CollectionJob>(&oldest) {
        Ok(job) => epoch_seconds() - job.scheduled_at >= trigger.as_secs_f64(),
        // Not a job: the consumers dead-letter it; it does not make the queue stale.
        Err(_) => false,
    };
    if !stale {
        return;
    }
    let cleared: Result<(u64, u64), _> = redis::pipe()
        .atomic()
        .cmd("LLEN")
        .arg(jobs.name())
        .cmd("DEL")
        .arg(jobs.name())
        .query_async(&mut c)
        .await;
    match cleared {
        Ok((n, _)) => {
            shared.stats.jobs_discarded.add(n);
            tracing::warn!(
                discarded = n,
                queue = jobs.name(),
                "job queue was stale (consumers do not keep up): cleared"
            );
        }
        Err(e) => tracing::debug!(error = %e, "clearing the stale job queue failed"),
    }
}

/// The collections disabled now; those whose time is up are removed from the hash.
async fn refresh_disabled(shared: &Shared) -> Option<HashSet<String>> {
    let mut c = shared.redis.conn();
    let all: std::collections::HashMap<String, f64> = redis::cmd("HGETALL")
        .arg(names::COLLECTOR_DISABLED)
        .query_async(&mut c)
        .await
        .ok()?;
    let now = epoch_seconds();
    let mut disabled = HashSet::new();
    let mut expired = Vec::new();
    for (id, until) in all {
        if until > now {
            disabled.insert(id);
        } else {
            expired.push(id);
        }
    }
    if !expired.is_empty() {
        // Only entries still expired go: a `disable` that came meanwhile stands.
        let mut pipe = redis::pipe();
        for id in &expired {
            pipe.cmd("EVAL")
                .arg(REENABLE)
                .arg(1)
                .arg(names::COLLECTOR_DISABLED)
                .arg(id)
                .arg(now)
                .ignore();
        }
        if pipe.query_async::<()>(&mut c).await.is_ok() {
            tracing::info!(collections = ?expired, "disabled collections enabled again");
        }
    }
    Some(disabled)
}

/// Removes a disabled entry only while its time is still up.
const REENABLE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and tonumber(v) <= tonumber(ARGV[2]) then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";
