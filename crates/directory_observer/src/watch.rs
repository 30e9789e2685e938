//! The inotify side: watches, the reader thread, and the translation of kernel events into
//! messages.
//!
//! One dedicated thread owns the inotify descriptor and every watch, so the map from watch
//! descriptor to directory can never be stale relative to the events being read. It reads with
//! a large buffer (whole batches of kernel events per `read`), turns file events into encoded
//! messages without any further syscall (IN_CLOSE_WRITE and IN_MOVED_TO without IN_ISDIR are
//! files; nothing is stat'ed), and hands each batch to the async publisher with `try_send` on a
//! bounded channel. When the publisher is behind, the reader keeps the batch and merges what it
//! reads next into it (up to [`MAX_HELD`] messages), retrying every few milliseconds; only
//! beyond that bound is the batch dropped — counted, logged, and its directories flagged for a
//! rescan. The thread never blocks on the publisher, so the kernel queue keeps draining.
//!
//! Everything inotify can lose is recovered by a rescan: IN_Q_OVERFLOW flags every directory;
//! a watched directory deleted or moved away (IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED) is polled
//! for every second, re-watched when it is back, then rescanned; a new subdirectory of a
//! recursive tree is watched, then scanned (files may land in it before its watch exists).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use ironwork_core::messages::FileEvent;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc;

use crate::config::Step;
use crate::publish::{encode, DropLog};
use crate::scan::{join_label, Rescans, Scope};
use crate::stats::Stats;

/// Size of the read buffer: room for thousands of events per `read`.
pub const READ_BUFFER: usize = 256 * 1024;

/// A batch is handed over once it holds this many messages (or the kernel queue is empty).
pub const MAX_BATCH: usize = 4096;

/// Most messages the reader holds while the publisher is behind, before it drops them and
/// rescans instead (about 200 bytes each).
pub const MAX_HELD: usize = 256 * 1024;

/// How soon the reader retries a hand-off the publisher had no room for.
pub const HELD_RETRY: Duration = Duration::from_millis(2);

/// Batches the channel to the publisher holds. When full, the reader drops the batch it could
/// not hand over (counted, logged, rescanned) rather than wait.
pub const BATCH_CHANNEL: usize = 16;

/// How often missing directories are looked for.
pub const MISSING_POLL: Duration = Duration::from_secs(1);

/// A configured directory at runtime: its step, and what every message about it carries.
#[derive(Debug)]
pub struct Root {
    /// Unique for the life of the process (a changed section gets a new id).
    pub id: u64,
    /// The section.
    pub step: Step,
    /// The queue's name, shared by every message batch.
    pub queue: Arc<str>,
    /// The directory as written in messages.
    pub label: Arc<str>,
}

impl Root {
    /// A root for `step`.
    pub fn new(id: u64, step: Step) -> Self {
        Self {
            id,
            queue: step.queue.as_str().into(),
            label: step.directory.to_string_lossy().into_owned().into(),
            step,
        }
    }
}

/// Messages read from the kernel in one go, grouped by root.
#[derive(Debug, Default)]
pub struct Batch {
    /// One group per root, in order of first appearance.
    pub groups: Vec<Group>,
    /// Messages in all groups.
    pub len: usize,
}

/// The messages of one root within a batch.
#[derive(Debug)]
pub struct Group {
    /// Whose messages these are.
    pub root: Arc<Root>,
    /// Encoded messages, in event order.
    pub messages: Vec<Vec<u8>>,
}

impl Batch {
    /// Append `other`'s messages after this batch's, keeping their order.
    fn absorb(&mut self, other: Batch) {
        for g in other.groups {
            for m in g.messages {
                self.push(&g.root, m);
            }
        }
    }

    fn push(&mut self, root: &Arc<Root>, message: Vec<u8>) {
        self.len += 1;
        // Events come in runs from one directory: look at the last group first.
        if let Some(g) = self.groups.iter_mut().rev().find(|g| g.root.id == root.id) {
            g.messages.push(message);
            return;
        }
        self.groups.push(Group {
            root: root.clone(),
            messages: vec![message],
        });
    }
}

/// What the async side asks of the reader thread.
#[derive(Debug)]
pub enum Command {
    /// Watch exactly these roots: unwatch removed ones, watch and rescan added ones; then
    /// answer on the channel, so the caller knows the new watches exist.
    Reconfigure(Vec<Arc<Root>>, tokio::sync::oneshot::Sender<()>),
}

