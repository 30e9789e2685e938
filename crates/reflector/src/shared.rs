//! What the tasks of one reflector process share: Redis, the settings, the reflections in force
//! (swapped whole on reload), the metric servers, the counters.

use std::path::PathBuf;
use std::sync::Arc;

use ironwork_core::config::ConfigErrors;
use ironwork_core::Redis;
use tokio::sync::watch;

use crate::config::{Config, Settings};
use crate::destination::Destination;
use crate::reflection::Reflections;
use crate::stats::Stats;

/// Dead-letter lists are trimmed to this many entries (newest kept).
pub const DEAD_CAP: u64 = 10_000;

/// One reflector process's shared state.
#[derive(Debug)]
pub struct Shared {
    /// The Redis every queue lives in.
    pub redis: Redis,
    /// `[reflector]` as loaded at start (a reload changes the reflections only).
    pub settings: Settings,
    /// The file reflections are reloaded from.
    pub config_path: PathBuf,
    /// The reflections in force.
    pub reflections: watch::Sender<Arc<Reflections>>,
    /// The metric servers, each receiving every point.
    pub destinations: Vec<Arc<Destination>>,
    /// Counters.
    pub stats: Stats,
    /// This process's id in consumer names and logs: `<host>.<pid>`.
    pub id: String,
}

impl Shared {
    /// The reflections in force now.
    pub fn reflections(&self) -> Arc<Reflections> {
        self.reflections.borrow().clone()
    }

    /// Read the config file again and put its reflections in force (a new tree, swapped in
    /// whole: a batch is reflected entirely by the old set or entirely by the new one). On error
    /// nothing changes and every error is returned (and logged).
    pub fn reload(&self) -> Result<usize, ConfigErrors> {
        match Config::load(&self.config_path) {
            Ok(config) => {
                let n = config.reflections.len();
                if config.settings != self.settings {
                    tracing::warn!(
                        path = %self.config_path.display(),
                        "[reflector] settings changed: they apply at the next restart (reflections apply now)"
                    );
                }
                self.reflections
                    .send_replace(Arc::new(Reflections::new(config.reflections)));
                tracing::info!(path = %self.config_path.display(), reflections = n, "reflections reloaded");
                Ok(n)
            }
            Err(errors) => {
                tracing::error!(path = %self.config_path.display(), errors = %errors, "reload refused; the previous reflections stay in force");
                Err(errors)
            }
        }
    }
}
