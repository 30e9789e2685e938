//! directory_observer: watches step directories with inotify and pushes one Metwork message per
//! file to the step's Redis queue (`LPUSH step.<plugin>.<step>`), replacing Metwork's Python
//! directory_observer with the same config file and the same bytes on the wire.
//!
//! The crate owns the path from the kernel to the queue, and what recovers it when a link of
//! that path fails:
//!
//! - [`config`]: `directory_observer.ini` (`[common]` inheritance, strict keys) → [`Config`].
//! - [`filter`]: `only` / `ignore` (`;`-separated, `re.match` semantics, one `RegexSet` each).
//! - `watch`: the inotify reader thread: watches, kernel events → encoded messages in
//!   batches, overflow / deleted directory / new subdirectory handling.
//! - `scan`: directory listings (startup, `forced_poll`, recovery) and rescan requests.
//! - `publish`: per-queue bounded buffers, one push in flight per queue, drop accounting.
//! - `observer`: the async loop tying them together: scans, reload, shutdown drain.
//! - [`stats`]: the counters and gauges served on `/metrics`.
//!
//! [`run`] takes a validated [`Config`] and a cancellation token; the binary adds signals.

pub mod config;
pub mod filter;
mod observer;
mod publish;
mod scan;
pub mod stats;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironwork_core::http::{Health, HealthCheck};
use ironwork_core::metrics::Metrics;
use ironwork_core::CancellationToken;
use tokio::sync::watch as tokio_watch;

pub use crate::config::{Config, RedisTarget, Step};
pub use crate::filter::Filter;
pub use crate::stats::Stats;

/// Everything [`run_with`] accepts besides the configuration.
#[derive(Debug)]
pub struct RunOptions {
    /// Cancelled to stop: stop watching, flush the buffer within the grace period, return.
    pub token: CancellationToken,
    /// Cancelled to skip the grace period (a second SIGTERM).
    pub force: CancellationToken,
    /// Bumped to re-read the configuration file (SIGHUP).
    pub reload: Option<tokio_watch::Receiver<u64>>,
    /// Where the series are registered (and served from, with `listen`).
    pub metrics: Arc<Metrics>,
    /// Serve `/health` and `/metrics` here, overriding `http_listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides `shutdown_grace`.
    pub grace: Option<Duration>,
}

impl RunOptions {
    /// Options with only a stop token.
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            force: CancellationToken::new(),
            reload: None,
            metrics: Metrics::new(),
            listen: None,
            grace: None,
        }
    }
}

/// Watch and publish until `token` is cancelled, then flush and return.
pub async fn run(config: Config, token: CancellationToken) -> anyhow::Result<()> {
    run_with(config, RunOptions::new(token)).await
}

/// [`run`] with reload, force, metrics and HTTP options.
pub async fn run_with(config: Config, options: RunOptions) -> anyhow::Result<()> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let stats = Stats::register(&options.metrics);
    let aux = options.token.child_token();
    let tasks = tokio_util::task::TaskTracker::new();
    if let Some(addr) = options.listen.or(config.http_listen) {
        let listener = ironwork_core::http::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "serving /health and /metrics");
        tasks.spawn(ironwork_core::http::serve(
            listener,
            options.metrics.clone(),
            health_check(stats.clone()),
            aux.clone(),
        ));
    }
    let observer = observer::Observer::start(config, stats).await?;
    tracing::info!("directory_observer running");
    let result = observer
        .run(observer::Signals {
            token: options.token,
            force: options.force,
            reload: options.reload,
            grace: options.grace,
        })
        .await;
    aux.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    result
}

/// `/health`: 200 while Redis answers, with the buffer and watch counts.
fn health_check(stats: Stats) -> HealthCheck {
    Arc::new(move || {
        let up = stats.redis_up.get() == 1;
        let mut details = serde_json::Map::new();
        details.insert("redis".into(), if up { "up" } else { "down" }.into());
        details.insert("buffered".into(), stats.buffered.get().into());
        details.insert("watches".into(), stats.watches.get().into());
        details.insert("missing_directories".into(), stats.missing.get().into());
        Health { ok: up, details }
    })
}
