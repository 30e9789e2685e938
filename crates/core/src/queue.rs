//! Queues over Redis lists: batched pushes, a bounded producer, FIFO batch pops, reliable pops
//! with acknowledgement and recovery, and dead-lettering.
//!
//! Producers `LPUSH`, consumers pop from the right, so a list is FIFO (Metwork's convention).
//! A reliable consumer moves each message into its own `{<queue>}.processing.<consumer>` list
//! (`LMOVE`/`BLMOVE`) and removes it only when the caller acknowledges it; a consumer restarted
//! under the same id puts its predecessor's in-flight messages back at the head of the queue.
//! Every operation is one round trip whatever the batch size (a variadic command or a script).
//!
//! The keys that go with a queue carry its name as their hash tag ([`names::derived`]), so on a
//! Redis Cluster every multi-key operation on a queue stays in the queue's slot.

use std::time::Duration;

use redis::{AsyncCommands, RedisError, Script};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::connection::{Conn, Redis};
use crate::messages::{epoch_seconds, names, DeadLetter};

/// Errors from queue operations that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused the command (wrong type, script error, …).
    #[error("redis {action} on {queue:?} failed: {source}")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// The queue concerned.
        queue: String,
        /// The client's error.
        #[source]
        source: RedisError,
    },
    /// A dedicated connection could not be opened.
    #[error(transparent)]
    Connection(#[from] crate::connection::ConnectionError),
}

/// Result of queue operations.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Most items one command carries; larger batches are split (still one pipeline).
const MAX_ARGS_PER_COMMAND: usize = 1000;

/// A named Redis list used as a FIFO queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Queue {
    redis: Redis,
    name: String,
    dead: String,
    blocking: std::sync::Arc<OnceCell<Conn>>,
}

/// Longest time one blocking pop waits before re-checking (also bounds shutdown latency).
const MAX_BLOCK: Duration = Duration::from_secs(1);

