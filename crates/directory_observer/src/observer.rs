//! The async side: one task that takes batches from the inotify thread, decides when each
//! directory is scanned, feeds the publisher, reloads the configuration, and drains on shutdown.
//!
//! Scans of a directory run only while its queue is flowing (no push stuck on an absent Redis
//! or a full queue), post at most `poll_queue_limit - LLEN - held` files (and never more than
//! the buffer takes), oldest first. A scan cut short by that limit is resumed later, skipping
//! the files it already posted, so a recovery rescan always completes without flooding the
//! queue with duplicates.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironwork_core::messages::FileEvent;
use ironwork_core::{CancellationToken, Queue};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::publish::{encode, Publisher};
use crate::scan::{self, Listing, Rescans, Scope};
use crate::stats::Stats;
use crate::watch::{Batch, Root, Watcher, WatcherHandle, BATCH_CHANNEL};

/// Housekeeping period: forced polls, gauges, outage logs.
const TICK: Duration = Duration::from_millis(250);

/// Least time between two attempts at a scan that could not run or was cut short.
const SCAN_RETRY: Duration = Duration::from_secs(1);

/// How a scan task ended.
#[derive(Debug)]
enum ScanOutcome {
    /// Listed; `llen` is the queue length read first (when the queue has a limit).
    Listed {
        root: u64,
        scope: Scope,
        listing: Listing,
        llen: Option<u64>,
    },
    /// The queue length could not be read: try again later.
    Deferred { root: u64, scope: Scope, error: String },
}

/// The running daemon's state.
pub struct Observer {
    config: Config,
    roots: Vec<Arc<Root>>,
    next_id: u64,
    publisher: Publisher,
    rescans: Arc<Rescans>,
    /// Scans requested and not started.
    dirty: HashMap<u64, Scope>,
    /// Files (path and mtime: a new file under an old name is not skipped) posted by scans that
    /// were cut short, skipped when the scan resumes.
    partial: HashMap<u64, HashSet<(PathBuf, SystemTime)>>,
    not_before: HashMap<u64, Instant>,
    scanning: HashSet<u64>,
    scans: JoinSet<ScanOutcome>,
    next_poll: HashMap<u64, Instant>,
    pings: JoinSet<()>,
    stats: Stats,
    watcher: WatcherHandle,
    events: mpsc::Receiver<Batch>,
    outage: bool,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("roots", &self.roots.len())
            .field("buffered", &self.publisher.buffered())
            .finish()
    }
}

/// What `run` needs besides the configuration.
#[derive(Debug)]
pub struct Signals {
    /// Stop: drain and return.
    pub token: CancellationToken,
    /// Stop now, skipping the grace period.
    pub force: CancellationToken,
    /// Re-read the configuration on every change.
    pub reload: Option<watch::Receiver<u64>>,
    /// Overrides `shutdown_grace`.
    pub grace: Option<Duration>,
}

impl Observer {
    /// Set everything up: queues, the inotify watches (directories created when missing), the
    /// reader thread. Startup scans are requested by the reader once each watch exists.
    pub async fn start(config: Config, stats: Stats) -> anyhow::Result<Self> {
        let rescans = Arc::new(Rescans::default());
        let (tx, events) = mpsc::channel(BATCH_CHANNEL);
        let roots: Vec<Arc<Root>> = config
            .steps
            .iter()
            .zip(1..)
            .map(|(s, id)| Arc::new(Root::new(id, s.clone())))
            .collect();
        let mut publisher = Publisher::new(config.redis.clone(), config.buffer_size, stats.clone());
        for r in &roots {
            publisher.configure(&r.step)?;
        }
        if roots.is_empty() {
            tracing::warn!(config = %config.path.display(), "no active section: nothing to watch until a reload adds one");
        }
        let (watch_roots, watch_rescans, watch_stats) = (roots.clone(), rescans.clone(), stats.clone());
        let watcher = tokio::task::spawn_blocking(move || -> std::io::Result<Watcher> {
            let mut w = Watcher::new(watch_rescans, watch_stats, tx)?;
            w.set_roots(watch_roots);
            Ok(w)
        })
        .await??;
        let watcher = WatcherHandle::spawn(watcher)?;
        let now = Instant::now();
        let next_poll = roots
            .iter()
            .filter_map(|r| r.step.forced_poll.map(|p| (r.id, now + p)))
            .collect();
        let mut observer = Self {
            next_id: roots.len() as u64,
            config,
            roots,
            publisher,
            rescans,
            dirty: HashMap::new(),
            partial: HashMap::new(),
            not_before: HashMap::new(),
            scanning: HashSet::new(),
            scans: JoinSet::new(),
            next_poll,
            pings: JoinSet::new(),
            stats,
            watcher,
            events,
            outage: false,
        };
        observer.ping_all();
        Ok(observer)
    }

