//! Redis connections: URL parsing, one shared multiplexed connection per daemon, dedicated
//! connections for blocking pops, and a retry loop that rides out Redis restarts. The server is
//! one Redis, a Redis Cluster (slots, redirections, pipelines cut into same-slot runs) or the
//! master Sentinel names (asked again after a failover) ([`Endpoint`], [`Conn`]).
//!
//! Every command a daemon sends goes through [`Redis::retry`], which retries transient failures
//! (connection refused or dropped, timeouts, `LOADING` after a restart, failovers) forever with
//! capped exponential backoff and jitter. A daemon therefore keeps running, and keeps answering
//! `/health`, while Redis is away; what it could not push stays with the caller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RetryMethod, Value};
use tokio::sync::Mutex;

use crate::backoff::Backoff;

/// How a daemon reaches Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis+unix:///path/redis.sock`, `unix:///path/redis.sock`, `redis://host:port[/db]`,
    /// a bare absolute socket path, `redis+cluster://host:port,host:port` or
    /// `redis+sentinel://host:port,host:port/<master>[/db]` (see [`Endpoint::parse`]).
    pub url: String,
    /// Delay policy between retries of a failed command.
    pub backoff: Backoff,
    /// How long one non-blocking command may wait for its reply.
    pub response_timeout: Duration,
    /// How long establishing one connection may take.
    pub connect_timeout: Duration,
}

impl RedisSettings {
    /// Settings with the defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
                factor: 2.0,
            },
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Errors from connecting to Redis.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The URL cannot be understood.
    #[error("invalid redis url {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What the client library said.
        #[source]
        source: RedisError,
    },
}

/// Normalise the URL forms operators write for one server into one the client library accepts.
///
/// A bare absolute path is taken as a unix socket, as Metwork's `redis_unix_socket` key is.
pub fn normalize_url(url: &str) -> String {
    if url.starts_with('/') {
        format!("redis+unix://{url}")
    } else {
        url.to_string()
    }
}

/// Where Redis is: one server, a Redis Cluster, or a master found through Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server (TCP or unix socket), its URL normalised.
    Single(String),
    /// A Redis Cluster: the seed nodes (`redis://host:port`), any of which gives the topology.
    Cluster {
        /// Seed nodes.
        nodes: Vec<String>,
        /// ACL user, if any.
        username: Option<String>,
        /// Password, if any.
        password: Option<String>,
    },
    /// The master Sentinel names `master`, asked of the first sentinel that answers.
    Sentinel {
        /// Sentinels (`redis://host:port`).
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// The database on the master.
        db: i64,
        /// ACL user on the master, if any.
        username: Option<String>,
        /// Password on the master, if any.
        password: Option<String>,
    },
}

impl Endpoint {
    /// Parse a URL:
    /// - one server: `redis://[[user]:password@]host[:port][/db]`, `unix:///path`,
    ///   `redis+unix:///path`, or a bare absolute socket path;
    /// - a cluster: `redis+cluster://[[user]:password@]host:port[,host:port…]` (port 6379 by
    ///   default); any reachable node gives the whole topology;
    /// - Sentinel: `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master>[/db]`
    ///   (port 26379 by default); the credentials are the master's.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts, path) = split_multi_host(rest, 6379)?;
            if !path.is_empty() {
                return Err("a cluster has no databases: nothing may follow the host list".into());
            }
            return Ok(Self::Cluster {
                nodes: hosts,
                username: auth.0,
                password: auth.1,
            });
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, hosts, path) = split_multi_host(rest, 26379)?;
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let master = parts
                .next()
                .ok_or("name the master after the sentinels: redis+sentinel://host:26379/mymaster")?;
            let db = match parts.next() {
                Some(d) => d.parse().map_err(|_| format!("bad database {d:?}"))?,
                None => 0,
            };
            return Ok(Self::Sentinel {
                sentinels: hosts,
                master: master.to_string(),
                db,
                username: auth.0,
                password: auth.1,
            });
        }
        let normal = normalize_url(url);
        normal.as_str().into_connection_info().map_err(|e| e.to_string())?;
        Ok(Self::Single(normal))
    }
}

