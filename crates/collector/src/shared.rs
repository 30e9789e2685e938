//! What the manager, the consumer and the agent API of one process share: Redis, the settings,
//! the current definitions (swapped whole on reload), the counters and the API token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ironwork_core::config::ConfigErrors;
use ironwork_core::Redis;
use tokio::sync::watch;

use crate::collection::Collection;
use crate::config::{Config, Settings};
use crate::stats::Stats;

/// The collections in force, by id (`<plugin>.<name>`).
#[derive(Debug, Default)]
pub struct Definitions {
    /// In file order.
    pub collections: Vec<Arc<Collection>>,
    by_id: BTreeMap<String, Arc<Collection>>,
}

impl Definitions {
    /// Index `collections`.
    pub fn new(collections: Vec<Arc<Collection>>) -> Self {
        let by_id = collections.iter().map(|c| (c.id(), c.clone())).collect();
        Self { collections, by_id }
    }

    /// The collection `name` of `plugin`.
    pub fn get(&self, plugin: &str, name: &str) -> Option<&Arc<Collection>> {
        self.by_id.get(&format!("{plugin}.{name}"))
    }

    /// The plugins that define at least one collection, sorted.
    pub fn plugins(&self) -> Vec<String> {
        let mut v: Vec<String> = self.collections.iter().map(|c| c.plugin.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// One collector process's shared state.
#[derive(Debug)]
pub struct Shared {
    /// The Redis every queue lives in.
    pub redis: Redis,
    /// `[collector]` as loaded at start (a reload changes the collections only).
    pub settings: Settings,
    /// The file definitions are reloaded from.
    pub config_path: PathBuf,
    /// The definitions in force.
    pub defs: watch::Sender<Arc<Definitions>>,
    /// Counters.
    pub stats: Stats,
    /// The bearer token of the API's mutating calls.
    pub api_token: String,
    /// When this process started.
    pub started: Instant,
    /// This process's id in guards and logs: `<host>.<pid>`.
    pub id: String,
}

impl Shared {
    /// The definitions in force now.
    pub fn definitions(&self) -> Arc<Definitions> {
        self.defs.borrow().clone()
    }

    /// Read the config file again and put its collections in force. On error nothing changes
    /// and every error is returned (and logged).
    pub fn reload(&self) -> Result<usize, ConfigErrors> {
        match Config::load(&self.config_path) {
            Ok(config) => {
                let n = config.collections.len();
                if config.settings != self.settings {
                    tracing::warn!(
                        path = %self.config_path.display(),
                        "[collector] settings changed: they apply at the next restart (collections apply now)"
                    );
                }
                self.defs.send_replace(Arc::new(Definitions::new(config.collections)));
                tracing::info!(path = %self.config_path.display(), collections = n, "definitions reloaded");
                Ok(n)
            }
            Err(errors) => {
                tracing::error!(path = %self.config_path.display(), errors = %errors, "reload refused; the previous definitions stay in force");
                Err(errors)
            }
        }
    }
}