    /// Run until `signals.token` is cancelled, then flush within the grace period.
    pub async fn run(mut self, signals: Signals) -> anyhow::Result<()> {
        let Signals {
            token,
            force,
            mut reload,
            grace,
        } = signals;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline: Option<Instant> = None;
        let mut events_open = true;
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let clean = loop {
            let now = Instant::now();
            self.publisher.start_pushes(now.into_std());
            if deadline.is_none() {
                self.start_scans(now);
            } else if !events_open && self.publisher.buffered() == 0 {
                break true;
            }
            let retry_at = self.publisher.next_retry().map(Instant::from_std);
            tokio::select! {
                _ = token.cancelled(), if deadline.is_none() => {
                    let grace = grace.unwrap_or(self.config.shutdown_grace);
                    tracing::info!(buffered = self.publisher.buffered(), grace_ms = grace.as_millis() as u64, "stopping: no more watching, flushing buffered events");
                    deadline = Some(Instant::now() + grace);
                    self.watcher.stop();
                    self.scans.abort_all();
                    self.pings.abort_all();
                }
                _ = force.cancelled(), if deadline.is_some() => break false,
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => break false,
                batch = self.events.recv(), if events_open => match batch {
                    Some(batch) => self.accept(batch),
                    None => {
                        events_open = false;
                        if deadline.is_none() {
                            let why = self.watcher.join().await;
                            anyhow::bail!("the inotify reader stopped unexpectedly: {why:?}");
                        }
                    }
                },
                done = self.publisher.next_done(), if self.publisher.pushing() => {
                    self.publisher.complete(done, std::time::Instant::now());
                }
                Some(res) = self.scans.join_next(), if !self.scans.is_empty() => match res {
                    Ok(outcome) => self.scanned(outcome),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => {}
                },
                _ = self.rescans.notified() => self.take_rescans(),
                _ = tick.tick() => self.on_tick(),
                _ = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {}
                changed = changed(&mut reload), if deadline.is_none() => {
                    if changed {
                        self.reload().await;
                    } else {
                        reload = None;
                    }
                }
            }
        };
        if clean {
            tracing::info!("buffered events flushed");
        } else {
            let left = self.publisher.abort();
            if left > 0 {
                tracing::warn!(
                    left,
                    "grace period over with events not pushed; their files are still in place and the next start's scan posts them"
                );
            }
        }
        self.publisher.flush_logs();
        self.scans.abort_all();
        self.pings.abort_all();
        self.watcher.stop();
        if let Err(e) = self.watcher.join().await {
            tracing::warn!(error = %e, "inotify reader ended with an error");
        }
        Ok(())
    }

    fn root(&self, id: u64) -> Option<&Arc<Root>> {
        self.roots.iter().find(|r| r.id == id)
    }

    fn request(&mut self, id: u64, scope: Scope) {
        match self.dirty.get_mut(&id) {
            Some(s) => s.merge(scope),
            None => {
                self.dirty.insert(id, scope);
            }
        }
    }

    fn accept(&mut self, batch: Batch) {
        for g in batch.groups {
            let dropped = self.publisher.offer(&g.root.step, g.messages);
            if dropped > 0 && self.root(g.root.id).is_some() {
                self.request(g.root.id, Scope::Whole);
            }
        }
    }

    fn take_rescans(&mut self) {
        let (all, roots) = self.rescans.take();
        if all {
            for id in self.roots.iter().map(|r| r.id).collect::<Vec<_>>() {
                self.request(id, Scope::Whole);
            }
        }
        for (id, scope) in roots {
            if self.root(id).is_some() {
                self.request(id, scope);
            }
        }
    }

