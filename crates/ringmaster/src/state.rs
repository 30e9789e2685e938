//! The record of running children that lets a restarted ringmaster clean up after a predecessor
//! that was SIGKILLed (and so could not stop its children): an append-only log, `+<pid>
//! <start_ticks> <watcher>` on every spawn and `-<pid>` on every exit (one `write` each, so the
//! record is on disk before the next command is handled), compacted atomically (temp file +
//! rename) when it has grown well past the live entries. At start, every recorded process that still runs with the same start time (so not a
//! reused pid) is stopped with its whole tree: SIGTERM, `orphan_grace`, then SIGKILL. The new
//! ringmaster then starts fresh processes: never two copies of a worker.
//!
//! A lock file beside it (`flock`) keeps a second ringmaster off the same state.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::{process, procfs};

/// One recorded child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its pid (and process group).
    pub pid: i32,
    /// Its start time in ticks after boot, to tell it from a later process with the same pid.
    pub start_ticks: u64,
    /// Its watcher.
    pub watcher: String,
}

/// The state file of a running ringmaster (holding its lock).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    entries: BTreeMap<i32, Entry>,
    log: Option<File>,
    /// Lines in the log now; compaction happens when it is much larger than `entries`.
    lines: usize,
    _lock: Flock<File>,
}

impl StateFile {
    /// Lock `path` (failing if another ringmaster holds it) and return the entries a previous
    /// run left behind.
    pub fn open(path: &Path) -> anyhow::Result<(StateFile, Vec<Entry>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lock_path = path.with_extension("lock");
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("another ringmaster holds {} ({e})", lock_path.display()))?;
        let leftovers = read(path);
        let mut state = StateFile {
            path: path.to_path_buf(),
            entries: BTreeMap::new(),
            log: None,
            lines: 0,
            _lock: lock,
        };
        state.compact();
        Ok((state, leftovers))
    }

    /// Record a started process.
    pub fn add(&mut self, pid: i32, watcher: &str) {
        let start_ticks = procfs::stat(pid).map(|s| s.start_ticks).unwrap_or(0);
        self.append(&format!("+{pid} {start_ticks} {watcher}\n"));
        self.entries.insert(
            pid,
            Entry {
                pid,
                start_ticks,
                watcher: watcher.to_string(),
            },
        );
    }

    /// Forget an exited process.
    pub fn remove(&mut self, pid: i32) {
        if self.entries.remove(&pid).is_some() {
            self.append(&format!("-{pid}\n"));
            if self.lines > 4 * self.entries.len() + 256 {
                self.compact();
            }
        }
    }

    fn append(&mut self, line: &str) {
        let written = match self.log.as_mut() {
            Some(f) => f.write_all(line.as_bytes()),
            None => Err(std::io::Error::other("state file not open")),
        };
        match written {
            Ok(()) => self.lines += 1,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot append to the state file");
                self.compact();
            }
        }
    }

    /// Rewrite the file with the live entries only, then keep appending to it.
    fn compact(&mut self) {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for e in self.entries.values() {
            text.push_str(&format!("+{} {} {}\n", e.pid, e.start_ticks, e.watcher));
        }
        let result = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .and_then(|_| File::options().append(true).open(&self.path));
        match result {
            Ok(f) => {
                self.log = Some(f);
                self.lines = self.entries.len();
            }
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cannot write the state file"),
        }
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        if self.entries.is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Replay the log: the entries still recorded as running.
fn read(path: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut live: BTreeMap<i32, Entry> = BTreeMap::new();
    for l in text.lines() {
        if let Some(pid) = l.strip_prefix('-') {
            if let Ok(pid) = pid.trim().parse() {
                live.remove(&pid);
            }
            continue;
        }
        let mut parts = l.trim_start_matches('+').splitn(3, ' ');
        let entry = (|| {
            Some(Entry {
                pid: parts.next()?.parse().ok()?,
                start_ticks: parts.next()?.parse().ok()?,
                watcher: parts.next()?.to_string(),
            })
        })();
        if let Some(e) = entry {
            live.insert(e.pid, e);
        }
    }
    live.into_values().collect()
}

/// Stop every leftover that is still the same process: SIGTERM to its tree, wait up to `grace`,
/// then SIGKILL. Returns how many were still running.
pub fn kill_leftovers(entries: &[Entry], grace: Duration) -> usize {
    let alive: Vec<&Entry> = entries
        .iter()
        .filter(|e| procfs::stat(e.pid).is_some_and(|s| s.start_ticks == e.start_ticks && !s.zombie))
        .collect();
    if alive.is_empty() {
        return 0;
    }
    for e in &alive {
        tracing::warn!(pid = e.pid, watcher = %e.watcher, "stopping a process left by a previous ringmaster");
        process::signal_tree(e.pid, libc::SIGTERM, true);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && alive.iter().any(|e| procfs::stat(e.pid).is_some_and(|s| !s.zombie)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for e in &alive {
        process::kill_tree(e.pid, &[]);
    }
    alive.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_replays_to_the_live_entries_and_compacts() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.pids");
        {
            let (mut state, leftovers) = StateFile::open(&path).expect("open");
            assert!(leftovers.is_empty());
            for pid in 1000..1400 {
                state.add(pid, "w");
            }
            for pid in 1000..1399 {
                state.remove(pid);
            }
            assert_eq!(read(&path).iter().map(|e| e.pid).collect::<Vec<_>>(), [1399]);
            let lines = std::fs::read_to_string(&path).expect("read").lines().count();
            assert!(lines < 400, "never compacted: {lines} lines");
            // Dropped with a live entry: as if ringmaster died, the record stays.
        }
        let (_state, leftovers) = StateFile::open(&path).expect("reopen");
        assert_eq!(leftovers.len(), 1);
        assert_eq!(leftovers[0].pid, 1399);
        assert_eq!(leftovers[0].watcher, "w");
    }

    #[test]
    fn a_second_holder_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.pids");
        let _first = StateFile::open(&path).expect("open");
        let err = StateFile::open(&path).expect_err("locked");
        assert!(err.to_string().contains("another ringmaster"), "{err}");
    }
}
