//! The garbage collector: removes kept files from `trash/` once they are older than the
//! configured age (Metwork's cron job: 24 h), and clears `tmp/` of what no worker will finish.
//!
//! Age is the inode change time: a rename updates it, so a file claimed a minute ago is young
//! however old its data. A claimed file is never deleted: one a live worker holds (its lock)
//! is left alone whatever its age, and an abandoned one older than the tmp age is moved to
//! `trash/<plugin>.<step>/` (its message was lost), where the trash age applies. Staging
//! leftovers without a manifest are deleted. Step directories and `retry/` are never touched:
//! files waiting there are work, not garbage. A transaction manifest (`<id>.routes`) and its
//! staging directory are left for the worker that will finish them, and reported.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Ages after which leftovers go.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Kept files (and their `.tags`) in `trash/*/`.
    pub trash_max_age: Duration,
    /// Leftovers in `tmp/*/`.
    pub tmp_max_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            trash_max_age: Duration::from_secs(24 * 3600),
            tmp_max_age: Duration::from_secs(3600),
        }
    }
}

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Entries removed from `trash/`.
    pub trash: u64,
    /// Entries cleared from `tmp/` (abandoned claims moved to the trash, staging leftovers).
    pub tmp: u64,
}

/// One pass over `data_root` (the data directory).
pub fn collect(data_root: &Path, policy: GcPolicy, now: SystemTime) -> GcReport {
    GcReport {
        trash: sweep(&data_root.join("trash"), policy.trash_max_age, now, None),
        tmp: sweep(
            &data_root.join("tmp"),
            policy.tmp_max_age,
            now,
            Some(&data_root.join("trash")),
        ),
    }
}

/// Clear entries of every `<root>/<step>/` directory older than `max_age`. For `tmp/`,
/// `trash` is given: abandoned claims move there instead of being deleted.
fn sweep(root: &Path, max_age: Duration, now: SystemTime, trash: Option<&Path>) -> u64 {
    let Ok(steps) = std::fs::read_dir(root) else { return 0 };
    let mut removed = 0;
    for step in steps.flatten() {
        let Ok(entries) = std::fs::read_dir(step.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if trash.is_some() {
                let id = name.strip_suffix(".routes").or_else(|| name.strip_suffix(".out"));
                if let Some(id) = id {
                    if step.path().join(format!("{id}.routes")).exists() {
                        tracing::warn!(path = %path.display(), "unfinished routing transaction left for its worker");
                        continue;
                    }
                }
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if age(&meta, now) < max_age {
                continue;
            }
            let result = match trash {
                _ if meta.is_dir() => std::fs::remove_dir_all(&path),
                Some(_) if name.ends_with(".routes.t") => std::fs::remove_file(&path),
                Some(_) if is_held(&step.path(), &name) => continue,
                Some(_) if name.ends_with(".lock") => std::fs::remove_file(&path),
                Some(trash) => {
                    let dest = trash.join(step.file_name());
                    std::fs::create_dir_all(&dest).and_then(|()| std::fs::rename(&path, dest.join(&name)))
                }
                None => std::fs::remove_file(&path),
            };
            match result {
                Ok(()) if trash.is_some() && !meta.is_dir() => {
                    tracing::warn!(path = %path.display(), "abandoned claim moved to the trash");
                    removed += 1;
                }
                Ok(()) => {
                    tracing::info!(path = %path.display(), "garbage collected");
                    removed += 1;
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot garbage collect"),
            }
        }
    }
    removed
}

/// Whether a live worker holds the claim `name` (or the lock file `name` itself).
fn is_held(dir: &Path, name: &str) -> bool {
    let lock = match name.strip_suffix(".lock") {
        Some(_) => dir.join(name),
        None => dir.join(format!("{name}.lock")),
    };
    crate::claim::is_locked(&lock)
}

/// Time since the inode last changed (a rename counts).
pub fn age(meta: &std::fs::Metadata, now: SystemTime) -> Duration {
    use std::os::unix::fs::MetadataExt;
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(
            meta.ctime().max(0) as u64,
            meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    now.duration_since(changed).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_leftovers_go_young_files_and_transactions_stay() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        for d in ["trash/p.s", "tmp/p.s/abc.out", "retry/p.s", "step.p.s"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        for f in [
            "trash/p.s/a",
            "trash/p.s/a.tags",
            "tmp/p.s/x",
            "tmp/p.s/abc.routes",
            "retry/p.s/r",
            "step.p.s/w",
        ] {
            std::fs::write(root.join(f), b"x")?;
        }
        let policy = GcPolicy {
            trash_max_age: Duration::from_secs(100),
            tmp_max_age: Duration::from_secs(10),
        };
        let now = SystemTime::now();
        assert_eq!(collect(root, policy, now), GcReport::default());
        let later = now + Duration::from_secs(50);
        std::fs::write(root.join("tmp/p.s/held"), b"x")?;
        let _held = crate::claim::lock(&root.join("tmp/p.s/held.lock"))?;
        assert_eq!(collect(root, policy, later), GcReport { trash: 0, tmp: 1 });
        assert!(!root.join("tmp/p.s/x").exists());
        assert!(
            root.join("trash/p.s/x").exists(),
            "an abandoned claim is kept, not deleted"
        );
        assert!(
            root.join("tmp/p.s/held").exists(),
            "a claim a worker holds is left alone"
        );
        assert!(root.join("tmp/p.s/abc.routes").exists() && root.join("tmp/p.s/abc.out").exists());
        let much_later = now + Duration::from_secs(500);
        assert_eq!(collect(root, policy, much_later), GcReport { trash: 3, tmp: 0 });
        assert!(root.join("retry/p.s/r").exists() && root.join("step.p.s/w").exists());
        Ok(())
    }
}