type Credentials = (Option<String>, Option<String>);

/// `[[user]:password@]h:p,h:p[/path]` → credentials, `redis://h:p` URLs, path.
fn split_multi_host(rest: &str, default_port: u16) -> Result<(Credentials, Vec<String>, &str), String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, authority),
    };
    let credentials = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
        None => (None, None),
        Some((user, pw)) => (
            Some(user.to_string()).filter(|u| !u.is_empty()),
            Some(pw.to_string()).filter(|p| !p.is_empty()),
        ),
    };
    let mut out = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (h, p) = match host.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => (h, p),
            _ => (host, ""),
        };
        let port: u16 = if p.is_empty() {
            default_port
        } else {
            p.parse().map_err(|_| format!("bad port {p:?} in {host:?}"))?
        };
        if h.is_empty() {
            return Err(format!("missing host in {host:?}"));
        }
        out.push(format!("redis://{h}:{port}"));
    }
    if out.is_empty() {
        return Err("no host given".into());
    }
    Ok((credentials, out, path))
}

/// The connection every queue operation runs on: one server (a reconnecting multiplexed
/// connection), a Redis Cluster, or the master Sentinel currently names. Callers only issue
/// commands through [`redis::aio::ConnectionLike`], whatever the kind.
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConn),
    /// A master behind Sentinel.
    Sentinel(SentinelConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(_) => "Conn::Cluster",
            Conn::Sentinel(_) => "Conn::Sentinel",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => Box::pin(c.command(cmd)),
            Conn::Sentinel(c) => Box::pin(c.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => Box::pin(c.pipeline(pipeline, offset, count)),
            Conn::Sentinel(c) => Box::pin(c.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
            Conn::Sentinel(c) => c.db,
        }
    }
}

/// A Redis Cluster connection, opened at first use (a daemon may start before its Redis) and
/// then kept: the client follows `MOVED`/`ASK` and topology changes itself.
///
/// A transaction (`MULTI`) must touch one slot, as Redis requires. Other pipelines may span
/// slots: they are sent as consecutive same-slot runs, in order, one round trip each, so what
/// a pipeline means (ordered commands, no atomicity) holds on a cluster too. A run that fails
/// for a transient reason (a failover, a timeout) is sent again by itself, with the handle's
/// backoff, until it goes through: the runs before it, already applied, are never repeated.
#[derive(Clone)]
pub struct ClusterConn {
    client: Arc<ClusterClient>,
    conn: Arc<Mutex<Option<ClusterConnection>>>,
    backoff: Backoff,
}

impl ClusterConn {
    fn new(endpoint: &Endpoint, settings: &RedisSettings, response_timeout: Duration) -> Result<Self, RedisError> {
        let Endpoint::Cluster {
            nodes,
            username,
            password,
        } = endpoint
        else {
            unreachable!("a cluster connection needs a cluster endpoint")
        };
        let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(settings.connect_timeout)
            .response_timeout(response_timeout)
            .retries(4);
        if let Some(u) = username {
            builder = builder.username(u);
        }
        if let Some(p) = password {
            builder = builder.password(p);
        }
        Ok(Self {
            client: Arc::new(builder.build()?),
            conn: Default::default(),
            backoff: settings.backoff,
        })
    }

