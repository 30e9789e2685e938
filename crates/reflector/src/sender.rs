//! The metric sender: in every reflector process, [`SENDERS`] loops. Each pops reliably from
//! `metrics.send.queue` (a message is one point, or the array of points a reflection made of
//! one collection result) about `metrics_send_bulk_size` points at a time; points the servers
//! cannot take (not a metric point, or not encodable: NaN, a measurement starting with `#`, no
//! Zabbix host…) go to `metrics.send.queue.dead` with the reason. The rest is encoded once and
//! sent to every endpoint at once, each with `metrics_send_retry_count` retries
//! `metrics_send_retry_interval` apart (doubling). Then, per endpoint, the batch is recorded:
//! delivered → `metrics.sent.queue` (when `metrics_sent_backup_mode` is on); not delivered →
//! `metrics.unsent.queue`, from which the leader resends it when the server answers again;
//! refused as data → the dead list. Only then are the messages acknowledged, so a crash replays
//! them rather than losing them. Two loops per process keep a server busy while the other
//! decodes and encodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironwork_core::backoff::Backoff;
use ironwork_core::messages::{epoch_seconds, names, MetricBatch};
use ironwork_core::queue::{Delivery, ReliableConsumer};
use ironwork_core::Queue;
use tokio_util::sync::CancellationToken;

use crate::consumer::consume;
use crate::destination::{Delivered, Destination, Failure, Prepared};
use crate::point::{parse_message, PointRef};
use crate::shared::{Shared, DEAD_CAP};

/// Sender loops per process.
pub const SENDERS: usize = 2;

/// Pop, send, record, acknowledge, until `token` is cancelled (the batch in hand is finished;
/// retries still waiting give up and the batch is recorded as unsent). `slot` names the loop's
/// consumer.
pub async fn run(shared: Arc<Shared>, slot: usize, token: CancellationToken) {
    let queue = Queue::new(&shared.redis, names::METRICS_SEND);
    let id = format!("{}.sender{slot}", shared.id);
    let bulk = shared.settings.send_bulk_size;
    // Messages per pop, adapted to the points per message of the last batch.
    let per_pop = Arc::new(AtomicUsize::new(1));
    let size = || per_pop.load(Ordering::Relaxed);
    consume(&queue, &id, &token, size, |consumer, deliveries| {
        let (shared, per_pop, token) = (shared.clone(), per_pop.clone(), token.clone());
        Box::pin(async move {
            let messages = deliveries.len();
            let points = send_messages(&shared, consumer, deliveries, &token).await?;
            per_pop.store((bulk * messages / points.max(1)).clamp(1, bulk), Ordering::Relaxed);
            Ok(())
        })
    })
    .await;
}

/// Decode (in place), send in batches of at most `metrics_send_bulk_size` points, record,
/// acknowledge. Returns the number of points taken.
async fn send_messages(
    shared: &Shared,
    consumer: &ReliableConsumer,
    deliveries: Vec<Delivery>,
    token: &CancellationToken,
) -> anyhow::Result<usize> {
    let mut points: Vec<PointRef<'_>> = Vec::new();
    let mut taken = Vec::with_capacity(deliveries.len());
    for d in &deliveries {
        match parse_message(&d.payload) {
            Ok(p) => {
                points.extend(p);
                taken.push(true);
            }
            Err(e) => {
                taken.push(false);
                shared.stats.send_dead.inc();
                consumer
                    .dead_letter(d, &format!("not a metric point or list of points: {e}"), DEAD_CAP)
                    .await?;
            }
        }
    }
    let n = points.len();
    shared.stats.send_taken.add(n as u64);
    for chunk in points.chunks(shared.settings.send_bulk_size) {
        let (prepared, bad) = Prepared::new(&shared.settings.server_type, chunk);
        for (i, reason) in &bad {
            shared.stats.send_dead.inc();
            consumer
                .queue()
                .dead_letter(
                    consumer.id(),
                    &serde_json::to_vec(&chunk[*i])?,
                    &format!("cannot be sent: {reason}"),
                    DEAD_CAP,
                )
                .await?;
        }
        if !prepared.is_empty() {
            let good: Vec<&PointRef<'_>> = chunk
                .iter()
                .enumerate()
                .filter(|(i, _)| !bad.iter().any(|(b, _)| b == i))
                .map(|(_, p)| p)
                .collect();
            send_batch(shared, consumer, Arc::new(prepared), &good, token).await?;
        }
    }
    drop(points);
    let taken: Vec<Delivery> = deliveries
        .into_iter()
        .zip(taken)
        .filter(|(_, ok)| *ok)
        .map(|(d, _)| d)
        .collect();
    consumer.ack(&taken).await?;
    Ok(n)
}

