//! The collector's counters: `/metrics`, `GET /me/status` and the logs read the same values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ironwork_core::metrics::{Counter, Gauge, Metrics};

/// Every counter of one collector process.
#[derive(Debug, Clone)]
pub struct Stats {
    /// The registry `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// 1 while this process holds the manager lease.
    pub leader: Gauge,
    /// Jobs the manager put on `collector.job.queue`.
    pub jobs_enqueued: Counter,
    /// Stale jobs the manager cleared from the queue (consumers did not keep up).
    pub jobs_discarded: Counter,
    /// Slots the manager could not serve in time and skipped.
    pub slots_skipped: Counter,
    /// Due jobs not enqueued because their collection is disabled.
    pub jobs_disabled: Counter,
    /// Jobs popped by this process's consumer.
    pub jobs_taken: Counter,
    /// Jobs for a collection this process does not know (definitions changed).
    pub jobs_unknown: Counter,
    /// Jobs that were not a `CollectionJob` (dead-lettered).
    pub jobs_dead: Counter,
    /// Runs skipped because the previous run of the same collection and target was still going.
    pub runs_skipped: Counter,
    /// Runs that succeeded.
    pub runs_ok: Counter,
    /// Runs that failed (timeout, exit status, bad output, connection…).
    pub runs_failed: Counter,
    /// Runs in progress.
    pub runs_active: Gauge,
    /// Results pushed to `collector.data.queue`.
    pub results_pushed: Counter,
    /// Points pushed to `metrics.send.queue` by `POST /post`.
    pub posted_points: Counter,
    /// How late the manager enqueued jobs after their slot.
    pub lateness: Arc<Lateness>,
}

/// Upper bounds (ms) of the lateness buckets.
pub const LATENESS_BOUNDS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// A histogram of enqueue lateness (time from a job's slot to its push), in fixed buckets.
#[derive(Debug, Default)]
pub struct Lateness {
    /// One count per bound of [`LATENESS_BOUNDS_MS`], then one for anything later.
    buckets: [AtomicU64; 11],
}

impl Lateness {
    /// Count one job enqueued `ms` after its slot.
    pub fn record(&self, ms: u64) {
        let i = LATENESS_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENESS_BOUNDS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts, Prometheus style: `(le, count)`, the last with `le = None` (+Inf).
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            out.push((LATENESS_BOUNDS_MS.get(i).copied(), total));
        }
        out
    }

    /// The smallest bucket bound at or under which `q` (0–1) of the jobs were enqueued;
    /// `None` without data or when that quantile is past the last bound.
    pub fn quantile_bound_ms(&self, q: f64) -> Option<u64> {
        let c = self.cumulative();
        let total = c.last().map(|x| x.1).unwrap_or(0);
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        c.into_iter().find(|(_, n)| *n >= want).and_then(|(le, _)| le)
    }
}

impl Stats {
    /// A fresh set of counters.
    pub fn new() -> Self {
        let m = Metrics::new();
        let c = |name: &str, help: &str| m.counter(name, help, &[]);
        Self {
            leader: m.gauge(
                "collector_leader",
                "1 while this process runs the collection manager",
                &[],
            ),
            jobs_enqueued: c("collector_jobs_enqueued_total", "jobs put on collector.job.queue"),
            jobs_discarded: c(
                "collector_jobs_discarded_total",
                "stale jobs cleared from collector.job.queue",
            ),
            slots_skipped: c(
                "collector_slots_skipped_total",
                "schedule slots skipped because the manager was late",
            ),
            jobs_disabled: c("collector_jobs_disabled_total", "due jobs of disabled collections"),
            jobs_taken: c("collector_jobs_taken_total", "jobs popped by this process"),
            jobs_unknown: c(
                "collector_jobs_unknown_total",
                "jobs for collections this process does not define",
            ),
            jobs_dead: c("collector_jobs_dead_total", "malformed jobs dead-lettered"),
            runs_skipped: c(
                "collector_runs_skipped_total",
                "runs skipped: the previous one was still going",
            ),
            runs_ok: c("collector_runs_ok_total", "runs that succeeded"),
            runs_failed: c("collector_runs_failed_total", "runs that failed"),
            runs_active: m.gauge("collector_runs_active", "runs in progress", &[]),
            results_pushed: c(
                "collector_results_pushed_total",
                "results pushed to collector.data.queue",
            ),
            posted_points: c(
                "collector_posted_points_total",
                "points pushed to metrics.send.queue by POST /post",
            ),
            lateness: Arc::new(Lateness::default()),
            metrics: m,
        }
    }

    /// The counters as JSON, for `GET /me/status`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "jobs_enqueued": self.jobs_enqueued.get(),
            "jobs_discarded": self.jobs_discarded.get(),
            "slots_skipped": self.slots_skipped.get(),
            "jobs_disabled": self.jobs_disabled.get(),
            "jobs_taken": self.jobs_taken.get(),
            "jobs_unknown": self.jobs_unknown.get(),
            "jobs_dead": self.jobs_dead.get(),
            "runs_skipped": self.runs_skipped.get(),
            "runs_ok": self.runs_ok.get(),
            "runs_failed": self.runs_failed.get(),
            "runs_active": self.runs_active.get(),
            "results_pushed": self.results_pushed.get(),
            "posted_points": self.posted_points.get(),
            "schedule_lateness_ms": {
                "buckets": self.lateness.cumulative().into_iter().map(|(le, n)| {
                    serde_json::json!({ "le": le.map_or("+Inf".to_string(), |b| b.to_string()), "count": n })
                }).collect::<Vec<_>>(),
                "p50_le": self.lateness.quantile_bound_ms(0.50),
                "p99_le": self.lateness.quantile_bound_ms(0.99),
            },
        })
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles_are_bucket_bounds() {
        let l = Lateness::default();
        assert_eq!(l.quantile_bound_ms(0.99), None);
        for _ in 0..98 {
            l.record(0);
        }
        l.record(7);
        l.record(3_000);
        assert_eq!(l.quantile_bound_ms(0.5), Some(1));
        assert_eq!(l.quantile_bound_ms(0.99), Some(10));
        assert_eq!(l.quantile_bound_ms(1.0), None, "past the last bound");
        assert_eq!(l.cumulative().last(), Some(&(None, 100)));
    }
}
