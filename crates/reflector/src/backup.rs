//! The sent/unsent "tables" and the leader's jobs over them.
//!
//! - Backup writers (every process): move batches from `metrics.sent.queue` and
//!   `metrics.unsent.queue` into the sorted sets `metrics.sent` / `metrics.unsent`, scored by
//!   the epoch seconds of their last attempt.
//! - Resend (leader only): every `metrics_send_retry_interval`, unsent batches are sent again,
//!   oldest first, to the endpoint that missed them, one attempt each; a delivered batch leaves
//!   `metrics.unsent` (and enters `metrics.sent` when the sent backup is on). The first failure
//!   for an endpoint ends its round. Only the leader resends, so two processes never resend the
//!   same row at once; a crash between delivery and removal resends a batch InfluxDB already
//!   holds, which stores each series and timestamp once.
//! - Expiry (leader only): every `expiry_interval`, rows older than `metrics_sent_expire_days` /
//!   `metrics_unsent_expire_days` are deleted (unsent rows deleted this way are counted and
//!   logged: those points are given up).
//! - [`list`]: what `reflector sent|unsent --since --until` prints.

use std::sync::Arc;

use ironwork_core::messages::{epoch_seconds, names, MetricBatch};
use ironwork_core::Queue;
use redis::AsyncCommands;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::consumer::consume;
use crate::destination::{Failure, Prepared};
use crate::shared::{Shared, DEAD_CAP};

/// Batches one backup writer moves per round trip.
const BACKUP_BULK: usize = 100;
/// Rows the resend reads per page of `metrics.unsent`.
const RESEND_PAGE: isize = 100;
/// Batches one resend round delivers at most before yielding to the next round.
const RESEND_BUDGET: usize = 200;
/// Rows one resend round examines at most.
const RESEND_SCAN: usize = 1000;