    fn start_scans(&mut self, now: Instant) {
        let ids: Vec<u64> = self.dirty.keys().copied().collect();
        for id in ids {
            if self.scanning.contains(&id) || self.not_before.get(&id).is_some_and(|t| now < *t) {
                continue;
            }
            let Some(root) = self.root(id).cloned() else {
                self.dirty.remove(&id);
                continue;
            };
            if !self.publisher.flowing(&root.queue, now.into_std()) || self.publisher.free(&root.queue) == 0 {
                continue;
            }
            let Some(scope) = self.dirty.remove(&id) else {
                continue;
            };
            self.scanning.insert(id);
            let queue = self.publisher.limit_of(&root.queue).map(|(_, q)| q);
            self.scans.spawn(scan_task(root, scope, queue));
        }
    }

    fn scanned(&mut self, outcome: ScanOutcome) {
        let now = Instant::now();
        match outcome {
            ScanOutcome::Deferred { root, scope, error } => {
                self.scanning.remove(&root);
                if self.root(root).is_some() {
                    tracing::debug!(root, error, "scan postponed: cannot read the queue length");
                    self.request(root, scope);
                    self.not_before.insert(root, now + SCAN_RETRY);
                }
            }
            ScanOutcome::Listed {
                root: id,
                scope,
                listing,
                llen,
            } => {
                self.scanning.remove(&id);
                let Some(root) = self.root(id).cloned() else {
                    return;
                };
                self.stats.rescans.inc();
                if listing.skipped_names > 0 {
                    self.stats.skipped_names.add(listing.skipped_names);
                    tracing::warn!(dir = %root.label, count = listing.skipped_names, "files with names that are not UTF-8 skipped (a message cannot carry them)");
                }
                let held = self.publisher.held(&root.queue) as u64;
                let room = match (root.step.poll_queue_limit, llen) {
                    (Some(limit), Some(len)) => {
                        usize::try_from(limit.saturating_sub(len).saturating_sub(held)).unwrap_or(usize::MAX)
                    }
                    _ => usize::MAX,
                }
                .min(self.publisher.free(&root.queue));
                let found = listing.files.len();
                let exclude = self.partial.get(&id);
                let mut messages = Vec::new();
                let mut posted = Vec::new();
                let mut truncated = false;
                for f in listing.files {
                    let key = (f.path, f.mtime);
                    if exclude.is_some_and(|e| e.contains(&key)) {
                        continue;
                    }
                    if messages.len() >= room {
                        truncated = true;
                        break;
                    }
                    messages.push(encode(&f.dir, &f.name, FileEvent::Exists));
                    posted.push(key);
                }
                let n = messages.len();
                let dropped = self.publisher.offer(&root.step, messages);
                self.stats.scan_posted.add((n - dropped) as u64);
                if truncated || dropped > 0 {
                    // Resume later, skipping what was posted. Right away when this pass posted
                    // something (the buffer gates the next pass); after a pause when the queue
                    // had no room at all.
                    self.partial.entry(id).or_default().extend(posted);
                    self.request(id, scope);
                    if n == 0 {
                        self.not_before.insert(id, now + SCAN_RETRY);
                    }
                } else if scope == Scope::Whole {
                    self.partial.remove(&id);
                }
                tracing::debug!(dir = %root.label, found, posted = n, truncated, "scan done");
            }
        }
    }

