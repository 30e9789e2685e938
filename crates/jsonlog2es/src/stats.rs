//! The daemon's counters and gauges, served on `/metrics`. The reader adds once per line batch;
//! the shippers once per request.

use ironwork_core::metrics::{Counter, Gauge, Metrics};

/// Every series jsonlog2es exposes (prefixed with the daemon's name).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Complete lines read.
    pub lines: Counter,
    /// Bytes read from files.
    pub bytes: Counter,
    /// Documents Elasticsearch acknowledged (created, or 409 already there).
    pub acked: Counter,
    /// Documents answered 409 on `create`: already indexed by an earlier attempt.
    pub duplicates: Counter,
    /// Documents sent again after a 429/5xx item, a failed request or a timeout.
    pub retried: Counter,
    /// Documents and lines written to the dead-letter file.
    pub dead_lettered: Counter,
    /// Lines shipped as `{"message","parse_error"}`.
    pub invalid: Counter,
    /// Lines longer than `max_line_bytes`, truncated.
    pub truncated: Counter,
    /// Lines longer than `max_line_bytes`, skipped.
    pub skipped: Counter,
    /// Lines removed by a drop rule.
    pub dropped: Counter,
    /// Bytes of removed files closed before they were read to the end.
    pub unread_bytes: Counter,
    /// `_bulk` requests sent.
    pub requests: Counter,
    /// Files followed.
    pub files: Gauge,
    /// Files open.
    pub open_files: Gauge,
    /// Bulk bytes read and not yet acknowledged (reading pauses at `queue_bytes`).
    pub queued_bytes: Gauge,
}

impl Stats {
    /// Register the series in `metrics` under `name`.
    pub fn register(metrics: &Metrics, name: &str) -> Self {
        let c = |what: &str, help: &str| metrics.counter(&format!("{name}_{what}_total"), help, &[]);
        let g = |what: &str, help: &str| metrics.gauge(&format!("{name}_{what}"), help, &[]);
        Self {
            lines: c("lines", "Complete lines read."),
            bytes: c("read_bytes", "Bytes read from files."),
            acked: c(
                "acked",
                "Documents acknowledged by Elasticsearch (201, or 409 already indexed).",
            ),
            duplicates: c(
                "duplicates",
                "Documents answered 409 on create: indexed by an earlier attempt.",
            ),
            retried: c(
                "retried",
                "Documents sent again after 429/5xx, a failed request or a timeout.",
            ),
            dead_lettered: c("dead_lettered", "Documents and lines written to the dead-letter file."),
            invalid: c("invalid_lines", "Lines that are not JSON objects, shipped wrapped."),
            truncated: c("truncated_lines", "Lines over max_line_bytes, truncated."),
            skipped: c("skipped_lines", "Lines over max_line_bytes, skipped."),
            dropped: c("dropped_lines", "Lines removed by a drop rule."),
            unread_bytes: c("unread_bytes", "Bytes of removed files closed before their end."),
            requests: c("bulk_requests", "_bulk requests sent."),
            files: g("files", "Files followed."),
            open_files: g("open_files", "Files open."),
            queued_bytes: g("queued_bytes", "Bulk bytes read and not yet acknowledged."),
        }
    }
}