/// One watched directory.
#[derive(Debug)]
struct Watch {
    wd: WatchDescriptor,
    root: Arc<Root>,
    /// The directory as written in messages.
    label: Arc<str>,
    path: PathBuf,
    /// Device and inode when the watch was added: tells a directory moved away from one that
    /// was re-watched under a new name.
    ino: (u64, u64),
    is_root: bool,
}

/// The reader: the inotify instance, its watches, and the batch being filled.
pub struct Watcher {
    inotify: Inotify,
    watches: HashMap<i32, Watch>,
    roots: Vec<Arc<Root>>,
    missing: Vec<Arc<Root>>,
    last_missing_check: Instant,
    rescans: Arc<Rescans>,
    stats: Stats,
    out: mpsc::Sender<Batch>,
    batch: Batch,
    /// A batch the publisher had no room for yet.
    held: Batch,
    drops: DropLog,
    bad_names: DropLog,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watches", &self.watches.len())
            .field("roots", &self.roots.len())
            .field("missing", &self.missing.len())
            .finish()
    }
}

fn mask_for(root: &Root, is_root: bool) -> WatchMask {
    let mut mask = WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF;
    if root.step.recursive {
        // IN_CREATE is how a new subdirectory shows up; file creations are discarded.
        mask |= WatchMask::CREATE;
    }
    // The configured directory may be a symlink (followed, as Metwork does); below it, links
    // are not followed, so a link cannot make a loop.
    mask |= WatchMask::ONLYDIR;
    if !is_root {
        mask |= WatchMask::DONT_FOLLOW;
    }
    mask
}

