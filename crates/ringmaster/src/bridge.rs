//! ringmaster on Redis: commands consumed from `ringmaster.control` (taken with a reliable pop
//! and acknowledged before they are carried out: an operator's command runs at most once, so a
//! `quit` or an `incr` is never replayed by the next ringmaster; a malformed one goes to
//! `ringmaster.control.dead`), replies pushed to the list named by the command's `reply_to`
//! property (expiring after 5 minutes), and lifecycle events published on `ringmaster.events`.
//!
//! Redis is usually one of ringmaster's own watchers, so it may be down: both tasks retry with
//! backoff while supervision goes on. Events are pub/sub and so best effort: while Redis is
//! unreachable the bounded event channel fills and further events are counted and dropped.

use std::time::Duration;

use ironwork_core::messages::{names, ControlCommand, RingmasterEvent};
use ironwork_core::{Queue, Redis, ReliableConsumer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Input;

/// Bound of the event channel between the supervision loop and the publisher.
pub const EVENT_BUFFER: usize = 1024;
/// Dead-letter cap of `ringmaster.control.dead`.
const DEAD_CAP: u64 = 1000;

/// Consume `ringmaster.control` until `token` is cancelled.
pub async fn consume_commands(redis: Redis, inputs: mpsc::Sender<Input>, token: CancellationToken) {
    let consumer_id = format!("{}.ringmaster", ironwork_core::lease::node_name());
    let consumer = match ReliableConsumer::new(Queue::new(&redis, names::RINGMASTER_CONTROL), consumer_id) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot consume ringmaster.control");
            return;
        }
    };
    let run = async {
        consumer.recover().await?;
        loop {
            let batch = consumer.pop_batch(16, Duration::from_secs(1)).await?;
            for (delivery, cmd) in consumer.decode::<ControlCommand>(batch, DEAD_CAP).await? {
                let reply_to = cmd
                    .properties
                    .get("reply_to")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                tracing::info!(command = %cmd.command, id = %cmd.id, "command from redis");
                consumer.ack(&[delivery]).await?;
                let reply = crate::control::dispatch(cmd, &inputs).await;
                if let Some(key) = reply_to {
                    let body = serde_json::to_vec(&reply).unwrap_or_default();
                    let mut pipe = redis::pipe();
                    pipe.lpush(&key, body).ignore().expire(&key, 300).ignore();
                    redis.pipeline::<()>("reply", &pipe).await?;
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        _ = token.cancelled() => {}
        r = run => if let Err(e) = r { tracing::error!(error = %e, "ringmaster.control consumer stopped"); },
    }
}

/// Publish lifecycle events on `ringmaster.events` until the channel closes or `token` is cancelled.
pub async fn publish_events(redis: Redis, mut events: mpsc::Receiver<RingmasterEvent>, token: CancellationToken) {
    let mut batch = Vec::with_capacity(64);
    loop {
        batch.clear();
        tokio::select! {
            _ = token.cancelled() => return,
            n = events.recv_many(&mut batch, 64) => if n == 0 { return },
        }
        let mut pipe = redis::pipe();
        for ev in &batch {
            pipe.publish(names::RINGMASTER_EVENTS, serde_json::to_vec(ev).unwrap_or_default())
                .ignore();
        }
        let sent = tokio::select! {
            _ = token.cancelled() => return,
            r = redis.pipeline::<()>("publish", &pipe) => r,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot publish events");
        }
    }
}

/// Events to nowhere: drains the channel when no Redis is configured.
pub async fn discard_events(mut events: mpsc::Receiver<RingmasterEvent>) {
    while events.recv().await.is_some() {}
}
