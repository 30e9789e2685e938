//! Getting messages into Redis: one bounded buffer per queue, one push in flight per queue, and
//! the drop policy when a buffer is full.
//!
//! - A push is one round trip for the whole chunk: a variadic `LPUSH` (no `poll_queue_limit`)
//!   or core's [`BoundedProducer`] script, which pushes only what fits under the limit and waits
//!   for room, so the queue never grows past `poll_queue_limit` whatever the source of the
//!   messages (events or scans).
//! - Transient Redis failures (down, restarting, a reply slower than the step's `timeout`) are
//!   retried inside the push with capped backoff; meanwhile new messages wait in the buffer.
//! - A buffer holds at most `buffer_size` messages (pending + in flight). What does not fit is
//!   dropped, counted in `directory_observer_dropped_total`, logged at WARN, and reported to the
//!   caller, which flags the directory for a rescan: the files are still there, so nothing is
//!   lost, only delayed.
//! - A push that fails permanently (a wrong key type, Redis out of memory) is logged at ERROR
//!   and its messages go back to the head of the buffer, retried with backoff.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironwork_core::messages::{epoch_seconds, FileEvent, StepEvent};
use ironwork_core::queue::QueueError;
use ironwork_core::{BoundedProducer, Queue, Redis, RedisSettings};
use tokio::task::JoinSet;

use crate::config::{RedisTarget, Step};
use crate::stats::Stats;

/// Most messages one push carries (split by the queue library into commands of 1000, still one
/// round trip).
const PUSH_CHUNK: usize = 5000;

/// A push in flight longer than this means the queue is not flowing (Redis away, or the queue
/// at its limit): scans for it wait.
const FLOWING_WINDOW: Duration = Duration::from_secs(1);

/// Reply timeout standing for "no timeout" (`timeout = 0`).
const NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Encode one Metwork message: `{"directory", "filename", "event", "event_timestamp"}`.
pub fn encode(directory: &str, filename: &str, event: FileEvent) -> Vec<u8> {
    StepEvent {
        directory: directory.to_string(),
        filename: filename.to_string(),
        event,
        event_timestamp: epoch_seconds(),
    }
    .to_metwork_json()
}

/// Where one queue's pushes go.
#[derive(Debug, Clone)]
enum Sink {
    /// No limit: variadic LPUSH.
    Plain(Queue),
    /// `poll_queue_limit`: the bounded script.
    Bounded(BoundedProducer),
}

impl Sink {
    fn queue(&self) -> &Queue {
        match self {
            Sink::Plain(q) => q,
            Sink::Bounded(p) => p.queue(),
        }
    }

    async fn push(&self, messages: &[Vec<u8>]) -> Result<(), QueueError> {
        match self {
            Sink::Plain(q) => q.push_batch(messages).await.map(drop),
            Sink::Bounded(p) => p.push_batch(messages).await.map(drop),
        }
    }
}

/// One queue's buffer and push state.
#[derive(Debug)]
struct QueueBuf {
    sink: Sink,
    limit: Option<u64>,
    timeout: Option<Duration>,
    pending: VecDeque<Vec<u8>>,
    in_flight: usize,
    in_flight_since: Option<Instant>,
    retry_at: Option<Instant>,
    failures: u32,
}

impl QueueBuf {
    fn held(&self) -> usize {
        self.pending.len() + self.in_flight
    }
}

/// A finished push.
#[derive(Debug)]
pub struct Done {
    queue: Arc<str>,
    messages: Vec<Vec<u8>>,
    result: Result<(), QueueError>,
}

/// The Redis connections, one per distinct `timeout` (the reply timeout is a connection setting).
#[derive(Debug, Default)]
struct Connections {
    target: Option<RedisTarget>,
    handles: Vec<(Option<Duration>, Redis)>,
}

