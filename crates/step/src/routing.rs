//! Moving a claimed file on — to other steps, to the trash, to the retry directory — so that a
//! worker killed at any instant leaves either nothing done or something a replay completes,
//! never a duplicate and never a loss.
//!
//! One destination is a single `rename(2)`: atomic by itself. Several destinations (or extra
//! files such as `.tags`) go through a small transaction in the step's tmp directory:
//! 1. stage every output in `<id>.out/` (hard links, copies, or bytes);
//! 2. copy the tags to every destination path;
//! 3. write the manifest `<id>.routes` (staged path → final path, plus any delayed message):
//!    this is the commit point;
//! 4. rename each staged file into place, push the delayed message, remove the source.
//!
//! A replay that finds `<id>.routes` redoes step 4 only: renames whose staged file is gone
//! already happened, and re-adding the same delayed message is a no-op.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use ironwork_core::Redis;
use serde::{Deserialize, Serialize};

use crate::tags::TagStore;

/// How a route produces its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The file itself (a move), or a hard link to it: destinations share the data.
    Link,
    /// An independent copy of the file's data.
    Copy,
    /// A small file written from memory (e.g. a `.tags` file). Carries no tags.
    Bytes(Vec<u8>),
}

/// One output of a file: `source` ends up at `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What to put there.
    pub source: Source,
    /// The final path.
    pub dest: PathBuf,
}

/// A message to add to a delayed sorted set once the routes are in place (a retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delayed {
    /// `<queue>.delayed`.
    pub key: String,
    /// When it is due, epoch seconds (the score).
    pub due: f64,
    /// The message (the member).
    pub member: String,
}

/// The commit record of a multi-route transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Staged path → final path.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// Pushed once every rename is done.
    pub delayed: Option<Delayed>,
}

/// Applies routes for one step's claimed files.
#[derive(Debug)]
pub struct Router {
    redis: Redis,
    tags: TagStore,
    tmp_dir: PathBuf,
    known_dirs: HashSet<PathBuf>,
    /// Tag hashes of files that left tmp, deleted in one round trip per batch by
    /// [`Router::flush`] (a crash before that only leaves them to their TTL).
    stale_tags: Vec<PathBuf>,
}

impl Router {
    /// A router for files claimed into `tmp_dir`.
    pub fn new(redis: Redis, tags: TagStore, tmp_dir: PathBuf) -> Self {
        Self {
            redis,
            tags,
            tmp_dir,
            known_dirs: HashSet::new(),
            stale_tags: Vec::new(),
        }
    }

    /// The tag store routes copy tags with.
    pub fn tags(&self) -> &TagStore {
        &self.tags
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.tmp_dir.join(format!("{id}.routes"))
    }

    fn stage_dir(&self, id: &str) -> PathBuf {
        self.tmp_dir.join(format!("{id}.out"))
    }

    /// Whether claim `id` stopped after its commit point, so [`Router::resume`] must finish it.
    pub fn is_committed(&self, id: &str) -> bool {
        self.manifest_path(id).exists()
    }

