//! The supervision loop: one task owns every watcher and process. It reacts to exits (from the
//! reaper), commands (control socket, Redis), reload and shutdown, and to its own deadlines
//! (stop timeouts, backoffs, recycling, memory checks), then reconciles each watcher towards
//! what it should be. Nothing in it blocks: a stop sends a signal and records a deadline, so a
//! long `graceful_timeout` never holds up another watcher.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ironwork_core::messages::{epoch_seconds, ControlCommand, ControlReply, RingmasterEvent};
use ironwork_core::metrics::{Counter, Gauge, Metrics};
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RestartPolicy, WatcherConfig};
use crate::process::{self, BoundSockets};
use crate::procfs::{self, CpuSampler};
use crate::reaper::{Exit, Reaper};
use crate::state::StateFile;
use crate::stream::{self, Sink, TailBuffer};

/// Longest line kept whole from a child's output.
const MAX_LINE: usize = 64 * 1024;
/// Longest a `waiting` command waits beyond the slowest graceful timeout involved.
const WAIT_MARGIN: Duration = Duration::from_secs(30);
/// Cap on the graceful part of a `waiting` command's wait.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Most processes one watcher may be scaled to by `incr`.
const MAX_NUMPROCESSES: u32 = 1024;
/// Threads that start the processes of one watcher concurrently.
const SPAWN_THREADS: usize = 4;
/// How long a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// What reaches the supervision loop.
#[derive(Debug)]
pub enum Input {
    /// A child exited.
    Exited {
        /// Its pid.
        pid: i32,
        /// How.
        exit: Exit,
    },
    /// A control command and where to send the reply.
    Command(ControlCommand, oneshot::Sender<ControlReply>),
    /// Re-read the configuration (SIGHUP).
    Reload,
}

/// Why a process is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// Its watcher is stopping, restarting or shrinking.
    Requested,
    /// `max_age` reached: its replacement started first.
    Recycle,
    /// Over `memory_limit`.
    Memory,
}

#[derive(Debug)]
struct Stopping {
    deadline: Instant,
    killed: bool,
    reason: StopReason,
    /// Not signalled yet: waiting for its connections on `drain_socket` to close.
    drain: Option<Drain>,
}

#[derive(Debug)]
struct Drain {
    socket: std::path::PathBuf,
    until: Instant,
    /// On a recycle, the replacement that must take the path over first.
    successor: Option<i32>,
    /// Polls in a row that found nothing left to wait for; two are needed, so a connection
    /// taken from the backlog between two looks is not missed.
    quiet: u8,
}

/// How often a draining process's connections are counted.
const DRAIN_POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Proc {
    pid: i32,
    wid: u32,
    started: Instant,
    started_wall: f64,
    recycle_at: Option<Instant>,
    stopping: Option<Stopping>,
}

/// Crash-loop state. Exits are counted per worker slot: several workers killed at once (an
/// operator's `signal`, an OOM sweep) are not a crash loop; one slot dying over and over is.
#[derive(Debug, Default)]
struct Flap {
    exits: Vec<(u32, Instant)>,
    pauses: i64,
}

/// The state of one watcher, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Stopped,
    Stopping,
    /// Paused after a crash loop or spawn failures; retries at `next_spawn_at`.
    Backoff,
    /// Gave up after `max_retry`; an operator must start it.
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Stopped => "stopped",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }
}

struct Watcher {
    cfg: WatcherConfig,
    numprocesses: u32,
    active: bool,
    failed: bool,
    procs: Vec<Proc>,
    done_wids: BTreeSet<u32>,
    next_spawn_at: Option<Instant>,
    spawn_failures: u32,
    flap: Flap,
    restarts: u64,
    /// Remove the watcher once its processes are gone (`rm`, or dropped by reloadconfig).
    removing: bool,
    /// Start again once the processes are gone (replacing the config on reloadconfig).
    replace_with: Option<WatcherConfig>,
    /// Run the `after_stop` hook once the processes are gone.
    after_stop_pending: bool,
    stdout: Sink,
    stderr: Sink,
    tail: TailBuffer,
    memory_restarts: Counter,
    spawns: Counter,
    running: Gauge,
}

/// A command's outcome: the reply body, and the watchers to wait for if the caller asked to wait.
#[derive(Default)]
struct Outcome {
    waits: Vec<(usize, Want)>,
    body: Map<String, Value>,
}

type CommandResult = Result<Outcome, String>;

fn reply_body(body: Map<String, Value>) -> Outcome {
    Outcome {
        waits: Vec::new(),
        body,
    }
}

fn wait_for(waits: Vec<(usize, Want)>) -> Outcome {
    Outcome {
        waits,
        body: Map::new(),
    }
}

/// A reply held until every named watcher has settled.
struct Waiter {
    deadline: Instant,
    wants: Vec<(String, Want)>,
    tx: oneshot::Sender<ControlReply>,
    reply: ControlReply,
}

/// What a `waiting` command waits for.
#[derive(Debug, Clone, Copy)]
enum Want {
    Running,
    Stopped,
}

impl Watcher {
    fn new(cfg: WatcherConfig, metrics: &Metrics) -> anyhow::Result<Self> {
        let stdout = Sink::open(&cfg.stdout, stream::StreamKind::Stdout)?;
        let stderr = Sink::open(&cfg.stderr, stream::StreamKind::Stderr)?;
        let labels = [("watcher", cfg.name.as_str())];
        Ok(Self {
            numprocesses: if cfg.singleton {
                cfg.numprocesses.min(1)
            } else {
                cfg.numprocesses
            },
            active: false,
            failed: false,
            procs: Vec::new(),
            done_wids: BTreeSet::new(),
            next_spawn_at: None,
            spawn_failures: 0,
            flap: Flap::default(),
            restarts: 0,
            removing: false,
            replace_with: None,
            after_stop_pending: false,
            stdout,
            stderr,
            tail: TailBuffer::default(),
            memory_restarts: metrics.counter(
                "ringmaster_memory_restarts_total",
                "Processes restarted for exceeding memory_limit.",
                &labels,
            ),
            spawns: metrics.counter("ringmaster_spawns_total", "Processes started.", &labels),
            running: metrics.gauge("ringmaster_processes", "Processes running.", &labels),
            cfg,
        })
    }

    fn state(&self, now: Instant) -> State {
        if self.failed {
            State::Failed
        } else if !self.active {
            if self.procs.is_empty() {
                State::Stopped
            } else {
                State::Stopping
            }
        } else if self.next_spawn_at.is_some_and(|t| t > now) && self.live() < self.numprocesses as usize {
            State::Backoff
        } else {
            State::Active
        }
    }

    fn live(&self) -> usize {
        self.procs.iter().filter(|p| p.stopping.is_none()).count()
    }

