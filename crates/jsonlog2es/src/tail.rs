//! The reader: one thread that finds files, follows them through rotation and truncation, cuts
//! complete lines, encodes them and hands full batches to the shippers.
//!
//! - Discovery runs every `scan_interval`, whether or not reading is paused, so rotations are
//!   seen while Elasticsearch is slow.
//! - A file renamed away or deleted keeps its descriptor and is read to its end before it is
//!   closed (or after `close_removed_after`); the file that replaced it is a new identity.
//! - `size < position`, or a first line that changed, is a truncation: the epoch goes up and the
//!   file is read again from byte 0.
//! - A partial last line stays in memory until its newline arrives.
//! - Reading pauses while `queue_bytes` of batches wait for acknowledgement.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Item};
use crate::checkpoint::{
    bytes_before, end_hash, end_hash_at, fingerprint, read_fingerprint, FileKey, Position, END_BYTES,
};
use crate::config::{Config, Input, LongLines, ReadFrom};
use crate::dead_letter::Letter;
use crate::discover::matching_files;
use crate::encode::{CompiledTransform, Encoder, Outcome};
use crate::stats::Stats;

/// The fingerprint of a file whose first line is not complete yet.
const NO_FIRST_LINE: u64 = 0;

/// Batches sent and not yet committed (settled ones waiting behind a slow one count too).
const MAX_UNCOMMITTED: u64 = 1024;

/// First read of a file that was at its end.
const IDLE_READ: usize = 16 << 10;

/// Where a followed file stands.
struct Tracked {
    key: FileKey,
    epoch: u32,
    prefix: String,
    input: usize,
    path: Arc<Path>,
    file: Option<File>,
    /// File offset of the next read.
    read_pos: u64,
    /// Bytes read and not yet consumed; they start at `read_pos - buf.len()`.
    buf: Vec<u8>,
    /// Inside a line longer than `max_line_bytes`: its start and the kept prefix (truncate).
    long: Option<(u64, Option<Vec<u8>>)>,
    at_path: bool,
    removed_since: Option<Instant>,
    /// Closed after removal; remembered in case it comes back, until `forget_after`.
    gone_since: Option<Instant>,
    last_data: Instant,
    eof: bool,
    /// Compare the line at offset 0 with the identity before shipping it (after a truncation).
    check_first_line: bool,
    /// Fingerprint of the current generation's first line (the key's, unless a re-key collided).
    first_line: u64,
    /// The bytes before the position when the file was last seen at its end.
    end_check: Option<EndCheck>,
    /// The last (at most [`END_BYTES`]) bytes consumed: what is before the checkpoint position.
    recent: Vec<u8>,
}

impl Tracked {
    fn deleted(&self) -> bool {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.nlink() == 0)
    }
}

/// What the reader needs from `run`.
pub struct ReaderParts {
    /// The configuration.
    pub config: Arc<Config>,
    /// `(epoch, offset)` per identity, from the checkpoint file.
    pub resume: HashMap<FileKey, Position>,
    /// No checkpoint file existed: `read_from = end` applies.
    pub first_run: bool,
    /// Full batches go here; when it is full the batch is held and reading pauses.
    pub tx: mpsc::Sender<Batch>,
    /// Bytes of batches sent and not yet acknowledged.
    pub queued: Arc<AtomicU64>,
    /// Sequence number of the next batch the committer will apply.
    pub committed: Arc<AtomicU64>,
    /// Counters.
    pub stats: Stats,
    /// Host name for `%{hostname}`.
    pub hostname: String,
}

/// The reader thread's state.
pub struct Reader {
    config: Arc<Config>,
    encoders: Vec<Encoder>,
    files: HashMap<FileKey, Tracked>,
    by_inode: HashMap<(u64, u64), FileKey>,
    resume: HashMap<FileKey, Position>,
    /// Identities left this run (re-keyed away), with the next epoch they may use.
    retired: HashMap<FileKey, u32>,
    first_run: bool,
    startup: bool,
    batch: Batch,
    next_seq: u64,
    held: Option<Batch>,
    tx: mpsc::Sender<Batch>,
    queued: Arc<AtomicU64>,
    committed: Arc<AtomicU64>,
    stats: Stats,
}

