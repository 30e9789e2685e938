//! The collection consumer, in every collector process: pops up to `collection_bulk_size` jobs
//! at once (never more than one round beyond its busy workers, so jobs stay visible to other
//! consumers; the next batch is popped while the current runs go), runs them on `concurrency`
//! workers (the cap on runs at once), and pushes the results to `collector.data.queue` in bulk.
//!
//! A run of a (collection, target) still going when its next job arrives (here or on any other
//! node) makes that job skipped and counted ([`crate::guard`]).
//!
//! SIGTERM: jobs not started go back to the queue; runs in progress get `shutdown_grace` to end
//! and have their results pushed; past it they are aborted (their process groups killed), their
//! guards released, and results Redis would not take are counted as lost in the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironwork_core::backoff::Backoff;
use ironwork_core::messages::{epoch_seconds, names, CollectedData, CollectionJob, DataPoint};
use ironwork_core::metrics::Gauge;
use ironwork_core::Queue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::collection::{Collection, Run};
use crate::guard::{self, Guard};
use crate::method::Outcome;
use crate::shared::Shared;

/// One result on its way to `collector.data.queue`, with the guard to release.
#[derive(Debug)]
pub struct Pending {
    /// The serialized `CollectedData`.
    pub payload: Vec<u8>,
    /// The run's guard, released with the push.
    pub guard: Guard,
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

/// Counts one run in progress for as long as it lives, however it ends (dropped included).
struct Active(Gauge);

impl Active {
    fn new(g: &Gauge) -> Self {
        g.add(1);
        Self(g.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// Run `collection` once as `ask` says and shape the result for `collector.data.queue`.
pub async fn run_once(shared: &Shared, collection: &Collection, ask: Ask) -> CollectedData {
    let mut run = Run::new(
        collection,
        &ask.target,
        &ask.correlation_info,
        Arc::new(shared.settings.limits.clone()),
    );
    run.param = ask.param;
    run.timeout = ask.timeout;
    let active = Active::new(&shared.stats.runs_active);
    // Probes honour their own deadline; this outer one only catches a probe that does not.
    let outer = guard::outer_timeout(&shared.settings.limits, ask.timeout);
    let outcome = match tokio::time::timeout(outer, collection.probe.collect(&run)).await {
        Ok(o) => o,
        Err(_) => Outcome::failed("timeout", format!("no result within {outer:?}")),
    };
    drop(active);
    let target = ask.target.as_str();
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
                ("type", ask.trigger.as_str()),
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
        correlation_info: ask.correlation_info,
        points,
        error,
        scheduled_at: ask.scheduled_at,
    }
}

/// A popped job this process can run.
struct Work {
    collection: Arc<Collection>,
    job: CollectionJob,
    payload: Vec<u8>,
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

/// Put jobs this process will not run back at the consumers' end of the queue (oldest out
/// first again), releasing their guards.
async fn hand_back(shared: &Shared, jobs: &Queue, work: Vec<(Work, Guard)>) {
    if work.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    let mut push = redis::cmd("RPUSH");
    push.arg(jobs.name());
    // RPUSH appends at the popping end: push the oldest last so it is popped first.
    for (w, _) in work.iter().rev() {
        push.arg(&w.payload);
    }
    pipe.add_command(push).ignore();
    let guards: Vec<Guard> = work.iter().map(|(_, g)| g.clone()).collect();
    guard::release_in(&mut pipe, &guards);
    let mut c = shared.redis.conn();
    match tokio::time::timeout(Duration::from_secs(5), pipe.query_async::<()>(&mut c)).await {
        Ok(Ok(())) => tracing::info!(jobs = work.len(), "jobs not started handed back to collector.job.queue"),
        _ => tracing::warn!(
            jobs = work.len(),
            "cannot hand jobs back; they are lost (the next slot runs them again)"
        ),
    }
}

/// Runs in progress, by guard token: what to release if they must be aborted.
type InFlight = Arc<Mutex<HashMap<String, Guard>>>;

/// The jobs popped and guarded, waiting for a worker. Bounded to `concurrency`: the popper
/// waits when it is full, so at most one round of jobs waits here beyond the busy workers.
type Ready = Arc<tokio::sync::Mutex<mpsc::Receiver<(Work, Guard)>>>;

/// Consume `collector.job.queue` until `token` is cancelled, then drain as the module header says.
///
/// `concurrency` worker tasks each take the next ready job, run it and hand the result to the
/// pusher, then take the next: a finished run starts the next one in the same task, with no
/// hop through a scheduler. One popper task keeps the ready channel filled from Redis.
pub async fn run(shared: Arc<Shared>, token: CancellationToken) {
    let jobs = Queue::new(&shared.redis, names::COLLECTOR_JOB);
    let concurrency = shared.settings.concurrency;
    // Full: finished runs wait to hand over their result (so workers take no new job).
    let (tx, rx) = mpsc::channel::<Pending>(shared.settings.result_batch * 2);
    let give_up = CancellationToken::new();
    let mut pusher = tokio::spawn(push_results(shared.clone(), rx, give_up.clone()));
    let (ready_tx, ready_rx) = mpsc::channel::<(Work, Guard)>(concurrency);
    let ready: Ready = Arc::new(tokio::sync::Mutex::new(ready_rx));
    let in_flight: InFlight = Arc::default();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(worker(
            shared.clone(),
            ready.clone(),
            tx.clone(),
            in_flight.clone(),
            token.clone(),
        ));
    }
    drop(tx);
    pop_jobs(&shared, &jobs, &ready_tx, &token).await;

    let grace = shared.settings.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    let drained = tokio::time::timeout_at(deadline, async { while workers.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            runs = in_flight.lock().unwrap_or_else(|e| e.into_inner()).len(),
            ?grace,
            "runs still going at the end of the grace period: aborted (their process groups are killed)"
        );
        workers.abort_all();
        while workers.join_next().await.is_some() {}
        let left: Vec<Guard> = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, g)| g)
            .collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), guard::release(&shared, &left)).await;
    }
    // Jobs still ready were never started: back to the queue for the other consumers.
    drop(ready_tx);
    let mut unstarted = Vec::new();
    {
        let mut rx = ready.lock().await;
        while let Ok(w) = rx.try_recv() {
            unstarted.push(w);
        }
    }
    hand_back(&shared, &jobs, unstarted).await;
    if tokio::time::timeout_at(deadline, &mut pusher).await.is_err() {
        give_up.cancel();
        let _ = pusher.await;
    }
}