    fn settled(&self, want: Want) -> bool {
        match want {
            // Started again meanwhile: the stop is over as far as the caller is concerned.
            Want::Stopped => self.procs.is_empty() || self.active,
            Want::Running => {
                self.failed
                    || !self.active
                    || self.next_spawn_at.is_some_and(|t| t > Instant::now())
                    || (1..=self.numprocesses).all(|wid| {
                        self.done_wids.contains(&wid) || self.procs.iter().any(|p| p.wid == wid && p.stopping.is_none())
                    })
            }
        }
    }
}

/// The supervisor: owns watchers, processes and sockets.
pub struct Supervisor {
    config_path: PathBuf,
    config: Config,
    watchers: Vec<Watcher>,
    sockets: BoundSockets,
    reaper: Reaper,
    inputs: mpsc::Sender<Input>,
    events: mpsc::Sender<RingmasterEvent>,
    events_dropped: Counter,
    state: StateFile,
    tracker: TaskTracker,
    metrics: std::sync::Arc<Metrics>,
    cpu: CpuSampler,
    next_memory_check: Instant,
    quitting: bool,
    /// A second SIGTERM/SIGINT: stops get no grace period.
    forced: bool,
    quit_replies: Vec<(String, oneshot::Sender<ControlReply>)>,
    /// Replies of `waiting` commands, sent once every named watcher has settled.
    waiters: Vec<Waiter>,
}