/// Move batches from `queue` into the sorted set `table` until `token` is cancelled.
pub async fn write_backups(shared: Arc<Shared>, queue: &'static str, table: &'static str, token: CancellationToken) {
    let q = Queue::new(&shared.redis, queue);
    consume(
        &q,
        &shared.id,
        &token,
        || BACKUP_BULK,
        |consumer, deliveries| {
            let shared = shared.clone();
            Box::pin(async move {
                let decoded = consumer.decode::<MetricBatch>(deliveries, DEAD_CAP).await?;
                if decoded.is_empty() {
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                for (d, b) in &decoded {
                    pipe.zadd(table, &d.payload, b.attempted_at).ignore();
                }
                shared.redis.pipeline::<()>("backup", &pipe).await?;
                let done: Vec<_> = decoded.into_iter().map(|(d, _)| d).collect();
                consumer.ack(&done).await?;
                shared.stats.backups_written.add(done.len() as u64);
                Ok(())
            })
        },
    )
    .await;
}

/// The leader's resend and expiry loops, whenever `leader` says this process leads.
pub async fn lead(shared: Arc<Shared>, mut leader: watch::Receiver<bool>, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            r = leader.wait_for(|l| *l) => if r.is_err() { return },
        }
        shared.stats.leader.set(1);
        tracing::info!("reflector leader: resend and expiry active");
        let mut next_expiry = tokio::time::Instant::now();
        let mut orphans = 0;
        loop {
            if tokio::time::Instant::now() >= next_expiry {
                next_expiry = tokio::time::Instant::now() + shared.settings.expiry_interval;
                if let Err(e) = expire(&shared).await {
                    tracing::warn!(error = %e, "expiry failed; next try at the next interval");
                }
            }
            if let Err(e) = resend(&shared, &leader, &token, &mut orphans).await {
                tracing::warn!(error = %e, "resend failed; next try at the next interval");
            }
            let wait = shared
                .settings
                .retry_interval
                .min(next_expiry - tokio::time::Instant::now());
            tokio::select! {
                _ = token.cancelled() => break,
                _ = leader.wait_for(|l| !*l) => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        shared.stats.leader.set(0);
        if token.is_cancelled() {
            return;
        }
        tracing::info!("reflector leader: standing by");
    }
}

/// Delete the rows past their expiry.
pub async fn expire(shared: &Shared) -> anyhow::Result<()> {
    let now = epoch_seconds();
    let s = &shared.settings;
    for (table, age, counter) in [
        (names::METRICS_SENT, s.sent_expire, &shared.stats.sent_expired),
        (names::METRICS_UNSENT, s.unsent_expire, &shared.stats.unsent_expired),
    ] {
        let before = now - age.as_secs_f64();
        let removed: u64 = shared
            .redis
            .retry("expire", |mut c| async move {
                c.zrembyscore(table, "-inf", format!("({before}")).await
            })
            .await?;
        if removed > 0 {
            counter.add(removed);
            if table == names::METRICS_UNSENT {
                tracing::warn!(table, removed, older_than = ?age, "unsent batches expired: their points are given up");
            } else {
                tracing::info!(table, removed, "expired");
            }
        }
    }
    Ok(())
}

/// One resend round over `metrics.unsent`, oldest first. It stops at the first failure of each
/// endpoint, when no endpoint can take anything now, after [`RESEND_BUDGET`] deliveries, or
/// after [`RESEND_SCAN`] rows examined, so a long backlog for a server that is down costs
/// little. Rows of an endpoint no longer configured stay until they expire (and are logged).
async fn resend(
    shared: &Shared,
    leader: &watch::Receiver<bool>,
    token: &CancellationToken,
    last_orphans: &mut usize,
) -> anyhow::Result<()> {
    let interval = shared.settings.retry_interval;
    let mut failed: Vec<String> = Vec::new();
    let mut delivered = 0usize;
    let mut examined = 0usize;
    let mut orphans = 0usize;
    let mut offset: isize = 0;
    let open = |failed: &Vec<String>| {
        shared
            .destinations
            .iter()
            .any(|d| !failed.contains(&d.name) && !d.resting(interval))
    };
    loop {
        if !open(&failed) || examined >= RESEND_SCAN {
            break;
        }
        let rows: Vec<Vec<u8>> = shared
            .redis
            .retry("resend page", |mut c| async move {
                c.zrange(names::METRICS_UNSENT, offset, offset + RESEND_PAGE - 1).await
            })
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut kept = 0isize;
        for row in &rows {
            if token.is_cancelled() || !*leader.borrow() || delivered >= RESEND_BUDGET || !open(&failed) {
                return Ok(());
            }
            examined += 1;
            let batch: MetricBatch = match serde_json::from_slice(row) {
                Ok(b) => b,
                Err(e) => {
                    // Not a batch: it cannot be resent; keep it visible in the dead list.
                    let q = Queue::new(&shared.redis, names::METRICS_UNSENT_QUEUE);
                    q.dead_letter(
                        &shared.id,
                        row,
                        &format!("unreadable metrics.unsent row: {e}"),
                        DEAD_CAP,
                    )
                    .await?;
                    remove(shared, row).await?;
                    continue;
                }
            };
            let Some(dest) = shared.destinations.iter().find(|d| d.name == batch.endpoint) else {
                orphans += 1;
                kept += 1;
                continue;
            };
            if failed.contains(&dest.name) || dest.resting(interval) {
                kept += 1;
                continue;
            }
            let (prepared, _) = Prepared::new(&shared.settings.server_type, &batch.points);
            let outcome = dest.send(&prepared).await;
            dest.record(!matches!(outcome, Err(Failure::Unreachable(_))));
            match outcome {
                Ok(_) => {
                    delivered += 1;
                    shared.stats.points_resent.add(batch.points.len() as u64);
                    // Two keys in two cluster slots: in order, not as one transaction. A crash
                    // between them costs the sent-backup row, never a resend.
                    let mut pipe = redis::pipe();
                    pipe.zrem(names::METRICS_UNSENT, row).ignore();
                    if shared.settings.sent_backup {
                        let sent = MetricBatch {
                            attempted_at: epoch_seconds(),
                            attempts: batch.attempts + 1,
                            error: None,
                            ..batch.clone()
                        };
                        pipe.lpush(names::METRICS_SENT_QUEUE, serde_json::to_vec(&sent)?)
                            .ignore();
                    }
                    shared.redis.pipeline::<()>("resent", &pipe).await?;
                    tracing::info!(endpoint = %dest.name, batch = %batch.batch_id, points = batch.points.len(), "unsent batch delivered");
                }
                Err(Failure::Refused(e)) => {
                    shared.stats.points_refused.add(batch.points.len() as u64);
                    tracing::error!(endpoint = %dest.name, batch = %batch.batch_id, error = %e, "the server refused an unsent batch as data; dead-lettered");
                    let q = Queue::new(&shared.redis, names::METRICS_SEND);
                    q.dead_letter(&shared.id, row, &format!("refused by {}: {e}", dest.name), DEAD_CAP)
                        .await?;
                    remove(shared, row).await?;
                }
                Err(Failure::Unreachable(e)) => {
                    tracing::debug!(endpoint = %dest.name, error = %e, "still unreachable");
                    failed.push(dest.name.clone());
                    kept += 1;
                }
            }
        }
        offset += kept;
    }
    if orphans != *last_orphans && orphans > 0 {
        tracing::warn!(
            rows = orphans,
            "unsent batches for endpoints no longer configured: they stay until metrics_unsent_expire_days"
        );
    }
    *last_orphans = orphans;
    Ok(())
}

async fn remove(shared: &Shared, row: &[u8]) -> Result<(), redis::RedisError> {
    shared
        .redis
        .retry("zrem", |mut c| async move {
            c.zrem::<_, _, ()>(names::METRICS_UNSENT, row).await
        })
        .await
}

/// Rows of `table` scored in `[since, until]`, oldest first, as `(score, row)`.
pub async fn list(
    redis: &ironwork_core::Redis,
    table: &str,
    since: f64,
    until: f64,
) -> anyhow::Result<Vec<(f64, String)>> {
    let rows: Vec<(String, f64)> = redis
        .retry("list", |mut c| async move {
            c.zrangebyscore_withscores(table, since, until).await
        })
        .await?;
    Ok(rows.into_iter().map(|(row, score)| (score, row)).collect())
}
