//! The daemon's counters and gauges, registered once in the shared metrics registry and served
//! on `/metrics`. Updating one is an atomic add; the inotify reader adds once per batch.

use ironwork_core::metrics::{Counter, Gauge, Metrics};

/// Every series the observer exposes.
#[derive(Debug, Clone)]
pub struct Stats {
    /// File events turned into messages (after the filters).
    pub events: Counter,
    /// Messages pushed to Redis (events and scans).
    pub pushed: Counter,
    /// Events dropped because a buffer was full; their directories are rescanned.
    pub dropped: Counter,
    /// Directory scans run (startup, forced_poll, recovery).
    pub rescans: Counter,
    /// Files posted as `exists` by scans.
    pub scan_posted: Counter,
    /// Kernel event-queue overflows (IN_Q_OVERFLOW), each followed by a full rescan.
    pub kernel_overflows: Counter,
    /// File names that are not UTF-8 and cannot be written into a message.
    pub skipped_names: Counter,
    /// Messages held locally: waiting for Redis, for room under `poll_queue_limit`, or in flight.
    pub buffered: Gauge,
    /// Directories watched (subdirectories included).
    pub watches: Gauge,
    /// Configured directories that do not exist and are polled for.
    pub missing: Gauge,
    /// 1 when the last command on every Redis connection succeeded.
    pub redis_up: Gauge,
}

impl Stats {
    /// Register the series in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let c = |name: &str, help: &str| metrics.counter(name, help, &[]);
        let g = |name: &str, help: &str| metrics.gauge(name, help, &[]);
        Self {
            events: c(
                "directory_observer_events_total",
                "File events seen by inotify and turned into messages.",
            ),
            pushed: c("directory_observer_pushed_total", "Messages pushed to Redis."),
            dropped: c(
                "directory_observer_dropped_total",
                "Events dropped because a buffer was full (their directories are rescanned).",
            ),
            rescans: c("directory_observer_rescans_total", "Directory scans run."),
            scan_posted: c(
                "directory_observer_scan_posted_total",
                "Files posted as exists by scans.",
            ),
            kernel_overflows: c(
                "directory_observer_kernel_overflows_total",
                "inotify event-queue overflows (each triggers a full rescan).",
            ),
            skipped_names: c(
                "directory_observer_skipped_names_total",
                "Files skipped because their name is not UTF-8.",
            ),
            buffered: g(
                "directory_observer_buffered_events",
                "Messages held locally until Redis takes them.",
            ),
            watches: g("directory_observer_watches", "Directories watched."),
            missing: g(
                "directory_observer_missing_directories",
                "Configured directories that do not exist (polled every second).",
            ),
            redis_up: g("directory_observer_redis_up", "1 when Redis answers."),
        }
    }
}
