//! The library face of a step: the [`Step`] trait a Rust-native step implements, and the
//! [`StepFile`] it is handed — a claimed file, its tags, and the routing helpers (move, copy or
//! hard-link to another plugin step, as Metwork's `move_to_plugin_step` and friends).
//!
//! Routes a step asks for are applied only after `process` succeeds, atomically (see
//! [`crate::routing`]); on failure they are discarded and the failure policy applies.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::layout::{DataDir, StepName};
use crate::routing::{Route, Source};
use crate::tags::{Tags, ORIGINAL_BASENAME, ORIGINAL_UID};

/// Why a step failed on a file. The reason is logged and recorded in the file's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One line an operator can act on.
    pub reason: String,
}

impl Failure {
    /// A failure with `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A step: what happens to each file popped from `step.<plugin>.<step>`.
pub trait Step {
    /// Process one claimed file. `Ok` means done: the routes it asked for are applied and the
    /// file leaves tmp. `Err` applies the retry and failure policies.
    fn process(&mut self, file: &mut StepFile) -> impl Future<Output = Result<(), Failure>>;

    /// Called about once a second and between batches (reload rules, flush state, …).
    fn tick(&mut self) {}
}

/// Which name a routed file gets in its destination (Metwork's `keep_original_basename`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basename {
    /// A fresh unique name (Metwork's `False`, the default).
    #[default]
    New,
    /// The file's current base name (`True`).
    Current,
    /// The `first.core.original_uid` tag (`None`).
    OriginalUid,
}

/// A file claimed by a step, in `tmp/<plugin>.<step>/`.
#[derive(Debug)]
pub struct StepFile {
    pub(crate) path: PathBuf,
    pub(crate) claimed_from: PathBuf,
    pub(crate) claim_id: String,
    pub(crate) plugin: Arc<str>,
    pub(crate) step: Arc<str>,
    pub(crate) tags: Tags,
    pub(crate) pending: Vec<(String, String)>,
    pub(crate) routes: Vec<Route>,
    pub(crate) data: Arc<DataDir>,
}

impl StepFile {
    /// Where the file is now (in the step's tmp directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the file was when the step claimed it.
    pub fn claimed_from(&self) -> &Path {
        &self.claimed_from
    }

    /// The file's base name as it arrived (`first.core.original_basename`, else the claimed name).
    pub fn original_basename(&self) -> &str {
        self.tags.get(ORIGINAL_BASENAME).unwrap_or_else(|| {
            self.claimed_from
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        })
    }

    /// The unique id this claim gave the file.
    pub fn claim_id(&self) -> &str {
        &self.claim_id
    }

    /// The file's tags as they were when it entered the step, plus those set since.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The value of tag `name`.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags.get(name)
    }

    /// Set `<n>.<plugin>.<step>.<name>` and `latest.<plugin>.<step>.<name>` (Metwork's `set_tag`).
    pub fn set_tag(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        let n = self.tags.step_counter();
        for key in [
            format!("{n}.{}.{}.{name}", self.plugin, self.step),
            format!("latest.{}.{}.{name}", self.plugin, self.step),
        ] {
            self.tags.0.insert(key.clone(), value.clone());
            self.pending.push((key, value.clone()));
        }
    }

    /// The directory a plugin step is fed from.
    pub fn step_dir(&self, target: &StepName) -> PathBuf {
        self.data.step_dir(&target.plugin, &target.step)
    }

    /// Move the file into `target`'s directory (Metwork's `move_to_plugin_step`).
    pub fn move_to_step(&mut self, target: &StepName, name: Basename) {
        let dest = self.step_dir(target).join(self.dest_name(name));
        self.route(Source::Link, dest);
    }

    /// Copy the file into `target`'s directory (`copy_to_plugin_step`).
    pub fn copy_to_step(&mut self, target: &StepName, name: Basename) {
        let dest = self.step_dir(target).join(self.dest_name(name));
        self.route(Source::Copy, dest);
    }

    /// Hard-link the file into `target`'s directory (`hardlink_to_plugin_step`); falls back
    /// to a copy across filesystems.
    pub fn hardlink_to_step(&mut self, target: &StepName, name: Basename) {
        let dest = self.step_dir(target).join(self.dest_name(name));
        self.route(Source::Link, dest);
    }

    /// Move the file into any directory, as `file_name`.
    pub fn move_to_dir(&mut self, dir: &Path, file_name: &str) {
        self.route(Source::Link, dir.join(file_name));
    }

    /// Copy the file into any directory, as `file_name`.
    pub fn copy_to_dir(&mut self, dir: &Path, file_name: &str) {
        self.route(Source::Copy, dir.join(file_name));
    }

    /// Write `bytes` to `dest` along with the file's routes (e.g. a side-car file).
    pub fn write_beside(&mut self, dest: PathBuf, bytes: Vec<u8>) {
        self.route(Source::Bytes(bytes), dest);
    }

    fn route(&mut self, source: Source, dest: PathBuf) {
        // The same destination twice is one output (Metwork's actions are a set).
        if !self.routes.iter().any(|r| r.dest == dest) {
            self.routes.push(Route { source, dest });
        }
    }

    fn dest_name(&self, name: Basename) -> String {
        match name {
            Basename::New => self.claim_id.clone(),
            Basename::Current => self
                .claimed_from
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.claim_id.clone()),
            Basename::OriginalUid => self.tags.get(ORIGINAL_UID).unwrap_or(&self.claim_id).to_string(),
        }
    }
}
