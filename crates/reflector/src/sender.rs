//! The metric sender: in every reflector process. Each batch is popped reliably from
//! `metrics.send.queue` (up to `metrics_send_bulk_size` points); points the servers cannot
//! take (not a metric point, or not encodable: NaN, a measurement starting with `#`, no Zabbix
//! host…) go to `metrics.send.queue.dead` with the reason. The rest is sent to every endpoint
//! at once, each with `metrics_send_retry_count` retries `metrics_send_retry_interval` apart
//! (doubling). Then, per endpoint, the batch is recorded: delivered → `metrics.sent.queue`
//! (when `metrics_sent_backup_mode` is on); not delivered → `metrics.unsent.queue`, from which
//! the leader resends it when the server answers again; refused as data → the dead list. Only
//! then is the batch acknowledged, so a crash replays it rather than losing it.

use std::sync::Arc;
use std::time::Duration;

use ironwork_core::backoff::Backoff;
use ironwork_core::messages::{epoch_seconds, names, MetricBatch, MetricPoint};
use ironwork_core::queue::{Delivery, ReliableConsumer};
use ironwork_core::Queue;
use tokio_util::sync::CancellationToken;

use crate::consumer::{start_consumer, ORPHAN_SWEEP};
use crate::destination::{check, Destination, Failure};
use crate::shared::{Shared, DEAD_CAP};