    fn on_tick(&mut self) {
        // Requests are normally taken on notification; this is a cheap safety net.
        self.take_rescans();
        let now = Instant::now();
        let due: Vec<u64> = self
            .next_poll
            .iter()
            .filter(|(_, t)| now >= **t)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(period) = self.root(id).and_then(|r| r.step.forced_poll) else {
                self.next_poll.remove(&id);
                continue;
            };
            self.next_poll.insert(id, now + period);
            self.request(id, Scope::Whole);
        }
        let up = self.publisher.redis_healthy();
        self.stats.redis_up.set(i64::from(up));
        let buffered = self.publisher.buffered();
        self.stats.buffered.set(buffered as i64);
        if !up && buffered > 0 && !self.outage {
            self.outage = true;
            tracing::warn!(buffered, "Redis unavailable: holding events until it is back");
        } else if up && self.outage && buffered == 0 {
            self.outage = false;
            tracing::info!("Redis is back and every held event was pushed");
        }
        self.publisher.tick_logs();
    }

    /// Ping every connection in the background, so health is known from the start (and an
    /// absent Redis is logged).
    fn ping_all(&mut self) {
        for redis in self.publisher.connections().cloned().collect::<Vec<_>>() {
            self.pings.spawn(async move {
                let _ = redis
                    .retry("ping", |mut c| async move {
                        redis::cmd("PING").query_async::<()>(&mut c).await
                    })
                    .await;
            });
        }
    }

    async fn reload(&mut self) {
        tracing::info!(config = %self.config.path.display(), "reloading configuration");
        let (path, home) = (self.config.path.clone(), self.config.home.clone());
        let loaded = tokio::task::spawn_blocking(move || Config::load_with_home(&path, home.as_deref())).await;
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    tracing::error!(file = %e.file.display(), line = e.line, section = e.section, key = e.key, "{}", e.message);
                }
                tracing::error!(
                    errors = errors.len(),
                    "new configuration refused; the running one stays"
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed; the running one stays");
                return;
            }
        };
        self.apply(new).await;
    }

    async fn apply(&mut self, new: Config) {
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        if let (Some(old), Some(next)) = (self.publisher.target(), new.redis.as_ref()) {
            if old != next {
                tracing::warn!(running = %old, configured = %next, "a different Redis needs a restart; still using the running one");
            }
        }
        if new.http_listen != self.config.http_listen {
            tracing::warn!("http_listen changes need a restart");
        }
        self.publisher.set_target_if_none(new.redis.clone());
        self.publisher.set_capacity(new.buffer_size);
        let now = Instant::now();
        let mut roots = Vec::with_capacity(new.steps.len());
        let mut added = Vec::new();
        for step in &new.steps {
            match self.roots.iter().find(|r| r.step == *step) {
                Some(r) => roots.push(r.clone()),
                None => {
                    self.next_id += 1;
                    let root = Arc::new(Root::new(self.next_id, step.clone()));
                    added.push(root.clone());
                    roots.push(root);
                }
            }
        }
        let removed = self.roots.len() + added.len() - roots.len();
        for r in &roots {
            if let Err(e) = self.publisher.configure(&r.step) {
                tracing::error!(queue = %r.queue, error = %e, "cannot set up queue");
            }
        }
        let queues: Vec<&str> = roots.iter().map(|r| &*r.queue).collect();
        self.publisher.retain_queues(&queues);
        let ids: HashSet<u64> = roots.iter().map(|r| r.id).collect();
        self.dirty.retain(|id, _| ids.contains(id));
        self.partial.retain(|id, _| ids.contains(id));
        self.not_before.retain(|id, _| ids.contains(id));
        self.next_poll.retain(|id, _| ids.contains(id));
        for r in &added {
            if let Some(p) = r.step.forced_poll {
                self.next_poll.insert(r.id, now + p);
            }
        }
        self.roots = roots.clone();
        self.watcher.reconfigure(roots).await;
        self.config = new;
        self.ping_all();
        tracing::info!(
            added = added.len(),
            removed,
            kept = self.roots.len() - added.len(),
            "configuration reloaded"
        );
    }
}

/// List a scope after reading the queue length (when the queue has a limit). The length is
/// read first: files posted between the two reads only make the room estimate conservative.
async fn scan_task(root: Arc<Root>, scope: Scope, queue: Option<Queue>) -> ScanOutcome {
    let llen = match queue {
        None => None,
        Some(q) => {
            let len: Result<u64, String> = match root.step.timeout {
                Some(t) => match tokio::time::timeout(t, q.len()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("LLEN {} timed out", root.step.queue)),
                },
                None => q.len().await.map_err(|e| e.to_string()),
            };
            match len {
                Ok(n) => Some(n),
                Err(e) => {
                    return ScanOutcome::Deferred {
                        root: root.id,
                        scope,
                        error: e,
                    }
                }
            }
        }
    };
    let (r, s) = (root.clone(), scope.clone());
    match tokio::task::spawn_blocking(move || scan::list(&r, &s)).await {
        Ok(listing) => ScanOutcome::Listed {
            root: root.id,
            scope,
            listing,
            llen,
        },
        Err(e) => ScanOutcome::Deferred {
            root: root.id,
            scope,
            error: e.to_string(),
        },
    }
}

/// Wait for a reload request: true on a request, false once no more can come.
async fn changed(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
