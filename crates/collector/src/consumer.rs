//! The collection consumer, in every collector process: pops up to `collection_bulk_size` jobs
//! at once, runs them concurrently under a semaphore of `concurrency` permits, and pushes the
//! results to `collector.data.queue` in bulk.
//!
//! A run of a (collection, target) still going when its next job arrives (here or on any other
//! node) makes that job skipped and counted: the guard key `collector.running.<…>` is taken with
//! `SET NX PX` for the whole batch in one pipeline and deleted with the result push.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ironwork_core::backoff::Backoff;
use ironwork_core::messages::{epoch_seconds, names, CollectedData, CollectionJob, DataPoint};
use ironwork_core::Queue;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collection::{Collection, Run};
use crate::method::Outcome;
use crate::shared::Shared;

/// One result on its way to `collector.data.queue`, with the guard to release.
#[derive(Debug)]
pub struct Pending {
    /// The serialized `CollectedData`.
    pub payload: Vec<u8>,
    /// The guard key to delete once the result is pushed.
    pub guard: String,
}

/// How a run was asked for: the `type` tag of `plugin.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// From the schedule.
    Regular,
    /// On demand (`POST /plugins/run`).
    Call,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Call => "call",
        }
    }
}

/// How long a guard lives: a run's deadline plus the time its kill sequence may take.
pub fn guard_ttl(shared: &Shared, timeout: Duration) -> Duration {
    let l = &shared.settings.limits;
    timeout + l.kill_grace + l.drain + Duration::from_secs(2)
}

/// Take the guards of `keys` in one round trip: true for each one taken.
pub async fn take_guards(shared: &Shared, keys: &[(String, Duration)]) -> Result<Vec<bool>, redis::RedisError> {
    let mut pipe = redis::pipe();
    for (k, ttl) in keys {
        pipe.cmd("SET")
            .arg(k)
            .arg(&shared.id)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
    }
    let mut c = shared.redis.conn();
    let replies: Vec<Option<String>> = pipe.query_async(&mut c).await?;
    Ok(replies.into_iter().map(|r| r.is_some()).collect())
}

/// One run to make: what a job (or an on-demand call) asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The target.
    pub target: String,
    /// The job's correlation info.
    pub correlation_info: BTreeMap<String, String>,
    /// Extra arguments (on-demand `param`).
    pub param: Vec<String>,
    /// The run's deadline.
    pub timeout: Duration,
    /// Scheduled or on demand.
    pub trigger: Trigger,
    /// The job's slot, for scheduled runs.
    pub scheduled_at: Option<f64>,
}

