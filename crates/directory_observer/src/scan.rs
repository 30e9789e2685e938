//! Directory scans: what to rescan ([`Rescans`], flagged from the inotify thread and the
//! publisher) and the listing itself ([`list`]: filtered regular files, oldest mtime first).
//!
//! A scan is how the observer recovers from everything inotify cannot tell it: files present
//! at start, a kernel queue overflow, a directory deleted and recreated, a new subdirectory
//! filled before its watch existed, events dropped while Redis was away, and files that arrive
//! without a watched event (a `link()` fires only IN_CREATE). Scans post `exists`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::watch::Root;

/// What part of a watched tree to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The configured directory (and, when recursive, everything below it).
    Whole,
    /// These directories (and what is below them): new subdirectories of a recursive tree.
    Dirs(Vec<PathBuf>),
}

impl Scope {
    /// Widen `self` to also cover `other`.
    pub fn merge(&mut self, other: Scope) {
        match (&mut *self, other) {
            (Scope::Whole, _) => {}
            (_, Scope::Whole) => *self = Scope::Whole,
            (Scope::Dirs(mine), Scope::Dirs(theirs)) => {
                for d in theirs {
                    if !mine.contains(&d) {
                        mine.push(d);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Flags {
    all: bool,
    roots: HashMap<u64, Scope>,
}

/// Rescan requests, shared by the inotify thread (overflow, watch re-added, new subdirectory,
/// batch dropped) and the async side that runs the scans. Requests coalesce; none is lost.
#[derive(Debug, Default)]
pub struct Rescans {
    flags: Mutex<Flags>,
    notify: Notify,
}

impl Rescans {
    /// Ask for `scope` of root `root` to be scanned.
    pub fn flag(&self, root: u64, scope: Scope) {
        {
            let mut f = self.flags.lock().unwrap_or_else(|p| p.into_inner());
            match f.roots.get_mut(&root) {
                Some(s) => s.merge(scope),
                None => {
                    f.roots.insert(root, scope);
                }
            }
        }
        self.notify.notify_one();
    }

    /// Ask for every root to be scanned whole (after a kernel queue overflow).
    pub fn flag_all(&self) {
        self.flags.lock().unwrap_or_else(|p| p.into_inner()).all = true;
        self.notify.notify_one();
    }

    /// Take the requests made so far: (every root?, per-root scopes).
    pub fn take(&self) -> (bool, HashMap<u64, Scope>) {
        let mut f = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut f.all), std::mem::take(&mut f.roots))
    }

    /// Resolves once a request was made since the last time it resolved.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// One file a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its directory, as written in messages.
    pub dir: Arc<str>,
    /// Its base name.
    pub name: String,
    /// Its full path (with `mtime`, the key of partial-scan bookkeeping).
    pub path: PathBuf,
    /// Last modification time: scans post oldest first.
    pub mtime: SystemTime,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Regular files that pass the filters, oldest mtime first.
    pub files: Vec<Found>,
    /// Entries skipped because their name is not UTF-8.
    pub skipped_names: u64,
}

/// List `scope` of `root`: regular files (symlinks followed) passing the root's filters, sorted
/// by mtime then path, and subdirectories walked when the root is recursive. Blocking: run it
/// on a blocking thread. Directories that vanish meanwhile are skipped.
pub fn list(root: &Root, scope: &Scope) -> Listing {
    let base = root.step.directory.as_path();
    let mut stack: Vec<(PathBuf, Arc<str>)> = match scope {
        Scope::Whole => vec![(base.to_path_buf(), root.label.clone())],
        Scope::Dirs(dirs) => dirs
            .iter()
            .filter_map(|d| label_for(root, d).map(|l| (d.clone(), l)))
            .collect(),
    };
    let mut out = Listing::default();
    while let Some((dir, label)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(dir = %dir.display(), "directory vanished before its scan");
                continue;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list directory");
                continue;
            }
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                out.skipped_names += 1;
                tracing::debug!(dir = %dir.display(), name = ?file_name, "file name is not UTF-8, not posted");
                continue;
            };
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if root.step.recursive {
                    let sub: Arc<str> = join_label(&label, name).into();
                    stack.push((path, sub));
                }
                continue;
            }
            if !root.step.filter.accepts(name) {
                continue;
            }
            // Follows symlinks: a link to a regular file is posted, as Metwork does.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            out.files.push(Found {
                dir: label.clone(),
                name: name.to_string(),
                path,
                mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    out.files
        .sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
    out
}

/// `parent/name` for message directories.
pub fn join_label(parent: &str, name: &str) -> String {
    let parent = parent.trim_end_matches('/');
    format!("{parent}/{name}")
}

/// The message directory of `dir`, a directory inside `root`.
fn label_for(root: &Root, dir: &Path) -> Option<Arc<str>> {
    let rel = dir.strip_prefix(&root.step.directory).ok()?;
    if rel.as_os_str().is_empty() {
        return Some(root.label.clone());
    }
    Some(join_label(&root.label, rel.to_str()?).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Step;
    use crate::filter::Filter;
    use std::time::Duration;

    fn root(dir: &Path, recursive: bool) -> Root {
        Root::new(
            1,
            Step {
                section: "s".into(),
                directory: dir.to_path_buf(),
                queue: "q".into(),
                filter: Filter::default(),
                forced_poll: None,
                poll_queue_limit: None,
                timeout: None,
                recursive,
            },
        )
    }

    fn touch(path: &Path, age_secs: u64) {
        std::fs::write(path, b"x").expect("write");
        let t = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }

    #[test]
    fn lists_filtered_regular_files_oldest_first() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        touch(&d.join("new"), 10);
        touch(&d.join("old"), 300);
        touch(&d.join("mid"), 100);
        touch(&d.join("skip.t"), 500);
        touch(&d.join("skip.working"), 500);
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        touch(&d.join("sub/inner"), 1000);
        std::os::unix::fs::symlink(d.join("old"), d.join("link")).expect("symlink");
        std::os::unix::fs::symlink(d.join("sub"), d.join("dirlink")).expect("symlink");
        let l = list(&root(d, false), &Scope::Whole);
        let names: Vec<_> = l.files.iter().map(|f| f.name.as_str()).collect();
        // `link` points at `old`: same mtime, ordered by path.
        assert_eq!(names, ["link", "old", "mid", "new"]);
        assert!(l.files.iter().all(|f| &*f.dir == d.to_str().expect("utf8")));
    }

    #[test]
    fn recursive_listing_labels_subdirectories() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        std::fs::create_dir_all(d.join("a/b")).expect("mkdir");
        touch(&d.join("a/b/deep"), 30);
        touch(&d.join("a/one"), 20);
        touch(&d.join("top"), 10);
        let r = root(d, true);
        let l = list(&r, &Scope::Whole);
        let got: Vec<_> = l.files.iter().map(|f| format!("{}|{}", f.dir, f.name)).collect();
        let base = d.to_str().expect("utf8");
        assert_eq!(
            got,
            [
                format!("{base}/a/b|deep"),
                format!("{base}/a|one"),
                format!("{base}|top")
            ]
        );
        let l = list(&r, &Scope::Dirs(vec![d.join("a/b")]));
        assert_eq!(l.files.len(), 1);
        assert_eq!(&*l.files[0].dir, format!("{base}/a/b"));
        // A missing directory is not an error.
        assert!(list(&r, &Scope::Dirs(vec![d.join("gone")])).files.is_empty());
    }

    #[test]
    fn non_utf8_names_are_counted_not_posted() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let name = std::ffi::OsStr::from_bytes(b"bad\xff");
        std::fs::write(tmp.path().join(name), b"x").expect("write");
        let l = list(&root(tmp.path(), false), &Scope::Whole);
        assert!(l.files.is_empty());
        assert_eq!(l.skipped_names, 1);
    }

    #[test]
    fn scopes_merge_and_flags_coalesce() {
        let mut s = Scope::Dirs(vec!["/a".into()]);
        s.merge(Scope::Dirs(vec!["/a".into(), "/b".into()]));
        assert_eq!(s, Scope::Dirs(vec!["/a".into(), "/b".into()]));
        s.merge(Scope::Whole);
        assert_eq!(s, Scope::Whole);
        let r = Rescans::default();
        r.flag(1, Scope::Dirs(vec!["/x".into()]));
        r.flag(1, Scope::Whole);
        r.flag(2, Scope::Dirs(vec!["/y".into()]));
        let (all, roots) = r.take();
        assert!(!all);
        assert_eq!(roots[&1], Scope::Whole);
        assert_eq!(roots.len(), 2);
        r.flag_all();
        assert!(r.take().0);
        assert_eq!(r.take(), (false, HashMap::new()));
    }
}