impl Connections {
    fn get(&mut self, timeout: Option<Duration>) -> anyhow::Result<Redis> {
        if let Some((_, r)) = self.handles.iter().find(|(t, _)| *t == timeout) {
            return Ok(r.clone());
        }
        let Some(target) = &self.target else {
            anyhow::bail!("no Redis configured");
        };
        let mut settings = RedisSettings::new(target.url());
        settings.response_timeout = timeout.unwrap_or(NO_TIMEOUT);
        let redis = Redis::with_settings(settings)?;
        self.handles.push((timeout, redis.clone()));
        Ok(redis)
    }
}

/// Per-queue buffers and pushes.
#[derive(Debug)]
pub struct Publisher {
    queues: HashMap<Arc<str>, QueueBuf>,
    connections: Connections,
    capacity: usize,
    pushes: JoinSet<Done>,
    stats: Stats,
    drops: DropLog,
}

impl Publisher {
    /// A publisher to `target` holding at most `capacity` messages per queue.
    pub fn new(target: Option<RedisTarget>, capacity: usize, stats: Stats) -> Self {
        Self {
            queues: HashMap::new(),
            connections: Connections {
                target,
                handles: Vec::new(),
            },
            capacity: capacity.max(1),
            pushes: JoinSet::new(),
            stats,
            drops: DropLog::new("buffer full: events dropped, their directories will be rescanned"),
        }
    }

    /// The Redis target (None when nothing was ever configured).
    pub fn target(&self) -> Option<&RedisTarget> {
        self.connections.target.as_ref()
    }

    /// Set the target when none was known (first active section added by a reload).
    pub fn set_target_if_none(&mut self, target: Option<RedisTarget>) {
        if self.connections.target.is_none() {
            self.connections.target = target;
        }
    }

    /// Change the per-queue capacity (a reload).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Every connection opened so far.
    pub fn connections(&self) -> impl Iterator<Item = &Redis> {
        self.connections.handles.iter().map(|(_, r)| r)
    }

    /// Whether the last command of every connection succeeded.
    pub fn redis_healthy(&self) -> bool {
        self.connections.handles.iter().all(|(_, r)| r.is_healthy())
    }

    /// Make sure `step`'s queue exists with `step`'s limit and timeout (kept messages stay).
    pub fn configure(&mut self, step: &Step) -> anyhow::Result<()> {
        let name: Arc<str> = step.queue.as_str().into();
        if let Some(q) = self.queues.get(&name) {
            if q.limit == step.poll_queue_limit && q.timeout == step.timeout {
                return Ok(());
            }
        }
        let redis = self.connections.get(step.timeout)?;
        let queue = Queue::new(&redis, step.queue.clone());
        let sink = match step.poll_queue_limit {
            Some(limit) => Sink::Bounded(BoundedProducer::new(queue, limit)),
            None => Sink::Plain(queue),
        };
        match self.queues.get_mut(&name) {
            Some(q) => {
                q.sink = sink;
                q.limit = step.poll_queue_limit;
                q.timeout = step.timeout;
            }
            None => {
                self.queues.insert(
                    name,
                    QueueBuf {
                        sink,
                        limit: step.poll_queue_limit,
                        timeout: step.timeout,
                        pending: VecDeque::new(),
                        in_flight: 0,
                        in_flight_since: None,
                        retry_at: None,
                        failures: 0,
                    },
                );
            }
        }
        Ok(())
    }

    /// Forget queues no step uses any more, once they hold nothing.
    pub fn retain_queues(&mut self, used: &[&str]) {
        self.queues.retain(|name, q| q.held() > 0 || used.contains(&&**name));
    }

    /// Messages `queue` can still take before its buffer is full.
    pub fn free(&self, queue: &str) -> usize {
        self.queues
            .get(queue)
            .map_or(self.capacity, |q| self.capacity.saturating_sub(q.held()))
    }