/// Run `collection` once as `ask` says and shape the result for `collector.data.queue`.
pub async fn run_once(shared: &Shared, collection: &Collection, ask: Ask) -> CollectedData {
    let Ask {
        target,
        correlation_info,
        param,
        timeout,
        trigger,
        scheduled_at,
    } = ask;
    let target = target.as_str();
    let correlation_info = &correlation_info;
    let mut run = Run::new(
        collection,
        target,
        correlation_info,
        Arc::new(shared.settings.limits.clone()),
    );
    run.param = param;
    run.timeout = timeout;
    shared.stats.runs_active.add(1);
    // Probes honour their own deadline; this outer one only catches a probe that does not.
    let outer = guard_ttl(shared, timeout);
    let outcome = match tokio::time::timeout(outer, collection.probe.collect(&run)).await {
        Ok(o) => o,
        Err(_) => Outcome::failed("timeout", format!("no result within {outer:?}")),
    };
    shared.stats.runs_active.add(-1);
    let Outcome { mut points, failure } = outcome;
    let error = match failure {
        None => {
            shared.stats.runs_ok.inc();
            None
        }
        Some(f) => {
            shared.stats.runs_failed.inc();
            tracing::warn!(
                plugin = %collection.plugin,
                collection = %collection.name,
                target,
                reason = f.kind,
                error = %f.message,
                "collection failed"
            );
            let tags = [
                ("ns", collection.plugin.as_str()),
                ("name", collection.name.as_str()),
                ("target", target),
                ("type", trigger.as_str()),
                ("reason", f.kind),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            points.push(DataPoint {
                name: "plugin.result".into(),
                timestamp: epoch_seconds(),
                tags,
                value: 1.into(),
            });
            Some(format!("{}: {}", f.kind, f.message))
        }
    };
    CollectedData {
        plugin: collection.plugin.clone(),
        collection: collection.name.clone(),
        target: target.to_string(),
        collected_at: epoch_seconds(),
        correlation_info: correlation_info.clone(),
        points,
        error,
        scheduled_at,
    }
}

/// A popped job this process can run.
struct Work {
    collection: Arc<Collection>,
    job: CollectionJob,
    payload: Vec<u8>,
    guard: String,
}

/// Decode `batch`: malformed jobs are dead-lettered, jobs of unknown collections dropped.
async fn usable_jobs(shared: &Shared, jobs: &Queue, batch: Vec<Vec<u8>>) -> Vec<Work> {
    let defs = shared.definitions();
    let mut work = Vec::with_capacity(batch.len());
    for payload in batch {
        let job: CollectionJob = match serde_json::from_slice(&payload) {
            Ok(j) => j,
            Err(e) => {
                shared.stats.jobs_dead.inc();
                let reason = format!("not a collection job: {e}");
                if let Err(e) = jobs.dead_letter(&shared.id, &payload, &reason, 10_000).await {
                    tracing::warn!(error = %e, "cannot dead-letter a malformed job");
                }
                continue;
            }
        };
        match defs.get(&job.plugin, &job.collection) {
            Some(c) => work.push(Work {
                collection: c.clone(),
                guard: names::collector_running(&job.plugin, &job.collection, &job.target),
                job,
                payload,
            }),
            None => {
                shared.stats.jobs_unknown.inc();
                tracing::debug!(plugin = %job.plugin, collection = %job.collection, "job for an unknown collection dropped");
            }
        }
    }
    work
}

/// Put jobs this process will not run back at the consumers' end of the queue (oldest first
/// out again), releasing their guards when this process holds them.
async fn hand_back(shared: &Shared, jobs: &Queue, work: Vec<Work>, guards_held: bool) {
    if work.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    let mut push = redis::cmd("RPUSH");
    push.arg(jobs.name());
    let mut del = redis::cmd("DEL");
    // RPUSH appends at the popping end: push the oldest last so it is popped first.
    for w in work.iter().rev() {
        push.arg(&w.payload);
    }
    for w in &work {
        del.arg(&w.guard);
    }
    pipe.add_command(push).ignore();
    if guards_held {
        pipe.add_command(del).ignore();
    }
    let mut c = shared.redis.conn();
    match pipe.query_async::<()>(&mut c).await {
        Ok(()) => tracing::info!(jobs = work.len(), "jobs not started handed back to collector.job.queue"),
        Err(e) => tracing::warn!(error = %e, jobs = work.len(), "cannot hand jobs back; they are lost (the next slot runs them again)"),
    }
}

/// Consume `collector.job.queue` until `token` is cancelled; runs in progress then get
/// `shutdown_grace` to finish and their results are pushed.
pub async fn run(shared: Arc<Shared>, token: CancellationToken) {
    let jobs = Queue::new(&shared.redis, names::COLLECTOR_JOB);
    let permits = Arc::new(Semaphore::new(shared.settings.concurrency));
    // Full: finished runs wait to hand over their result (so new runs wait for permits).
    let (tx, rx) = mpsc::channel::<Pending>(shared.settings.result_batch * 2);
    let pusher = tokio::spawn(push_results(shared.clone(), rx));
    let runs = TaskTracker::new();
    let mut backoff = Backoff {
        initial: Duration::from_millis(100),
        ..Backoff::default()
    }
    .attempts();
    loop {
        // Pop only while a run could start; then take the whole bulk, so that each freed permit
        // starts the next job at once instead of after two round trips to Redis.
        let first = tokio::select! {
            _ = token.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let batch = tokio::select! {
            _ = token.cancelled() => break,
            b = jobs.pop_batch(shared.settings.collection_bulk_size, Duration::from_secs(1)) => b,
        };
        let batch = match batch {
            Ok(b) => {
                backoff.reset();
                b
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read collector.job.queue");
                drop(first);
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        shared.stats.jobs_taken.add(batch.len() as u64);
        let work = usable_jobs(&shared, &jobs, batch).await;
        let keys: Vec<(String, Duration)> = work
            .iter()
            .map(|w| (w.guard.clone(), guard_ttl(&shared, w.collection.timeout)))
            .collect();
        let taken = match take_guards(&shared, &keys).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, jobs = work.len(), "cannot take run guards; jobs handed back");
                hand_back(&shared, &jobs, work, false).await;
                continue;
            }
        };
        let mut first = Some(first);
        let mut waiting: std::collections::VecDeque<Work> = std::collections::VecDeque::new();
        for (w, taken) in work.into_iter().zip(taken) {
            if taken {
                waiting.push_back(w);
            } else {
                shared.stats.runs_skipped.inc();
                tracing::debug!(plugin = %w.job.plugin, collection = %w.job.collection, target = %w.job.target, "previous run still going: skipped");
            }
        }
        while let Some(w) = waiting.pop_front() {
            let permit = match first.take() {
                Some(p) => p,
                None => tokio::select! {
                    _ = token.cancelled() => {
                        waiting.push_front(w);
                        break;
                    }
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                },
            };
            let (shared, tx) = (shared.clone(), tx.clone());
            runs.spawn(async move {
                let ask = Ask {
                    target: w.job.target,
                    correlation_info: w.job.correlation_info,
                    param: Vec::new(),
                    timeout: w.collection.timeout,
                    trigger: Trigger::Regular,
                    scheduled_at: Some(w.job.scheduled_at),
                };
                let data = run_once(&shared, &w.collection, ask).await;
                drop(permit);
                let payload = serde_json::to_vec(&data).unwrap_or_default();
                let _ = tx.send(Pending { payload, guard: w.guard }).await;
            });
        }
        if !waiting.is_empty() {
            // Shutting down: jobs not started go back for the other consumers.
            hand_back(&shared, &jobs, waiting.into(), true).await;
            break;
        }
    }
    runs.close();
    if !ironwork_core::shutdown::drain(&runs, shared.settings.shutdown_grace).await {
        tracing::warn!(
            "runs still going at the end of the grace period were abandoned (their process groups are killed)"
        );
    }
    drop(tx);
    let _ = pusher.await;
}

/// Push results in bulk (one `LPUSH` and one `DEL` of guards per batch), retrying while Redis
/// is away; ends when every sender is gone and the channel is empty.
pub async fn push_results(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>) {
    let max = shared.settings.result_batch;
    let mut backoff = Backoff {
        initial: Duration::from_millis(100),
        ..Backoff::default()
    }
    .attempts();
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        let mut pipe = redis::pipe();
        let mut push = redis::cmd("LPUSH");
        push.arg(names::COLLECTOR_DATA);
        let mut del = redis::cmd("DEL");
        for r in &batch {
            push.arg(&r.payload);
            del.arg(&r.guard);
        }
        pipe.add_command(push).ignore().add_command(del).ignore();
        loop {
            let mut c = shared.redis.conn();
            match pipe.query_async::<()>(&mut c).await {
                Ok(()) => {
                    shared.stats.results_pushed.add(batch.len() as u64);
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, results = batch.len(), "cannot push results; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        batch.clear();
    }
}
