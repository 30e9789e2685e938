//! jsonlog2es: follow JSON-lines log files and index every line into Elasticsearch exactly once
//! in effect: at-least-once delivery made idempotent by `create` with an id derived from the
//! file's identity and the line's offset. `mflog2mfadmin` is the same engine with the defaults
//! for the daemons' own logs ([`mflog`]).
//!
//! Pipeline: the reader thread ([`tail`]) finds files ([`discover`]), cuts and encodes lines
//! ([`encode`], [`index`]) into batches ([`batch`]); shippers ([`ship`]) send them to `_bulk`
//! and settle every document; the committer ([`commit`]) moves the checkpoints ([`checkpoint`])
//! in batch order once Elasticsearch has acknowledged. Refused documents go to the dead-letter
//! file ([`dead_letter`]).

pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod commit;
pub mod config;
pub mod dead_letter;
pub mod discover;
pub mod encode;
pub mod index;
pub mod mflog;
pub mod ship;
pub mod stats;
pub mod tail;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use ironwork_core::http::Health;
use ironwork_core::metrics::Metrics;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::dead_letter::DeadLetters;
use crate::stats::Stats;
use crate::tail::{Reader, ReaderParts};

/// Batches waiting for a shipper, beyond those being sent. The reader holds a batch (and stops
/// reading) when this is full; `queue_bytes` usually stops it first.
const BATCH_CHANNEL: usize = 64;

/// How `run` is driven.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Cancelled: stop reading, send what was read within `shutdown_grace`, save, return.
    pub token: CancellationToken,
    /// Cancelled: skip the rest of the grace period.
    pub force: CancellationToken,
}

/// Run until `options.token` is cancelled.
pub async fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let state = config.state.clone();
    std::fs::create_dir_all(&state.directory)
        .with_context(|| format!("cannot create the state directory {}", state.directory.display()))?;
    let checkpoints = Checkpoints::load(&state.checkpoint_file()).context("cannot read the checkpoints")?;
    let resume: HashMap<_, _> = checkpoints.entries().map(|e| (e.key, e.position())).collect();
    let first_run = !checkpoints.existed();
    let metrics = Metrics::new();
    let stats = Stats::register(&metrics, &state.name);
    let dead = Arc::new(DeadLetters::new(state.dead_letter.clone()));
    tracing::info!(
        url = config.elasticsearch.url.display(),
        inputs = config.inputs.len(),
        checkpoints = checkpoints.len(),
        first_run,
        "starting"
    );

    let (tx, rx) = mpsc::channel(BATCH_CHANNEL);
    let (done_tx, done_rx) = mpsc::channel(BATCH_CHANNEL * 2);
    let queued = Arc::new(AtomicU64::new(0));
    let committed = Arc::new(AtomicU64::new(0));
    let mut committer = tokio::spawn(commit::run(done_rx, checkpoints, state.clone(), committed.clone()));
    let rx = Arc::new(Mutex::new(rx));
    let mut shippers = JoinSet::new();
    for _ in 0..config.elasticsearch.workers {
        let shipper = ship::Shipper::new(&config.elasticsearch, stats.clone(), dead.clone());
        shippers.spawn(shipper.work(rx.clone(), done_tx.clone(), queued.clone()));
    }
    drop(done_tx);

    let http_token = CancellationToken::new();
    let http = match config.listen {
        Some(addr) => {
            let listener = ironwork_core::http::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /health and /metrics");
            let health = Arc::new(|| Health {
                ok: true,
                details: serde_json::Map::new(),
            });
            Some(tokio::spawn(ironwork_core::http::serve(
                listener,
                metrics.clone(),
                health,
                http_token.clone(),
            )))
        }
        None => None,
    };

    let reader = Reader::new(ReaderParts {
        config: config.clone(),
        resume,
        first_run,
        tx,
        queued,
        committed,
        stats,
        hostname: ironwork_core::lease::hostname(),
    });
    let reader_token = options.token.clone();
    let mut reader = tokio::task::spawn_blocking(move || reader.run(&reader_token));
    // Every task runs until shutdown; one that ends before takes the daemon down.
    // Biased: after a SIGTERM the reader ends too, and that is no failure.
    let failure = tokio::select! {
        biased;
        _ = options.token.cancelled() => None,
        r = &mut reader => Some(format!("the reader thread ended: {r:?}")),
        r = &mut committer => Some(format!("the committer ended: {r:?}")),
        Some(r) = shippers.join_next() => Some(format!("a shipper ended: {r:?}")),
    };
    if let Some(why) = failure {
        options.token.cancel();
        shippers.abort_all();
        anyhow::bail!("{why}");
    }
    if let Err(e) = reader.await {
        anyhow::bail!("the reader thread died: {e}");
    }

    // The reader is done and its channel closed: shippers finish what is queued.
    let drained = tokio::select! {
        _ = async { while shippers.join_next().await.is_some() {} } => true,
        _ = tokio::time::sleep(state.shutdown_grace) => false,
        _ = options.force.cancelled() => false,
    };
    if !drained {
        tracing::warn!(grace = %humantime::format_duration(state.shutdown_grace), "batches still unsent at the end of the grace period; they will be read again at the next start");
        shippers.abort_all();
        while shippers.join_next().await.is_some() {}
    }
    let checkpoints = committer.await.context("the committer died")?;
    http_token.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    tracing::info!(checkpoints = checkpoints.len(), "stopped");
    Ok(())
}
