//! File identity and the checkpoint file.
//!
//! A file is `device + inode + fingerprint + birth time`, the fingerprint being a hash of its
//! first line (or first 1 KiB): a new file that reuses an inode number gets a new identity (by
//! its birth time, and by its first line where the filesystem keeps no birth time), and nothing
//! waits for 1 KiB to exist before a small file is read. A truncation bumps the file's `epoch`, which
//! is part of every document id, so new lines at old offsets are never taken for replays.
//!
//! `<state>/<name>.checkpoints.json` holds, per identity, the first byte not yet acknowledged by
//! Elasticsearch. It is written whole to a temporary file, fsynced, renamed over the old one and
//! the directory fsynced, so a crash leaves the old or the new file, never a torn one. Entries of
//! files gone for `forget_after` are dropped (and when a file went is saved too), so the state
//! stays as small as the set of live files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Most bytes hashed into a fingerprint.
pub const FINGERPRINT_BYTES: usize = 1024;

/// Identity of one file's content history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Hash of the first line (at most [`FINGERPRINT_BYTES`]).
    pub fingerprint: u64,
    /// Birth time in nanoseconds (statx `btime`), 0 where the filesystem has none: a new file
    /// on a reused inode differs here even when it starts with the same header line.
    #[serde(default)]
    pub born: u64,
}

impl FileKey {
    /// The identity of the file behind `meta` whose first line hashes to `fingerprint`.
    pub fn of(meta: &std::fs::Metadata, fingerprint: u64) -> Self {
        use std::os::unix::fs::MetadataExt;
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            fingerprint,
            born,
        }
    }

    /// The same file seen under another device number (device numbers may change across
    /// reboots: LVM, NFS, btrfs).
    pub fn same_file_elsewhere(&self, other: &FileKey) -> bool {
        self.dev != other.dev && (self.ino, self.fingerprint, self.born) == (other.ino, other.fingerprint, other.born)
    }

    /// The prefix of every document id read from this file in `epoch`: 16 hex digits. The
    /// device number is left out, so ids survive a device renumbering.
    pub fn id_prefix(&self, epoch: u32) -> String {
        let mut h = Md5::new();
        h.update(self.ino.to_le_bytes());
        h.update(self.fingerprint.to_le_bytes());
        h.update(self.born.to_le_bytes());
        h.update(epoch.to_le_bytes());
        let d = h.finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The fingerprint of a file that starts with `head`: the hash of its first line, newline
/// included, or of its first [`FINGERPRINT_BYTES`]; `None` while neither exists yet.
pub fn fingerprint(head: &[u8]) -> Option<u64> {
    let len = match memchr::memchr(b'\n', &head[..head.len().min(FINGERPRINT_BYTES)]) {
        Some(i) => i + 1,
        None if head.len() >= FINGERPRINT_BYTES => FINGERPRINT_BYTES,
        None => return None,
    };
    let d = Md5::digest(&head[..len]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    Some(u64::from_le_bytes(b))
}

/// Read the fingerprint of an open file.
pub fn read_fingerprint(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0u8; FINGERPRINT_BYTES];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(fingerprint(&head[..n]))
}

/// Where a file's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Truncation generation.
    pub epoch: u32,
    /// First byte not consumed.
    pub offset: u64,
    /// [`end_hash`] of the bytes before `offset`, when known.
    pub end_hash: Option<u64>,
}

impl Entry {
    /// The entry's position.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.offset,
            end_hash: self.end_hash,
        }
    }
}

/// Most bytes before a position that [`end_hash`] covers.
pub const END_BYTES: usize = 256;

