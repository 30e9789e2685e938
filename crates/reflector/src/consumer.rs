//! Reflection consumers: [`CONSUMERS`] loops in every reflector process. Each batch is popped reliably from
//! `collector.data.queue` (up to `reflection_bulk_size`), reflected by the tree in force, and
//! its effects (cache writes, metric points, forwards, sniffer copies) are written in one
//! pipeline before the batch is acknowledged. A crash between the two replays the batch:
//! cache writes and forwards repeat harmlessly, metric points carry their series and
//! timestamp, so InfluxDB stores them once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ironwork_core::messages::names;
use ironwork_core::queue::{Delivery, ReliableConsumer};
use ironwork_core::Queue;
use tokio_util::sync::CancellationToken;

use crate::point::DataRef;
use crate::reflection::Effects;
use crate::shared::{Shared, DEAD_CAP};

/// How long a consumer's liveness key lives without a beat.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);
/// How often a consumer re-queues what dead peers left in flight.
pub const ORPHAN_SWEEP: Duration = Duration::from_secs(30);

/// Reflection consumers per process: while one waits for Redis, the other reflects.
pub const CONSUMERS: usize = 2;

/// Pop, reflect, write, acknowledge, until `token` is cancelled (the batch in hand is finished).
/// `slot` names the loop's consumer.
pub async fn run(shared: Arc<Shared>, slot: usize, token: CancellationToken) {
    let queue = Queue::new(&shared.redis, names::COLLECTOR_DATA);
    let id = format!("{}.reflect{slot}", shared.id);
    let bulk = shared.settings.reflection_bulk_size;
    consume(
        &queue,
        &id,
        &token,
        || bulk,
        |consumer, deliveries| {
            let shared = shared.clone();
            Box::pin(async move {
                shared.stats.data_taken.add(deliveries.len() as u64);
                reflect_batch(&shared, consumer, deliveries).await
            })
        },
    )
    .await;
}

