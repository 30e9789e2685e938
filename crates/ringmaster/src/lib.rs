//! ringmaster: ironwork's circus-compatible process supervisor, and `ringctl`'s client side.
//!
//! - [`config`]: circus ini → validated [`config::Config`].
//! - [`supervisor`]: the supervision loop (watchers, processes, reconcile, commands).
//! - [`process`]: spawning (setsid, rlimits, sockets, pipes) and tree signalling.
//! - [`reaper`]: SIGCHLD-driven reaping, including adopted orphans (child subreaper).
//! - [`control`]: the control socket and its client; [`bridge`]: the same commands over Redis,
//!   and lifecycle events published there; [`console`]: the web console.
//! - [`state`]: the pid record that lets a restarted ringmaster clean up after a SIGKILLed one.
//! - [`procfs`]: /proc reads; [`stream`]: children's output into rotated files; [`notify`]: sd_notify.

pub mod bridge;
pub mod config;
pub mod console;
pub mod control;
pub mod drain;
pub mod notify;
pub mod process;
pub mod procfs;
pub mod reaper;
pub mod state;
pub mod stream;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;

use ironwork_core::shutdown::Shutdown;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::supervisor::{Input, Supervisor};

/// Bound of the supervision loop's input channel (exits, commands, reloads). Producers wait
/// when it is full; nothing is dropped.
const INPUT_BUFFER: usize = 4096;

/// Supervise `config` until SIGTERM/SIGINT (through `shutdown`) or a `quit` command, then stop
/// every watcher in reverse priority order.
pub async fn run(config_path: PathBuf, config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let (state, leftovers) = state::StateFile::open(&config.ringmaster.state_file)?;
    if !leftovers.is_empty() {
        let grace = config.ringmaster.orphan_grace;
        let n = tokio::task::spawn_blocking(move || state::kill_leftovers(&leftovers, grace)).await?;
        if n > 0 {
            tracing::warn!(processes = n, "stopped processes left running by a previous ringmaster");
        }
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphaned grandchildren go to init");
    }
    let reaper = reaper::Reaper::start()?;
    let sockets = process::BoundSockets::bind_all(&config.sockets)?;
    let control_path = config.circus.control_socket.clone();
    let listener = control::bind(&control_path)?;

    let (inputs_tx, inputs_rx) = mpsc::channel(INPUT_BUFFER);
    let (events_tx, mut events_rx) = mpsc::channel(bridge::EVENT_BUFFER);
    let metrics = ironwork_core::metrics::Metrics::new();
    let aux = shutdown.token.child_token();
    let tasks = tokio_util::task::TaskTracker::new();

    tasks.spawn(control::serve(listener, inputs_tx.clone(), aux.clone()));
    let redis = config
        .ringmaster
        .redis_url
        .as_deref()
        .map(ironwork_core::Redis::open)
        .transpose()?;
    if let Some(addr) = config.ringmaster.console {
        // The console is a view: without it the supervisor still does its job.
        let token_file = &config.ringmaster.console_token_file;
        let shared = config
            .ringmaster
            .shared_redis_url
            .as_deref()
            .map(ironwork_core::Redis::open)
            .transpose()?;
        let console = console::Console::new(inputs_tx.clone(), redis.clone(), shared, token_file, addr)
            .map(|c| c.with_trash_dir(config.ringmaster.trash_dir.clone()));
        match (ironwork_core::http::bind(addr).await, console) {
            (Ok(listener), Ok(console)) => {
                tracing::info!(%addr, token_file = %token_file.display(), "serving the console");
                // The console keeps the recent events; they go on to Redis as before.
                let (forward_tx, forward_rx) = mpsc::channel(bridge::EVENT_BUFFER);
                tasks.spawn(console.clone().keep_events(events_rx, forward_tx));
                events_rx = forward_rx;
                tasks.spawn(console.serve(listener, aux.clone()));
            }
            (Err(e), _) => tracing::error!(%addr, error = %e, "cannot serve the console"),
            (_, Err(e)) => tracing::error!(token_file = %token_file.display(), error = %e, "cannot serve the console"),
        }
    }
    match &redis {
        Some(redis) => {
            tasks.spawn(bridge::consume_commands(redis.clone(), inputs_tx.clone(), aux.clone()));
            tasks.spawn(bridge::publish_events(redis.clone(), events_rx, aux.clone()));
        }
        None => {
            tasks.spawn(bridge::discard_events(events_rx));
        }
    }
    if let Some(addr) = config.ringmaster.http {
        let listener = ironwork_core::http::bind(addr).await?;
        tracing::info!(%addr, "serving /health and /metrics");
        let health: ironwork_core::http::HealthCheck = Arc::new(|| ironwork_core::http::Health {
            ok: true,
            details: Default::default(),
        });
        tasks.spawn(ironwork_core::http::serve(
            listener,
            metrics.clone(),
            health,
            aux.clone(),
        ));
    }
    let mut reload = shutdown.reload.clone();
    let reload_inputs = inputs_tx.clone();
    let reload_token = aux.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = reload_token.cancelled() => return,
                r = reload.changed() => if r.is_err() { return },
            }
            if reload_inputs.send(Input::Reload).await.is_err() {
                return;
            }
        }
    });
    let (stopping_token, stopping_aux) = (shutdown.token.clone(), aux.clone());
    tasks.spawn(async move {
        tokio::select! {
            _ = stopping_token.cancelled() => notify::sd_notify("STOPPING=1"),
            _ = stopping_aux.cancelled() => {}
        }
    });

    let mut supervisor = Supervisor::new(
        config_path,
        config,
        sockets,
        reaper,
        inputs_tx,
        events_tx,
        state,
        metrics,
    )?;
    supervisor.start_all().await;
    tracing::info!(socket = %control_path.display(), "ringmaster running");
    notify::sd_notify("READY=1");
    supervisor
        .run(inputs_rx, shutdown.token.clone(), shutdown.force.clone())
        .await;

    aux.cancel();
    tasks.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait()).await;
    let _ = std::fs::remove_file(&control_path);
    Ok(())
}