/// One batch to every endpoint, then its records (`points`: the batch's points, for them).
async fn send_batch(
    shared: &Shared,
    consumer: &ReliableConsumer,
    batch: Arc<Prepared>,
    points: &[&PointRef<'_>],
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let batch_id = new_batch_id();
    let n = points.len() as u64;
    let mut set = tokio::task::JoinSet::new();
    for (i, dest) in shared.destinations.iter().enumerate() {
        let (dest, batch, token) = (dest.clone(), batch.clone(), token.clone());
        let (count, interval) = (shared.settings.retry_count, shared.settings.retry_interval);
        set.spawn(async move { (i, deliver(&dest, &batch, count, interval, &token).await) });
    }
    let mut outcomes: Vec<(u32, Result<Delivered, Failure>)> = (0..shared.destinations.len())
        .map(|_| (0, Err(Failure::Unreachable("send task failed".into()))))
        .collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            outcomes[i] = r;
        }
    }
    let mut records: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let (mut sent, mut unsent) = (0u64, 0u64);
    for (dest, (attempts, outcome)) in shared.destinations.iter().zip(outcomes) {
        let record = |error: Option<String>| MetricBatch {
            batch_id: batch_id.clone(),
            endpoint: dest.name.clone(),
            attempted_at: epoch_seconds(),
            attempts,
            error,
            points: points.iter().map(|p| p.to_owned_point()).collect(),
        };
        match outcome {
            Ok(delivered) => {
                shared.stats.points_sent.add(n);
                sent += n;
                if delivered.failed_items > 0 {
                    shared.stats.zabbix_failed.add(delivered.failed_items);
                    tracing::warn!(endpoint = %dest.name, batch = %batch_id, failed = delivered.failed_items, total = n, "the server could not store some values (unknown host or key?)");
                }
                if shared.settings.sent_backup {
                    records.push((names::METRICS_SENT_QUEUE, serde_json::to_vec(&record(None))?));
                }
            }
            Err(Failure::Unreachable(e)) => {
                shared.stats.points_unsent.add(n);
                unsent += n;
                tracing::warn!(endpoint = %dest.name, batch = %batch_id, points = n, error = %e, "batch not delivered; kept in the unsent backup");
                records.push((names::METRICS_UNSENT_QUEUE, serde_json::to_vec(&record(Some(e)))?));
            }
            Err(Failure::Refused(e)) => {
                shared.stats.points_refused.add(n);
                tracing::error!(endpoint = %dest.name, batch = %batch_id, points = n, error = %e, "the server refused the batch as data; dead-lettered");
                let payload = serde_json::to_vec(&record(Some(e.clone())))?;
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
    // The running totals operators see (`ironwork status`, the console): one attempt, never
    // retried (a retry after a lost answer would count twice); a lost count is only a figure.
    let mut totals = redis::pipe();
    for (key, n) in [
        (names::METRICS_POINTS_SENT, sent),
        (names::METRICS_POINTS_UNSENT, unsent),
    ] {
        if n > 0 {
            totals.incr(key, n).ignore();
        }
    }
    if sent + unsent > 0 {
        if let Err(e) = totals.query_async::<()>(&mut shared.redis.conn()).await {
            tracing::debug!(error = %e, "could not count the points sent");
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (queue, record) in &records {
        pipe.lpush(*queue, record).ignore();
    }
    shared.redis.pipeline::<()>("record batches", &pipe).await?;
    Ok(())
}

/// One batch to one destination: one attempt if it is down (and none if it is resting), else
/// up to `1 + retry_count` attempts, `retry_interval` apart and doubling (capped at 30×). A
/// cancelled `token` ends the waiting: the batch is then reported unreachable (and kept).
pub async fn deliver(
    dest: &Destination,
    batch: &Prepared,
    retry_count: u32,
    retry_interval: Duration,
    token: &CancellationToken,
) -> (u32, Result<Delivered, Failure>) {
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
        match dest.send(batch).await {
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
                tokio::select! {
                    _ = token.cancelled() => return (attempt, Err(Failure::Unreachable(format!("{e} (shutting down)")))),
                    _ = tokio::time::sleep(delays.next_delay()) => {}
                }
            }
        }
    }
}

/// A batch id unique across processes and restarts: time, then random bits.
pub fn new_batch_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{now:x}-{:016x}", rand::random::<u64>())
}
