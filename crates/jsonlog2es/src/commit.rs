//! The committer: applies settled batches to the checkpoints strictly in the reader's order (a
//! batch finished early waits for the ones before it), and writes the checkpoint file at most
//! once per `checkpoint_interval` and once more on the way out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::checkpoint::{now_secs, Checkpoints, Position};
use crate::config::State;
use crate::ship::Done;

/// Run until every sender is gone; returns the final checkpoints (already saved).
pub async fn run(
    mut rx: mpsc::Receiver<Done>,
    mut checkpoints: Checkpoints,
    state: State,
    committed: Arc<AtomicU64>,
) -> Checkpoints {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut dirty = false;
    let mut tick = tokio::time::interval(state.checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = rx.recv() => {
                let Some(done) = done else { break };
                waiting.insert(done.seq, done);
                while let Some(d) = waiting.remove(&next) {
                    apply(&mut checkpoints, d);
                    next += 1;
                    dirty = true;
                }
                committed.store(next, Ordering::Relaxed);
            }
            _ = tick.tick() => {
                if dirty {
                    save(&mut checkpoints, &state);
                    dirty = false;
                }
            }
        }
    }
    if !waiting.is_empty() {
        tracing::info!(batches = waiting.len(), "batches settled after an unsettled one are not checkpointed; they will be re-sent (409 on the ones already indexed)");
    }
    save(&mut checkpoints, &state);
    checkpoints
}

fn apply(checkpoints: &mut Checkpoints, done: Done) {
    let now = now_secs();
    for s in &done.sources {
        let at = Position {
            epoch: s.epoch,
            offset: s.offset,
            end_hash: s.end_hash,
        };
        checkpoints.advance(s.key, at, &s.path, now);
    }
    for key in &done.gone {
        checkpoints.mark_gone(key, now);
    }
}

fn save(checkpoints: &mut Checkpoints, state: &State) {
    let expired = checkpoints.expire(now_secs(), state.forget_after);
    if expired > 0 {
        tracing::info!(expired, "forgot the checkpoints of files gone for forget_after");
    }
    if let Err(e) = checkpoints.save() {
        tracing::error!(path = %state.checkpoint_file().display(), error = %e, "cannot write checkpoints; lines may be re-sent after a restart");
    }
}