/// What [`consume`] hands a batch to: a future borrowing the consumer.
pub type Handled<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// The loop of every consumer in the reflector: a reliable consumer `id` of `queue` (its
/// in-flight list recovered, a heartbeat running) pops up to `size()` messages at a time and
/// hands each batch to `handle`, which acknowledges what it is done with. A batch it fails on
/// is put back in the queue and tried again after a pause. Dead peers' in-flight messages are
/// re-queued every [`ORPHAN_SWEEP`]. Ends when `token` is cancelled, after the batch in hand.
pub async fn consume(
    queue: &Queue,
    id: &str,
    token: &CancellationToken,
    mut size: impl FnMut() -> usize,
    mut handle: impl for<'a> FnMut(&'a ReliableConsumer, Vec<Delivery>) -> Handled<'a>,
) {
    let Some((consumer, beating)) = start_consumer(queue, id, token).await else {
        return;
    };
    let mut last_sweep = tokio::time::Instant::now();
    while !token.is_cancelled() {
        if last_sweep.elapsed() >= ORPHAN_SWEEP {
            last_sweep = tokio::time::Instant::now();
            if let Err(e) = consumer.recover_orphans().await {
                tracing::warn!(queue = %queue.name(), error = %e, "cannot sweep dead consumers' messages");
            }
        }
        // Never cancelled half-way: a pop whose answer is dropped would strand what Redis
        // moved into the processing list. It returns within a second anyway.
        let deliveries = match consumer.pop_batch(size(), Duration::from_secs(1)).await {
            Ok(d) if d.is_empty() => continue,
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(queue = %queue.name(), error = %e, "cannot pop");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Err(e) = handle(&consumer, deliveries).await {
            // Unacknowledged: the batch goes back to the queue and is tried again.
            tracing::error!(queue = %queue.name(), error = %format!("{e:#}"), "a batch failed; it will be replayed");
            let _ = consumer.recover().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    beating.cancel();
    tracing::info!(queue = %queue.name(), consumer = %id, "consumer stopped");
}

/// A reliable consumer named after this process, with its in-flight list recovered and a
/// heartbeat task running until the returned token is cancelled.
async fn start_consumer(
    queue: &Queue,
    id: &str,
    token: &CancellationToken,
) -> Option<(ReliableConsumer, CancellationToken)> {
    let make = || ReliableConsumer::new(queue.clone(), id.to_string());
    let (consumer, heart) = match (make(), make()) {
        (Ok(c), Ok(h)) => (c, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(queue = %queue.name(), error = %e, "cannot open a consumer connection");
            return None;
        }
    };
    let started = tokio::select! {
        _ = token.cancelled() => return None,
        r = async {
            consumer.heartbeat(HEARTBEAT_TTL).await?;
            consumer.recover().await?;
            consumer.recover_orphans().await
        } => r,
    };
    if let Err(e) = started {
        tracing::error!(queue = %queue.name(), error = %e, "cannot start consuming");
        return None;
    }
    let beating = CancellationToken::new();
    let stop = beating.clone();
    tokio::spawn(async move { heart.keep_alive(HEARTBEAT_TTL, stop).await });
    Some((consumer, beating))
}

async fn reflect_batch(shared: &Shared, consumer: &ReliableConsumer, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
    // Read in place; the effects own what they write, so the messages are free again after.
    let reflections = shared.reflections();
    let mut fx = Effects::default();
    let mut read = Vec::with_capacity(deliveries.len());
    let mut bad = Vec::new();
    for d in &deliveries {
        match serde_json::from_slice::<DataRef<'_>>(&d.payload) {
            Ok(data) => {
                reflections.reflect(&data, &mut fx);
                read.push(true);
            }
            Err(e) => {
                bad.push((d, format!("invalid CollectedData: {e}")));
                read.push(false);
            }
        }
    }
    for (d, reason) in bad {
        consumer.dead_letter(d, &reason, DEAD_CAP).await?;
        shared.stats.data_dead.inc();
    }
    let acked: Vec<Delivery> = deliveries
        .into_iter()
        .zip(read)
        .filter(|(_, ok)| *ok)
        .map(|(d, _)| d)
        .collect();
    if let Err(e) = write_effects(shared, &fx).await {
        if ironwork_core::connection::is_transient(&e) {
            return Err(e.into());
        }
        // Redis refuses one of the writes for good (a forward queue whose key holds another
        // type…): replaying would repeat the other writes forever, so the batch is set aside.
        tracing::error!(error = %e, messages = acked.len(), "Redis refuses a batch's effects; dead-lettered");
        for d in &acked {
            consumer
                .dead_letter(d, &format!("cannot write its effects: {e}"), DEAD_CAP)
                .await?;
        }
        shared.stats.data_dead.add(acked.len() as u64);
        return Ok(());
    }
    consumer.ack(&acked).await?;
    let s = &shared.stats;
    s.points_matched.add(fx.matched);
    s.points_unmatched.add(fx.unmatched);
    s.points_dropped.add(fx.dropped);
    s.points_unusable.add(fx.unusable);
    s.cached.add(fx.cache.len() as u64);
    s.metrics_pushed.add(fx.metric_points);
    s.forwarded.add(fx.forward.values().map(|v| v.len() as u64).sum());
    s.sniffed.add(fx.sniff.len() as u64);
    Ok(())
}

/// Most values in one variadic `LPUSH`.
const PUSH_CHUNK: usize = 1000;

async fn write_effects(shared: &Shared, fx: &Effects) -> Result<(), redis::RedisError> {
    if fx.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (key, value, ttl) in &fx.cache {
        pipe.pset_ex(key, value, ttl.as_millis().max(1) as u64).ignore();
    }
    for chunk in fx.metrics.chunks(PUSH_CHUNK) {
        pipe.lpush(names::METRICS_SEND, chunk).ignore();
    }
    for (queue, messages) in &fx.forward {
        for chunk in messages.chunks(PUSH_CHUNK) {
            pipe.lpush(queue, chunk).ignore();
        }
    }
    if !fx.sniff.is_empty() {
        for chunk in fx.sniff.chunks(PUSH_CHUNK) {
            pipe.lpush(names::COLLECTOR_DATA_SNIFFER, chunk).ignore();
        }
        let cap = shared.settings.sniffer_max as isize;
        pipe.ltrim(names::COLLECTOR_DATA_SNIFFER, 0, cap - 1).ignore();
    }
    shared.redis.pipeline::<()>("reflection effects", &pipe).await
}