    async fn get(&self) -> Result<ClusterConnection, RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = self.client.get_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        self.get().await?.req_packed_command(cmd).await
    }

    async fn pipeline(&self, pipeline: &Pipeline, offset: usize, count: usize) -> Result<Vec<Value>, RedisError> {
        let mut c = self.get().await?;
        let runs = same_slot_runs(pipeline);
        if pipeline.is_transaction() || runs.len() <= 1 {
            return c.req_packed_commands(pipeline, offset, count).await;
        }
        let mut out = Vec::with_capacity(pipeline.len());
        for run in runs {
            let mut part = redis::pipe();
            for cmd in run {
                part.add_command(cmd.clone());
            }
            out.extend(self.run_until_done(&mut c, &part).await?);
        }
        Ok(out)
    }

    async fn run_until_done(&self, c: &mut ClusterConnection, part: &Pipeline) -> Result<Vec<Value>, RedisError> {
        let mut attempts = self.backoff.attempts();
        loop {
            let reply = c.req_packed_commands(part, 0, part.len()).await;
            let failure = match &reply {
                Err(e) => Some(e.clone()),
                Ok(values) => values.iter().find_map(transient_reply),
            };
            match failure {
                Some(e) if is_transient(&e) => {
                    let delay = attempts.next_delay();
                    if attempts.count() % 10 == 1 {
                        tracing::warn!(error = %e, attempt = attempts.count(), "part of a pipeline failed, sending that part again");
                    }
                    tokio::time::sleep(delay).await;
                }
                _ => return reply,
            }
        }
    }
}

/// The error in a reply that retrying may cure (`TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, …).
fn transient_reply(v: &Value) -> Option<RedisError> {
    match v {
        Value::ServerError(e) => Some(RedisError::from(e.clone())).filter(is_transient),
        _ => None,
    }
}

/// Where a command may go on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// The slot of its (first) key.
    Slot(u16),
    /// Anywhere: it has no key.
    Anywhere,
    /// In a run of its own: its keys are not where this reader looks for them.
    Alone,
}

/// A pipeline's commands cut into consecutive runs whose keys share a slot; commands without
/// a key join the run they are in.
fn same_slot_runs(pipeline: &Pipeline) -> Vec<Vec<&Cmd>> {
    let mut runs: Vec<(Placement, Vec<&Cmd>)> = Vec::new();
    for cmd in pipeline.cmd_iter() {
        let place = placement(cmd);
        match runs.last_mut() {
            Some((run, cmds)) if *run != Placement::Alone && place != Placement::Alone => match (*run, place) {
                (_, Placement::Anywhere) => cmds.push(cmd),
                (Placement::Anywhere, slot) => {
                    *run = slot;
                    cmds.push(cmd);
                }
                (a, b) if a == b => cmds.push(cmd),
                _ => runs.push((place, vec![cmd])),
            },
            _ => runs.push((place, vec![cmd])),
        }
    }
    runs.into_iter().map(|(_, cmds)| cmds).collect()
}

/// Where `cmd` goes: the slot of its first argument, or for `EVAL`/`EVALSHA`/`FCALL` of the
/// first key after the key count; nowhere in particular for commands without a key; alone for
/// the commands whose first key is elsewhere (`XREAD`, `OBJECT`, `BITOP`, `ZUNION`, …).
fn placement(cmd: &Cmd) -> Placement {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let Some(name) = args.first().map(|n| n.to_ascii_uppercase()) else {
        return Placement::Anywhere;
    };
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            match std::str::from_utf8(args.get(2).copied().unwrap_or_default()).map(str::parse::<usize>) {
                Ok(Ok(0)) => return Placement::Anywhere,
                Ok(Ok(_)) => args.get(3),
                _ => return Placement::Alone,
            }
        }
        b"MULTI" | b"EXEC" | b"DISCARD" | b"PING" | b"ECHO" | b"INFO" | b"SCRIPT" | b"SELECT" | b"CLIENT" | b"TIME" => {
            return Placement::Anywhere
        }
        b"XREAD" | b"XREADGROUP" | b"OBJECT" | b"XINFO" | b"MEMORY" | b"BITOP" | b"LMPOP" | b"BLMPOP" | b"ZMPOP"
        | b"BZMPOP" | b"ZINTER" | b"ZUNION" | b"ZDIFF" | b"ZINTERCARD" | b"SINTERCARD" | b"MIGRATE" | b"SCAN"
        | b"KEYS" | b"CLUSTER" | b"FUNCTION" | b"CONFIG" => return Placement::Alone,
        _ => args.get(1),
    };
    key.map_or(Placement::Alone, |k| Placement::Slot(key_slot(k)))
}

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key).unwrap_or(key)) % 16384
}

