//! ironwork-core: what every ironwork daemon shares.
//!
//! - [`connection`]: Redis handles from a URL, dedicated blocking connections, retry with backoff.
//! - [`queue`]: Redis-list queues: batched push, bounded producer, FIFO batch pop, reliable pop
//!   with ack/recover, dead letters.
//! - [`messages`]: the serde type of every queue payload, and the queue names.
//! - [`lease`]: the Redis leader lease for singleton jobs.
//! - [`ini`] and [`config`]: INI parsing and validation that reports every error with its
//!   file, line, section and key.
//! - [`telemetry`]: mflog-shaped JSON or human logs.
//! - [`shutdown`]: the signal task (SIGTERM/SIGINT → cancel, SIGHUP → reload) and draining.
//! - [`http`] and [`metrics`]: the loopback `/health` and Prometheus `/metrics` endpoint.
//! - [`backoff`]: the capped exponential backoff with jitter used by every retry loop.
//! - [`calendar`]: days since the epoch to and from calendar dates.
//! - [`template`]: `{name}` placeholders.

pub mod backoff;
pub mod calendar;
pub mod config;
pub mod connection;
pub mod http;
pub mod ini;
pub mod lease;
pub mod messages;
pub mod metrics;
pub mod overview;
pub mod queue;
pub mod shutdown;
pub mod telemetry;
pub mod template;

pub use connection::{Redis, RedisSettings};
pub use queue::{BoundedProducer, Delivery, Queue, ReliableConsumer};
pub use tokio_util::sync::CancellationToken;
