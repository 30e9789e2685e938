//! The worker loop shared by every step: reliable pop from `step.<plugin>.<step>`, claim each
//! file by renaming it into `tmp/<plugin>.<step>/<claim id>`, run the [`Step`], route the result
//! (or apply the failure policy), acknowledge. Also: heartbeats and re-queueing of dead peers'
//! in-flight messages, and promotion of due retries from `<queue>.delayed`.
//!
//! The claim id is the MD5 of the message, so a message replayed after a crash finds its own
//! claimed file again (and resumes it) while a duplicate message finds nothing (and is dropped).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ironwork_core::messages::{epoch_seconds, names, StepEvent};
use ironwork_core::metrics::{Counter, Metrics};
use ironwork_core::{CancellationToken, Delivery, Queue, Redis, ReliableConsumer};
use md5::{Digest, Md5};
use redis::Script;

use crate::claim;
use crate::file::{Step, StepFile};
use crate::layout::{DataDir, Sources};
use crate::policy::{Policies, Verdict};
use crate::routing::Router;
use crate::tags::{hex, Entering, TagStore};

/// A worker's liveness key lives this long; it is renewed three times as often.
const HEARTBEAT_TTL: Duration = Duration::from_secs(30);
/// How often dead peers' in-flight messages are looked for.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);
/// Most retries promoted per pass.
const PROMOTE_BATCH: usize = 500;
/// Dead letters kept per queue.
const DEAD_CAP: u64 = 10_000;

/// Moves due members of the delayed set to the queue, oldest due first.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(due))
redis.call('LPUSH', KEYS[2], unpack(due))
return #due
";

/// One step worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The plugin.
    pub plugin: String,
    /// The step.
    pub step: String,
    /// The queue consumed (normally `step.<plugin>.<step>`).
    pub queue: String,
    /// This worker's consumer id, stable across its restarts (`<host>.<wid>`).
    pub consumer: String,
    /// The data directory and the roots messages may point into.
    pub data: DataDir,
    /// Most messages taken per pop.
    pub batch: usize,
    /// Retry, failure policy, loop guard.
    pub policies: Policies,
    /// How long file tags live after their last change.
    pub tags_ttl: Duration,
}

/// Per-step counters exported on `/metrics`.
#[derive(Debug, Clone)]
pub struct StepMetrics {
    /// Files the step succeeded on.
    pub processed: Counter,
    /// Files the step failed on.
    pub failed: Counter,
    /// Retries scheduled.
    pub retried: Counter,
    /// Messages whose file was already gone (duplicates).
    pub duplicates: Counter,
    /// Messages dead-lettered (unreadable, or pointing outside the data roots).
    pub dead_letters: Counter,
}

impl StepMetrics {
    /// Register the counters in `metrics`.
    pub fn new(metrics: &Metrics, plugin: &str, step: &str) -> Self {
        let l = [("plugin", plugin), ("step", step)];
        Self {
            processed: metrics.counter("ironwork_step_processed_total", "Files processed successfully.", &l),
            failed: metrics.counter("ironwork_step_failed_total", "Files the step failed on.", &l),
            retried: metrics.counter("ironwork_step_retried_total", "Retries scheduled.", &l),
            duplicates: metrics.counter(
                "ironwork_step_duplicates_total",
                "Messages whose file was already gone.",
                &l,
            ),
            dead_letters: metrics.counter("ironwork_step_dead_letters_total", "Messages dead-lettered.", &l),
        }
    }
}