impl Supervisor {
    /// A supervisor for `config`, with sockets bound and the state file locked.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config_path: PathBuf,
        config: Config,
        sockets: BoundSockets,
        reaper: Reaper,
        inputs: mpsc::Sender<Input>,
        events: mpsc::Sender<RingmasterEvent>,
        state: StateFile,
        metrics: std::sync::Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut watchers = Vec::new();
        for w in &config.watchers {
            watchers.push(Watcher::new(w.clone(), &metrics)?);
        }
        let mut s = Self {
            config_path,
            events_dropped: metrics.counter(
                "ringmaster_events_dropped_total",
                "Lifecycle events not published because the Redis publisher lagged.",
                &[],
            ),
            config,
            watchers,
            sockets,
            reaper,
            inputs,
            events,
            state,
            tracker: TaskTracker::new(),
            metrics,
            cpu: CpuSampler::default(),
            next_memory_check: Instant::now(),
            quitting: false,
            forced: false,
            quit_replies: Vec::new(),
            waiters: Vec::new(),
        };
        s.sort();
        Ok(s)
    }

    /// Watchers in start order: priority descending, then file order.
    fn sort(&mut self) {
        let order: Vec<String> = self.config.watchers.iter().map(|w| w.name.clone()).collect();
        let pos = |n: &str| order.iter().position(|o| o == n).unwrap_or(usize::MAX);
        self.watchers.sort_by(|a, b| {
            b.cfg
                .priority
                .cmp(&a.cfg.priority)
                .then(pos(&a.cfg.name).cmp(&pos(&b.cfg.name)))
        });
    }

    /// Start the autostart watchers, in priority order, `[circus] warmup_delay` apart.
    pub async fn start_all(&mut self) {
        let now = Instant::now();
        let warmup = self.config.circus.warmup_delay;
        let mut i = 0u32;
        for idx in 0..self.watchers.len() {
            if self.watchers[idx].cfg.autostart {
                self.start_watcher(idx, now + warmup * i).await;
                i += 1;
            }
        }
        self.reconcile(Instant::now());
    }

    /// Run until `token` is cancelled or a `quit` command, then stop everything in reverse
    /// priority order and return.
    /// A cancelled `force` token (a second SIGTERM) cuts every graceful timeout short.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>, token: CancellationToken, force: CancellationToken) {
        loop {
            let wake = self.next_wakeup(Instant::now());
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.handle(input).await,
                    None => self.begin_quit(),
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = token.cancelled(), if !self.quitting => self.begin_quit(),
                _ = force.cancelled(), if !self.forced => {
                    tracing::warn!("second shutdown signal: no more graceful timeouts");
                    self.forced = true;
                    self.begin_quit();
                    self.cut_grace(Instant::now());
                }
            }
            let now = Instant::now();
            if now >= self.next_memory_check {
                self.check_memory(now);
                self.next_memory_check = now + self.config.ringmaster.memory_check_interval;
            }
            self.reconcile(now);
            self.run_after_stop_hooks().await;
            self.answer_waiters();
            if self.quitting && self.watchers.iter().all(|w| w.procs.is_empty()) {
                break;
            }
        }
        let now = epoch_seconds();
        for (id, tx) in self.quit_replies.drain(..) {
            let _ = tx.send(reply_ok(&id, now));
        }
        self.tracker.close();
        // Output pumps end when the children's pipes close; leftover grandchildren may hold them.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        tracing::info!("all watchers stopped");
    }

    fn cut_grace(&mut self, now: Instant) {
        for w in &mut self.watchers {
            for p in &mut w.procs {
                if let Some(s) = &mut p.stopping {
                    s.deadline = s.deadline.min(now);
                    if let Some(d) = &mut s.drain {
                        d.until = now;
                    }
                }
            }
        }
    }

    async fn run_after_stop_hooks(&mut self) {
        for idx in 0..self.watchers.len() {
            let w = &mut self.watchers[idx];
            if w.after_stop_pending && w.procs.is_empty() {
                w.after_stop_pending = false;
                if let Some(hook) = w.cfg.hooks.after_stop.clone() {
                    self.run_hook(idx, "after_stop", &hook).await;
                }
            }
        }
    }

    fn begin_quit(&mut self) {
        if !self.quitting {
            tracing::info!("stopping every watcher, lowest priority first");
            self.quitting = true;
        }
    }

    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut t = now + self.config.circus.check_delay.max(Duration::from_millis(10));
        t = t.min(self.next_memory_check);
        for waiter in &self.waiters {
            t = t.min(waiter.deadline);
        }
        for w in &self.watchers {
            if let Some(s) = w.next_spawn_at {
                if s > now {
                    t = t.min(s);
                }
            }
            let spawn_blocked_until = w.next_spawn_at.filter(|s| *s > now);
            for p in &w.procs {
                if let (Some(r), None) = (p.recycle_at, &p.stopping) {
                    // A recycle waits for the watcher's backoff like any spawn.
                    t = t.min(spawn_blocked_until.map_or(r, |b| r.max(b)));
                }
                if let Some(s) = &p.stopping {
                    if s.drain.is_some() {
                        t = t.min(now + DRAIN_POLL);
                    } else if !s.killed {
                        t = t.min(s.deadline);
                    }
                }
            }
        }
        t.max(now)
    }

    fn emit(&self, watcher: &str, event: &str, pid: Option<i32>, details: Map<String, Value>) {
        let mut ev = RingmasterEvent::new(watcher, event, pid.map(|p| p as u32), epoch_seconds());
        ev.details = details;
        if self.events.try_send(ev).is_err() {
            self.events_dropped.inc();
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Exited { pid, exit } => self.on_exit(pid, exit, Instant::now()),
            Input::Command(cmd, reply) => self.command(cmd, reply).await,
            Input::Reload => {
                let r = self.reload_config().await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "reloadconfig refused, the running configuration stays");
                }
            }
        }
    }

    // ---- starting and stopping ------------------------------------------------------------

    async fn start_watcher(&mut self, idx: usize, not_before: Instant) {
        let w = &self.watchers[idx];
        if let Some(hook) = w.cfg.hooks.before_start.clone() {
            if !self.run_hook(idx, "before_start", &hook).await {
                return;
            }
        }
        let w = &mut self.watchers[idx];
        w.active = true;
        w.failed = false;
        w.done_wids.clear();
        w.spawn_failures = 0;
        w.flap = Flap::default();
        w.next_spawn_at = Some(not_before);
        let name = w.cfg.name.clone();
        tracing::info!(watcher = %name, "watcher started");
        self.emit(&name, "start", None, Map::new());
        if let Some(hook) = self.watchers[idx].cfg.hooks.after_start.clone() {
            self.run_hook(idx, "after_start", &hook).await;
        }
    }

    async fn stop_watcher(&mut self, idx: usize) {
        if let Some(hook) = self.watchers[idx].cfg.hooks.before_stop.clone() {
            if !self.run_hook(idx, "before_stop", &hook).await {
                return;
            }
        }
        let now = Instant::now();
        let w = &mut self.watchers[idx];
        w.active = false;
        w.failed = false;
        w.after_stop_pending = w.cfg.hooks.after_stop.is_some();
        let name = w.cfg.name.clone();
        let pids: Vec<i32> = w.procs.iter().filter(|p| p.stopping.is_none()).map(|p| p.pid).collect();
        for pid in pids {
            self.stop_proc(idx, pid, StopReason::Requested, now);
        }
        tracing::info!(watcher = %name, "watcher stopping");
        self.emit(&name, "stop", None, Map::new());
    }

    /// Run a hook through `/bin/sh -c`. True means go on; exit 200 means skip quietly.
    async fn run_hook(&mut self, idx: usize, hook: &str, command: &str) -> bool {
        let w = &self.watchers[idx].cfg;
        let name = w.name.clone();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .env_clear()
            .envs(process::hook_env(w))
            .env("RINGMASTER_HOOK", hook);
        cmd.stdin(std::process::Stdio::null());
        // Its own process group, so a timed-out hook is killed with whatever it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(dir) = &w.working_dir {
            cmd.current_dir(dir);
        }
        let spawned = {
            let _lock = crate::reaper::spawn_lock();
            let spawned = cmd.spawn();
            if let Ok(child) = &spawned {
                self.reaper.forget(child.id() as i32);
            }
            spawned
        };
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(watcher = %name, hook, error = %e, "hook cannot start");
                return !hook.starts_with("before");
            }
        };
        let pid = child.id() as i32;
        drop(child);
        let rx = self.reaper.watch(pid);
        let exit = match tokio::time::timeout(HOOK_TIMEOUT, rx).await {
            Ok(Ok(exit)) => exit,
            _ => {
                process::kill_tree(pid, &[pid]);
                tracing::error!(watcher = %name, hook, "hook timed out and was killed");
                self.emit(&name, "hook_failure", None, Map::new());
                return !hook.starts_with("before");
            }
        };
        match exit {
            Exit::Code(0) => {
                self.emit(&name, "hook_success", None, Map::new());
                true
            }
            Exit::Code(200) => {
                tracing::info!(watcher = %name, hook, "hook asked to skip (exit 200)");
                false
            }
            other => {
                let mut d = Map::new();
                d.insert("hook".into(), hook.into());
                d.insert("status".into(), other.as_status().into());
                self.emit(&name, "hook_failure", None, d);
                if hook.starts_with("before") {
                    tracing::error!(watcher = %name, hook, %other, "hook failed, action aborted");
                    false
                } else {
                    tracing::warn!(watcher = %name, hook, %other, "hook failed");
                    true
                }
            }
        }
    }

    fn stop_proc(&mut self, idx: usize, pid: i32, reason: StopReason, now: Instant) {
        let forced = self.forced;
        let w = &mut self.watchers[idx];
        let Some(p) = w.procs.iter_mut().find(|p| p.pid == pid) else {
            return;
        };
        if p.stopping.is_some() {
            return;
        }
        p.recycle_at = None;
        let wid = p.wid;
        let successor = (reason == StopReason::Recycle)
            .then(|| {
                w.procs
                    .iter()
                    .filter(|o| o.wid == wid && o.pid != pid && o.stopping.is_none())
                    .map(|o| o.pid)
                    .next_back()
            })
            .flatten();
        let Some(p) = w.procs.iter_mut().find(|p| p.pid == pid) else {
            return;
        };
        let drain = match (&w.cfg.drain_socket, forced) {
            (Some(pattern), false) => {
                let socket = std::path::PathBuf::from(process::expand_runtime(pattern, wid, &self.sockets));
                // A recycled process's replacement takes the path over; any other stop takes it away.
                if reason != StopReason::Recycle {
                    crate::drain::withdraw(&socket);
                }
                tracing::debug!(watcher = %w.cfg.name, pid, socket = %socket.display(), ?reason, "draining process");
                Some(Drain {
                    socket,
                    until: now + w.cfg.drain_timeout,
                    successor,
                    quiet: 0,
                })
            }
            _ => None,
        };
        let draining = drain.is_some();
        p.stopping = Some(Stopping {
            deadline: if forced { now } else { now + w.cfg.graceful_timeout },
            killed: false,
            reason,
            drain,
        });
        if !draining {
            self.signal_stop(idx, pid, now);
        }
    }

    /// Send a stopping process its stop signal; its graceful timeout starts now.
    fn signal_stop(&mut self, idx: usize, pid: i32, now: Instant) {
        let forced = self.forced;
        let w = &mut self.watchers[idx];
        let Some(p) = w.procs.iter_mut().find(|p| p.pid == pid) else {
            return;
        };
        if let Some(s) = &mut p.stopping {
            s.drain = None;
            s.deadline = if forced { now } else { now + w.cfg.graceful_timeout };
        }
        let n = process::signal_tree(pid, w.cfg.stop_signal, w.cfg.stop_children);
        tracing::debug!(watcher = %w.cfg.name, pid, signal = w.cfg.stop_signal, signalled = n, "stopping process");
        let name = w.cfg.name.clone();
        self.emit(&name, "kill", Some(pid), Map::new());
    }

    /// Signal the draining processes whose connections are closed (or whose drain timed out).
    fn advance_drains(&mut self, now: Instant) {
        let draining = self.watchers.iter().any(|w| {
            w.procs
                .iter()
                .any(|p| p.stopping.as_ref().is_some_and(|s| s.drain.is_some()))
        });
        if !draining {
            return;
        }
        let table = crate::drain::table();
        let mut due = Vec::new();
        for (idx, w) in self.watchers.iter_mut().enumerate() {
            let live: Vec<i32> = w.procs.iter().filter(|p| p.stopping.is_none()).map(|p| p.pid).collect();
            for p in &mut w.procs {
                let Some(s) = &mut p.stopping else { continue };
                let Some(d) = &mut s.drain else { continue };
                let progress = crate::drain::progress(&table, p.pid, &d.socket, d.successor);
                // Nothing to wait for once the path is withdrawn, or once the successor listens
                // (or is gone: it will not take the path over).
                let handed_over = match d.successor {
                    None => true,
                    Some(next) => progress.replaced || !live.contains(&next),
                };
                // A backlog on a withdrawn path is this worker's; on a taken-over path it may be
                // the successor's.
                let pending = if d.successor.is_some() { 0 } else { progress.pending };
                let quiet = handed_over && progress.open == 0 && pending == 0;
                d.quiet = if quiet { d.quiet + 1 } else { 0 };
                if d.quiet >= 2 {
                    tracing::debug!(watcher = %w.cfg.name, pid = p.pid, "drained");
                    due.push((idx, p.pid));
                } else if now >= d.until {
                    tracing::warn!(
                        watcher = %w.cfg.name,
                        pid = p.pid,
                        open_connections = progress.open,
                        replaced = progress.replaced,
                        "drain_timeout over, signalling anyway"
                    );
                    due.push((idx, p.pid));
                }
            }
        }
        for (idx, pid) in due {
            self.signal_stop(idx, pid, now);
        }
    }

    fn spawn_one(&mut self, idx: usize, wid: u32, now: Instant) -> bool {
        let result = process::spawn(&self.watchers[idx].cfg, wid, &self.sockets, &self.reaper);
        self.register(idx, wid, result, now)
    }

    /// Start several slots of one watcher at once. `spawn` blocks until the child has exec'd
    /// (or failed to), mostly waiting on the child: a few threads overlap those waits.
    fn spawn_many(&mut self, idx: usize, wids: &[u32], now: Instant) -> bool {
        if wids.len() == 1 {
            return self.spawn_one(idx, wids[0], now);
        }
        let (cfg, sockets, reaper) = (&self.watchers[idx].cfg, &self.sockets, &self.reaper);
        let results: Vec<(u32, Result<process::Spawned, process::SpawnError>)> = std::thread::scope(|scope| {
            let per_thread = wids.len().div_ceil(SPAWN_THREADS);
            let handles: Vec<_> = wids
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&wid| (wid, process::spawn(cfg, wid, sockets, reaper)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        let mut all_ok = true;
        for (wid, result) in results {
            all_ok &= self.register(idx, wid, result, now);
        }
        all_ok
    }

    /// Book-keeping after a spawn attempt. False when it failed (the watcher is backing off).
    fn register(
        &mut self,
        idx: usize,
        wid: u32,
        result: Result<process::Spawned, process::SpawnError>,
        now: Instant,
    ) -> bool {
        let w = &mut self.watchers[idx];
        match result {
            Ok(spawned) => {
                let pid = spawned.pid;
                w.spawn_failures = 0;
                w.spawns.inc();
                let recycle_at = (!w.cfg.max_age.is_zero()).then(|| {
                    let variance = w.cfg.max_age_variance.as_millis() as u64;
                    let extra = if variance == 0 {
                        0
                    } else {
                        rand::rng().random_range(0..=variance)
                    };
                    now + w.cfg.max_age + Duration::from_millis(extra)
                });
                w.procs.push(Proc {
                    pid,
                    wid,
                    started: now,
                    started_wall: epoch_seconds(),
                    recycle_at,
                    stopping: None,
                });
                self.pump(idx, spawned.stdout, true);
                self.pump(idx, spawned.stderr, false);
                let rx = self.reaper.watch(pid);
                let inputs = self.inputs.clone();
                self.tracker.spawn(async move {
                    if let Ok(exit) = rx.await {
                        let _ = inputs.send(Input::Exited { pid, exit }).await;
                    }
                });
                let name = self.watchers[idx].cfg.name.clone();
                self.state.add(pid, &name);
                tracing::debug!(watcher = %name, pid, wid, "spawned");
                self.emit(&name, "spawn", Some(pid), Map::new());
                true
            }
            Err(e) => {
                w.spawn_failures += 1;
                let backoff = ironwork_core::backoff::Backoff {
                    initial: Duration::from_millis(100),
                    max: self.config.ringmaster.flapping.retry_in.max(Duration::from_secs(1)),
                    factor: 2.0,
                };
                w.next_spawn_at = Some(now + backoff.delay(w.spawn_failures - 1));
                let name = w.cfg.name.clone();
                if w.cfg.max_retry >= 0 && i64::from(w.spawn_failures) > w.cfg.max_retry {
                    w.failed = true;
                    w.active = false;
                    tracing::error!(watcher = %name, error = %e, failures = w.spawn_failures, "cannot start, giving up (max_retry)");
                } else {
                    tracing::warn!(watcher = %name, error = %e, failures = w.spawn_failures, "cannot start, will retry");
                }
                false
            }
        }
    }

    fn pump(&mut self, idx: usize, fd: Option<OwnedFd>, stdout: bool) {
        let Some(fd) = fd else { return };
        let w = &self.watchers[idx];
        let sink = if stdout { w.stdout.clone() } else { w.stderr.clone() };
        let tail = w.tail.clone();
        match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => {
                self.tracker.spawn(stream::pump(rx, sink, tail, MAX_LINE));
            }
            Err(e) => tracing::warn!(watcher = %w.cfg.name, error = %e, "cannot read child output"),
        }
    }

    fn on_exit(&mut self, pid: i32, exit: Exit, now: Instant) {
        self.state.remove(pid);
        let Some(idx) = self.watchers.iter().position(|w| w.procs.iter().any(|p| p.pid == pid)) else {
            return;
        };
        let w = &mut self.watchers[idx];
        let Some(pos) = w.procs.iter().position(|p| p.pid == pid) else {
            return;
        };
        let p = w.procs.remove(pos);
        let name = w.cfg.name.clone();
        // Whatever the process left in its group dies with it: no orphaned duplicates.
        if !procfs::group_members(pid).is_empty() {
            process::kill_tree(pid, &[]);
        }
        let mut details = Map::new();
        details.insert("exit_status".into(), exit.as_status().into());
        details.insert("reason".into(), exit.to_string().into());
        // Whether ringmaster had asked it to stop (a stop, restart or recycle), or it died.
        details.insert("requested".into(), p.stopping.is_some().into());
        self.emit(&name, "reap", Some(pid), details);
        if p.stopping.is_some() {
            tracing::debug!(watcher = %name, pid, %exit, "stopped");
            return;
        }
        let flapped = self.after_crash(idx, &p, exit, now);
        if flapped {
            self.emit(&name, "flapping", None, Map::new());
        }
    }

    /// Restart policy and crash-loop detection after an unexpected exit. True when the watcher
    /// was paused or given up for flapping.
    fn after_crash(&mut self, idx: usize, p: &Proc, exit: Exit, now: Instant) -> bool {
        let w = &mut self.watchers[idx];
        let name = w.cfg.name.clone();
        let pid = p.pid;
        w.restarts += 1;
        let lived = now.duration_since(p.started);
        tracing::info!(watcher = %name, pid, %exit, lived_ms = lived.as_millis() as u64, "process exited");
        let expected = matches!(exit, Exit::Code(c) if w.cfg.exitcodes.contains(&c));
        let restart = w.active
            && match w.cfg.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !expected,
                RestartPolicy::Never => false,
            };
        if !restart {
            w.done_wids.insert(p.wid);
            return false;
        }
        // Crash-loop detection (circus flapping): `attempts` exits within `window` pause the watcher.
        let f = w.cfg.flapping;
        let failed_start = !w.cfg.startsecs.is_zero() && lived < w.cfg.startsecs;
        if lived > f.window && !failed_start {
            // It ran steadily for a while: earlier pauses are forgiven.
            w.flap.pauses = 0;
        }
        w.flap.exits.retain(|(_, t)| now.duration_since(*t) <= f.window);
        w.flap.exits.push((p.wid, now));
        let burst = w.flap.exits.iter().filter(|(wid, _)| *wid == p.wid).count() as u32;
        if failed_start || burst >= f.attempts.max(1) {
            w.flap.exits.clear();
            w.flap.pauses += 1;
            if f.max_retry >= 0 && w.flap.pauses > f.max_retry {
                w.failed = true;
                w.active = false;
                tracing::error!(watcher = %name, pauses = w.flap.pauses, "flapping, giving up until started by hand");
            } else {
                w.next_spawn_at = Some(now + f.retry_in);
                tracing::warn!(watcher = %name, retry_in_ms = f.retry_in.as_millis() as u64, "flapping, pausing");
            }
            return true;
        }
        false
    }

    // ---- reconciliation ---------------------------------------------------------------------

    fn reconcile(&mut self, now: Instant) {
        self.advance_drains(now);
        // Kill what outlived its graceful timeout.
        let mut killed = Vec::new();
        for w in &mut self.watchers {
            for p in &mut w.procs {
                if let Some(s) = &mut p.stopping {
                    if !s.killed && s.drain.is_none() && now >= s.deadline {
                        s.killed = true;
                        tracing::warn!(watcher = %w.cfg.name, pid = p.pid, "graceful timeout over, SIGKILL to the process tree");
                        process::kill_tree(p.pid, &[]);
                        killed.push((w.cfg.name.clone(), p.pid));
                    }
                }
            }
        }
        for (name, pid) in killed {
            self.emit(&name, "timeout_kill", Some(pid), Map::new());
        }
        if self.quitting {
            self.reconcile_quit(now);
            return;
        }
        for idx in 0..self.watchers.len() {
            self.reconcile_watcher(idx, now);
        }
        // Watchers waiting to be removed or replaced once their processes are gone.
        let mut idx = 0;
        while idx < self.watchers.len() {
            let w = &mut self.watchers[idx];
            if w.procs.is_empty() {
                if w.removing {
                    let name = w.cfg.name.clone();
                    self.watchers.remove(idx);
                    self.emit(&name, "remove", None, Map::new());
                    continue;
                }
                if let Some(cfg) = w.replace_with.take() {
                    self.replace_watcher(idx, cfg);
                }
            }
            idx += 1;
        }
        for w in &self.watchers {
            w.running.set(w.live() as i64);
        }
    }

    fn replace_watcher(&mut self, idx: usize, cfg: WatcherConfig) {
        match Watcher::new(cfg, &self.metrics) {
            Ok(mut fresh) => {
                let old = &mut self.watchers[idx];
                fresh.active = old.active || fresh.cfg.autostart;
                fresh.restarts = old.restarts;
                tracing::info!(watcher = %fresh.cfg.name, "watcher restarted with its new configuration");
                self.watchers[idx] = fresh;
            }
            Err(e) => tracing::error!(error = %e, "cannot apply the new watcher configuration"),
        }
    }

    fn reconcile_watcher(&mut self, idx: usize, now: Instant) {
        let w = &self.watchers[idx];
        if !w.active || w.replace_with.is_some() || w.removing {
            let pids: Vec<i32> = w.procs.iter().filter(|p| p.stopping.is_none()).map(|p| p.pid).collect();
            for pid in pids {
                self.stop_proc(idx, pid, StopReason::Requested, now);
            }
            return;
        }
        // Shrink: processes beyond numprocesses.
        let extra: Vec<i32> = w
            .procs
            .iter()
            .filter(|p| p.stopping.is_none() && p.wid > w.numprocesses)
            .map(|p| p.pid)
            .collect();
        for pid in extra {
            self.stop_proc(idx, pid, StopReason::Requested, now);
        }
        if self.watchers[idx].next_spawn_at.is_some_and(|t| t > now) {
            return;
        }
        // Recycle: the replacement starts before the old process is stopped.
        let due: Vec<(i32, u32)> = self.watchers[idx]
            .procs
            .iter()
            .filter(|p| p.stopping.is_none() && p.recycle_at.is_some_and(|r| r <= now))
            .map(|p| (p.pid, p.wid))
            .collect();
        for (pid, wid) in due {
            tracing::info!(watcher = %self.watchers[idx].cfg.name, pid, "recycling (max_age, memory_limit or a hand-over): the replacement starts first");
            if self.spawn_one(idx, wid, now) {
                self.stop_proc(idx, pid, StopReason::Recycle, now);
            } else {
                return;
            }
        }
        // Fill every worker slot that has no running process.
        let w = &self.watchers[idx];
        let missing: Vec<u32> = (1..=w.numprocesses)
            .filter(|wid| !w.done_wids.contains(wid))
            .filter(|wid| {
                // A slot is taken by a running process, or by one being stopped for a restart;
                // only a recycled process overlaps with its replacement.
                !w.procs
                    .iter()
                    .any(|p| p.wid == *wid && p.stopping.as_ref().is_none_or(|s| s.reason != StopReason::Recycle))
            })
            .collect();
        if missing.is_empty() {
            self.watchers[idx].next_spawn_at = None;
            return;
        }
        let warmup = w.cfg.warmup_delay;
        if !warmup.is_zero() {
            // One process per warmup_delay.
            if self.spawn_one(idx, missing[0], now) {
                self.watchers[idx].next_spawn_at = Some(now + warmup);
            }
            return;
        }
        if self.spawn_many(idx, &missing, now) {
            self.watchers[idx].next_spawn_at = None;
        }
    }

    fn reconcile_quit(&mut self, now: Instant) {
        // Lowest priority first; the next watcher waits until the previous one is gone.
        for idx in (0..self.watchers.len()).rev() {
            let w = &mut self.watchers[idx];
            if w.active {
                w.after_stop_pending = w.cfg.hooks.after_stop.is_some();
            }
            w.active = false;
            if w.procs.is_empty() {
                continue;
            }
            let pids: Vec<i32> = w.procs.iter().filter(|p| p.stopping.is_none()).map(|p| p.pid).collect();
            for pid in pids {
                self.stop_proc(idx, pid, StopReason::Requested, now);
            }
            return;
        }
    }

    fn check_memory(&mut self, now: Instant) {
        let mut over = Vec::new();
        for (idx, w) in self.watchers.iter().enumerate() {
            let Some(limit) = w.cfg.memory_limit else { continue };
            for p in w.procs.iter().filter(|p| p.stopping.is_none()) {
                if let Some(s) = procfs::stat(p.pid) {
                    if s.rss_bytes > limit {
                        over.push((idx, p.pid, s.rss_bytes, limit));
                    }
                }
            }
        }
        for (idx, pid, rss, limit) in over {
            let name = self.watchers[idx].cfg.name.clone();
            tracing::warn!(watcher = %name, pid, rss, limit, "memory limit exceeded, restarting the process");
            self.watchers[idx].memory_restarts.inc();
            let mut d = Map::new();
            d.insert("rss".into(), rss.into());
            d.insert("limit".into(), limit.into());
            self.emit(&name, "memory_limit", Some(pid), d);
            if self.watchers[idx].cfg.drain_socket.is_some() {
                // A drained worker is replaced like a recycle: the new one first.
                if let Some(p) = self.watchers[idx].procs.iter_mut().find(|p| p.pid == pid) {
                    p.recycle_at = Some(now);
                }
            } else {
                self.stop_proc(idx, pid, StopReason::Memory, now);
            }
        }
    }

    fn answer_waiters(&mut self) {
        let mut keep = Vec::new();
        for waiter in std::mem::take(&mut self.waiters) {
            let settled = waiter.wants.iter().all(|(name, want)| match self.index(name) {
                Some(i) => self.watchers[i].settled(*want),
                None => true,
            });
            if settled {
                let _ = waiter.tx.send(waiter.reply);
            } else if Instant::now() >= waiter.deadline {
                let mut reply = waiter.reply;
                reply.status = "error".into();
                reply.reason = Some("timed out waiting for the watchers to settle".into());
                let _ = waiter.tx.send(reply);
            } else {
                keep.push(waiter);
            }
        }
        self.waiters = keep;
    }

    // ---- reloadconfig -----------------------------------------------------------------------

    async fn reload_config(&mut self) -> anyhow::Result<Value> {
        let new = Config::load(&self.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        // Everything that can fail happens before anything changes: new watchers' output files
        // are opened, then sockets bound (a failed bind leaves the running ones as they were).
        let mut fresh = Vec::new();
        let mut handovers = Vec::new();
        for nw in &new.watchers {
            match self.watchers.iter().find(|w| w.cfg.name == nw.name) {
                None => fresh.push(Watcher::new(nw.clone(), &self.metrics)?),
                Some(w) if w.active && hands_over(&w.cfg, nw) => {
                    handovers.push(Watcher::new(nw.clone(), &self.metrics)?)
                }
                Some(_) => {}
            }
        }
        let rebound = self.sockets.rebind(&new.sockets)?;
        crate::notify::sd_notify("RELOADING=1");
        let mut changed = Vec::new();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for w in &mut self.watchers {
            match new.watcher(&w.cfg.name) {
                None => {
                    w.removing = true;
                    removed.push(w.cfg.name.clone());
                }
                Some(nw) => {
                    // A later reload overrides what an earlier one left pending.
                    w.removing = false;
                    w.replace_with = None;
                    let uses_rebound = w.cfg.use_sockets && !rebound.is_empty();
                    if same_but_scale(&w.cfg, nw) && !uses_rebound {
                        if w.numprocesses != nw.numprocesses {
                            w.numprocesses = nw.numprocesses;
                            changed.push(w.cfg.name.clone());
                        }
                        w.cfg.numprocesses = nw.numprocesses;
                        w.cfg.autostart = nw.autostart;
                    } else if let Some(pos) = handovers.iter().position(|h| h.cfg.name == nw.name) {
                        // Drained workers hand over one by one, as on a reload: each new process
                        // starts before the old one of its slot is drained and stopped.
                        let mut next = handovers.swap_remove(pos);
                        let now = Instant::now();
                        next.procs = std::mem::take(&mut w.procs);
                        for p in next.procs.iter_mut().filter(|p| p.stopping.is_none()) {
                            p.recycle_at = Some(now);
                        }
                        next.active = true;
                        next.restarts = w.restarts;
                        *w = next;
                        changed.push(w.cfg.name.clone());
                    } else {
                        w.replace_with = Some(nw.clone());
                        changed.push(w.cfg.name.clone());
                    }
                }
            }
        }
        let mut to_start = Vec::new();
        for w in fresh {
            added.push(w.cfg.name.clone());
            if w.cfg.autostart {
                to_start.push(w.cfg.name.clone());
            }
            self.watchers.push(w);
        }
        self.config = new;
        self.sort();
        for name in &to_start {
            if let Some(idx) = self.watchers.iter().position(|w| &w.cfg.name == name) {
                self.start_watcher(idx, Instant::now()).await;
            }
        }
        for name in added.iter().chain(&changed) {
            self.emit(name, "reload", None, Map::new());
        }
        tracing::info!(?added, ?changed, ?removed, sockets = ?rebound, "configuration reloaded");
        crate::notify::sd_notify("READY=1");
        Ok(json!({"added": added, "changed": changed, "removed": removed, "sockets": rebound}))
    }

    // ---- commands ---------------------------------------------------------------------------

    fn index(&self, name: &str) -> Option<usize> {
        self.watchers.iter().position(|w| w.cfg.name == name)
    }

    /// The watchers a command addresses: `name` (exact, or a glob), or all when absent.
    fn targets(&self, props: &Map<String, Value>) -> Result<Vec<usize>, String> {
        match props.get("name").and_then(Value::as_str) {
            None | Some("") => Ok((0..self.watchers.len()).collect()),
            Some(name) => {
                if let Some(i) = self.index(name) {
                    return Ok(vec![i]);
                }
                let pattern = glob::Pattern::new(name).map_err(|_| format!("program {name} not found"))?;
                let hits: Vec<usize> = (0..self.watchers.len())
                    .filter(|&i| pattern.matches(&self.watchers[i].cfg.name))
                    .collect();
                if hits.is_empty() {
                    Err(format!("program {name} not found"))
                } else {
                    Ok(hits)
                }
            }
        }
    }

    async fn command(&mut self, cmd: ControlCommand, tx: oneshot::Sender<ControlReply>) {
        let now = epoch_seconds();
        let id = cmd.id.clone();
        let props = cmd.properties;
        let waiting = props.get("waiting").and_then(Value::as_bool).unwrap_or(false);
        let result: CommandResult = match cmd.command.as_str() {
            "list" => self.list(&props).map(reply_body),
            "status" => self.status(&props).map(reply_body),
            "numwatchers" => Ok(reply_body(obj(json!({"numwatchers": self.watchers.len()})))),
            "numprocesses" => match props.get("name").and_then(Value::as_str) {
                Some(n) => match self.index(n) {
                    Some(i) => Ok(reply_body(obj(json!({"numprocesses": self.watchers[i].numprocesses})))),
                    None => Err(format!("program {n} not found")),
                },
                None => {
                    let total: u32 = self.watchers.iter().map(|w| w.numprocesses).sum();
                    Ok(reply_body(obj(json!({"numprocesses": total}))))
                }
            },
            "start" => match self.targets(&props) {
                Ok(ts) => {
                    for &i in &ts {
                        if !self.watchers[i].active || self.watchers[i].failed {
                            self.start_watcher(i, Instant::now()).await;
                        } else {
                            // Slots that finished (restart = never / on-failure) run again.
                            self.watchers[i].done_wids.clear();
                        }
                    }
                    Ok(wait_for(ts.into_iter().map(|i| (i, Want::Running)).collect()))
                }
                Err(e) => Err(e),
            },
            "stop" => match self.targets(&props) {
                Ok(ts) => {
                    for &i in &ts {
                        self.stop_watcher(i).await;
                    }
                    Ok(wait_for(ts.into_iter().map(|i| (i, Want::Stopped)).collect()))
                }
                Err(e) => Err(e),
            },
            "restart" | "reload" => match self.targets(&props) {
                Ok(ts) => {
                    let t = Instant::now();
                    for &i in &ts {
                        // A drained watcher always hands over: a restart must not drop requests.
                        let graceful = cmd.command == "reload" || self.watchers[i].cfg.drain_socket.is_some();
                        if !self.watchers[i].active {
                            self.start_watcher(i, t).await;
                            continue;
                        }
                        self.watchers[i].done_wids.clear();
                        let pids: Vec<(i32, u32)> = self.watchers[i]
                            .procs
                            .iter()
                            .filter(|p| p.stopping.is_none())
                            .map(|p| (p.pid, p.wid))
                            .collect();
                        for (pid, _) in pids {
                            if graceful {
                                // Overlapping handover: new processes first (as circus's graceful reload).
                                if let Some(p) = self.watchers[i].procs.iter_mut().find(|p| p.pid == pid) {
                                    p.recycle_at = Some(t);
                                }
                            } else {
                                self.stop_proc(i, pid, StopReason::Requested, t);
                            }
                        }
                        let name = self.watchers[i].cfg.name.clone();
                        self.emit(&name, "reload", None, Map::new());
                    }
                    Ok(wait_for(ts.into_iter().map(|i| (i, Want::Running)).collect()))
                }
                Err(e) => Err(e),
            },
            "reloadconfig" => self
                .reload_config()
                .await
                .map(|v| reply_body(obj(v)))
                .map_err(|e| e.to_string()),
            "incr" | "decr" => self.scale(&props, cmd.command == "incr"),
            "signal" => self.signal(&props),
            "stats" => self.stats(&props).map(reply_body),
            "tail" => self.tail(&props),
            "listsockets" => {
                let socks: Vec<Value> = self.sockets.all().map(|(n, fd)| json!({"name": n, "fd": fd})).collect();
                Ok(reply_body(obj(json!({"sockets": socks}))))
            }
            "add" => self.add(&props).await,
            "rm" => match props.get("name").and_then(Value::as_str).and_then(|n| self.index(n)) {
                Some(i) => {
                    self.watchers[i].removing = true;
                    Ok(reply_body(Map::new()))
                }
                None => Err("program not found".into()),
            },
            "quit" => {
                self.begin_quit();
                self.quit_replies.push((id, tx));
                return;
            }
            other => Err(format!("unknown command {other:?}")),
        };
        match result {
            Err(reason) => {
                let _ = tx.send(ControlReply {
                    id,
                    status: "error".into(),
                    time: now,
                    reason: Some(reason),
                    body: Map::new(),
                });
            }
            Ok(outcome) => {
                let mut reply = reply_ok(&id, now);
                reply.body = outcome.body;
                if waiting && !outcome.waits.is_empty() {
                    // Answered once every addressed watcher has settled: queued, never refused.
                    let grace = outcome
                        .waits
                        .iter()
                        .map(|(i, _)| {
                            let cfg = &self.watchers[*i].cfg;
                            let drain = if cfg.drain_socket.is_some() {
                                cfg.drain_timeout
                            } else {
                                Duration::ZERO
                            };
                            cfg.graceful_timeout + drain
                        })
                        .max()
                        .unwrap_or_default();
                    let wants = outcome
                        .waits
                        .into_iter()
                        .map(|(i, want)| (self.watchers[i].cfg.name.clone(), want))
                        .collect();
                    let deadline = Instant::now() + grace.min(MAX_WAIT) + WAIT_MARGIN;
                    self.waiters.push(Waiter {
                        deadline,
                        wants,
                        tx,
                        reply,
                    });
                } else {
                    let _ = tx.send(reply);
                }
            }
        }
    }

    fn list(&self, props: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        match props.get("name").and_then(Value::as_str) {
            Some(n) => {
                let i = self.index(n).ok_or(format!("program {n} not found"))?;
                let pids: Vec<i32> = self.watchers[i].procs.iter().map(|p| p.pid).collect();
                Ok(obj(json!({"pids": pids})))
            }
            None => {
                let names: Vec<&str> = self.watchers.iter().map(|w| w.cfg.name.as_str()).collect();
                Ok(obj(json!({"watchers": names})))
            }
        }
    }

    fn status(&self, props: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let now = Instant::now();
        match props.get("name").and_then(Value::as_str) {
            Some(n) => {
                let i = self.index(n).ok_or(format!("program {n} not found"))?;
                // Circus answers `{"status": "active"}`, overwriting its own "ok"; the state gets
                // its own key here so that `status` always means the command's outcome.
                Ok(obj(json!({"state": self.watchers[i].state(now).as_str()})))
            }
            None => {
                let mut statuses = Map::new();
                let mut details = Map::new();
                for w in &self.watchers {
                    statuses.insert(w.cfg.name.clone(), w.state(now).as_str().into());
                    details.insert(
                        w.cfg.name.clone(),
                        json!({
                            "status": w.state(now).as_str(),
                            "processes": w.live(),
                            "numprocesses": w.numprocesses,
                            "restarts": w.restarts,
                            "priority": w.cfg.priority,
                            "retry_in": w.next_spawn_at.filter(|t| *t > now).map(|t| (t - now).as_secs_f64()),
                        }),
                    );
                }
                Ok(obj(json!({"statuses": statuses, "details": details})))
            }
        }
    }

    fn scale(&mut self, props: &Map<String, Value>, up: bool) -> CommandResult {
        let name = props.get("name").and_then(Value::as_str).ok_or("name is required")?;
        let i = self.index(name).ok_or(format!("program {name} not found"))?;
        let nb = props.get("nb").and_then(Value::as_u64).unwrap_or(1);
        let w = &mut self.watchers[i];
        let target = if up {
            u64::from(w.numprocesses) + nb
        } else {
            u64::from(w.numprocesses).saturating_sub(nb)
        };
        if target > u64::from(MAX_NUMPROCESSES) {
            return Err(format!(
                "{name} would run {target} processes; the limit is {MAX_NUMPROCESSES}"
            ));
        }
        let nb = nb as u32;
        if w.cfg.singleton && up && w.numprocesses >= 1 {
            return Err(format!("{name} is a singleton"));
        }
        w.numprocesses = if up {
            w.numprocesses.saturating_add(nb)
        } else {
            w.numprocesses.saturating_sub(nb)
        };
        let n = w.numprocesses;
        w.done_wids.retain(|wid| *wid <= n);
        Ok(Outcome {
            waits: vec![(i, Want::Running)],
            body: obj(json!({"numprocesses": n})),
        })
    }

    fn signal(&mut self, props: &Map<String, Value>) -> CommandResult {
        let name = props.get("name").and_then(Value::as_str).ok_or("name is required")?;
        let i = self.index(name).ok_or(format!("program {name} not found"))?;
        let signum = match props.get("signum") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0) as i32,
            Some(Value::String(s)) => crate::config::parse_signal(s).map_err(|e| format!("{s}: {e}"))?,
            _ => return Err("signum is required".into()),
        };
        let children = props.get("children").and_then(Value::as_bool).unwrap_or(false);
        let only = props.get("pid").and_then(Value::as_i64).map(|p| p as i32);
        let mut sent = 0;
        for p in &self.watchers[i].procs {
            if only.is_none_or(|o| o == p.pid) {
                sent += process::signal_tree(p.pid, signum, children);
            }
        }
        if sent == 0 {
            return Err("no process signalled".into());
        }
        Ok(reply_body(Map::new()))
    }

    fn stats(&mut self, props: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let ts = self.targets(props)?;
        let now = Instant::now();
        let mut samples = Vec::new();
        for &i in &ts {
            for p in &self.watchers[i].procs {
                if let Some(s) = procfs::stat(p.pid) {
                    samples.push((p.pid, s));
                }
            }
        }
        let ticks: Vec<(i32, u64)> = samples.iter().map(|(pid, s)| (*pid, s.cpu_ticks)).collect();
        let cpu = self.cpu.sample(Instant::now(), &ticks);
        let mut info = Map::new();
        for &i in &ts {
            let w = &self.watchers[i];
            let mut procs = Map::new();
            for p in &w.procs {
                let s = samples.iter().find(|(pid, _)| *pid == p.pid).map(|(_, s)| *s);
                procs.insert(
                    p.pid.to_string(),
                    json!({
                        "pid": p.pid,
                        "wid": p.wid,
                        "rss": s.map(|s| s.rss_bytes),
                        "cpu": cpu.get(&p.pid).copied(),
                        "age": now.duration_since(p.started).as_secs_f64(),
                        "started": p.started_wall,
                        "stopping": p.stopping.is_some(),
                    }),
                );
            }
            info.insert(
                w.cfg.name.clone(),
                json!({
                    "status": w.state(now).as_str(),
                    "restarts": w.restarts,
                    "memory_restarts": w.memory_restarts.get(),
                    "processes": procs,
                }),
            );
        }
        Ok(obj(json!({"info": info})))
    }

    fn tail(&self, props: &Map<String, Value>) -> CommandResult {
        let name = props.get("name").and_then(Value::as_str).ok_or("name is required")?;
        let i = self.index(name).ok_or(format!("program {name} not found"))?;
        let n = props.get("lines").and_then(Value::as_u64).unwrap_or(20) as usize;
        Ok(reply_body(obj(json!({"lines": self.watchers[i].tail.lines(n)}))))
    }

    async fn add(&mut self, props: &Map<String, Value>) -> CommandResult {
        let name = props
            .get("name")
            .and_then(Value::as_str)
            .ok_or("name is required")?
            .trim();
        if self.watchers.iter().any(|w| w.cfg.name.eq_ignore_ascii_case(name)) {
            return Err(format!("watcher {name} already exists"));
        }
        let cmd = props.get("cmd").and_then(Value::as_str).ok_or("cmd is required")?;
        let mut options: Vec<(String, String)> = vec![("cmd".into(), cmd.into())];
        if let Some(args) = props.get("args") {
            let args = match args {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| shlex::try_quote(s).map(|q| q.into_owned()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" "),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            options.push(("args".into(), args));
        }
        if let Some(Value::Object(o)) = props.get("options") {
            for (k, v) in o {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                options.push((k.clone(), v));
            }
        }
        let cfg = crate::config::watcher_from_options(&self.config, name, &options).map_err(|e| e.to_string())?;
        let w = Watcher::new(cfg, &self.metrics).map_err(|e| e.to_string())?;
        self.watchers.push(w);
        self.sort();
        let i = self.index(name).ok_or("added watcher vanished")?;
        self.emit(name, "add", None, Map::new());
        if props.get("start").and_then(Value::as_bool).unwrap_or(false) {
            self.start_watcher(i, Instant::now()).await;
            return Ok(wait_for(vec![(i, Want::Running)]));
        }
        Ok(Outcome::default())
    }
}

/// Whether a changed watcher is replaced process by process rather than stopped and started:
/// drained workers on both sides, on the same sockets.
fn hands_over(old: &WatcherConfig, new: &WatcherConfig) -> bool {
    old.drain_socket.is_some() && old.drain_socket == new.drain_socket && !same_but_scale(old, new)
}

/// Equal except for what can change in place (numprocesses, autostart: as Metwork's circus).
fn same_but_scale(a: &WatcherConfig, b: &WatcherConfig) -> bool {
    let mut b2 = b.clone();
    b2.numprocesses = a.numprocesses;
    b2.autostart = a.autostart;
    *a == b2
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn reply_ok(id: &str, time: f64) -> ControlReply {
    ControlReply {
        id: id.to_string(),
        status: "ok".into(),
        time,
        reason: None,
        body: Map::new(),
    }
}