/// What consuming a buffer ended with.
enum Consumed {
    /// Every complete line was taken.
    Done,
    /// The batch is full; lines remain.
    Full,
    /// The first line differs from the identity's fingerprint: re-key, then go on.
    Rekey(u64),
}

impl Reader {
    /// A reader over `parts`.
    pub fn new(parts: ReaderParts) -> Self {
        let transform = Arc::new(CompiledTransform::new(&parts.config.transform, &parts.hostname));
        let encoders = parts
            .config
            .inputs
            .iter()
            .map(|i| Encoder::new(i, transform.clone()))
            .collect();
        Self {
            encoders,
            files: HashMap::new(),
            by_inode: HashMap::new(),
            resume: parts.resume,
            retired: HashMap::new(),
            first_run: parts.first_run,
            startup: true,
            batch: Batch::default(),
            next_seq: 0,
            held: None,
            tx: parts.tx,
            queued: parts.queued,
            committed: parts.committed,
            stats: parts.stats,
            config: parts.config,
        }
    }

    /// Read until `token` is cancelled, then hand over the last batch.
    pub fn run(mut self, token: &CancellationToken) {
        let tail = self.config.tail.clone();
        let mut next_scan = Instant::now();
        let mut next_maintain = Instant::now();
        while !token.is_cancelled() {
            let now = Instant::now();
            if now >= next_scan {
                self.scan();
                next_scan = now + tail.scan_interval;
            }
            self.send_held();
            let mut progressed = false;
            if self.has_room() {
                progressed = self.read_round();
            }
            if !progressed || now >= next_maintain {
                self.maintain();
                next_maintain = now + tail.poll_interval;
            }
            let age = self.batch.opened.map(|o| o.elapsed()).unwrap_or_default();
            if !self.batch.is_empty()
                && (age >= self.config.elasticsearch.flush_interval || self.batch.items.is_empty())
            {
                self.send_batch();
            }
            if !progressed {
                std::thread::sleep(tail.poll_interval);
            }
        }
        // Hand over what was read; the shippers get the grace period to send it.
        self.send_batch();
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.held.is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.send_held();
        }
    }

    fn has_room(&self) -> bool {
        let uncommitted = self.next_seq.saturating_sub(self.committed.load(Ordering::Relaxed));
        self.held.is_none()
            && self.queued.load(Ordering::Relaxed) < self.config.state.queue_bytes
            && uncommitted < MAX_UNCOMMITTED
    }

    /// One turn over the open files, removed ones first; true when any byte was consumed.
    fn read_round(&mut self) -> bool {
        let now_hours = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            / 3600) as i64;
        let mut keys: Vec<(bool, FileKey)> = self
            .files
            .values()
            .filter(|t| t.file.is_some())
            .map(|t| (t.removed_since.is_none(), t.key))
            .collect();
        keys.sort_unstable_by_key(|(live, _)| *live);
        let mut progressed = false;
        for (_, key) in keys {
            progressed |= self.read_file(key, now_hours);
            if self.batch_full() {
                self.send_batch();
                if !self.has_room() {
                    break;
                }
            }
        }
        progressed
    }

    fn batch_full(&self) -> bool {
        let es = &self.config.elasticsearch;
        self.batch.items.len() >= es.bulk_max_docs || self.batch.body.len() >= es.bulk_max_bytes
    }

    /// Consume what is buffered, read one chunk, consume again. True when bytes were read.
    fn read_file(&mut self, mut key: FileKey, now_hours: i64) -> bool {
        let mut read_any = false;
        let mut did_read = false;
        loop {
            let consumed = self.consume(key, now_hours);
            match consumed {
                Consumed::Rekey(fp) => {
                    key = self.rekey(key, fp);
                    continue;
                }
                Consumed::Full => return true,
                Consumed::Done if did_read => return read_any,
                Consumed::Done => {}
            }
            did_read = true;
            let chunk = self.config.tail.read_chunk;
            let Some(t) = self.files.get_mut(&key) else {
                return read_any;
            };
            if t.eof && !grew(t, &mut self.batch) {
                return read_any;
            }
            let Some(file) = t.file.as_mut() else { return read_any };
            // A file that was at its end usually grew by a few lines: read little first.
            let chunk = if t.eof { chunk.min(IDLE_READ) } else { chunk };
            let old = t.buf.len();
            t.buf.resize(old + chunk, 0);
            let n = loop {
                match file.read(&mut t.buf[old..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(path = %t.path.display(), error = %e, "read failed; retrying later");
                        break 0;
                    }
                }
            };
            t.buf.truncate(old + n);
            if n == 0 {
                t.eof = true;
                if t.buf.is_empty() && t.buf.capacity() > IDLE_READ {
                    t.buf = Vec::new();
                }
                return read_any;
            }
            t.eof = false;
            t.read_pos += n as u64;
            t.last_data = Instant::now();
            self.stats.bytes.add(n as u64);
            read_any = true;
        }
    }

    /// Cut complete lines out of the file's buffer into the batch.
    fn consume(&mut self, key: FileKey, now_hours: i64) -> Consumed {
        let Some(t) = self.files.get_mut(&key) else {
            return Consumed::Done;
        };
        let input: &Input = &self.config.inputs[t.input];
        let encoder = &mut self.encoders[t.input];
        let es = &self.config.elasticsearch;
        let batch = &mut self.batch;
        let max = input.max_line_bytes;
        // Nothing to cut (the usual case at the end of a file): leave the batch untouched.
        if t.buf.is_empty() || (t.buf.len() <= max && t.long.is_none() && memchr::memchr(b'\n', &t.buf).is_none()) {
            return Consumed::Done;
        }
        let base = t.read_pos - t.buf.len() as u64;
        // Inside an over-long line, the position stays at its start until its newline.
        let consumed_to = t.long.as_ref().map_or(base, |(start, _)| *start);
        let src = batch.source(t.key, t.epoch, &t.path, consumed_to);
        let mut letters = Vec::new();
        let mut pos = 0usize;
        let mut lines = 0u64;
        let mut id = String::with_capacity(40);
        let mut result = Consumed::Done;
        loop {
            if batch.items.len() >= es.bulk_max_docs || batch.body.len() >= es.bulk_max_bytes {
                result = Consumed::Full;
                break;
            }
            let rest = &t.buf[pos..];
            let newline = memchr::memchr(b'\n', rest);
            // Each complete line: where it starts, and what of it is shipped (`None`: skipped).
            let (start, nl, over_long, ship): (u64, usize, bool, Option<Cow<'_, [u8]>>) = match (t.long.take(), newline)
            {
                (Some((start, kept)), Some(nl)) => {
                    // The end of an over-long line: what was kept of its start, if anything.
                    (start, nl, true, kept.map(Cow::Owned))
                }
                (Some(long), None) => {
                    // Still inside an over-long line: discard.
                    pos = t.buf.len();
                    t.long = Some(long);
                    break;
                }
                (None, newline) => {
                    let start = base + pos as u64;
                    if newline.is_none() && rest.len() <= max {
                        break; // a partial last line waits for its newline
                    }
                    if let Some(fp) = first_line_changed(&mut t.check_first_line, t.first_line, start, rest) {
                        result = Consumed::Rekey(fp);
                        break;
                    }
                    let truncate = input.long_lines == LongLines::Truncate;
                    let Some(nl) = newline else {
                        // Start of an over-long line: keep what may be shipped, drop the rest.
                        t.long = Some((start, truncate.then(|| rest[..max].to_vec())));
                        pos = t.buf.len();
                        break;
                    };
                    let line = &rest[..nl];
                    let over_long = line.len() > max;
                    let ship = if over_long {
                        truncate.then(|| &line[..max])
                    } else {
                        Some(line)
                    };
                    (start, nl, over_long, ship.map(Cow::Borrowed))
                }
            };
            if over_long {
                match ship {
                    Some(_) => self.stats.truncated.inc(),
                    None => self.stats.skipped.inc(),
                }
            }
            if let Some(bytes) = ship {
                emit(
                    encoder,
                    batch,
                    &t.prefix,
                    src,
                    start,
                    &bytes,
                    now_hours,
                    &mut id,
                    &mut letters,
                    &t.path,
                    &self.stats,
                );
            }
            lines += 1;
            pos += nl + 1;
            batch.sources[src as usize].offset = base + pos as u64;
        }
        remember(&mut t.recent, &t.buf[..pos]);
        let at = &mut batch.sources[src as usize];
        // Known only at a line end; inside an over-long line the position waits at its start.
        at.end_hash = (t.long.is_none() && at.offset == base + pos as u64).then(|| end_hash(&t.recent));
        t.buf.drain(..pos);
        if t.buf.capacity() > 4 * self.config.tail.read_chunk + max {
            t.buf.shrink_to(self.config.tail.read_chunk);
        }
        self.stats.lines.add(lines);
        self.batch.letters.append(&mut letters);
        result
    }

    /// The file's first line changed (truncated and rewritten): follow it under its new identity.
    fn rekey(&mut self, key: FileKey, fingerprint: u64) -> FileKey {
        let Some(mut t) = self.files.remove(&key) else {
            return key;
        };
        let new_key = FileKey { fingerprint, ..key };
        // The old identity may come back (rewritten again): its next generation is a new epoch.
        self.retired.insert(key, t.epoch + 1);
        t.first_line = fingerprint;
        match self.files.get(&new_key) {
            Some(other) if other.file.is_some() => {
                // Still draining a deleted file of that identity: keep ours, never reuse its ids.
                t.epoch += 1;
                t.prefix = t.key.id_prefix(t.epoch);
                self.files.insert(key, t);
                return key;
            }
            Some(dead) => {
                // A closed entry of that identity is a past generation: take it over.
                self.retired.insert(new_key, dead.epoch + 1);
                self.files.remove(&new_key);
            }
            None => {}
        }
        tracing::info!(path = %t.path.display(), "file rewritten from its start: new identity");
        self.batch.gone.push(key);
        t.key = new_key;
        t.epoch = self.next_epoch(&new_key);
        t.prefix = new_key.id_prefix(t.epoch);
        self.by_inode.insert((new_key.dev, new_key.ino), new_key);
        self.files.insert(new_key, t);
        new_key
    }

    /// An epoch never used for `key`: after every one this run retired or the checkpoint holds.
    fn next_epoch(&self, key: &FileKey) -> u32 {
        let retired = self.retired.get(key).copied().unwrap_or(0);
        let checkpointed = self.resume.get(key).map_or(0, |at| at.epoch + 1);
        retired.max(checkpointed)
    }

    fn send_batch(&mut self) {
        if self.held.is_some() || self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.seq = self.next_seq;
        self.next_seq += 1;
        let bytes = batch.body.len() as u64;
        let queued = self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.stats.queued_bytes.set(queued as i64);
        self.held = Some(batch);
        self.send_held();
    }

    fn send_held(&mut self) {
        if let Some(batch) = self.held.take() {
            match self.tx.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b)) => self.held = Some(b),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Find new files, renames, removals and truncations.
    fn scan(&mut self) {
        for t in self.files.values_mut() {
            t.at_path = false;
        }
        let inputs = self.config.inputs.clone();
        for (i, input) in inputs.iter().enumerate() {
            for path in matching_files(input) {
                if let Err(e) = self.scan_path(i, input, &path) {
                    tracing::debug!(path = %path.display(), error = %e, "cannot follow file");
                }
            }
        }
        let now = Instant::now();
        for t in self.files.values_mut() {
            if t.at_path || t.gone_since.is_some() {
                continue;
            }
            if t.file.is_none() {
                // Closed (idle) and no longer at any watched path: nothing more to read.
                t.gone_since = Some(now);
                self.batch.gone.push(t.key);
            } else if t.removed_since.is_none() {
                tracing::info!(path = %t.path.display(), "file removed or renamed away; reading it to its end");
                t.removed_since = Some(now);
            }
        }
        if self.startup {
            // Checkpoints of files not found at all: start their expiry clock.
            let live: Vec<FileKey> = self.files.keys().copied().collect();
            for key in self.resume.keys() {
                if !live.contains(key) {
                    self.batch.gone.push(*key);
                }
            }
            self.startup = false;
        }
        let forget = self.config.state.forget_after;
        let forgotten: Vec<FileKey> = self
            .files
            .values()
            .filter(|t| t.gone_since.is_some_and(|g| g.elapsed() >= forget))
            .map(|t| t.key)
            .collect();
        for key in forgotten {
            self.files.remove(&key);
            if self.by_inode.get(&(key.dev, key.ino)) == Some(&key) {
                self.by_inode.remove(&(key.dev, key.ino));
            }
        }
        self.enforce_open_limit();
        self.stats
            .files
            .set(self.files.values().filter(|t| t.gone_since.is_none()).count() as i64);
        self.stats
            .open_files
            .set(self.files.values().filter(|t| t.file.is_some()).count() as i64);
    }

    fn scan_path(&mut self, input_idx: usize, input: &Input, path: &Path) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let inode = (meta.dev(), meta.ino());
        if let Some(key) = self.by_inode.get(&inode).copied() {
            if let Some(t) = self.files.get_mut(&key) {
                if t.file.is_some() && !t.deleted() {
                    t.at_path = true;
                    if *t.path != *path {
                        tracing::info!(from = %t.path.display(), to = %path.display(), "file renamed");
                        t.path = Arc::from(path);
                    }
                    return Ok(());
                }
            }
        }
        let file = File::open(path)?;
        let fmeta = file.metadata()?;
        if (fmeta.dev(), fmeta.ino()) != inode {
            return Ok(()); // replaced between stat and open; next scan
        }
        // A file without a complete first line yet is followed too (renamed before it gets one,
        // it must not be lost): under a placeholder fingerprint, re-keyed when its first line
        // is read.
        let fp = read_fingerprint(&file)?;
        let key = FileKey::of(&fmeta, fp.unwrap_or(NO_FIRST_LINE));
        let size = fmeta.len();
        if let Some(t) = self.files.get_mut(&key) {
            if t.file.is_some() && t.deleted() {
                return Ok(()); // the old file is still being drained; take the new one next scan
            }
            t.at_path = true;
            t.path = Arc::from(path);
            t.removed_since = None;
            if t.gone_since.take().is_some() {
                tracing::info!(path = %path.display(), "file is back");
            }
            if t.file.is_none() && size != t.read_pos {
                t.file = Some(file);
                t.last_data = Instant::now();
                if size < t.read_pos {
                    truncated(t, &mut self.batch);
                } else {
                    seek(t)?;
                }
            }
            self.by_inode.insert(inode, key);
            return Ok(());
        }
        let checkpoint = self.resume.get(&key).copied().or_else(|| {
            // Same inode, first line and birth time under another device number: the same file.
            let (old, pos) = self.resume.iter().find(|(k, _)| key.same_file_elsewhere(k))?;
            tracing::info!(path = %path.display(), old_dev = old.dev, dev = key.dev, "device number changed; keeping the checkpoint");
            Some(*pos)
        });
        let (mut epoch, mut offset) = match (self.retired.get(&key), checkpoint) {
            (Some(next), _) => (*next, 0),
            (None, Some(at)) => (at.epoch, at.offset),
            (None, None) if input.read_from == ReadFrom::End && self.first_run && self.startup => {
                (0, last_line_end(&file, size)?)
            }
            (None, None) => (0, 0),
        };
        let rewritten = checkpoint
            .and_then(|at| at.end_hash)
            .is_some_and(|h| size >= offset && end_hash_at(&file, offset) != Some(h));
        if size < offset || rewritten {
            tracing::info!(path = %path.display(), offset, size, "file shorter than its checkpoint or rewritten: reading it from its start");
            (epoch, offset) = (epoch + 1, 0);
        }
        tracing::info!(path = %path.display(), offset, size, input = input.name, "following file");
        let recent = bytes_before(&file, offset).unwrap_or_default();
        let mut t = Tracked {
            key,
            epoch,
            prefix: key.id_prefix(epoch),
            input: input_idx,
            path: Arc::from(path),
            file: Some(file),
            read_pos: offset,
            buf: Vec::new(),
            long: None,
            at_path: true,
            removed_since: None,
            gone_since: None,
            last_data: Instant::now(),
            eof: false,
            check_first_line: fp.is_none(),
            first_line: key.fingerprint,
            end_check: None,
            recent,
        };
        seek(&mut t)?;
        let src = self.batch.source(key, epoch, &t.path, offset);
        self.batch.sources[src as usize].end_hash = Some(end_hash(&t.recent));
        self.by_inode.insert(inode, key);
        self.files.insert(key, t);
        Ok(())
    }

    /// End-of-file checks: truncation, finished removed files, idle files.
    fn maintain(&mut self) {
        let tail = self.config.tail.clone();
        let mut closed = Vec::new();
        for t in self.files.values_mut() {
            let Some(file) = t.file.as_ref() else { continue };
            if let Some(since) = t.removed_since {
                let Ok(meta) = file.metadata() else { continue };
                let size = meta.len();
                let finished = t.eof && size == t.read_pos;
                // A renamed file may still get the writer's last lines until it reopens its log;
                // a deleted one only holds disk space.
                let quiet = meta.nlink() == 0 || t.last_data.elapsed() >= tail.rotate_wait;
                let expired = since.elapsed() >= tail.close_removed_after;
                if !(expired || finished && quiet) {
                    continue;
                }
                if size > t.read_pos {
                    let unread = size - t.read_pos;
                    self.stats.unread_bytes.add(unread);
                    tracing::warn!(path = %t.path.display(), unread, "removed file closed before its end (close_removed_after)");
                } else if !t.buf.is_empty() {
                    tracing::info!(path = %t.path.display(), bytes = t.buf.len(), "removed file ends without a newline; its last partial line is not shipped");
                }
                tracing::info!(path = %t.path.display(), "closed removed file");
                t.file = None;
                t.buf = Vec::new();
                t.gone_since = Some(Instant::now());
                closed.push(t.key);
                continue;
            }
            if !t.eof {
                continue;
            }
            let Ok(meta) = file.metadata() else { continue };
            let size = meta.len();
            if size < t.read_pos {
                truncated(t, &mut self.batch);
            } else if t.last_data.elapsed() >= tail.close_inactive && size == t.read_pos {
                t.file = None;
                tracing::debug!(path = %t.path.display(), "closed inactive file");
            }
        }
        self.batch.gone.extend(closed);
    }

    fn enforce_open_limit(&mut self) {
        let max = self.config.tail.max_open_files;
        let mut open: Vec<(Instant, FileKey)> = self
            .files
            .values()
            .filter(|t| t.file.is_some() && t.eof && t.removed_since.is_none())
            .map(|t| (t.last_data, t.key))
            .collect();
        let total = self.files.values().filter(|t| t.file.is_some()).count();
        if total <= max {
            return;
        }
        open.sort_unstable();
        for (_, key) in open.into_iter().take(total - max) {
            if let Some(t) = self.files.get_mut(&key) {
                t.file = None;
            }
        }
    }
}

