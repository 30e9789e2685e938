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

impl From<Failure> for Outcome {
    /// A failure without points.
    fn from(failure: Failure) -> Self {
        Self {
            points: Vec::new(),
            failure: Some(failure),
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

pub use ironwork_core::config::split_list;

/// Shared by the methods' unit tests: a run and a section compiled from text.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use ironwork_core::config::{Report, UnknownKeys};
    use ironwork_core::ini::Ini;

    use super::{Compile, Probe};
    use crate::collection::{Run, RunLimits};

    /// A run of `test.probe` against `target` with a 2 s deadline and no variables but `target`.
    pub fn run(target: &str) -> Run {
        Run {
            plugin: "test".into(),
            collection: "probe".into(),
            plugin_dir: std::env::temp_dir(),
            target: target.into(),
            items: Vec::new(),
            timeout: Duration::from_secs(2),
            param: Vec::new(),
            vars: [("target".to_string(), target.to_string())].into_iter().collect(),
            limits: Arc::new(RunLimits::default()),
        }
    }

    /// `keys` (one `key = value` per line) compiled as a section; the probe and every error
    /// (unknown keys included), rendered.
    pub fn compile(compile: Compile, keys: &str) -> (Arc<dyn Probe>, Vec<String>) {
        let path = Path::new("test.ini");
        let ini = Ini::parse(path, &format!("[collection_probe]\n{keys}\n")).expect("INI syntax");
        let mut report = Report::default();
        let mut r = report.section(path, &ini.sections[0]);
        let probe = compile(&mut r);
        r.finish(UnknownKeys::Error);
        let errors = report.errors.0.iter().map(ToString::to_string).collect();
        (probe, errors)
    }
}
