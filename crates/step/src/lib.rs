//! ironwork-step: the step workers of the file pipeline (Metwork's acquisition library and
//! switch plugin), as a binary (`step`) and as a library for Rust-native steps.
//!
//! - [`worker`]: the loop — reliable pop, claim by rename, process, route or apply the failure
//!   policy, acknowledge; heartbeats, dead peers' messages re-queued, retries promoted.
//! - [`file`]: the [`Step`] trait and the [`StepFile`] a step is handed, with the routing
//!   helpers (move, copy, hard-link to another plugin step).
//! - [`claim`]: the rename that claims a file and the lock that keeps it exclusive.
//! - [`routing`]: applying routes atomically, so a crash never loses or duplicates a file.
//! - [`policy`]: retries with backoff, `failure_policy` keep/delete/move, the `step_limit` guard.
//! - [`tags`]: Metwork's per-file tags in Redis, following the file from step to step.
//! - [`command`]: the step that runs a plugin command on each file.
//! - [`switch`] and [`switch_rules`]: the built-in switch and its rules.
//! - [`gc`]: the garbage collector for trash and tmp leftovers.
//! - [`layout`]: where files live under the data directory.
//! - [`cli`]: the `step` command line.

pub mod claim;
pub mod cli;
pub mod command;
pub mod file;
pub mod gc;
pub mod layout;
pub mod policy;
pub mod routing;
pub mod switch;
pub mod switch_rules;
pub mod tags;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ironwork_core::http::{Health, HealthCheck};
use ironwork_core::metrics::Metrics;
use ironwork_core::{CancellationToken, Redis};

pub use file::{Basename, Failure, Step, StepFile};
pub use layout::StepName;
pub use worker::{StepMetrics, WorkerConfig};

use cli::{Cli, Command};

/// Run `step` as a worker of `cfg` until `token` is cancelled, serving `/health` and `/metrics`
/// on `listen` if given. This is what a Rust-native step's `main` calls.
pub async fn serve<S: Step>(
    cfg: WorkerConfig,
    listen: Option<SocketAddr>,
    redis: Redis,
    step: S,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let step_metrics = StepMetrics::new(&metrics, &cfg.plugin, &cfg.step);
    let http = match listen {
        Some(addr) => {
            let listener = ironwork_core::http::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let r = redis.clone();
            let health: HealthCheck = Arc::new(move || {
                let up = r.is_healthy();
                let mut details = serde_json::Map::new();
                details.insert("redis".into(), if up { "up" } else { "down" }.into());
                Health { ok: up, details }
            });
            Some(tokio::spawn(ironwork_core::http::serve(
                listener,
                metrics.clone(),
                health,
                token.clone(),
            )))
        }
        None => None,
    };
    let result = worker::run(cfg, redis, step, step_metrics, token.clone()).await;
    if let Some(http) = http {
        token.cancel();
        let _ = http.await;
    }
    result
}

/// Carry out a parsed `step` command line.
pub async fn execute(cli: Cli, token: CancellationToken) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            if args.worker.plugin.is_none() {
                anyhow::bail!("step run needs --plugin");
            }
            let cfg = args.worker.to_config(None).map_err(config_error)?;
            let redis = Redis::open(&args.worker.redis_url())?;
            let step = command::CommandStep::new(args.command, args.timeout, args.kill_grace);
            serve(cfg, args.worker.listen, redis, step, token).await
        }
        Command::Switch(args) => {
            let cfg = args.worker.to_config(Some("switch")).map_err(config_error)?;
            let step = switch::SwitchStep::new(args.rules, args.no_match_policy)
                .map_err(|e| anyhow::anyhow!("invalid switch rules:\n{e}"))?
                .keep_original_basename(args.no_match_keep_original_basename);
            let redis = Redis::open(&args.worker.redis_url())?;
            serve(cfg, args.worker.listen, redis, step, token).await
        }
        Command::Gc(args) => {
            let root = args.data_dir.unwrap_or_else(layout::DataDir::default_root);
            let policy = gc::GcPolicy {
                trash_max_age: args.trash_max_age,
                tmp_max_age: args.tmp_max_age,
            };
            loop {
                let report = gc::collect(&root, policy, std::time::SystemTime::now());
                tracing::info!(trash = report.trash, tmp = report.tmp, "garbage collection pass");
                if args.once {
                    return Ok(());
                }
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(args.every) => {}
                }
            }
        }
    }
}

fn config_error(errors: Vec<String>) -> anyhow::Error {
    anyhow::anyhow!("invalid options:\n  {}", errors.join("\n  "))
}