/// After a truncation, the first line decides the identity: its fingerprint when it differs
/// from the one the file is followed under (checked once per generation).
fn first_line_changed(check: &mut bool, followed: u64, start: u64, rest: &[u8]) -> Option<u64> {
    if start != 0 || !*check {
        return None;
    }
    let fp = fingerprint(rest)?;
    *check = false;
    (fp != followed).then_some(fp)
}

/// Encode one line into the batch and record it as an item (or a letter).
#[allow(clippy::too_many_arguments)]
fn emit(
    encoder: &mut Encoder,
    batch: &mut Batch,
    prefix: &str,
    src: u32,
    offset: u64,
    line: &[u8],
    now_hours: i64,
    id: &mut String,
    letters: &mut Vec<Letter>,
    path: &Path,
    stats: &Stats,
) {
    use std::fmt::Write;
    id.clear();
    let _ = write!(id, "{prefix}-{offset}");
    let start = batch.body.len();
    match encoder.encode(line, id, now_hours, &mut batch.body) {
        Outcome::Shipped { invalid } => {
            if invalid.is_some() {
                stats.invalid.inc();
            }
            batch.items.push(Item {
                start,
                end: batch.body.len(),
                source: src,
                offset,
            });
        }
        Outcome::Dropped => stats.dropped.inc(),
        Outcome::Rejected(reason) => letters.push(Letter {
            reason: format!("parse_error: {reason}"),
            status: None,
            file: path.to_path_buf(),
            offset,
            index: None,
            document: line.to_vec(),
        }),
    }
}