impl Watcher {
    /// A reader with no watches yet, handing batches to `out`.
    pub fn new(rescans: Arc<Rescans>, stats: Stats, out: mpsc::Sender<Batch>) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        Ok(Self {
            inotify,
            watches: HashMap::new(),
            roots: Vec::new(),
            missing: Vec::new(),
            last_missing_check: Instant::now(),
            rescans,
            stats,
            out,
            batch: Batch::default(),
            held: Batch::default(),
            drops: DropLog::new("publisher behind: events dropped, their directories will be rescanned"),
            bad_names: DropLog::new("files with names that are not UTF-8 skipped (a message cannot carry them)"),
        })
    }

    /// Watch exactly `roots`. Added roots get their directory created if missing, their
    /// watches, then a whole rescan request (so the scan always starts after the watch exists
    /// and nothing created meanwhile is missed).
    pub fn set_roots(&mut self, roots: Vec<Arc<Root>>) {
        let removed: Vec<u64> = self
            .roots
            .iter()
            .filter(|r| !roots.iter().any(|n| n.id == r.id))
            .map(|r| r.id)
            .collect();
        for id in &removed {
            self.unwatch_root(*id);
        }
        self.missing.retain(|m| roots.iter().any(|n| n.id == m.id));
        let added: Vec<Arc<Root>> = roots
            .iter()
            .filter(|n| !self.roots.iter().any(|r| r.id == n.id))
            .cloned()
            .collect();
        self.roots = roots;
        for root in added {
            prepare_dir(&root);
            self.watch_root(&root, false);
        }
        self.update_gauges();
    }

    /// Watch `root`'s directory (and tree); on failure remember it as missing. With `again`,
    /// the directory came back after being gone.
    fn watch_root(&mut self, root: &Arc<Root>, again: bool) -> bool {
        let path = root.step.directory.clone();
        match self.add_tree(root, &path, root.label.clone(), true) {
            Ok(()) => {
                if again {
                    tracing::info!(dir = %root.label, section = %root.step.section, "directory is back, watching and rescanning it");
                } else {
                    tracing::info!(dir = %root.label, queue = %root.queue, section = %root.step.section, recursive = root.step.recursive, "watching");
                }
                self.rescans.flag(root.id, Scope::Whole);
                true
            }
            Err(e) => {
                if !again {
                    tracing::warn!(dir = %root.label, section = %root.step.section, error = %e, "cannot watch directory; looking for it every second");
                }
                if !self.missing.iter().any(|m| m.id == root.id) {
                    self.missing.push(root.clone());
                }
                false
            }
        }
    }

    /// Add a watch on `path` and, for recursive roots, on every directory below it. The first
    /// error (on `path` itself) is returned; errors below are logged.
    fn add_tree(&mut self, root: &Arc<Root>, path: &Path, label: Arc<str>, is_root: bool) -> io::Result<()> {
        self.add_one(root, path, label.clone(), is_root)?;
        if !root.step.recursive {
            return Ok(());
        }
        let mut stack = vec![(path.to_path_buf(), label)];
        while let Some((dir, label)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    self.stats.skipped_names.inc();
                    tracing::warn!(dir = %dir.display(), name = ?entry.file_name(), "directory name is not UTF-8, not watched");
                    continue;
                };
                let sub = entry.path();
                let sub_label: Arc<str> = join_label(&label, name).into();
                if self.add_one(root, &sub, sub_label.clone(), false).is_ok() {
                    stack.push((sub, sub_label));
                }
            }
        }
        Ok(())
    }

    fn add_one(&mut self, root: &Arc<Root>, path: &Path, label: Arc<str>, is_root: bool) -> io::Result<()> {
        let wd = match self.inotify.watches().add(path, mask_for(root, is_root)) {
            Ok(wd) => wd,
            Err(e) => {
                if e.raw_os_error() == Some(libc_enospc()) {
                    tracing::error!(dir = %path.display(), "inotify watch limit reached (fs.inotify.max_user_watches): directory not watched");
                } else {
                    tracing::debug!(dir = %path.display(), error = %e, "cannot add watch");
                }
                return Err(e);
            }
        };
        let ino = std::fs::metadata(path).map(|m| (m.dev(), m.ino())).unwrap_or_default();
        let id = wd.get_watch_descriptor_id();
        if let Some(existing) = self.watches.get(&id) {
            if existing.root.id != root.id {
                // Adding replaced the existing watch's mask: put the other section's back.
                let _ = self
                    .inotify
                    .watches()
                    .add(&existing.path, mask_for(&existing.root, existing.is_root));
                tracing::error!(
                    dir = %path.display(),
                    other = %existing.path.display(),
                    section = %root.step.section,
                    other_section = %existing.root.step.section,
                    "same directory as another watched one (a link?): watched once, for the other section"
                );
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "directory already watched",
                ));
            }
        }
        self.watches.insert(
            id,
            Watch {
                wd,
                root: root.clone(),
                label,
                path: path.to_path_buf(),
                ino,
                is_root,
            },
        );
        Ok(())
    }

    /// Remove every watch of root `id`.
    fn unwatch_root(&mut self, id: u64) {
        let wds: Vec<i32> = self
            .watches
            .iter()
            .filter(|(_, w)| w.root.id == id)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            if let Some(w) = self.watches.remove(&wd) {
                if w.is_root {
                    tracing::info!(dir = %w.label, section = %w.root.step.section, "no longer watched");
                }
                let _ = self.inotify.watches().remove(w.wd);
            }
        }
    }

    /// Remove the watch `wd` and every watch below its directory (a subtree moved away: its
    /// watches follow the inodes, so their paths are wrong now).
    fn unwatch_tree(&mut self, wd: i32) {
        let Some(top) = self.watches.get(&wd) else {
            return;
        };
        let (root_id, path) = (top.root.id, top.path.clone());
        let wds: Vec<i32> = self
            .watches
            .iter()
            .filter(|(_, w)| w.root.id == root_id && w.path.starts_with(&path))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            if let Some(w) = self.watches.remove(&wd) {
                let _ = self.inotify.watches().remove(w.wd);
                if w.is_root {
                    self.root_gone(w.root);
                }
            }
        }
    }

    fn root_gone(&mut self, root: Arc<Root>) {
        if !self.roots.iter().any(|r| r.id == root.id) || self.missing.iter().any(|m| m.id == root.id) {
            return;
        }
        tracing::warn!(dir = %root.label, section = %root.step.section, "watched directory is gone; looking for it every second");
        self.missing.push(root);
    }

    /// Translate one kernel event. Public for tests: the reader loop is this plus `read`.
    pub fn handle(&mut self, wd: i32, mask: EventMask, name: Option<&OsStr>) {
        // The hot path: a file completed in place or moved in.
        if mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO) && !mask.contains(EventMask::ISDIR) {
            let Some(w) = self.watches.get(&wd) else {
                return;
            };
            let Some(name) = name else {
                return;
            };
            let Some(name) = name.to_str() else {
                tracing::debug!(dir = %w.label, name = ?name, "file name is not UTF-8, not posted");
                self.stats.skipped_names.inc();
                self.bad_names.record(1);
                return;
            };
            if !w.root.step.filter.accepts(name) {
                return;
            }
            tracing::debug!(dir = %w.label, file = name, "file event");
            let message = encode(&w.label, name, FileEvent::Created);
            self.batch.push(&w.root, message);
            return;
        }
        if mask.contains(EventMask::Q_OVERFLOW) {
            self.kernel_overflow();
            return;
        }
        if mask.contains(EventMask::ISDIR) && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            self.new_subdirectory(wd, name);
            return;
        }
        if mask.contains(EventMask::MOVE_SELF) {
            self.moved_away(wd);
        }
        if mask.contains(EventMask::IGNORED) {
            // The kernel dropped the watch: the directory was deleted, moved (we removed the
            // watch), or its filesystem unmounted.
            if let Some(w) = self.watches.remove(&wd) {
                if w.is_root {
                    self.root_gone(w.root);
                }
                self.update_gauges();
            }
        }
    }

    fn moved_away(&mut self, wd: i32) {
        let Some(w) = self.watches.get(&wd) else {
            return;
        };
        // A subdirectory renamed within the tree was re-watched under its new name already
        // (IN_MOVED_TO comes before IN_MOVE_SELF): same inode at the watch's path, keep it.
        let same = std::fs::metadata(&w.path).is_ok_and(|m| (m.dev(), m.ino()) == w.ino);
        if same {
            return;
        }
        tracing::debug!(dir = %w.label, "directory moved away, unwatching its tree");
        self.unwatch_tree(wd);
        self.update_gauges();
    }

    fn new_subdirectory(&mut self, wd: i32, name: Option<&OsStr>) {
        let Some(w) = self.watches.get(&wd) else {
            return;
        };
        if !w.root.step.recursive {
            return;
        }
        let Some(name) = name else {
            return;
        };
        let Some(name_str) = name.to_str() else {
            self.stats.skipped_names.inc();
            tracing::warn!(dir = %w.label, name = ?name, "directory name is not UTF-8, not watched");
            return;
        };
        let (root, path, label) = (w.root.clone(), w.path.join(name), join_label(&w.label, name_str));
        tracing::debug!(dir = %label, "new subdirectory");
        if self.add_tree(&root, &path, label.into(), false).is_ok() {
            // Files may have landed before the watch existed.
            self.rescans.flag(root.id, Scope::Dirs(vec![path]));
        }
        self.update_gauges();
    }

    /// IN_Q_OVERFLOW: events were lost. Re-check every root's watch, re-walk recursive trees
    /// (a lost IN_CREATE may hide a new subdirectory) and rescan everything.
    pub fn kernel_overflow(&mut self) {
        self.stats.kernel_overflows.inc();
        tracing::warn!("inotify event queue overflowed (fs.inotify.max_queued_events): rescanning every directory");
        let roots = self.roots.clone();
        for root in &roots {
            let root_wd = self
                .watches
                .iter()
                .find(|(_, w)| w.is_root && w.root.id == root.id)
                .map(|(wd, w)| (*wd, w.ino, w.path.clone()));
            if let Some((wd, ino, path)) = root_wd {
                let same = std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == ino);
                if !same {
                    self.unwatch_tree(wd);
                } else if root.step.recursive {
                    let _ = self.add_tree(root, &path, root.label.clone(), true);
                }
            }
        }
        self.rescans.flag_all();
        self.update_gauges();
    }

    /// Re-watch missing roots that exist again.
    fn check_missing(&mut self) {
        if self.missing.is_empty() || self.last_missing_check.elapsed() < MISSING_POLL {
            return;
        }
        self.last_missing_check = Instant::now();
        let missing = std::mem::take(&mut self.missing);
        for root in missing {
            if std::fs::metadata(&root.step.directory).is_ok_and(|m| m.is_dir()) {
                self.watch_root(&root, true);
            } else {
                self.missing.push(root);
            }
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        self.stats.watches.set(self.watches.len() as i64);
        self.stats.missing.set(self.missing.len() as i64);
    }

    /// Hand the current batch (after any held one) to the publisher. When its channel is full
    /// the messages are held for the next attempt; beyond [`MAX_HELD`] they are dropped
    /// (counted, logged) and their roots flagged for a rescan. Returns false once the publisher
    /// is gone.
    pub fn flush(&mut self) -> bool {
        if self.batch.len > 0 {
            let batch = std::mem::take(&mut self.batch);
            self.stats.events.add(batch.len as u64);
            if self.held.len == 0 {
                self.held = batch;
            } else {
                self.held.absorb(batch);
            }
        }
        if self.held.len == 0 {
            return true;
        }
        match self.out.try_send(std::mem::take(&mut self.held)) {
            Ok(()) => {
                self.drops.recovered_if_quiet();
                self.bad_names.recovered_if_quiet();
                true
            }
            Err(mpsc::error::TrySendError::Full(batch)) if batch.len <= MAX_HELD => {
                self.held = batch;
                true
            }
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.stats.dropped.add(batch.len as u64);
                self.drops.record(batch.len as u64);
                for g in &batch.groups {
                    self.rescans.flag(g.root.id, Scope::Whole);
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// At shutdown: messages the publisher never had room for are counted as dropped; their
    /// files are still in place, and the next start's scan posts them.
    fn abandon_held(&mut self) {
        if self.held.len > 0 {
            self.stats.dropped.add(self.held.len as u64);
            self.drops.record(self.held.len as u64);
            self.held = Batch::default();
        }
    }

    /// Read and translate everything the kernel has queued (without blocking), handing over
    /// a batch every [`MAX_BATCH`] messages and at the end.
    pub fn drain(&mut self, buf: &mut [u8]) -> io::Result<()> {
        loop {
            match self.inotify.read_events(buf) {
                Ok(events) => {
                    for e in events {
                        self.handle(e.wd.get_watch_descriptor_id(), e.mask, e.name);
                        if self.batch.len >= MAX_BATCH {
                            self.flush();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.flush();
        Ok(())
    }

    /// The reader loop: drain, re-watch missing roots, wait for the kernel or a command.
    fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut wake: UnixStream,
        stop: Arc<AtomicBool>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut sink = [0u8; 64];
        loop {
            if stop.load(Ordering::Acquire) {
                self.drain(&mut buf)?;
                self.abandon_held();
                self.drops.flush();
                self.bad_names.flush();
                return Ok(());
            }
            loop {
                match commands.try_recv() {
                    Ok(Command::Reconfigure(roots, done)) => {
                        self.set_roots(roots);
                        let _ = done.send(());
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.drain(&mut buf)?;
                        self.drops.flush();
                        self.bad_names.flush();
                        return Ok(());
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            self.drain(&mut buf)?;
            if self.out.is_closed() {
                return Ok(());
            }
            self.check_missing();
            let timeout = if self.held.len > 0 {
                PollTimeout::from(HELD_RETRY.as_millis() as u16)
            } else if self.missing.is_empty() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(MISSING_POLL.as_millis() as u16)
            };
            let woken = {
                let mut fds = [
                    PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                    PollFd::new(wake.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                fds[1].revents().is_some_and(|r| !r.is_empty())
            };
            if woken {
                // Drain the wake-up bytes; commands are read at the top of the loop.
                while matches!(wake.read(&mut sink), Ok(n) if n > 0) {}
            }
        }
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// Create a watched directory that does not exist yet (mkdir -p), as Metwork's start script
/// does. A failure is logged; the directory is then polled for.
fn prepare_dir(root: &Root) {
    let dir = &root.step.directory;
    if dir.exists() {
        return;
    }
    match std::fs::create_dir_all(dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), section = %root.step.section, "created missing watched directory")
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), section = %root.step.section, error = %e, "cannot create watched directory")
        }
    }
}

/// The async side's handle on the reader thread.
#[derive(Debug)]
pub struct WatcherHandle {
    commands: mpsc::Sender<Command>,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl WatcherHandle {
    /// Start the reader thread on a prepared watcher.
    pub fn spawn(watcher: Watcher) -> io::Result<Self> {
        let (wake, wake_peer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_peer.set_nonblocking(true)?;
        let (commands, commands_rx) = mpsc::channel(8);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = stop.clone();
        let thread = std::thread::Builder::new()
            .name("inotify-reader".into())
            .spawn(move || watcher.run(commands_rx, wake_peer, stop_reader))?;
        Ok(Self {
            commands,
            stop,
            wake,
            thread: Some(thread),
        })
    }

    fn wake(&self) {
        use std::io::Write;
        // A full socket means a wake-up is already pending.
        let _ = (&self.wake).write(&[1]);
    }

    /// Ask the thread to watch exactly `roots`.
    pub async fn reconfigure(&self, roots: Vec<Arc<Root>>) {
        let (done, applied) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Reconfigure(roots, done)).await.is_ok() {
            self.wake();
            // Returns once the reader thread has its new watches (or is gone).
            let _ = applied.await;
        }
    }

    /// Ask the thread to hand over what it read and exit (its batch channel then closes).
    pub fn stop(&self) {
        // A flag rather than a command: it cannot be lost to a full command channel.
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Wait for the thread to exit and return how it ended.
    pub async fn join(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(io::Error::other("inotify reader thread panicked")),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;
    use ironwork_core::metrics::Metrics;

    fn step(dir: &Path, recursive: bool) -> Step {
        Step {
            section: "s".into(),
            directory: dir.to_path_buf(),
            queue: "q".into(),
            filter: Filter::default(),
            forced_poll: None,
            poll_queue_limit: None,
            timeout: None,
            recursive,
        }
    }

    struct Rig {
        watcher: Watcher,
        rx: mpsc::Receiver<Batch>,
        rescans: Arc<Rescans>,
        stats: Stats,
        buf: Vec<u8>,
    }

    fn rig(dir: &Path, recursive: bool, channel: usize) -> Rig {
        let stats = Stats::register(&Metrics::new());
        let rescans = Arc::new(Rescans::default());
        let (tx, rx) = mpsc::channel(channel);
        let mut watcher = Watcher::new(rescans.clone(), stats.clone(), tx).expect("inotify");
        watcher.set_roots(vec![Arc::new(Root::new(7, step(dir, recursive)))]);
        Rig {
            watcher,
            rx,
            rescans,
            stats,
            buf: vec![0; READ_BUFFER],
        }
    }

    impl Rig {
        fn messages(&mut self) -> Vec<serde_json::Value> {
            self.watcher.drain(&mut self.buf).expect("drain");
            let mut out = Vec::new();
            while let Ok(b) = self.rx.try_recv() {
                for g in b.groups {
                    for m in g.messages {
                        out.push(serde_json::from_slice(&m).expect("json"));
                    }
                }
            }
            out
        }
    }

    #[test]
    fn close_write_and_moved_to_post_created_and_temp_names_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut r = rig(tmp.path(), false, 8);
        assert_eq!(
            r.rescans.take().1.get(&7),
            Some(&Scope::Whole),
            "startup scan flagged after the watch"
        );
        std::fs::write(tmp.path().join("inplace"), b"x").expect("write");
        std::fs::write(tmp.path().join("renamed.t"), b"x").expect("write");
        std::fs::rename(tmp.path().join("renamed.t"), tmp.path().join("renamed")).expect("rename");
        std::fs::create_dir(tmp.path().join("subdir")).expect("mkdir");
        let got = r.messages();
        let names: Vec<_> = got.iter().map(|m| m["filename"].as_str().unwrap_or_default()).collect();
        assert_eq!(names, ["inplace", "renamed"]);
        assert!(got.iter().all(|m| m["event"] == "created"));
        assert_eq!(got[0]["directory"], tmp.path().to_str().expect("utf8"));
        assert_eq!(r.stats.events.get(), 2);
    }

    #[test]
    fn non_utf8_names_are_counted_not_posted() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let mut r = rig(tmp.path(), false, 8);
        std::fs::write(tmp.path().join(OsStr::from_bytes(b"bad\xff")), b"x").expect("write");
        std::fs::write(tmp.path().join("good"), b"x").expect("write");
        let got = r.messages();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["filename"], "good");
        assert_eq!(r.stats.skipped_names.get(), 1);
    }

    #[test]
    fn synthetic_overflow_flags_every_root_for_a_rescan() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut r = rig(tmp.path(), false, 8);
        r.rescans.take();
        r.watcher.handle(-1, EventMask::Q_OVERFLOW, None);
        assert_eq!(r.stats.kernel_overflows.get(), 1);
        assert!(r.rescans.take().0, "overflow asks for every root");
    }

    /// A real IN_Q_OVERFLOW: more events than the kernel queues while nobody reads.
    #[test]
    fn real_kernel_overflow_is_detected() {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX);
        if max > 100_000 {
            eprintln!("max_queued_events={max}: too many files to create, skipping");
            return;
        }
        let tmp = tempfile::tempdir().expect("tmp");
        let mut r = rig(tmp.path(), false, 1024);
        r.rescans.take();
        for i in 0..max + 10 {
            std::fs::File::create(tmp.path().join(format!("f{i}"))).expect("create");
        }
        r.messages();
        assert_eq!(r.stats.kernel_overflows.get(), 1);
        assert!(r.rescans.take().0);
    }

    #[test]
    fn a_full_channel_holds_messages_and_hands_them_over_later_in_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut r = rig(tmp.path(), false, 1);
        r.rescans.take();
        std::fs::write(tmp.path().join("a"), b"x").expect("write");
        r.watcher.drain(&mut r.buf).expect("drain");
        std::fs::write(tmp.path().join("b"), b"x").expect("write");
        std::fs::write(tmp.path().join("c"), b"x").expect("write");
        r.watcher.drain(&mut r.buf).expect("drain");
        assert_eq!(r.stats.dropped.get(), 0, "nothing dropped while under the hold bound");
        assert_eq!(r.rx.try_recv().map(|b| b.len).ok(), Some(1));
        assert!(r.watcher.flush());
        let held = r.rx.try_recv().expect("held batch handed over");
        let names: Vec<String> = held.groups[0]
            .messages
            .iter()
            .map(|m| serde_json::from_slice::<serde_json::Value>(m).expect("json")["filename"].to_string())
            .collect();
        assert_eq!(names, ["\"b\"", "\"c\""]);
        assert!(r.rescans.take().1.is_empty(), "no rescan needed");
    }

    #[test]
    fn deleted_root_is_polled_for_and_rewatched() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("in");
        let mut r = rig(&dir, false, 8);
        assert!(dir.is_dir(), "missing directory created at start");
        r.rescans.take();
        std::fs::remove_dir(&dir).expect("rmdir");
        r.messages();
        assert_eq!(r.watcher.missing.len(), 1);
        assert_eq!(r.stats.missing.get(), 1);
        std::fs::create_dir(&dir).expect("mkdir");
        r.watcher.last_missing_check = Instant::now() - MISSING_POLL;
        r.watcher.check_missing();
        assert!(r.watcher.missing.is_empty());
        assert_eq!(r.rescans.take().1.get(&7), Some(&Scope::Whole), "rescanned once back");
        std::fs::write(dir.join("f"), b"x").expect("write");
        assert_eq!(r.messages().len(), 1);
    }

    #[test]
    fn recursive_roots_watch_new_subdirectories_and_rescan_them() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(tmp.path().join("old")).expect("mkdir");
        let mut r = rig(tmp.path(), true, 8);
        assert_eq!(r.watcher.watches.len(), 2);
        r.rescans.take();
        std::fs::create_dir(tmp.path().join("new")).expect("mkdir");
        r.messages();
        let sub = tmp.path().join("new");
        assert_eq!(r.rescans.take().1.get(&7), Some(&Scope::Dirs(vec![sub.clone()])));
        std::fs::write(sub.join("f"), b"x").expect("write");
        std::fs::write(tmp.path().join("old/g"), b"x").expect("write");
        let got = r.messages();
        let base = tmp.path().to_str().expect("utf8");
        let dirs: Vec<_> = got
            .iter()
            .map(|m| m["directory"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(dirs, [format!("{base}/new"), format!("{base}/old")]);
        // A subdirectory renamed within the tree keeps being watched under its new name.
        std::fs::rename(tmp.path().join("old"), tmp.path().join("renamed")).expect("rename");
        r.messages();
        std::fs::write(tmp.path().join("renamed/h"), b"x").expect("write");
        let got = r.messages();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["directory"], format!("{base}/renamed"));
    }
}
