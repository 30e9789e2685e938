//! collector: scheduled collections through Redis, plugin scripts, built-in probes, and the
//! plugin agent's HTTP API.
//!
//! Every collector process runs a consumer; the one holding the leader lease also runs the
//! manager. They meet only through Redis: `collector.job.queue` (manager → consumers) and
//! `collector.data.queue` (consumers → reflector).
//!
//! - [`config`]: the file (`[collector]` and `[collection:<plugin>.<name>]`), and
//!   [`config::read_collection`], the one reader of a collection section.
//! - [`collection`]: a compiled collection and what one run knows.
//! - [`method`]: the methods by name (SCRIPT, HTTP, TCP, PROCESS, SYSTEM, SNMP).
//! - [`runner`]: process-group execution with caps, deadline, SIGTERM → SIGKILL, reaping.
//! - [`points`]: the agents' `{"name","timestamp","tags","value"}` format.
//! - [`schedule`] and [`manager`]: phase-keeping due times; the leader's enqueue loop.
//! - [`consumer`]: bulk pops, concurrent runs, bulk result pushes; [`guard`]: overlap guards.
//! - [`api`]: the agent HTTP API; [`shared`] and [`stats`]: what they share.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod collection;
pub mod config;
pub mod consumer;
pub mod guard;
pub mod manager;
pub mod method;
pub mod points;
pub mod runner;
pub mod schedule;
pub mod shared;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ironwork_core::lease::{node_name, Lease, LeaseKeeper};
use ironwork_core::messages::names;
use ironwork_core::Redis;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::shared::{Definitions, Shared};

/// A started collector.
#[derive(Debug)]
pub struct Running {
    /// Where the agent API listens, when it does.
    pub api_addr: Option<SocketAddr>,
    /// The shared state (for tests and the reload loop).
    pub shared: Arc<Shared>,
    keeper: LeaseKeeper,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Wait for every task after `token` was cancelled; the lease is released.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.keeper.join().await;
    }

    /// Whether this process runs the manager now.
    pub fn is_leader(&self) -> bool {
        self.keeper.is_leader()
    }
}

/// Start the consumer, the lease keeper, the manager and the API; they stop when `token` is
/// cancelled. Each bump of `reload` reloads the definitions from the config file.
pub async fn start(config: Config, token: CancellationToken, reload: watch::Receiver<u64>) -> anyhow::Result<Running> {
    let settings = config.settings.clone();
    let redis = Redis::open(&settings.redis).with_context(|| format!("redis = {}", settings.redis))?;
    let api_token = api::load_or_create_token(&settings.token_file)
        .with_context(|| format!("token_file {}", settings.token_file.display()))?;
    let listener = match settings.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen = {addr}"))?,
        ),
        None => None,
    };
    let api_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let (defs, _) = watch::channel(Arc::new(Definitions::new(config.collections)));
    let shared = Arc::new(Shared {
        redis: redis.clone(),
        settings: settings.clone(),
        config_path: config.path,
        defs,
        stats: stats::Stats::new(),
        api_token,
        started: Instant::now(),
        id: format!("{}.{}", node_name(), std::process::id()),
    });
    let keeper = LeaseKeeper::spawn(
        Lease::new(&redis, names::COLLECTOR_LEASE, settings.leader_ttl),
        token.child_token(),
    );
    let mut tasks = vec![
        tokio::spawn(manager::run(shared.clone(), keeper.watch(), token.clone())),
        tokio::spawn(consumer::run(shared.clone(), token.clone())),
    ];
    if let Some(listener) = listener {
        tracing::info!(addr = ?api_addr, "agent API listening");
        tasks.push(tokio::spawn(api::serve(listener, shared.clone(), token.clone())));
    }
    let s = shared.clone();
    tasks.push(ironwork_core::shutdown::on_reload(reload, token.clone(), move || {
        let _ = s.reload();
    }));
    tracing::info!(
        collections = shared.definitions().collections.len(),
        concurrency = settings.concurrency,
        "collector started"
    );
    Ok(Running {
        api_addr,
        shared,
        keeper,
        tasks,
    })
}