impl Queue {
    /// A handle on the list `name`.
    pub fn new(redis: &Redis, name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            redis: redis.clone(),
            dead: names::dead(&name),
            name,
            blocking: Default::default(),
        }
    }

    /// The list's key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dead-letter list's key, `{<queue>}.dead`.
    pub fn dead_name(&self) -> &str {
        &self.dead
    }

    /// The Redis handle this queue uses.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    fn err(&self, action: &'static str) -> impl FnOnce(RedisError) -> QueueError + '_ {
        move |source| QueueError::Redis {
            action,
            queue: self.name.clone(),
            source,
        }
    }

    /// Push one message (`LPUSH`).
    pub async fn push(&self, message: &[u8]) -> Result<u64> {
        self.push_batch(&[message]).await
    }

    /// Push messages in order, in one round trip; returns the queue length afterwards.
    pub async fn push_batch<M: AsRef<[u8]>>(&self, messages: &[M]) -> Result<u64> {
        if messages.is_empty() {
            return self.len().await;
        }
        let mut pipe = redis::pipe();
        for chunk in messages.chunks(MAX_ARGS_PER_COMMAND) {
            let mut cmd = redis::cmd("LPUSH");
            cmd.arg(&self.name);
            for m in chunk {
                cmd.arg(m.as_ref());
            }
            pipe.add_command(cmd);
        }
        let lens: Vec<u64> = self.redis.pipeline("lpush", &pipe).await.map_err(self.err("lpush"))?;
        Ok(lens.last().copied().unwrap_or(0))
    }

    /// Number of messages waiting (`LLEN`).
    pub async fn len(&self) -> Result<u64> {
        self.llen(&self.name).await
    }

    /// `LLEN` of any key, with this queue named in errors.
    async fn llen(&self, key: &str) -> Result<u64> {
        self.redis
            .retry("llen", |mut c| async move { c.llen(key).await })
            .await
            .map_err(self.err("llen"))
    }

    /// Whether the queue is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Number of dead letters waiting in `{<queue>}.dead`.
    pub async fn dead_len(&self) -> Result<u64> {
        self.llen(&self.dead).await
    }

    /// Pop up to `max` messages, oldest first, waiting up to `timeout` for the first one.
    ///
    /// At-most-once: a process that dies between this call and its effect loses the messages.
    /// Use a [`ReliableConsumer`] where that matters.
    pub async fn pop_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        let mut out = self.rpop(max).await?;
        if !out.is_empty() || timeout.is_zero() || max == 0 {
            return Ok(out);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = self.blocking_conn().await?;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            let block = left.min(MAX_BLOCK).as_secs_f64();
            let name = self.name.clone();
            let first: Option<(String, Vec<u8>)> = self
                .redis
                .retry_on(conn.clone(), "brpop", |mut c| {
                    let name = name.clone();
                    async move { c.brpop(name, block).await }
                })
                .await
                .map_err(self.err("brpop"))?;
            if let Some((_, msg)) = first {
                out.push(msg);
                out.extend(self.rpop(max - 1).await?);
                return Ok(out);
            }
        }
    }

    async fn rpop(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        let Some(count) = std::num::NonZeroUsize::new(max) else {
            return Ok(Vec::new());
        };
        let name = self.name.clone();
        let got: Option<Vec<Vec<u8>>> = self
            .redis
            .retry("rpop", |mut c| {
                let name = name.clone();
                async move { c.rpop(name, Some(count)).await }
            })
            .await
            .map_err(self.err("rpop"))?;
        Ok(got.unwrap_or_default())
    }

    async fn blocking_conn(&self) -> Result<Conn> {
        let conn = self
            .blocking
            .get_or_try_init(|| async { self.redis.blocking_conn(MAX_BLOCK) })
            .await?;
        Ok(conn.clone())
    }

    /// Put `payload` on `{<queue>}.dead` with the reason, trimming the list to `cap` entries.
    ///
    /// Returns how many old dead letters the trim dropped (logged at WARN by the caller's policy).
    pub async fn dead_letter(&self, consumer: &str, payload: &[u8], reason: &str, cap: u64) -> Result<u64> {
        let letter = dead_letter_json(&self.name, consumer, payload, reason);
        let mut pipe = redis::pipe();
        pipe.lpush(&self.dead, letter);
        let (len,): (u64,) = self
            .redis
            .pipeline("dead_letter", &pipe)
            .await
            .map_err(self.err("dead_letter"))?;
        self.trim_dead(len, cap).await
    }

    async fn trim_dead(&self, len: u64, cap: u64) -> Result<u64> {
        if len <= cap {
            return Ok(0);
        }
        let dead = self.dead.clone();
        let keep = cap.saturating_sub(1) as isize;
        self.redis
            .retry("ltrim", |mut c| {
                let dead = dead.clone();
                async move { c.ltrim::<_, ()>(dead, 0, keep).await }
            })
            .await
            .map_err(self.err("ltrim"))?;
        let dropped = len - cap;
        tracing::warn!(queue = %self.dead, dropped, cap, "dead-letter list full, oldest entries dropped");
        Ok(dropped)
    }
}

fn dead_letter_json(queue: &str, consumer: &str, payload: &[u8], reason: &str) -> Vec<u8> {
    let letter = DeadLetter {
        queue: queue.to_string(),
        consumer: consumer.to_string(),
        reason: reason.to_string(),
        payload: String::from_utf8_lossy(payload).into_owned(),
        dead_at: epoch_seconds(),
    };
    serde_json::to_vec(&letter).unwrap_or_default()
}