/// Hash of the bytes just before a position (pass at most [`END_BYTES`] of them).
pub fn end_hash(bytes: &[u8]) -> u64 {
    let d = Md5::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// The bytes of `file` just before `position` (at most [`END_BYTES`]).
pub fn bytes_before(file: &File, position: u64) -> Option<Vec<u8>> {
    let start = position.saturating_sub(END_BYTES as u64);
    let mut buf = vec![0u8; (position - start) as usize];
    file.read_exact_at(&mut buf, start).ok()?;
    Some(buf)
}

/// [`end_hash`] of the bytes of `file` before `position`, read from disk.
pub fn end_hash_at(file: &File, position: u64) -> Option<u64> {
    bytes_before(file, position).map(|b| end_hash(&b))
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Identity.
    #[serde(flatten)]
    pub key: FileKey,
    /// Truncation generation.
    pub epoch: u32,
    /// First byte not yet acknowledged.
    pub offset: u64,
    /// Last path it was read under.
    pub path: PathBuf,
    /// Hash of the (at most [`END_BYTES`]) bytes before `offset`: a file rewritten while the
    /// daemon was stopped, with the same first line and not shorter, is told apart by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_hash: Option<u64>,
    /// When the offset last moved (epoch seconds).
    pub updated: u64,
    /// When the file was last seen gone from every watched path (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    files: Vec<Entry>,
}

/// The checkpoints of one daemon.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    entries: HashMap<FileKey, Entry>,
    existed: bool,
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Checkpoints {
    /// Load `path`; a missing file is an empty set (and [`Checkpoints::existed`] is false). A
    /// complete temporary file left by a crash between fsync and rename is newer, so it wins.
    pub fn load(path: &Path) -> io::Result<Self> {
        let tmp = tmp_path(path);
        let mut existed = false;
        let mut entries = HashMap::new();
        for candidate in [&tmp, path] {
            match std::fs::read(candidate) {
                Ok(bytes) => match serde_json::from_slice::<FileFormat>(&bytes) {
                    Ok(f) => {
                        existed = true;
                        entries = f.files.into_iter().map(|e| (e.key, e)).collect();
                        break;
                    }
                    Err(e) if *candidate == tmp => {
                        tracing::info!(path = %tmp.display(), error = %e, "ignoring an incomplete checkpoint file");
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e} (move it away to start over)", path.display()),
                        ))
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            existed,
        })
    }

    /// True when a checkpoint file was found: this is not the first start.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The entry of `key`.
    pub fn get(&self, key: &FileKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record that `key` is consumed up to `offset` in `epoch`.
    pub fn advance(&mut self, key: FileKey, at: Position, path: &Path, now: u64) {
        let e = self.entries.entry(key).or_insert_with(|| Entry {
            key,
            epoch: at.epoch,
            offset: at.offset,
            path: path.to_path_buf(),
            end_hash: at.end_hash,
            updated: now,
            gone_since: None,
        });
        if (at.epoch, at.offset) > (e.epoch, e.offset) {
            (e.epoch, e.offset, e.end_hash) = (at.epoch, at.offset, at.end_hash);
        } else if (at.epoch, at.offset) == (e.epoch, e.offset) && at.end_hash.is_some() {
            e.end_hash = at.end_hash;
        }
        if e.path != path {
            e.path = path.to_path_buf();
        }
        e.updated = now;
        e.gone_since = None;
    }

    /// Record that `key` left every watched path.
    pub fn mark_gone(&mut self, key: &FileKey, now: u64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.gone_since.get_or_insert(now);
        }
    }

    /// Drop entries gone for longer than `forget_after`; returns how many.
    pub fn expire(&mut self, now: u64, forget_after: Duration) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.gone_since
                .is_none_or(|g| now.saturating_sub(g) < forget_after.as_secs())
        });
        before - self.entries.len()
    }

    /// Write atomically: temporary file, fsync, rename, directory fsync.
    pub fn save(&mut self) -> io::Result<()> {
        let mut files: Vec<Entry> = self.entries.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path).then(a.key.ino.cmp(&b.key.ino)));
        let body = serde_json::to_vec_pretty(&FileFormat { version: 1, files }).map_err(io::Error::other)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = tmp_path(&self.path);
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()?;
        self.existed = true;
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: u32, offset: u64) -> Position {
        Position {
            epoch,
            offset,
            end_hash: None,
        }
    }

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            fingerprint: 7,
            born: 0,
        }
    }

    #[test]
    fn fingerprint_is_the_first_line_or_first_kib() {
        assert_eq!(fingerprint(b"abc"), None, "no complete first line yet");
        assert_eq!(fingerprint(b"abc\n"), fingerprint(b"abc\nmore lines\n"));
        assert_ne!(fingerprint(b"abc\n"), fingerprint(b"abd\n"));
        let long = vec![b'x'; 2000];
        assert_eq!(fingerprint(&long), fingerprint(&long[..FINGERPRINT_BYTES]));
    }

    #[test]
    fn ids_differ_by_epoch_and_identity() {
        let a = key(1).id_prefix(0);
        assert_eq!(a.len(), 16);
        assert_eq!(a, key(1).id_prefix(0));
        assert_ne!(a, key(1).id_prefix(1));
        assert_ne!(a, key(2).id_prefix(0));
        let reborn = FileKey { born: 5, ..key(1) };
        assert_ne!(a, reborn.id_prefix(0), "a new file on the same inode");
        let moved = FileKey { dev: 9, ..key(1) };
        assert_eq!(a, moved.id_prefix(0), "a device renumbering keeps the ids");
        assert!(moved.same_file_elsewhere(&key(1)) && !reborn.same_file_elsewhere(&key(1)));
    }

    #[test]
    fn saves_atomically_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/x.checkpoints.json");
        let mut c = Checkpoints::load(&path).expect("load");
        assert!(!c.existed());
        c.advance(key(1), pos(0, 100), Path::new("/l/a.log"), 10);
        c.advance(key(1), pos(0, 50), Path::new("/l/a.log"), 11);
        c.advance(key(2), pos(3, 7), Path::new("/l/b.log"), 10);
        c.save().expect("save");
        let back = Checkpoints::load(&path).expect("reload");
        assert!(back.existed());
        assert_eq!(
            back.get(&key(1)).map(|e| e.offset),
            Some(100),
            "offsets never move back"
        );
        assert_eq!(back.get(&key(2)).map(|e| (e.epoch, e.offset)), Some((3, 7)));
        assert!(!path.with_file_name("x.checkpoints.json.tmp").exists());

        // A torn temporary file is ignored; a corrupt stable file is refused.
        std::fs::write(path.with_file_name("x.checkpoints.json.tmp"), b"{\"vers").expect("write");
        assert_eq!(Checkpoints::load(&path).expect("reload").len(), 2);
        std::fs::write(&path, b"garbage").expect("write");
        assert!(Checkpoints::load(&path).is_err());
    }

    #[test]
    fn gone_entries_expire_and_come_back() {
        let mut c = Checkpoints::load(Path::new("/nonexistent/c.json")).expect("load");
        c.advance(key(1), pos(0, 1), Path::new("/a"), 0);
        c.advance(key(2), pos(0, 1), Path::new("/b"), 0);
        c.mark_gone(&key(1), 100);
        c.mark_gone(&key(2), 100);
        c.advance(key(2), pos(0, 2), Path::new("/b"), 150);
        assert_eq!(c.expire(100 + 59, Duration::from_secs(60)), 0);
        assert_eq!(c.expire(100 + 60, Duration::from_secs(60)), 1);
        assert!(c.get(&key(1)).is_none() && c.get(&key(2)).is_some());
    }
}