/// Keep the last [`END_BYTES`] of what was consumed.
fn remember(recent: &mut Vec<u8>, consumed: &[u8]) {
    if consumed.len() >= END_BYTES {
        recent.clear();
        recent.extend_from_slice(&consumed[consumed.len() - END_BYTES..]);
    } else {
        recent.extend_from_slice(consumed);
        let excess = recent.len().saturating_sub(END_BYTES);
        recent.drain(..excess);
    }
}

/// At the end of a file: true when it has new bytes to read. The file was rewritten, and is read
/// again from its start under a new epoch, when it is now shorter than the position, when its
/// first line changed, or when the bytes just before the position changed (truncated and
/// rewritten to the same size or past it, with the same first line).
fn grew(t: &mut Tracked, batch: &mut Batch) -> bool {
    let Some(file) = t.file.as_ref() else { return false };
    let Ok(meta) = file.metadata() else { return false };
    let size = meta.len();
    let modified = meta.modified().ok();
    let remembered = t.end_check.filter(|c| c.position == t.read_pos);
    if size == t.read_pos {
        match remembered {
            None => t.end_check = end_check(file, t.read_pos, modified),
            Some(c) if c.modified == modified => {}
            // Written without growing: rewritten in place, or touched.
            Some(c) if end_hash_at(file, t.read_pos) == Some(c.hash) => {
                t.end_check = Some(EndCheck { modified, ..c });
            }
            Some(_) => {
                truncated(t, batch);
                return true;
            }
        }
        return false;
    }
    let rewritten = size < t.read_pos
        || (t.read_pos > 0
            && t.first_line != NO_FIRST_LINE
            && read_fingerprint(file)
                .ok()
                .flatten()
                .is_some_and(|fp| fp != t.first_line))
        || remembered.is_some_and(|c| end_hash_at(file, t.read_pos) != Some(c.hash));
    if rewritten {
        truncated(t, batch);
    }
    true
}