    /// Route the claimed file `src` (claim `id`): write `pending` tags, deliver `routes`, push
    /// `delayed`, then remove `src` and its tags. With no routes the file is simply removed.
    pub async fn commit(
        &mut self,
        id: &str,
        src: &Path,
        pending: &[(String, String)],
        mut routes: Vec<Route>,
        delayed: Option<Delayed>,
    ) -> anyhow::Result<()> {
        if !routes.is_empty() && std::fs::symlink_metadata(src).is_err() {
            // The step (or a command it left behind) already moved the file: nothing to route.
            tracing::warn!(file = %src.display(), "file vanished before it could be routed");
            routes.clear();
        }
        let carrying: Vec<&Path> = routes
            .iter()
            .filter(|r| !matches!(r.source, Source::Bytes(_)))
            .map(|r| r.dest.as_path())
            .collect();
        if !pending.is_empty() || !carrying.is_empty() {
            self.tags.write_and_copy(src, pending, &carrying).await?;
        }
        // One route taking the file itself: a rename is already atomic.
        if routes.len() == 1 && delayed.is_none() && !matches!(routes[0].source, Source::Bytes(_)) {
            let dest = routes.remove(0).dest;
            self.ensure_parent(&dest)?;
            match std::fs::rename(src, &dest) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy_across(src, &dest)?,
                Err(e) => return Err(io_context(e, "move", src, &dest)),
            }
            self.stale_tags.push(src.to_path_buf());
            return Ok(());
        }
        if routes.is_empty() && delayed.is_none() {
            remove_if_exists(src)?;
            self.stale_tags.push(src.to_path_buf());
            return Ok(());
        }
        let stage = self.stage_dir(id);
        if stage.exists() {
            std::fs::remove_dir_all(&stage)?;
        }
        std::fs::create_dir_all(&stage)?;
        // Only a file with several outputs needs real copies; one output may take the file.
        let shared = routes.iter().filter(|r| !matches!(r.source, Source::Bytes(_))).count() > 1;
        let mut manifest = Manifest {
            renames: Vec::with_capacity(routes.len()),
            delayed,
        };
        for (i, route) in routes.iter().enumerate() {
            let staged = stage.join(i.to_string());
            match &route.source {
                Source::Copy if shared => {
                    std::fs::copy(src, &staged).map_err(|e| io_context(e, "copy", src, &staged))?;
                }
                Source::Link | Source::Copy => {
                    if let Err(e) = std::fs::hard_link(src, &staged) {
                        tracing::debug!(error = %e, "hard link failed, copying");
                        std::fs::copy(src, &staged).map_err(|e| io_context(e, "copy", src, &staged))?;
                    }
                }
                Source::Bytes(bytes) => std::fs::write(&staged, bytes)?,
            }
            manifest.renames.push((staged, route.dest.clone()));
        }
        let path = self.manifest_path(id);
        let part = path.with_extension("routes.t");
        std::fs::write(&part, serde_json::to_vec(&manifest)?)?;
        std::fs::rename(&part, &path)?;
        self.finish(id, src, manifest).await
    }

    /// Finish a transaction a previous run committed but did not complete.
    pub async fn resume(&mut self, id: &str, src: &Path) -> anyhow::Result<()> {
        let path = self.manifest_path(id);
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path)?)?;
        tracing::info!(claim = id, "finishing routes committed by a previous run");
        self.finish(id, src, manifest).await
    }

    async fn finish(&mut self, id: &str, src: &Path, manifest: Manifest) -> anyhow::Result<()> {
        for (staged, dest) in &manifest.renames {
            if !staged.exists() {
                continue;
            }
            self.ensure_parent(dest)?;
            match std::fs::rename(staged, dest) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    copy_across(staged, dest)?;
                }
                Err(e) => return Err(io_context(e, "move", staged, dest)),
            }
        }
        if let Some(d) = &manifest.delayed {
            self.redis
                .retry("delay", |mut c| async move {
                    redis::cmd("ZADD")
                        .arg(&d.key)
                        .arg(d.due)
                        .arg(&d.member)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
        }
        remove_if_exists(src)?;
        self.stale_tags.push(src.to_path_buf());
        let stage = self.stage_dir(id);
        if stage.exists() {
            std::fs::remove_dir_all(&stage)?;
        }
        remove_if_exists(&self.manifest_path(id))?;
        Ok(())
    }

    /// Delete the tag hashes of the files routed since the last call, in one round trip.
    pub async fn flush(&mut self) -> Result<(), redis::RedisError> {
        if self.stale_tags.is_empty() {
            return Ok(());
        }
        let paths = std::mem::take(&mut self.stale_tags);
        self.tags.delete_all(&paths).await
    }

    fn ensure_parent(&mut self, dest: &Path) -> io::Result<()> {
        let Some(dir) = dest.parent() else { return Ok(()) };
        if !self.known_dirs.contains(dir) {
            std::fs::create_dir_all(dir)?;
            self.known_dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }
}

/// Move across filesystems: copy beside the destination under a hidden name, rename it into
/// place, then remove the source.
fn copy_across(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = dest.with_file_name(format!(".{name}.ironwork-part"));
    std::fs::copy(src, &part).map_err(|e| io_context(e, "copy", src, &part))?;
    std::fs::rename(&part, dest).map_err(|e| io_context(e, "move", &part, dest))?;
    remove_if_exists(src)?;
    Ok(())
}

/// Remove a file; one already gone is fine.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn io_context(e: io::Error, action: &str, from: &Path, to: &Path) -> anyhow::Error {
    anyhow::anyhow!("cannot {action} {} to {}: {e}", from.display(), to.display())
}