/// Pushes as many of `ARGV[2..]` as fit under the bound `ARGV[1]`; returns how many it pushed.
const BOUNDED_PUSH: &str = r"
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = math.min(room, #ARGV - 1)
if n <= 0 then return 0 end
redis.call('LPUSH', KEYS[1], unpack(ARGV, 2, n + 1))
return n
";

/// A producer that never lets its queue grow past `max_len`: at the bound it waits (polling with
/// backoff) until a consumer has made room. Backpressure, not loss.
#[derive(Clone, Debug)]
pub struct BoundedProducer {
    queue: Queue,
    max_len: u64,
    script: Script,
}

impl BoundedProducer {
    /// A producer for `queue` bounded at `max_len` messages (at least 1).
    pub fn new(queue: Queue, max_len: u64) -> Self {
        Self {
            queue,
            max_len: max_len.max(1),
            script: Script::new(BOUNDED_PUSH),
        }
    }

    /// The queue this producer feeds.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The configured bound.
    pub fn max_len(&self) -> u64 {
        self.max_len
    }

    /// Push every message in order, waiting while the queue is at its bound.
    ///
    /// Returns how many times it had to wait (a backpressure count for metrics).
    /// Cancel-safe in the sense that a dropped call has pushed a prefix of `messages`.
    pub async fn push_batch<M: AsRef<[u8]>>(&self, messages: &[M]) -> Result<u64> {
        let mut rest = messages;
        let mut waits = 0u64;
        let mut backoff = crate::backoff::Backoff {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(100),
            factor: 2.0,
        }
        .attempts();
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(MAX_ARGS_PER_COMMAND)];
            let pushed = self.push_some(chunk).await?;
            rest = &rest[pushed..];
            if pushed == 0 {
                waits += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            } else {
                backoff.reset();
            }
        }
        Ok(waits)
    }

    /// Push one message, waiting while the queue is at its bound.
    pub async fn push(&self, message: &[u8]) -> Result<u64> {
        self.push_batch(&[message]).await
    }

    async fn push_some<M: AsRef<[u8]>>(&self, chunk: &[M]) -> Result<usize> {
        let mut inv = self.script.key(self.queue.name());
        inv.arg(self.max_len);
        for m in chunk {
            inv.arg(m.as_ref());
        }
        let pushed: usize = self
            .queue
            .redis
            .retry("bounded_lpush", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(self.queue.err("bounded_lpush"))?;
        Ok(pushed)
    }
}

/// A message held by a [`ReliableConsumer`] until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The raw payload, exactly as it sits in the processing list.
    pub payload: Vec<u8>,
}