/// What the bytes just before a position looked like when the reader stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EndCheck {
    position: u64,
    modified: Option<SystemTime>,
    hash: u64,
}

fn end_check(file: &File, position: u64, modified: Option<SystemTime>) -> Option<EndCheck> {
    Some(EndCheck {
        position,
        modified,
        hash: end_hash_at(file, position)?,
    })
}

fn truncated(t: &mut Tracked, batch: &mut Batch) {
    tracing::info!(path = %t.path.display(), position = t.read_pos, "file truncated; reading it from its start");
    t.epoch += 1;
    t.prefix = t.key.id_prefix(t.epoch);
    t.read_pos = 0;
    t.buf.clear();
    t.long = None;
    t.eof = false;
    t.check_first_line = true;
    t.end_check = None;
    t.recent.clear();
    if let Some(f) = t.file.as_mut() {
        let _ = f.seek(SeekFrom::Start(0));
    }
    batch.source(t.key, t.epoch, &t.path, 0);
}

fn seek(t: &mut Tracked) -> io::Result<()> {
    if let Some(f) = t.file.as_mut() {
        f.seek(SeekFrom::Start(t.read_pos))?;
    }
    Ok(())
}

/// The end of the last complete line at or before `size` (where `read_from = end` starts).
fn last_line_end(file: &File, size: u64) -> io::Result<u64> {
    let mut end = size;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// One file an input matches, as `--check` shows it.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The input's name.
    pub input: String,
    /// The file.
    pub path: PathBuf,
    /// Its identity; `None` while it has no complete first line.
    pub key: Option<FileKey>,
    /// `(epoch, offset)` from the checkpoints.
    pub checkpoint: Option<Position>,
    /// Its size.
    pub size: u64,
}

/// Every file the inputs match, with its identity and checkpoint.
pub fn describe(config: &Config, resume: &HashMap<FileKey, Position>) -> Vec<FileReport> {
    let mut out = Vec::new();
    for input in &config.inputs {
        for path in matching_files(input) {
            let (key, size) = match File::open(&path).and_then(|f| Ok((f.metadata()?, read_fingerprint(&f)?))) {
                Ok((m, fp)) => (fp.map(|fingerprint| FileKey::of(&m, fingerprint)), m.len()),
                Err(_) => (None, 0),
            };
            let checkpoint = key.and_then(|k| resume.get(&k).copied());
            out.push(FileReport {
                input: input.name.clone(),
                path,
                key,
                checkpoint,
                size,
            });
        }
    }
    out
}
