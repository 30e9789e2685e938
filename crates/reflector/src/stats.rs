//! The reflector's counters: `/metrics` and the logs read the same values.

use std::sync::Arc;

use ironwork_core::metrics::{Counter, Gauge, Metrics};

/// Every counter of one reflector process.
#[derive(Debug, Clone)]
pub struct Stats {
    /// The registry `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// 1 while this process holds the leader lease (resend, expiry).
    pub leader: Gauge,
    /// Messages taken from `collector.data.queue`.
    pub data_taken: Counter,
    /// Messages of `collector.data.queue` that were not collected data (dead-lettered).
    pub data_dead: Counter,
    /// Points at least one reflection matched.
    pub points_matched: Counter,
    /// Points no reflection matched.
    pub points_unmatched: Counter,
    /// Points a `drop` action ended.
    pub points_dropped: Counter,
    /// Points `push_metrics` could not turn into a metric (value neither number, string nor bool).
    pub points_unusable: Counter,
    /// Cache writes.
    pub cached: Counter,
    /// Points pushed to `metrics.send.queue`.
    pub metrics_pushed: Counter,
    /// Messages forwarded to named queues.
    pub forwarded: Counter,
    /// Messages copied to the sniffer queue.
    pub sniffed: Counter,
    /// Points taken from `metrics.send.queue`.
    pub send_taken: Counter,
    /// Messages of `metrics.send.queue` that were not usable points (dead-lettered).
    pub send_dead: Counter,
    /// Points delivered (counted once per endpoint).
    pub points_sent: Counter,
    /// Points that went to the unsent backup (once per endpoint).
    pub points_unsent: Counter,
    /// Points a server refused as data (dead-lettered with the batch).
    pub points_refused: Counter,
    /// Values Zabbix reported as failed (unknown host or key…).
    pub zabbix_failed: Counter,
    /// Points of the unsent backup delivered by a resend.
    pub points_resent: Counter,
    /// Batches written to the `metrics.sent` / `metrics.unsent` sorted sets.
    pub backups_written: Counter,
    /// Rows the expiry jobs removed from `metrics.sent`.
    pub sent_expired: Counter,
    /// Rows the expiry jobs removed from `metrics.unsent` (points given up).
    pub unsent_expired: Counter,
}

impl Stats {
    /// Register every counter.
    pub fn new() -> Self {
        let m = Metrics::new();
        let c = |name: &str, help: &str| m.counter(&format!("reflector_{name}"), help, &[]);
        Self {
            leader: m.gauge("reflector_leader", "1 while this process runs resend and expiry", &[]),
            data_taken: c("data_taken_total", "messages taken from collector.data.queue"),
            data_dead: c("data_dead_total", "collector.data.queue messages dead-lettered"),
            points_matched: c("points_matched_total", "points at least one reflection matched"),
            points_unmatched: c("points_unmatched_total", "points no reflection matched"),
            points_dropped: c("points_dropped_total", "points a drop action ended"),
            points_unusable: c("points_unusable_total", "points push_metrics could not use"),
            cached: c("cached_total", "cache writes"),
            metrics_pushed: c("metrics_pushed_total", "points pushed to metrics.send.queue"),
            forwarded: c("forwarded_total", "messages forwarded to named queues"),
            sniffed: c("sniffed_total", "messages copied to collector.data.sniffer.queue"),
            send_taken: c("send_taken_total", "points taken from metrics.send.queue"),
            send_dead: c("send_dead_total", "metrics.send.queue messages dead-lettered"),
            points_sent: c("points_sent_total", "points delivered, once per endpoint"),
            points_unsent: c(
                "points_unsent_total",
                "points put in the unsent backup, once per endpoint",
            ),
            points_refused: c("points_refused_total", "points a metric server refused as data"),
            zabbix_failed: c("zabbix_failed_total", "values Zabbix reported as failed"),
            points_resent: c("points_resent_total", "unsent points delivered by a resend"),
            backups_written: c(
                "backups_written_total",
                "batches written to metrics.sent / metrics.unsent",
            ),
            sent_expired: c("sent_expired_total", "metrics.sent rows removed by expiry"),
            unsent_expired: c(
                "unsent_expired_total",
                "metrics.unsent rows removed by expiry (points given up)",
            ),
            metrics: m,
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}
