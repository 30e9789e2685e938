//! Collection methods. Each is a Rust function registered by name: [`REGISTRY`] maps a
//! section's `method` to the function that compiles the section's own keys into a [`Probe`],
//! and the probe collects one target per [`Run`]. Adding a built-in collector is one file and
//! one line in the registry.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ironwork_core::config::SectionReader;
use ironwork_core::messages::{epoch_seconds, DataPoint};

use crate::collection::Run;

pub mod http;
pub mod process;
pub mod script;
pub mod snmp;
pub mod system;
pub mod tcp;

/// What a probe returns: the points, or why the run failed.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// The result of one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// What was measured (kept even when the run also failed, e.g. a script that printed valid
    /// data and then exited 1).
    pub points: Vec<DataPoint>,
    /// Why the run failed, if it did.
    pub failure: Option<Failure>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `timeout`, `exit`, `output`, `spawn`, `connect`, `protocol`, …: the `reason` tag of the
    /// `plugin.result` point.
    pub kind: &'static str,
    /// For the log and the data's `error` field.
    pub message: String,
}

impl Outcome {
    /// Points and no failure.
    pub fn ok(points: Vec<DataPoint>) -> Self {
        Self { points, failure: None }
    }

    /// A failure without points.
    pub fn failed(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            points: Vec::new(),
            failure: Some(Failure {
                kind,
                message: message.into(),
            }),
        }
    }
}

/// A compiled collection method: collects one target.
pub trait Probe: Send + Sync + std::fmt::Debug {
    /// Run once against `run.target`, within `run.timeout`.
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a>;
}

/// Reads a method's own keys from its section (every problem reported through the reader) and
/// returns the probe; the caller refuses the section when the reader recorded errors.
pub type Compile = fn(&mut SectionReader<'_>) -> Arc<dyn Probe>;

/// Every method, by the name a section's `method` gives (case-insensitive).
pub const REGISTRY: &[(&str, Compile)] = &[
    ("SCRIPT", script::compile),
    ("HTTP", http::compile),
    ("TCP", tcp::compile),
    ("PROCESS", process::compile),
    ("SYSTEM", system::compile),
    ("SNMP", snmp::compile),
];

/// The compile function registered as `name`.
pub fn lookup(name: &str) -> Option<(&'static str, Compile)> {
    REGISTRY
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(n, c)| (n, c))
}

/// A point measured now, tagged with the run's target: what built-in probes emit.
pub fn point(run: &Run, name: impl Into<String>, value: impl Into<serde_json::Value>) -> DataPoint {
    point_with(run, name, value, BTreeMap::new())
}

/// [`point`] with extra tags.
pub fn point_with(
    run: &Run,
    name: impl Into<String>,
    value: impl Into<serde_json::Value>,
    mut tags: BTreeMap<String, String>,
) -> DataPoint {
    if !run.target.is_empty() {
        tags.entry("target".into()).or_insert_with(|| run.target.clone());
    }
    DataPoint {
        name: name.into(),
        timestamp: epoch_seconds(),
        tags,
        value: value.into(),
    }
}

/// A comma- or whitespace-separated list, empty items dropped.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}