/// Keep the ready channel filled: pop, decode, guard, send (waiting while it is full).
async fn pop_jobs(shared: &Shared, jobs: &Queue, ready: &mpsc::Sender<(Work, Guard)>, token: &CancellationToken) {
    let mut backoff = Backoff {
        initial: Duration::from_millis(100),
        ..Backoff::default()
    }
    .attempts();
    loop {
        // Pop only when there is room for the next round, and no more than that.
        let room = tokio::select! {
            _ = token.cancelled() => return,
            p = ready.reserve() => match p { Ok(p) => p, Err(_) => return },
        };
        let max = shared.settings.collection_bulk_size.min(ready.capacity() + 1);
        drop(room);
        let batch = tokio::select! {
            _ = token.cancelled() => return,
            b = jobs.pop_batch(max, Duration::from_secs(1)) => b,
        };
        let batch = match batch {
            Ok(b) => {
                backoff.reset();
                b
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read collector.job.queue");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        shared.stats.jobs_taken.add(batch.len() as u64);
        let work = usable_jobs(shared, jobs, batch).await;
        let wanted: Vec<(&str, &str, &str, Duration)> = work
            .iter()
            .map(|w| {
                (
                    w.job.plugin.as_str(),
                    w.job.collection.as_str(),
                    w.job.target.as_str(),
                    w.collection.timeout,
                )
            })
            .collect();
        let taken = match guard::take(shared, &wanted).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, jobs = work.len(), "cannot take run guards; jobs dropped (the next slot runs them again)");
                continue;
            }
        };
        let mut guarded = VecDeque::new();
        for (w, taken) in work.into_iter().zip(taken) {
            match taken {
                Some(g) => guarded.push_back((w, g)),
                None => {
                    shared.stats.runs_skipped.inc();
                    tracing::debug!(plugin = %w.job.plugin, collection = %w.job.collection, target = %w.job.target, "previous run still going: skipped");
                }
            }
        }
        while let Some(item) = guarded.pop_front() {
            let permit = tokio::select! {
                _ = token.cancelled() => None,
                p = ready.reserve() => p.ok(),
            };
            match permit {
                Some(p) => p.send(item),
                None => {
                    // Shutting down: jobs not started go back for the other consumers.
                    guarded.push_front(item);
                    hand_back(shared, jobs, guarded.into()).await;
                    return;
                }
            }
        }
    }
}

/// One of the `concurrency` workers: take a ready job, run it, hand its result to the pusher.
async fn worker(
    shared: Arc<Shared>,
    ready: Ready,
    results: mpsc::Sender<Pending>,
    in_flight: InFlight,
    token: CancellationToken,
) {
    loop {
        let next = {
            let mut rx = ready.lock().await;
            tokio::select! {
                biased;
                _ = token.cancelled() => None,
                w = rx.recv() => w,
            }
        };
        let Some((w, g)) = next else { return };
        in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(g.token.clone(), g.clone());
        let ask = Ask {
            target: w.job.target,
            correlation_info: w.job.correlation_info,
            param: Vec::new(),
            timeout: w.collection.timeout,
            trigger: Trigger::Regular,
            scheduled_at: Some(w.job.scheduled_at),
        };
        let data = run_once(&shared, &w.collection, ask).await;
        let payload = serde_json::to_vec(&data).unwrap_or_default();
        // From here the pusher owns the guard.
        in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&g.token);
        if results.send(Pending { payload, guard: g }).await.is_err() {
            return;
        }
    }
}

/// Push results in bulk (one `LPUSH` and the guard releases per batch), retrying while Redis
/// is away; ends when every sender is gone and the channel is empty, or at `give_up` (the
/// results not pushed are then logged as lost).
pub async fn push_results(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>, give_up: CancellationToken) {
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
        for r in &batch {
            push.arg(&r.payload);
        }
        pipe.add_command(push).ignore();
        let guards: Vec<Guard> = batch.iter().map(|r| r.guard.clone()).collect();
        guard::release_in(&mut pipe, &guards);
        loop {
            let mut c = shared.redis.conn();
            let attempt = tokio::select! {
                r = pipe.query_async::<()>(&mut c) => r,
                _ = give_up.cancelled() => {
                    rx.close();
                    let lost = batch.len() + rx.len();
                    tracing::error!(results = lost, "shutting down with Redis unreachable: results lost");
                    return;
                }
            };
            match attempt {
                Ok(()) => {
                    shared.stats.results_pushed.add(batch.len() as u64);
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, results = batch.len(), "cannot push results; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = give_up.cancelled() => {}
                    }
                }
            }
        }
        batch.clear();
    }
}
