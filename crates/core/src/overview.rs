//! What operators see of the queues, in one place for `ironwork status` and ringmaster's
//! console: each queue's depths, and the metric pipeline's leaders and totals.

use redis::RedisError;

use crate::connection::Redis;
use crate::messages::names;

/// How full one queue is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// The queue (`step.<plugin>.<step>`, `collector.job.queue`, …).
    pub queue: String,
    /// Waiting messages.
    pub waiting: u64,
    /// Messages held by consumers (their processing lists).
    pub in_flight: u64,
    /// Dead letters.
    pub dead: u64,
}

/// The depths of the step queues `ironwork status` and ringmaster's console show: every queue of
/// `known`, and with `discover` every other `step.*` queue `redis` holds (a scan of the whole
/// keyspace: for one-off reports, not for a page refreshed every few seconds).
pub async fn step_depths(redis: &Redis, known: &[String], discover: bool) -> Result<Vec<QueueDepth>, RedisError> {
    let mut queues: std::collections::BTreeSet<String> = known.iter().cloned().collect();
    if discover {
        let mut keys = redis.keys_matching("step.*").await?;
        keys.extend(redis.keys_matching("{step.*").await?);
        for k in &keys {
            let queue = names::queue_of(k).unwrap_or(k);
            if queue.split('.').count() == 3 {
                queues.insert(queue.to_string());
            }
        }
    }
    let mut out = Vec::with_capacity(queues.len());
    for q in &queues {
        out.push(depth(redis, q).await?);
    }
    Ok(out)
}

/// The collector's and reflector's queues that hold anything (waiting, in flight or dead).
pub async fn metric_depths(redis: &Redis) -> Result<Vec<QueueDepth>, RedisError> {
    let mut out = Vec::new();
    for q in [
        names::COLLECTOR_JOB,
        names::COLLECTOR_DATA,
        names::COLLECTOR_DATA_SNIFFER,
        names::METRICS_SEND,
        names::METRICS_SENT_QUEUE,
        names::METRICS_UNSENT_QUEUE,
    ] {
        let d = depth(redis, q).await?;
        if d.waiting + d.in_flight + d.dead > 0 {
            out.push(d);
        }
    }
    Ok(out)
}

/// One queue's depths. In flight: the processing lists of the consumers registered in
/// `{q}.consumers` (all in the queue's slot: no scan).
async fn depth(redis: &Redis, queue: &str) -> Result<QueueDepth, RedisError> {
    let registry = names::consumers(queue);
    let consumers: Vec<String> = redis
        .retry("queue_consumers", |mut c| {
            let registry = registry.clone();
            async move { redis::cmd("SMEMBERS").arg(registry).query_async(&mut c).await }
        })
        .await?;
    let mut pipe = redis::pipe();
    pipe.llen(queue).llen(names::dead(queue));
    for id in &consumers {
        pipe.llen(names::processing(queue, id));
    }
    let lens: Vec<u64> = redis.pipeline("queue_depth", &pipe).await?;
    Ok(QueueDepth {
        queue: queue.to_string(),
        waiting: lens.first().copied().unwrap_or(0),
        dead: lens.get(1).copied().unwrap_or(0),
        in_flight: lens.iter().skip(2).sum(),
    })
}

/// The collector's and reflector's leaders and running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricPipeline {
    /// Who holds `collector.manager.lease` (`<node>.<pid>.<random>`), if anyone.
    pub collector_leader: Option<String>,
    /// Who holds `reflector.leader.lease`, if anyone.
    pub reflector_leader: Option<String>,
    /// Jobs the collection managers enqueued, in total.
    pub jobs_enqueued: u64,
    /// Points the reflectors' senders delivered, in total.
    pub points_sent: u64,
    /// Points they could not deliver (kept for the resend), in total.
    pub points_unsent: u64,
    /// Batches waiting in the unsent table now.
    pub unsent_batches: u64,
}

/// [`MetricPipeline`] as `redis` holds it (the collector's and reflector's Redis), in one
/// pipeline (on a cluster, one round trip per slot).
pub async fn metric_pipeline(redis: &Redis) -> Result<MetricPipeline, RedisError> {
    let mut pipe = redis::pipe();
    pipe.get(names::COLLECTOR_LEASE)
        .get(names::REFLECTOR_LEASE)
        .get(names::COLLECTOR_JOBS_ENQUEUED)
        .get(names::METRICS_POINTS_SENT)
        .get(names::METRICS_POINTS_UNSENT)
        .zcard(names::METRICS_UNSENT);
    type Reply = (
        Option<String>,
        Option<String>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        u64,
    );
    let (collector_leader, reflector_leader, jobs, sent, unsent, unsent_batches): Reply =
        redis.pipeline("overview", &pipe).await?;
    Ok(MetricPipeline {
        collector_leader,
        reflector_leader,
        jobs_enqueued: jobs.unwrap_or(0),
        points_sent: sent.unwrap_or(0),
        points_unsent: unsent.unwrap_or(0),
        unsent_batches,
    })
}