/// Pop, send, record, acknowledge, until `token` is cancelled (the batch in hand is finished).
pub async fn run(shared: Arc<Shared>, token: CancellationToken) {
    if shared.destinations.is_empty() {
        tracing::warn!("no metrics_server_endpoints: metrics.send.queue is not consumed");
        return;
    }
    let queue = Queue::new(&shared.redis, names::METRICS_SEND);
    let Some((consumer, beating)) = start_consumer(&queue, &shared.id, &token).await else {
        return;
    };
    let mut last_sweep = tokio::time::Instant::now();
    while !token.is_cancelled() {
        if last_sweep.elapsed() >= ORPHAN_SWEEP {
            last_sweep = tokio::time::Instant::now();
            if let Err(e) = consumer.recover_orphans().await {
                tracing::warn!(error = %e, "cannot sweep dead consumers' messages");
            }
        }
        let popped = tokio::select! {
            _ = token.cancelled() => break,
            r = consumer.pop_batch(shared.settings.send_bulk_size, Duration::from_secs(1)) => r,
        };
        let deliveries = match popped {
            Ok(d) if d.is_empty() => continue,
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pop metrics.send.queue");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        shared.stats.send_taken.add(deliveries.len() as u64);
        if let Err(e) = send_batch(&shared, &consumer, deliveries).await {
            tracing::error!(error = %e, "cannot record a batch; it will be replayed");
            let _ = consumer.recover().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    beating.cancel();
    tracing::info!("sender stopped");
}

async fn send_batch(shared: &Shared, consumer: &ReliableConsumer, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
    let n = deliveries.len();
    let decoded = consumer.decode::<MetricPoint>(deliveries, DEAD_CAP).await?;
    let mut dead = n - decoded.len();
    let mut scratch = String::new();
    let mut points = Vec::with_capacity(decoded.len());
    let mut taken = Vec::with_capacity(decoded.len());
    for (d, p) in decoded {
        match check(&shared.settings.server_type, &p, &mut scratch) {
            Ok(()) => {
                points.push(p);
                taken.push(d);
            }
            Err(reason) => {
                consumer
                    .dead_letter(&d, &format!("cannot be sent: {reason}"), DEAD_CAP)
                    .await?;
                dead += 1;
            }
        }
    }
    shared.stats.send_dead.add(dead as u64);
    if points.is_empty() {
        return Ok(());
    }
    let batch_id = new_batch_id();
    let outcomes = send_everywhere(shared, &points).await;
    let mut sent = Vec::new();
    let mut unsent = Vec::new();
    for (dest, (attempts, outcome)) in shared.destinations.iter().zip(outcomes) {
        let batch = |error: Option<String>| MetricBatch {
            batch_id: batch_id.clone(),
            endpoint: dest.name.clone(),
            attempted_at: epoch_seconds(),
            attempts,
            error,
            points: Vec::new(),
        };
        match outcome {
            Ok(delivered) => {
                shared.stats.points_sent.add(points.len() as u64);
                if delivered.failed_items > 0 {
                    shared.stats.zabbix_failed.add(delivered.failed_items);
                    tracing::warn!(endpoint = %dest.name, batch = %batch_id, failed = delivered.failed_items, total = points.len(), "the server could not store some values (unknown host or key?)");
                }
                if shared.settings.sent_backup {
                    sent.push(batch(None));
                }
            }
            Err(Failure::Unreachable(e)) => {
                shared.stats.points_unsent.add(points.len() as u64);
                tracing::warn!(endpoint = %dest.name, batch = %batch_id, points = points.len(), error = %e, "batch not delivered; kept in the unsent backup");
                unsent.push(batch(Some(e)));
            }
            Err(Failure::Refused(e)) => {
                shared.stats.points_refused.add(points.len() as u64);
                tracing::error!(endpoint = %dest.name, batch = %batch_id, points = points.len(), error = %e, "the server refused the batch as data; dead-lettered");
                let mut b = batch(Some(e.clone()));
                b.points = points.clone();
                let payload = serde_json::to_vec(&b)?;
                consumer
                    .queue()
                    .dead_letter(
                        consumer.id(),
                        &payload,
                        &format!("refused by {}: {e}", dest.name),
                        DEAD_CAP,
                    )
                    .await?;
            }
        }
    }
    record(shared, &points, sent, unsent).await?;
    consumer.ack(&taken).await?;
    Ok(())
}

/// Send to every destination at once; each result with its attempt count.
async fn send_everywhere(
    shared: &Shared,
    points: &[MetricPoint],
) -> Vec<(u32, Result<crate::destination::Delivered, Failure>)> {
    let mut set = tokio::task::JoinSet::new();
    let points: Arc<[MetricPoint]> = points.to_vec().into();
    for (i, dest) in shared.destinations.iter().enumerate() {
        let (dest, points) = (dest.clone(), points.clone());
        let (count, interval) = (shared.settings.retry_count, shared.settings.retry_interval);
        set.spawn(async move { (i, deliver(&dest, &points, count, interval).await) });
    }
    let mut out: Vec<Option<(u32, Result<_, Failure>)>> = (0..shared.destinations.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or((0, Err(Failure::Unreachable("send task failed".into())))))
        .collect()
}

/// One batch to one destination: one attempt if it is down (and none if it is resting), else
/// up to `1 + retry_count` attempts, `retry_interval` apart and doubling (capped at 30×).
pub async fn deliver(
    dest: &Destination,
    points: &[MetricPoint],
    retry_count: u32,
    retry_interval: Duration,
) -> (u32, Result<crate::destination::Delivered, Failure>) {
    if dest.resting(retry_interval) {
        return (0, Err(Failure::Unreachable(format!("{} is down", dest.name))));
    }
    let tries = if dest.is_down() { 1 } else { 1 + retry_count };
    let mut delays = Backoff {
        initial: retry_interval,
        max: retry_interval * 30,
        factor: 2.0,
    }
    .attempts();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match dest.send(points).await {
            Ok(d) => {
                dest.record(true);
                return (attempt, Ok(d));
            }
            Err(Failure::Refused(e)) => {
                dest.record(true);
                return (attempt, Err(Failure::Refused(e)));
            }
            Err(Failure::Unreachable(e)) if attempt >= tries => {
                dest.record(false);
                return (attempt, Err(Failure::Unreachable(e)));
            }
            Err(Failure::Unreachable(e)) => {
                tracing::debug!(endpoint = %dest.name, attempt, error = %e, "send failed; retrying");
                tokio::time::sleep(delays.next_delay()).await;
            }
        }
    }
}

/// Push the sent and unsent records (with the points) to their queues, in one round trip.
async fn record(
    shared: &Shared,
    points: &[MetricPoint],
    sent: Vec<MetricBatch>,
    unsent: Vec<MetricBatch>,
) -> anyhow::Result<()> {
    if sent.is_empty() && unsent.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (queue, batches) in [(names::METRICS_SENT_QUEUE, sent), (names::METRICS_UNSENT_QUEUE, unsent)] {
        for mut b in batches {
            b.points = points.to_vec();
            pipe.lpush(queue, serde_json::to_vec(&b)?).ignore();
        }
    }
    shared
        .redis
        .retry("record batches", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await?;
    Ok(())
}

/// A batch id unique across processes and restarts: time, then random bits.
pub fn new_batch_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{now:x}-{:016x}", rand::random::<u64>())
}