/// Run a step worker until `token` is cancelled. At cancellation the file in hand is finished,
/// the rest of the batch is handed back to the queue, and the function returns `Ok`.
pub async fn run<S: Step>(
    cfg: WorkerConfig,
    redis: Redis,
    mut step: S,
    metrics: StepMetrics,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = ReliableConsumer::new(Queue::new(&redis, &cfg.queue), cfg.consumer.clone())?;
    let tmp_dir = cfg.data.tmp_dir(&cfg.plugin, &cfg.step);
    std::fs::create_dir_all(&tmp_dir).with_context(|| format!("cannot create {}", tmp_dir.display()))?;
    let tags = TagStore::new(redis.clone(), cfg.tags_ttl);
    let mut worker = Worker {
        router: Router::new(redis.clone(), tags.clone(), tmp_dir.clone()),
        tags,
        tmp_dir,
        plugin: cfg.plugin.as_str().into(),
        step_name: cfg.step.as_str().into(),
        data: Arc::new(cfg.data.clone()),
        sources: cfg.data.sources(&cfg.plugin, &cfg.step),
        metrics,
        cfg: &cfg,
    };
    let started = tokio::select! {
        _ = token.cancelled() => return Ok(()),
        r = async {
            consumer.heartbeat(HEARTBEAT_TTL).await?;
            consumer.recover().await?;
            consumer.recover_orphans().await
        } => r,
    };
    started?;
    tracing::info!(queue = %cfg.queue, consumer = %cfg.consumer, "step worker started");

    // Heartbeats continue while the last file is finished, hence their own token.
    let beating = CancellationToken::new();
    let heart = ReliableConsumer::new(Queue::new(&redis, &cfg.queue), cfg.consumer.clone())?;
    let stop = beating.clone();
    let heart = tokio::spawn(async move { heart.keep_alive(HEARTBEAT_TTL, stop).await });
    let result = worker.serve(&consumer, &mut step, &redis, &token).await;
    beating.cancel();
    let _ = heart.await;
    result?;
    tracing::info!(queue = %cfg.queue, "step worker stopped");
    Ok(())
}

struct Worker<'a> {
    router: Router,
    tags: TagStore,
    tmp_dir: PathBuf,
    plugin: Arc<str>,
    step_name: Arc<str>,
    data: Arc<DataDir>,
    sources: Sources,
    metrics: StepMetrics,
    cfg: &'a WorkerConfig,
}

/// What became of one delivery.
enum Handled {
    /// Done: acknowledge it.
    Done,
    /// Already dead-lettered (which acknowledges it).
    DeadLettered,
}