    /// Messages held for `queue` (pending and in flight).
    pub fn held(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, QueueBuf::held)
    }

    /// Messages held for every queue.
    pub fn buffered(&self) -> usize {
        self.queues.values().map(QueueBuf::held).sum()
    }

    /// Whether `queue` is taking pushes: nothing stuck in flight, no failure backoff.
    pub fn flowing(&self, queue: &str, now: Instant) -> bool {
        self.queues.get(queue).is_none_or(|q| {
            q.retry_at.is_none() && q.in_flight_since.is_none_or(|t| now.duration_since(t) < FLOWING_WINDOW)
        })
    }

    /// The queue's `poll_queue_limit` and a handle to read its length.
    pub fn limit_of(&self, queue: &str) -> Option<(u64, Queue)> {
        let q = self.queues.get(queue)?;
        Some((q.limit?, q.sink.queue().clone()))
    }

    /// Buffer `messages` for `step`'s queue; returns how many did not fit and were dropped
    /// (counted and logged here; the caller flags a rescan).
    pub fn offer(&mut self, step: &Step, messages: Vec<Vec<u8>>) -> usize {
        if !self.queues.contains_key(step.queue.as_str()) {
            if let Err(e) = self.configure(step) {
                tracing::error!(queue = %step.queue, error = %e, "cannot set up queue");
            }
        }
        let free = self.free(&step.queue);
        let Some(q) = self.queues.get_mut(step.queue.as_str()) else {
            let n = messages.len();
            self.stats.dropped.add(n as u64);
            self.drops.record(n as u64);
            return n;
        };
        let total = messages.len();
        let dropped = total.saturating_sub(free);
        q.pending.extend(messages.into_iter().take(free));
        if dropped > 0 {
            self.stats.dropped.add(dropped as u64);
            self.drops.record(dropped as u64);
        }
        self.stats.buffered.set(self.buffered() as i64);
        dropped
    }

    /// Start a push on every queue that has messages and nothing in flight.
    pub fn start_pushes(&mut self, now: Instant) {
        for (name, q) in &mut self.queues {
            if q.in_flight > 0 || q.pending.is_empty() {
                continue;
            }
            if let Some(at) = q.retry_at {
                if now < at {
                    continue;
                }
            }
            let n = q.pending.len().min(PUSH_CHUNK);
            let messages: Vec<Vec<u8>> = q.pending.drain(..n).collect();
            q.in_flight = n;
            q.in_flight_since = Some(now);
            // The backoff is over; a new failure sets it again.
            q.retry_at = None;
            let sink = q.sink.clone();
            let queue = name.clone();
            self.pushes.spawn(async move {
                let result = sink.push(&messages).await;
                Done {
                    queue,
                    messages,
                    result,
                }
            });
        }
    }

    /// Whether any push is in flight.
    pub fn pushing(&self) -> bool {
        !self.pushes.is_empty()
    }

    /// When the earliest failure backoff ends (the caller wakes up then).
    pub fn next_retry(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter(|q| q.in_flight == 0 && !q.pending.is_empty())
            .filter_map(|q| q.retry_at)
            .min()
    }

    /// Wait for the next push to finish. Pending forever when none is in flight.
    pub async fn next_done(&mut self) -> Done {
        loop {
            match self.pushes.join_next().await {
                Some(Ok(done)) => return done,
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled pushes only happen at shutdown, through `abort`.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Account for a finished push.
    pub fn complete(&mut self, done: Done, now: Instant) {
        let Some(q) = self.queues.get_mut(&done.queue) else {
            return;
        };
        q.in_flight = 0;
        q.in_flight_since = None;
        match done.result {
            Ok(()) => {
                self.stats.pushed.add(done.messages.len() as u64);
                if q.failures > 0 {
                    tracing::info!(queue = %done.queue, "pushes succeed again");
                }
                q.failures = 0;
                q.retry_at = None;
            }
            Err(e) => {
                q.failures += 1;
                let delay = Duration::from_secs(1 << q.failures.min(5)).min(Duration::from_secs(30));
                if q.failures == 1 || q.failures % 10 == 0 {
                    tracing::error!(
                        queue = %done.queue,
                        error = %e,
                        messages = done.messages.len(),
                        failures = q.failures,
                        retry_in_s = delay.as_secs(),
                        "push refused by Redis; messages kept and retried"
                    );
                }
                q.retry_at = Some(now + delay);
                for m in done.messages.into_iter().rev() {
                    q.pending.push_front(m);
                }
            }
        }
        self.drops.recovered_if_quiet();
        self.stats.buffered.set(self.buffered() as i64);
    }

    /// Stop every push (shutdown deadline). Returns how many messages were not pushed.
    pub fn abort(&mut self) -> usize {
        self.pushes.abort_all();
        let left = self.buffered();
        for q in self.queues.values_mut() {
            q.pending.clear();
            q.in_flight = 0;
        }
        self.drops.flush();
        self.stats.buffered.set(0);
        left
    }

    /// Log drops not yet reported (a final summary).
    pub fn flush_logs(&mut self) {
        self.drops.flush();
    }

    /// Log drops not yet reported once the last report is old enough.
    pub fn tick_logs(&mut self) {
        self.drops.recovered_if_quiet();
    }
}

/// Logging of a per-event anomaly (a drop, a skipped name) that never hides one yet never floods:
/// the first of an episode is logged at once, later ones are summed into one WARN (`count`) at
/// most every [`DropLog::EVERY`].
#[derive(Debug)]
pub struct DropLog {
    what: &'static str,
    unreported: u64,
    last: Option<Instant>,
}

impl DropLog {
    /// Longest time drops go unreported while they continue.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A log whose lines say `what`.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            unreported: 0,
            last: None,
        }
    }

    /// Count `n` more, logging when due.
    pub fn record(&mut self, n: u64) {
        self.unreported += n;
        if self.last.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            self.flush();
        }
    }

    /// Report what was not reported yet, if the last report is old enough.
    pub fn recovered_if_quiet(&mut self) {
        if self.unreported > 0 && self.last.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            self.flush();
        }
    }

    /// Report what was not reported yet.
    pub fn flush(&mut self) {
        if self.unreported > 0 {
            tracing::warn!(count = self.unreported, "{}", self.what);
            self.unreported = 0;
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;
    use ironwork_core::metrics::Metrics;
    use std::path::PathBuf;

    #[test]
    fn messages_are_metwork_json_in_key_order() {
        let m = encode("/in/step.a.b", "f.gz", FileEvent::Created);
        let text = String::from_utf8(m).expect("utf8");
        assert!(
            text.starts_with(
                r#"{"directory": "/in/step.a.b", "filename": "f.gz", "event": "created", "event_timestamp": "#
            ),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert!(v["event_timestamp"].is_f64());
    }

    fn step(queue: &str) -> Step {
        Step {
            section: "s".into(),
            directory: PathBuf::from("/d"),
            queue: queue.into(),
            filter: Filter::default(),
            forced_poll: None,
            poll_queue_limit: Some(3),
            timeout: None,
            recursive: false,
        }
    }

    #[tokio::test]
    async fn buffer_is_bounded_per_queue_and_drops_are_counted() {
        let metrics = Metrics::new();
        let stats = Stats::register(&metrics);
        let target = RedisTarget::Unix(PathBuf::from("/nonexistent/redis.sock"));
        let mut p = Publisher::new(Some(target), 4, stats.clone());
        let (a, b) = (step("qa"), step("qb"));
        assert_eq!(p.offer(&a, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]), 0);
        assert_eq!(p.offer(&a, vec![b"4".to_vec(), b"5".to_vec(), b"6".to_vec()]), 2);
        assert_eq!(p.free("qa"), 0);
        assert_eq!(p.offer(&b, vec![b"x".to_vec()]), 0, "another queue has its own bound");
        assert_eq!(stats.dropped.get(), 2);
        assert_eq!(stats.buffered.get(), 5);
        assert_eq!(p.limit_of("qa").map(|(l, _)| l), Some(3));
        // In-flight messages still count against the bound.
        p.start_pushes(Instant::now());
        assert!(p.pushing());
        assert_eq!(p.free("qa"), 0);
        assert_eq!(p.held("qa"), 4);
        assert_eq!(p.abort(), 5);
    }
}