/// The hash tag of `key`: what lies between its first `{` and the next `}`, if not empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The master Sentinel names, re-asked whenever the connection to it fails or it answers as a
/// replica (`READONLY`): after a failover the next retry reaches the new master.
#[derive(Clone)]
pub struct SentinelConn {
    inner: Arc<SentinelInner>,
    db: i64,
}

struct SentinelInner {
    sentinel: Mutex<SentinelClient>,
    /// The connection to the master, with a generation number so that a failure seen on an old
    /// connection does not throw away a newer one.
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    fn new(endpoint: &Endpoint, settings: &RedisSettings, response_timeout: Duration) -> Result<Self, RedisError> {
        let Endpoint::Sentinel {
            sentinels,
            master,
            db,
            username,
            password,
        } = endpoint
        else {
            unreachable!("a sentinel connection needs a sentinel endpoint")
        };
        let mut info = redis::RedisConnectionInfo::default().set_db(*db);
        if let Some(u) = username {
            info = info.set_username(u);
        }
        if let Some(p) = password {
            info = info.set_password(p);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        let client = SentinelClient::build(
            sentinels.iter().map(String::as_str).collect(),
            master.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Self {
            inner: Arc::new(SentinelInner {
                sentinel: Mutex::new(client),
                current: Mutex::new((0, None)),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(response_timeout)),
            }),
            db: *db,
        })
    }

    async fn get(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let mut current = self.inner.current.lock().await;
        if let (generation, Some(c)) = &*current {
            return Ok((*generation, c.clone()));
        }
        let client = self.inner.sentinel.lock().await.async_get_client().await?;
        let c = client
            .get_multiplexed_async_connection_with_config(&self.inner.config)
            .await?;
        current.0 += 1;
        current.1 = Some(c.clone());
        Ok((current.0, c))
    }

    /// Drop connection `generation` when `failed`: the next command asks the sentinels again.
    async fn forget(&self, generation: u64, failed: bool) {
        if failed {
            let mut current = self.inner.current.lock().await;
            if current.0 == generation {
                current.1 = None;
            }
        }
    }

    async fn command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let (generation, mut c) = self.get().await?;
        let reply = c.req_packed_command(cmd).await;
        self.forget(generation, reply.as_ref().map_or_else(is_transient, replica_reply))
            .await;
        reply
    }

    async fn pipeline(&self, pipeline: &Pipeline, offset: usize, count: usize) -> Result<Vec<Value>, RedisError> {
        let (generation, mut c) = self.get().await?;
        let reply = c.req_packed_commands(pipeline, offset, count).await;
        let failed = match &reply {
            Err(e) => is_transient(e),
            Ok(values) => values.iter().any(replica_reply),
        };
        self.forget(generation, failed).await;
        reply
    }
}

/// Whether a reply says the server is no longer the master (`READONLY`, `MASTERDOWN`), also
/// inside a transaction's reply. A server error is a reply, not a failed call, in the client.
fn replica_reply(v: &Value) -> bool {
    match v {
        Value::ServerError(e) => matches!(e.code(), "READONLY" | "MASTERDOWN"),
        Value::Array(items) => items.iter().any(replica_reply),
        _ => false,
    }
}

/// A daemon's handle on Redis: cheap to clone, shares one multiplexed connection.
#[derive(Clone)]
pub struct Redis {
    endpoint: Arc<Endpoint>,
    shared: Conn,
    settings: Arc<RedisSettings>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.settings.url).finish()
    }
}

impl Redis {
    /// Open a handle with default settings. Does not connect yet: a daemon may start before
    /// its Redis does (ringmaster starts Redis as its own first watcher). Call it inside a
    /// tokio runtime.
    pub fn open(url: &str) -> Result<Self, ConnectionError> {
        Self::with_settings(RedisSettings::new(url))
    }

