//! reflector: what happens to collected data (reflections: conditions and actions) and the
//! metric sender that delivers points to Zabbix and InfluxDB without losing any.
//!
//! Every reflector process runs reflection consumers (`collector.data.queue` → actions),
//! senders (`metrics.send.queue` → metric servers) and the backup writers; the one holding the
//! leader lease also resends the unsent backlog and runs the expiry jobs. They meet only
//! through Redis.
//!
//! - [`config`]: the file (`[reflector]` and `[reflection:<plugin>.<name>]`), and
//!   [`config::read_reflection`], the one reader of a reflection section.
//! - [`tree`]: conditions compiled into the reflection tree (and the linear scan it replaces).
//! - [`reflection`]: reflections, their actions, and what a batch of data causes.
//! - [`consumer`]: the reflection consumers and the consume loop they share with the senders
//!   and the backup writers; [`sender`]: the metric sender;
//!   [`backup`]: the sent/unsent tables, resend and expiry; [`destination`]: one metric server.
//! - [`influx`] and [`line_protocol`]: InfluxDB v1/v2 writes, every element escaped as the
//!   protocol wants; [`zabbix`]: the Zabbix sender protocol (`ZBXD` framing, `sender data`,
//!   both response styles); [`point`]: points owned or read in place.
//! - [`shared`] and [`stats`]: what the tasks share.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backup;
pub mod config;
pub mod consumer;
pub mod destination;
pub mod influx;
pub mod line_protocol;
pub mod point;
pub mod reflection;
pub mod sender;
pub mod shared;
pub mod stats;
pub mod tree;
pub mod zabbix;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use ironwork_core::http::{Health, HealthCheck};
use ironwork_core::lease::{node_name, Lease, LeaseKeeper};
use ironwork_core::messages::names;
use ironwork_core::Redis;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::destination::Destination;
use crate::reflection::Reflections;
use crate::shared::Shared;

/// A started reflector.
#[derive(Debug)]
pub struct Running {
    /// Set when a task ended on its own (a panic, a consumer that could not start): the
    /// process then stops, and exits non-zero so its supervisor restarts it.
    pub failed: Arc<AtomicBool>,
    /// Where `/health` and `/metrics` listen, when they do.
    pub http_addr: Option<SocketAddr>,
    /// The shared state.
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
}

/// Start the consumers, the backup writers, the lease keeper, the leader's jobs and the HTTP
/// endpoint; they stop when `token` is cancelled. Each bump of `reload` reloads the reflections.
pub async fn start(config: Config, token: CancellationToken, reload: watch::Receiver<u64>) -> anyhow::Result<Running> {
    let settings = config.settings.clone();
    let redis = Redis::open(&settings.redis).with_context(|| format!("redis = {}", settings.redis))?;
    let listener = match settings.listen {
        Some(addr) => Some(
            ironwork_core::http::bind(addr)
                .await
                .with_context(|| format!("listen = {addr}"))?,
        ),
        None => None,
    };
    let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let (reflections, _) = watch::channel(Arc::new(Reflections::new(config.reflections)));
    let shared = Arc::new(Shared {
        redis: redis.clone(),
        destinations: Destination::all(&settings).into_iter().map(Arc::new).collect(),
        settings: settings.clone(),
        config_path: config.path,
        reflections,
        stats: stats::Stats::new(),
        // Stable across restarts of the same worker slot, so a restarted process takes back
        // what its predecessor left in flight at once.
        id: format!(
            "{}.{}",
            node_name(),
            std::env::var("RINGMASTER_WID")
                .map_or_else(|_| format!("pid{}", std::process::id()), |w| format!("wid{w}"))
        ),
    });
    let keeper = LeaseKeeper::spawn(
        Lease::new(&redis, names::REFLECTOR_LEASE, settings.leader_ttl),
        token.child_token(),
    );
    let failed = Arc::new(AtomicBool::new(false));
    let watched = |name: &'static str, task: tokio::task::JoinHandle<()>| {
        let (token, failed) = (token.clone(), failed.clone());
        tokio::spawn(async move {
            let outcome = task.await;
            if !token.is_cancelled() {
                let why = outcome
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "returned".into());
                tracing::error!(task = name, reason = %why, "a reflector task ended on its own; stopping");
                failed.store(true, Ordering::SeqCst);
                token.cancel();
            }
        })
    };
    let mut tasks = vec![
        watched(
            "sent backup writer",
            tokio::spawn(backup::write_backups(
                shared.clone(),
                names::METRICS_SENT_QUEUE,
                names::METRICS_SENT,
                token.clone(),
            )),
        ),
        watched(
            "unsent backup writer",
            tokio::spawn(backup::write_backups(
                shared.clone(),
                names::METRICS_UNSENT_QUEUE,
                names::METRICS_UNSENT,
                token.clone(),
            )),
        ),
        watched(
            "leader jobs",
            tokio::spawn(backup::lead(shared.clone(), keeper.watch(), token.clone())),
        ),
    ];
    if shared.destinations.is_empty() {
        tracing::warn!("no metrics_server_endpoints: metrics.send.queue is not consumed");
    }
    for slot in 0..consumer::CONSUMERS {
        tasks.push(watched(
            "reflection consumer",
            tokio::spawn(consumer::run(shared.clone(), slot, token.clone())),
        ));
    }
    for slot in 0..sender::SENDERS {
        if !shared.destinations.is_empty() {
            tasks.push(watched(
                "sender",
                tokio::spawn(sender::run(shared.clone(), slot, token.clone())),
            ));
        }
    }
    if let Some(listener) = listener {
        let r = redis.clone();
        let health: HealthCheck = Arc::new(move || Health {
            ok: r.is_healthy(),
            details: serde_json::Map::from_iter([(
                "redis".to_string(),
                serde_json::Value::from(if r.is_healthy() { "up" } else { "down" }),
            )]),
        });
        tracing::info!(addr = ?http_addr, "health and metrics listening");
        tasks.push(tokio::spawn(ironwork_core::http::serve(
            listener,
            shared.stats.metrics.clone(),
            health,
            token.clone(),
        )));
    }
    let s = shared.clone();
    tasks.push(ironwork_core::shutdown::on_reload(reload, token.clone(), move || {
        let _ = s.reload();
    }));
    tracing::info!(
        reflections = shared.reflections().len(),
        endpoints = shared.destinations.len(),
        "reflector started"
    );
    Ok(Running {
        failed,
        http_addr,
        shared,
        keeper,
        tasks,
    })
}