impl Worker<'_> {
    async fn serve<S: Step>(
        &mut self,
        consumer: &ReliableConsumer,
        step: &mut S,
        redis: &Redis,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let promote = Script::new(PROMOTE);
        let delayed = names::delayed(&self.cfg.queue);
        let mut last_sweep = tokio::time::Instant::now();
        let mut last_promote = tokio::time::Instant::now() - Duration::from_secs(1);
        loop {
            step.tick();
            if last_promote.elapsed() >= Duration::from_secs(1) {
                last_promote = tokio::time::Instant::now();
                let mut inv = promote.key(&delayed);
                inv.key(&self.cfg.queue).arg(epoch_seconds()).arg(PROMOTE_BATCH);
                let n: u64 = tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    r = redis.retry("promote_retries", |mut c| {
                        let inv = &inv;
                        async move { inv.invoke_async(&mut c).await }
                    }) => r?,
                };
                if n > 0 {
                    tracing::debug!(promoted = n, "retries due, re-queued");
                }
            }
            if last_sweep.elapsed() >= ORPHAN_SWEEP {
                last_sweep = tokio::time::Instant::now();
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    r = self.sweep(consumer, redis) => r?,
                }
            }
            let batch = tokio::select! {
                _ = token.cancelled() => return Ok(()),
                r = consumer.pop_batch(self.cfg.batch, Duration::from_secs(1)) => r?,
            };
            let mut done = Vec::with_capacity(batch.len());
            let mut pending = batch.into_iter();
            while let Some(delivery) = pending.next() {
                if token.is_cancelled() {
                    let back: Vec<Delivery> = std::iter::once(delivery).chain(pending.by_ref()).collect();
                    consumer.hand_back(&back).await?;
                    tracing::info!(
                        handed_back = back.len(),
                        "shutdown: unstarted messages returned to the queue"
                    );
                    break;
                }
                match self.handle(consumer, step, &delivery).await? {
                    Handled::Done => done.push(delivery),
                    Handled::DeadLettered => {}
                }
            }
            consumer.ack(&done).await?;
            self.router.flush().await?;
            if token.is_cancelled() {
                return Ok(());
            }
        }
    }

    async fn handle<S: Step>(
        &mut self,
        consumer: &ReliableConsumer,
        step: &mut S,
        delivery: &Delivery,
    ) -> anyhow::Result<Handled> {
        let event: StepEvent = match serde_json::from_slice(&delivery.payload) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .dead_letter(consumer, delivery, &format!("invalid StepEvent: {e}"))
                    .await
            }
        };
        let dir = Path::new(&event.directory);
        if !self.sources.accepts(dir) || !crate::layout::valid_file_name(&event.filename) {
            let reason = format!(
                "{} is not a file of this step's directories",
                dir.join(&event.filename).display()
            );
            return self.dead_letter(consumer, delivery, &reason).await;
        }
        let src = dir.join(&event.filename);
        let id = hex(&Md5::digest(&delivery.payload));
        let tmp = self.tmp_dir.join(&id);
        // Another live worker may hold the same message (a duplicate push): one handles it.
        let Some(_claim) = claim::lock(&self.tmp_dir.join(format!("{id}.lock")))? else {
            return Ok(self.duplicate(&src, "message being handled by another worker"));
        };
        if self.router.is_committed(&id) {
            if let Err(e) = self.router.resume(&id, &tmp).await {
                return self.quarantine(consumer, delivery, &id, &tmp, &format!("{e:#}")).await;
            }
            self.metrics.processed.inc();
            return Ok(Handled::Done);
        }
        let resume = std::fs::symlink_metadata(&tmp).is_ok();
        if !resume {
            match claim::claim(&src, &tmp) {
                Ok(true) => {}
                Ok(false) => return Ok(self.duplicate(&src, "file already gone")),
                Err(e) => {
                    let reason = format!("cannot claim {}: {e}", src.display());
                    return self.dead_letter(consumer, delivery, &reason).await;
                }
            }
        }
        let regular = match std::fs::symlink_metadata(&tmp) {
            Ok(m) => m.is_file(),
            Err(_) => return Ok(self.duplicate(&src, "file already gone")),
        };
        if resume {
            tracing::info!(file = %src.display(), claim = %id, "resuming a file claimed by a previous run");
        }
        let tags = self
            .tags
            .enter(&Entering {
                from: &src,
                at: &tmp,
                plugin: &self.plugin,
                step: &self.step_name,
                uid: &id,
                resume,
            })
            .await?;
        let mut file = StepFile {
            path: tmp.clone(),
            claimed_from: src,
            claim_id: id.clone(),
            plugin: self.plugin.clone(),
            step: self.step_name.clone(),
            tags,
            pending: Vec::new(),
            routes: Vec::new(),
            data: self.data.clone(),
        };
        let limit = self.cfg.policies.step_limit;
        // Some files are kept without running the step: no retry can help them.
        let outcome = if !regular {
            Err((true, "not a regular file".to_string()))
        } else if file.tags().step_counter() > limit {
            Err((true, format!("step_limit {limit} exceeded (a routing loop?)")))
        } else {
            step.process(&mut file).await.map_err(|f| (false, f.reason))
        };
        let mut delayed = None;
        match outcome {
            Ok(()) => {
                tracing::debug!(file = %file.claimed_from.display(), claim = %id, routes = file.routes.len(), "processed");
                self.metrics.processed.inc();
            }
            Err((forced, reason)) => {
                self.metrics.failed.inc();
                file.routes.clear();
                let verdict = if forced {
                    self.cfg.policies.keep_now(&mut file, &reason)
                } else {
                    self.cfg.policies.on_failure(&mut file, &self.cfg.queue, &reason)
                };
                let original = file.original_basename().to_string();
                match verdict {
                    Verdict::Retry { attempt, delayed: d } => {
                        self.metrics.retried.inc();
                        tracing::warn!(file = %original, claim = %id, attempt, %reason, "step failed, retry scheduled");
                        delayed = Some(d);
                    }
                    Verdict::Kept(dest) => {
                        tracing::warn!(file = %original, claim = %id, kept = %dest.display(), %reason, "step failed, file kept in trash")
                    }
                    Verdict::Deleted => {
                        tracing::warn!(file = %original, claim = %id, %reason, "step failed, file deleted (failure_policy delete)")
                    }
                    Verdict::Moved(dest) => {
                        tracing::warn!(file = %original, claim = %id, moved = %dest.display(), %reason, "step failed, file moved (failure_policy move)")
                    }
                }
            }
        }
        let routes = std::mem::take(&mut file.routes);
        if let Err(e) = self.router.commit(&id, &tmp, &file.pending, routes, delayed).await {
            return self.quarantine(consumer, delivery, &id, &tmp, &format!("{e:#}")).await;
        }
        Ok(Handled::Done)
    }

    /// Between batches, nothing is held: whatever sits in our processing list was moved there
    /// by a pop whose reply was lost, so it goes back to the queue. Dead peers' lists are
    /// re-queued too, and files stranded in the retry directory (their delayed message lost
    /// with a Redis crash) are queued again.
    async fn sweep(&self, consumer: &ReliableConsumer, redis: &Redis) -> anyhow::Result<()> {
        consumer.recover().await?;
        consumer.recover_orphans().await?;
        let dir = self.data.retry_dir(&self.plugin, &self.step_name);
        let overdue = self.cfg.policies.retry.max_wait + ORPHAN_SWEEP * 2;
        let mut messages = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && crate::gc::age(&meta, std::time::SystemTime::now()) > overdue {
                let event = StepEvent {
                    directory: dir.to_string_lossy().into_owned(),
                    filename: entry.file_name().to_string_lossy().into_owned(),
                    event: ironwork_core::messages::FileEvent::Exists,
                    event_timestamp: epoch_seconds(),
                };
                messages.push(event.to_metwork_json());
            }
        }
        if !messages.is_empty() {
            tracing::warn!(files = messages.len(), dir = %dir.display(), "re-queued retries whose delayed message was lost");
            Queue::new(redis, &self.cfg.queue).push_batch(&messages).await?;
        }
        Ok(())
    }

    fn duplicate(&self, src: &Path, why: &'static str) -> Handled {
        tracing::debug!(file = %src.display(), why, "duplicate message");
        self.metrics.duplicates.inc();
        Handled::Done
    }

    /// A file whose routing failed (a name too long for the target filesystem, a full disk…):
    /// park it in `trash/<plugin>.<step>/<claim id>` with the reason, so that one bad file never
    /// stops the step. If even that fails, the message is dead-lettered with both errors.
    async fn quarantine(
        &mut self,
        consumer: &ReliableConsumer,
        delivery: &Delivery,
        id: &str,
        tmp: &Path,
        error: &str,
    ) -> anyhow::Result<Handled> {
        tracing::error!(claim = %id, error, "cannot route a file, moving it to the trash");
        let trash = self.data.trash_dir(&self.plugin, &self.step_name);
        match self.router.abandon(id, tmp, &trash, error) {
            Ok(()) => {
                self.metrics.failed.inc();
                Ok(Handled::Done)
            }
            Err(e) => {
                let reason = format!("cannot route {}: {error}; cannot trash it either: {e}", tmp.display());
                self.dead_letter(consumer, delivery, &reason).await
            }
        }
    }

    async fn dead_letter(
        &self,
        consumer: &ReliableConsumer,
        delivery: &Delivery,
        reason: &str,
    ) -> anyhow::Result<Handled> {
        tracing::warn!(queue = %self.cfg.queue, reason, "message dead-lettered");
        self.metrics.dead_letters.inc();
        consumer.dead_letter(delivery, reason, DEAD_CAP).await?;
        Ok(Handled::DeadLettered)
    }
}