    /// Open a handle with explicit settings. Does not connect yet.
    pub fn with_settings(settings: RedisSettings) -> Result<Self, ConnectionError> {
        let endpoint = Endpoint::parse(&settings.url).map_err(|e| ConnectionError::InvalidUrl {
            url: settings.url.clone(),
            source: RedisError::from((redis::ErrorKind::InvalidClientConfig, "invalid url", e)),
        })?;
        let shared = open_conn(&endpoint, &settings, settings.response_timeout)?;
        Ok(Self {
            endpoint: Arc::new(endpoint),
            shared,
            settings: Arc::new(settings),
            healthy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Where this handle's Redis is.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The settings this handle was opened with.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// A clone of the shared multiplexed connection. Never send blocking commands on it.
    pub fn conn(&self) -> Conn {
        self.shared.clone()
    }

    /// A dedicated connection for blocking commands that block at most `block` each.
    ///
    /// Its reply timeout is `block` plus the normal response timeout, so a server that vanished
    /// without closing the socket is still noticed.
    pub fn blocking_conn(&self, block: Duration) -> Result<Conn, ConnectionError> {
        open_conn(&self.endpoint, &self.settings, block + self.settings.response_timeout)
    }

    /// Every key matching `pattern`, for operators' listings: `SCAN` on one server; on a
    /// cluster `KEYS` on every master (the client sends it to each and joins the answers),
    /// since a cursor only walks one node.
    pub async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let mut conn = self.conn();
        if let Conn::Cluster(_) = conn {
            return redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await;
        }
        let mut keys = Vec::new();
        let mut iter: redis::AsyncIter<'_, String> = redis::AsyncCommands::scan_match(&mut conn, pattern).await?;
        while let Some(k) = iter.next_item().await {
            keys.push(k?);
        }
        Ok(keys)
    }

    /// Whether the last command sent through [`Redis::retry`] succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Run `op` on the shared connection until it succeeds or fails permanently.
    ///
    /// Transient failures are retried forever with the configured backoff, logged at WARN on the
    /// first failure and then every tenth attempt. Wrap the call in a `select!` against a
    /// cancellation token to give up at shutdown.
    pub async fn retry<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, RedisError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        self.retry_on(self.shared.clone(), what, op).await
    }

    /// Run `pipe` in one round trip, with [`Redis::retry`]'s retries.
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.retry(what, |mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// [`Redis::retry`] on a given connection (a dedicated blocking one, typically).
    pub async fn retry_on<T, F, Fut>(&self, conn: Conn, what: &'static str, mut op: F) -> Result<T, RedisError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let mut attempts = self.settings.backoff.attempts();
        loop {
            match op(conn.clone()).await {
                Ok(v) => {
                    if attempts.count() > 0 {
                        tracing::info!(what, attempts = attempts.count(), "redis reachable again");
                    }
                    self.healthy.store(true, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(err) if is_transient(&err) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    let delay = attempts.next_delay();
                    if attempts.count() % 10 == 1 {
                        tracing::warn!(
                            what,
                            error = %err,
                            attempt = attempts.count(),
                            retry_in_ms = delay.as_millis() as u64,
                            "redis command failed, retrying"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// A lazy connection of the endpoint's kind whose replies may take up to `response_timeout`.
fn open_conn(
    endpoint: &Endpoint,
    settings: &RedisSettings,
    response_timeout: Duration,
) -> Result<Conn, ConnectionError> {
    let invalid = |source| ConnectionError::InvalidUrl {
        url: settings.url.clone(),
        source,
    };
    match endpoint {
        Endpoint::Single(url) => {
            let info = url.as_str().into_connection_info().map_err(invalid)?;
            let client = redis::Client::open(info).map_err(invalid)?;
            // The manager's own reconnect loop is kept short: `Redis::retry` owns the long-term
            // policy.
            let config = ConnectionManagerConfig::new()
                .set_min_delay(settings.backoff.initial)
                .set_max_delay(settings.backoff.max)
                .set_number_of_retries(2)
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(response_timeout));
            Ok(Conn::Single(
                ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?,
            ))
        }
        Endpoint::Cluster { .. } => Ok(Conn::Cluster(
            ClusterConn::new(endpoint, settings, response_timeout).map_err(invalid)?,
        )),
        Endpoint::Sentinel { .. } => Ok(Conn::Sentinel(
            SentinelConn::new(endpoint, settings, response_timeout).map_err(invalid)?,
        )),
    }
}

/// Whether retrying `err` later may succeed: the connection broke, timed out, or the server is
/// loading, failing over or busy. Wrong types, bad arguments and script errors are permanent.
pub fn is_transient(err: &RedisError) -> bool {
    if err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_io_error() {
        return true;
    }
    if let Some(code) = err.code() {
        if matches!(
            code,
            "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY"
        ) {
            return true;
        }
    }
    !matches!(err.retry_method(), RetryMethod::NoRetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(p: &Pipeline) -> Vec<Vec<String>> {
        same_slot_runs(p)
            .into_iter()
            .map(|run| {
                run.iter()
                    .map(|c| {
                        let words: Vec<String> = c
                            .args_iter()
                            .filter_map(|a| match a {
                                redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
                                _ => None,
                            })
                            .collect();
                        words.join(" ")
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn pipelines_are_cut_into_consecutive_same_slot_runs() {
        // "a" and "{a}.dead" share a slot; "b" has another.
        assert_ne!(key_slot(b"a"), key_slot(b"b"));
        let mut p = redis::pipe();
        p.cmd("PING")
            .cmd("LPUSH")
            .arg("a")
            .arg("1")
            .cmd("LLEN")
            .arg("{a}.dead")
            .cmd("EVAL")
            .arg("return 1")
            .arg(1)
            .arg("b")
            .cmd("EVAL")
            .arg("return 1")
            .arg(0)
            .cmd("LPUSH")
            .arg("a")
            .arg("2")
            .cmd("XREAD")
            .arg("STREAMS")
            .arg("a")
            .arg("0")
            .cmd("LLEN")
            .arg("a");
        assert_eq!(
            runs(&p),
            [
                vec!["PING", "LPUSH a 1", "LLEN {a}.dead"],
                vec!["EVAL return 1 1 b", "EVAL return 1 0"],
                vec!["LPUSH a 2"],
                vec!["XREAD STREAMS a 0"],
                vec!["LLEN a"],
            ]
        );
    }

    #[test]
    fn readonly_and_masterdown_replies_mean_a_failover() {
        let parse = |bytes: &[u8]| redis::parse_redis_value(bytes).expect("parse");
        assert!(replica_reply(&parse(
            b"-READONLY You can't write against a read only replica.\r\n"
        )));
        assert!(replica_reply(&parse(
            b"*2\r\n:1\r\n-MASTERDOWN Link with MASTER is down\r\n"
        )));
        assert!(!replica_reply(&parse(b"-ERR wrong number of arguments\r\n")));
        assert!(!replica_reply(&parse(b":1\r\n")));
        assert!(transient_reply(&parse(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n")).is_some());
        assert!(transient_reply(&parse(b"-WRONGTYPE Operation against a key\r\n")).is_none());
    }

    #[test]
    fn bare_socket_paths_become_unix_urls() {
        assert_eq!(normalize_url("/run/r.sock"), "redis+unix:///run/r.sock");
        assert_eq!(normalize_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[tokio::test]
    async fn accepted_url_forms() {
        for url in [
            "redis+unix:///tmp/x/redis.sock",
            "unix:///tmp/x/redis.sock",
            "/tmp/x/redis.sock",
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/2",
        ] {
            assert!(Redis::open(url).is_ok(), "{url} refused");
        }
    }

    #[tokio::test]
    async fn nonsense_url_is_refused_with_the_url_in_the_message() {
        let err = Redis::open("http://nope").expect_err("http url accepted");
        assert!(err.to_string().contains("http://nope"), "{err}");
    }
}
