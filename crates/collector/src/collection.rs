//! One collection as the collector runs it: where it comes from, when it runs, what it targets,
//! and the compiled method ([`Probe`]) that collects it. [`Run`] is what one execution knows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::method::Probe;

/// A collection from a plugin's `[collection_<name>]` section, compiled.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The plugin that defines it (the agent API's `ns`).
    pub plugin: String,
    /// Its name, unique within the plugin (the agent API's `repo`).
    pub name: String,
    /// The plugin's directory: scripts run there.
    pub plugin_dir: PathBuf,
    /// `method` as written, upper case (`SCRIPT`, `HTTP`, …).
    pub method: String,
    /// Time between two runs; zero means on demand only (`POST /plugins/run`).
    pub interval: Duration,
    /// Each target is one job per interval.
    pub targets: Vec<String>,
    /// What to collect, for methods that choose (SYSTEM: cpu, memory, …).
    pub items: Vec<String>,
    /// How long one run may take.
    pub timeout: Duration,
    /// Carried with the data and usable as `{var}` placeholders.
    pub correlation_info: BTreeMap<String, String>,
    /// False: defined but never scheduled.
    pub enabled: bool,
    /// The compiled method.
    pub probe: Arc<dyn Probe>,
}

impl Collection {
    /// `<plugin>.<name>`, the collection's id in logs, guards and the disabled set.
    pub fn id(&self) -> String {
        format!("{}.{}", self.plugin, self.name)
    }
}

/// Limits every run shares (from `[collector]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLimits {
    /// After SIGTERM to a timed-out script's group, how long before SIGKILL.
    pub kill_grace: Duration,
    /// After a script exits, how long its pipes may stay open (a grandchild holding them)
    /// before the group is killed and the output taken as it is.
    pub drain: Duration,
    /// Bytes of stdout kept; the rest is read and discarded, and the run fails.
    pub stdout_max: usize,
    /// Bytes of stderr kept for the log.
    pub stderr_max: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            stdout_max: 1 << 20,
            stderr_max: 4096,
        }
    }
}

/// What one execution of a collection against one target knows.
#[derive(Debug, Clone)]
pub struct Run {
    /// The plugin.
    pub plugin: String,
    /// The collection.
    pub collection: String,
    /// The plugin's directory.
    pub plugin_dir: PathBuf,
    /// The target of this run.
    pub target: String,
    /// The collection's items.
    pub items: Vec<String>,
    /// The deadline of this run.
    pub timeout: Duration,
    /// Extra arguments of an on-demand run (`param=`), split like a shell would.
    pub param: Vec<String>,
    /// Placeholder values: the correlation info, then `target`, `plugin`, `collection`.
    pub vars: BTreeMap<String, String>,
    /// Shared limits.
    pub limits: Arc<RunLimits>,
}

impl Run {
    /// A run of `collection` against `target`, with the job's correlation info.
    pub fn new(
        collection: &Collection,
        target: &str,
        correlation_info: &BTreeMap<String, String>,
        limits: Arc<RunLimits>,
    ) -> Self {
        let mut vars = correlation_info.clone();
        vars.insert("target".into(), target.to_string());
        vars.insert("plugin".into(), collection.plugin.clone());
        vars.insert("collection".into(), collection.name.clone());
        Self {
            plugin: collection.plugin.clone(),
            collection: collection.name.clone(),
            plugin_dir: collection.plugin_dir.clone(),
            target: target.to_string(),
            items: collection.items.clone(),
            timeout: collection.timeout,
            param: Vec::new(),
            vars,
            limits,
        }
    }

    /// `template` with every `{name}` whose name is a known variable replaced by its value;
    /// anything else (including `{unknown}`) is kept as written.
    pub fn render(&self, template: &str) -> String {
        ironwork_core::template::render(template, &self.vars)
    }
}