/// Moves up to `ARGV[1]` messages from the queue's tail to the processing list's head, oldest
/// first: the same layout `LMOVE RIGHT LEFT` one at a time would give. The push goes in slices:
/// Lua's `unpack` fails past about 8,000 values, and a script that fails after its `RPOP` would
/// lose what it popped.
const MOVE_BATCH: &str = r"
local out = redis.call('RPOP', KEYS[1], ARGV[1])
if not out then return {} end
for i = 1, #out, 1000 do
  redis.call('LPUSH', KEYS[2], unpack(out, i, math.min(i + 999, #out)))
end
return out
";

/// Moves every in-flight message back to the queue's tail, oldest ending up first in line.
const RECOVER: &str = r"
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do n = n + 1 end
return n
";

/// Deletes the processing list when it holds exactly `ARGV[1]` entries (the consumer
/// acknowledges everything it holds: the usual case), without the payloads being sent or
/// compared; returns -1 otherwise, and the caller falls back to [`ACK`].
const ACK_ALL: &str = r"
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[1])
end
return -1
";

/// Removes acknowledged payloads (one occurrence each) from the processing list. When they are
/// exactly its oldest entries in delivery order (the usual case), one `LTRIM` drops them;
/// otherwise each is removed searching from the tail, where the oldest deliveries sit.
const ACK: &str = r"
local k = #ARGV
local tail = redis.call('LRANGE', KEYS[1], -k, -1)
local oldest_first = #tail == k
if oldest_first then
  for i = 1, k do
    if tail[k + 1 - i] ~= ARGV[i] then oldest_first = false break end
  end
end
if oldest_first then
  redis.call('LTRIM', KEYS[1], 0, -k - 1)
  return k
end
local n = 0
for i = 1, k do n = n + redis.call('LREM', KEYS[1], -1, ARGV[i]) end
return n
";

/// Returns deliveries to the queue's tail (next in line), oldest popped first again, and removes
/// them from the processing list, atomically. Only what was still in the processing list goes
/// back, so a retried call cannot duplicate a message.
const HAND_BACK: &str = r"
local back = {}
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[2], -1, ARGV[i]) > 0 then back[#back + 1] = ARGV[i] end
end
for i = #back, 1, -1 do redis.call('RPUSH', KEYS[1], back[i]) end
return #back
";

/// [`RECOVER`] for another consumer's list, only while that consumer's liveness key is absent;
/// the consumer then leaves the registry `KEYS[4]`.
const RECOVER_ORPHAN: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do n = n + 1 end
redis.call('SREM', KEYS[4], ARGV[1])
return n
";

/// A consumer whose popped messages survive its death: each pop moves the message into
/// `{<queue>}.processing.<consumer>`, [`ReliableConsumer::ack`] removes it once its effect is
/// durable, and [`ReliableConsumer::recover`] (called at start) re-queues what a previous
/// incarnation with the same id left in flight.
///
/// The id must be stable across restarts of the same worker slot (e.g. `<host>.<wid>`).
#[derive(Debug)]
pub struct ReliableConsumer {
    queue: Queue,
    consumer: String,
    processing: String,
    alive: String,
    blocking: Conn,
    move_batch: Script,
    recover: Script,
    ack: Script,
    ack_all: Script,
}

impl ReliableConsumer {
    /// A consumer of `queue` named `consumer`.
    pub fn new(queue: Queue, consumer: impl Into<String>) -> Result<Self> {
        let consumer = consumer.into();
        let blocking = queue.redis.blocking_conn(MAX_BLOCK)?;
        Ok(Self {
            processing: names::processing(queue.name(), &consumer),
            alive: names::consumer_alive(queue.name(), &consumer),
            queue,
            consumer,
            blocking,
            move_batch: Script::new(MOVE_BATCH),
            recover: Script::new(RECOVER),
            ack: Script::new(ACK),
            ack_all: Script::new(ACK_ALL),
        })
    }

    /// The queue consumed.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// This consumer's id.
    pub fn id(&self) -> &str {
        &self.consumer
    }

    /// The in-flight list's key.
    pub fn processing_name(&self) -> &str {
        &self.processing
    }

    /// Put everything left in this consumer's processing list back at the head of the queue.
    /// Call once at start, before the first pop. Returns how many messages were recovered.
    pub async fn recover(&self) -> Result<u64> {
        let mut inv = self.recover.key(self.queue.name());
        inv.key(&self.processing);
        let n: u64 = self
            .queue
            .redis
            .retry("recover", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(self.queue.err("recover"))?;
        if n > 0 {
            tracing::info!(queue = %self.queue.name(), consumer = %self.consumer, recovered = n, "re-queued in-flight messages of a previous run");
        }
        Ok(n)
    }

    /// Mark this consumer alive for `ttl` (`SET {<queue>}.consumer.<id> PX`) and register it in
    /// `{<queue>}.consumers`. Consumers that call this every `ttl / 3` keep
    /// [`ReliableConsumer::recover_orphans`] of their peers away from their in-flight messages.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<()> {
        let ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.pset_ex(&self.alive, 1, ms)
            .ignore()
            .sadd(names::consumers(self.queue.name()), &self.consumer)
            .ignore();
        self.queue
            .redis
            .pipeline::<()>("heartbeat", &pipe)
            .await
            .map_err(self.queue.err("heartbeat"))
    }

    /// [`ReliableConsumer::heartbeat`] every `ttl / 3` until `stop` is cancelled (failures are
    /// logged and retried at the next beat). Run it on its own instance of the consumer, so
    /// beats continue while the main one is busy.
    pub async fn keep_alive(&self, ttl: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                r = self.heartbeat(ttl) => if let Err(e) = r {
                    tracing::warn!(queue = %self.queue.name(), consumer = %self.consumer, error = %e, "heartbeat failed");
                },
            }
        }
    }

    /// Re-queue the in-flight messages of every other registered consumer of this queue whose
    /// liveness key (see [`ReliableConsumer::heartbeat`]) has expired: a worker slot that was
    /// removed, or a host that died, leaves nothing stranded. Returns how many messages were
    /// recovered.
    pub async fn recover_orphans(&self) -> Result<u64> {
        let registry = names::consumers(self.queue.name());
        let ids: Vec<String> = self
            .queue
            .redis
            .retry("consumers", |mut c| {
                let registry = registry.clone();
                async move { c.smembers(registry).await }
            })
            .await
            .map_err(self.queue.err("consumers"))?;
        let script = Script::new(RECOVER_ORPHAN);
        let mut total = 0u64;
        for id in ids.iter().filter(|id| **id != self.consumer) {
            let mut inv = script.key(self.queue.name());
            inv.key(names::processing(self.queue.name(), id))
                .key(names::consumer_alive(self.queue.name(), id))
                .key(&registry)
                .arg(id);
            let n: i64 = self
                .queue
                .redis
                .retry("recover_orphan", |mut c| {
                    let inv = &inv;
                    async move { inv.invoke_async(&mut c).await }
                })
                .await
                .map_err(self.queue.err("recover_orphan"))?;
            if n > 0 {
                tracing::warn!(queue = %self.queue.name(), consumer = %id, recovered = n, "re-queued the in-flight messages of a consumer that stopped");
                total += n as u64;
            }
        }
        Ok(total)
    }

    /// Give deliveries back unprocessed: they leave the processing list and go back to the
    /// front of the queue, as if never popped. Used at shutdown for work not yet started.
    pub async fn hand_back(&self, deliveries: &[Delivery]) -> Result<u64> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let script = Script::new(HAND_BACK);
        let mut inv = script.key(self.queue.name());
        inv.key(&self.processing);
        for d in deliveries {
            inv.arg(&d.payload);
        }
        self.queue
            .redis
            .retry("hand_back", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(self.queue.err("hand_back"))
    }

    /// Number of messages this consumer holds unacknowledged.
    pub async fn in_flight(&self) -> Result<u64> {
        self.queue.llen(&self.processing).await
    }

    /// Take up to `max` messages, oldest first, waiting up to `timeout` for the first one.
    pub async fn pop_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let mut out = self.move_some(max).await?;
        if !out.is_empty() || timeout.is_zero() || max == 0 {
            return Ok(out);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            let block = left.min(MAX_BLOCK).as_secs_f64();
            let (src, dst) = (self.queue.name().to_string(), self.processing.clone());
            let first: Option<Vec<u8>> = self
                .queue
                .redis
                .retry_on(self.blocking.clone(), "blmove", |mut c| {
                    let (src, dst) = (src.clone(), dst.clone());
                    async move {
                        c.blmove(src, dst, redis::Direction::Right, redis::Direction::Left, block)
                            .await
                    }
                })
                .await
                .map_err(self.queue.err("blmove"))?;
            if let Some(payload) = first {
                out.push(Delivery { payload });
                out.extend(self.move_some(max - 1).await?);
                return Ok(out);
            }
        }
    }

    async fn move_some(&self, max: usize) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.move_batch.key(self.queue.name());
        inv.key(&self.processing).arg(max);
        let got: Vec<Vec<u8>> = self
            .queue
            .redis
            .retry("move_batch", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(self.queue.err("move_batch"))?;
        Ok(got.into_iter().map(|payload| Delivery { payload }).collect())
    }

    /// Acknowledge deliveries whose effect is durable: they leave the processing list. When
    /// they are all the consumer holds, one short call deletes the list; otherwise each payload
    /// is removed by value.
    pub async fn ack(&self, deliveries: &[Delivery]) -> Result<u64> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let mut quick = self.ack_all.key(&self.processing);
        quick.arg(deliveries.len());
        let n: i64 = self
            .queue
            .redis
            .retry("ack", |mut c| {
                let quick = &quick;
                async move { quick.invoke_async(&mut c).await }
            })
            .await
            .map_err(self.queue.err("ack"))?;
        if n >= 0 {
            return Ok(n as u64);
        }
        let mut inv = self.ack.key(&self.processing);
        for d in deliveries {
            inv.arg(&d.payload);
        }
        self.queue
            .redis
            .retry("ack", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await
            .map_err(self.queue.err("ack"))
    }

    /// Move a delivery to `{<queue>}.dead` with `reason`, atomically acknowledging it.
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str, cap: u64) -> Result<u64> {
        let letter = dead_letter_json(self.queue.name(), &self.consumer, &delivery.payload, reason);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lpush(self.queue.dead_name(), letter)
            .lrem(&self.processing, 1, &delivery.payload)
            .ignore();
        let (len,): (u64,) = self
            .queue
            .redis
            .pipeline("dead_letter", &pipe)
            .await
            .map_err(self.queue.err("dead_letter"))?;
        tracing::debug!(queue = %self.queue.name(), reason, "dead-lettered a message");
        self.queue.trim_dead(len, cap).await
    }

    /// Decode each delivery as `T`; those that do not parse are dead-lettered with the parse
    /// error as the reason and left out of the result.
    pub async fn decode<T: DeserializeOwned>(
        &self,
        deliveries: Vec<Delivery>,
        dead_cap: u64,
    ) -> Result<Vec<(Delivery, T)>> {
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match serde_json::from_slice::<T>(&d.payload) {
                Ok(v) => out.push((d, v)),
                Err(e) => {
                    let reason = format!("invalid {}: {e}", short_type_name::<T>());
                    self.dead_letter(&d, &reason, dead_cap).await?;
                }
            }
        }
        Ok(out)
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}
