//! A small metrics registry rendered as Prometheus text: counters and gauges, with labels.
//!
//! Daemons register their series once at start and keep the handles; updating one is an atomic
//! add, with no lock or allocation on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (queue depth, processes running).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Add `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Value {
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug)]
struct Series {
    labels: String,
    value: Value,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: &'static str,
    series: Vec<Series>,
}

/// The registry of one daemon. Share it as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    // A std Mutex: taken only to register a series or render, never across an await.
    families: Mutex<Vec<Family>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Register (or find) the counter `name{labels}`.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        match self.register(name, help, "counter", labels, || Value::Counter(Counter::default())) {
            Value::Counter(c) => c,
            Value::Gauge(_) => Counter::default(),
        }
    }

    /// Register (or find) the gauge `name{labels}`.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.register(name, help, "gauge", labels, || Value::Gauge(Gauge::default())) {
            Value::Gauge(g) => g,
            Value::Counter(_) => Gauge::default(),
        }
    }

    fn register(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Value,
    ) -> Value {
        let labels = render_labels(labels);
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let idx = match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    series: Vec::new(),
                });
                families.len() - 1
            }
        };
        let family = &mut families[idx];
        if let Some(s) = family.series.iter().find(|s| s.labels == labels) {
            return s.value.clone_handle();
        }
        let value = make();
        let handle = value.clone_handle();
        family.series.push(Series { labels, value });
        handle
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for f in families.iter() {
            let _ = writeln!(
                out,
                "# HELP {} {}",
                f.name,
                f.help.replace('\\', "\\\\").replace('\n', "\\n")
            );
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for s in &f.series {
                let v = match &s.value {
                    Value::Counter(c) => c.get().to_string(),
                    Value::Gauge(g) => g.get().to_string(),
                };
                let _ = writeln!(out, "{}{} {}", f.name, s.labels, v);
            }
        }
        out
    }
}

impl Value {
    fn clone_handle(&self) -> Value {
        match self {
            Value::Counter(c) => Value::Counter(c.clone()),
            Value::Gauge(g) => Value::Gauge(g.clone()),
        }
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        let pushed = m.counter(
            "ironwork_queue_pushed_total",
            "Messages pushed.",
            &[("queue", "step.a.b")],
        );
        pushed.add(3);
        let again = m.counter(
            "ironwork_queue_pushed_total",
            "Messages pushed.",
            &[("queue", "step.a.b")],
        );
        again.inc();
        let depth = m.gauge("ironwork_queue_depth", "Messages waiting.", &[("queue", "q\"x")]);
        depth.set(-2);
        let text = m.render();
        assert_eq!(
            text,
            "# HELP ironwork_queue_pushed_total Messages pushed.\n# TYPE ironwork_queue_pushed_total counter\n\
             ironwork_queue_pushed_total{queue=\"step.a.b\"} 4\n\
             # HELP ironwork_queue_depth Messages waiting.\n# TYPE ironwork_queue_depth gauge\n\
             ironwork_queue_depth{queue=\"q\\\"x\"} -2\n"
        );
    }
}
