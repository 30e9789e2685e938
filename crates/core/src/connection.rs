//! Redis connections: URL parsing, one shared multiplexed connection per daemon, dedicated
//! connections for blocking pops, and a retry loop that rides out Redis restarts.
//!
//! Every command a daemon sends goes through [`Redis::retry`], which retries transient failures
//! (connection refused or dropped, timeouts, `LOADING` after a restart, failovers) forever with
//! capped exponential backoff and jitter. A daemon therefore keeps running, and keeps answering
//! `/health`, while Redis is away; what it could not push stays with the caller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisError, RetryMethod};

use crate::backoff::Backoff;

/// The connection type every queue operation runs on.
///
/// A single server today (TCP or unix socket). Redis Cluster or Sentinel support means turning
/// this alias into an enum that implements `redis::aio::ConnectionLike`; callers only issue
/// commands through that trait, so they do not change.
pub type Conn = ConnectionManager;

/// How a daemon reaches Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis+unix:///path/redis.sock`, `unix:///path/redis.sock`, `redis://host:port[/db]`,
    /// or a bare absolute socket path.
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

/// Normalise the URL forms operators write into one the client library accepts.
///
/// A bare absolute path is taken as a unix socket, as Metwork's `redis_unix_socket` key is.
pub fn normalize_url(url: &str) -> String {
    if url.starts_with('/') {
        format!("redis+unix://{url}")
    } else {
        url.to_string()
    }
}

/// A daemon's handle on Redis: cheap to clone, shares one multiplexed connection.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
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
        let url = normalize_url(&settings.url);
        let invalid = |source| ConnectionError::InvalidUrl {
            url: settings.url.clone(),
            source,
        };
        let info = url.as_str().into_connection_info().map_err(invalid)?;
        let client = redis::Client::open(info).map_err(invalid)?;
        let shared = ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config(&settings, Some(settings.response_timeout)),
        )
        .map_err(invalid)?;
        Ok(Self {
            client,
            shared,
            settings: Arc::new(settings),
            healthy: Arc::new(AtomicBool::new(false)),
        })
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
        ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            manager_config(&self.settings, Some(block + self.settings.response_timeout)),
        )
        .map_err(|source| ConnectionError::InvalidUrl {
            url: self.settings.url.clone(),
            source,
        })
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

fn manager_config(settings: &RedisSettings, response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    // The manager's own reconnect loop is kept short: `Redis::retry` owns the long-term policy.
    ConnectionManagerConfig::new()
        .set_min_delay(settings.backoff.initial)
        .set_max_delay(settings.backoff.max)
        .set_number_of_retries(2)
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(response_timeout)
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
