//! Children's output: pipes read line by line into a per-watcher sink (a file rotated by size
//! and/or time, or ringmaster's own stdout/stderr), with the last lines kept for `ringctl tail`.
//!
//! - [`pump`] reads one child pipe until EOF and hands each line to a [`Sink`] and a [`TailBuffer`].
//! - [`Sink`] is shared by all processes of a watcher for one stream; writes are plain synchronous
//!   std writes of one whole line each (no user-space buffering, so nothing is lost at shutdown).
//! - File rotation keeps numbered backups (`path.1` newest … `path.N` oldest), for size and time
//!   rotation alike; time rotation is checked when a line is written, not by a timer.
//! - `time_format` prefixes are rendered in UTC by a small built-in strftime subset.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{FileStream, StreamConfig};

/// Minimum time between two WARN logs about write errors of one sink.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Lock a std mutex, ignoring poisoning (the data is plain buffers, still usable after a panic).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last lines of a watcher's output, bounded by a line count and a byte budget; cheap to clone.
///
/// A std `Mutex` (not tokio's) is enough: it is only held for a push or a copy, never across an
/// `.await`, so it cannot block the runtime for long or deadlock with a suspended task.
#[derive(Debug, Clone)]
pub struct TailBuffer {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Debug)]
struct Tail {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Default for TailBuffer {
    /// 1000 lines / 256 KiB.
    fn default() -> Self {
        Self::new(1000, 256 * 1024)
    }
}

impl TailBuffer {
    /// A buffer keeping at most `max_lines` lines totalling at most `max_bytes` bytes.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tail {
                lines: VecDeque::new(),
                bytes: 0,
                max_lines: max_lines.max(1),
                max_bytes: max_bytes.max(1),
            })),
        }
    }

    /// Append a line (without its `\n`; a line over the byte budget is cut to it), evicting the oldest.
    pub fn push(&self, line: &[u8]) {
        let mut tail = lock(&self.inner);
        let line = &line[..line.len().min(tail.max_bytes)];
        tail.bytes += line.len();
        tail.lines.push_back(line.to_vec());
        while tail.lines.len() > tail.max_lines || tail.bytes > tail.max_bytes {
            let Some(old) = tail.lines.pop_front() else { break };
            tail.bytes -= old.len();
        }
    }

    /// The last `n` lines, oldest first, as lossy UTF-8.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let tail = lock(&self.inner);
        let skip = tail.lines.len().saturating_sub(n);
        tail.lines
            .iter()
            .skip(skip)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
}

/// Which of ringmaster's own streams an [`StreamConfig::Inherit`] sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Ringmaster's stdout (for children's stdout).
    Stdout,
    /// Ringmaster's stderr (for children's stderr).
    Stderr,
}

/// Where one stream of one watcher's processes goes; cloneable, shared by all its processes.
#[derive(Debug, Clone)]
pub struct Sink {
    inner: Arc<SinkInner>,
}

#[derive(Debug)]
struct SinkInner {
    dest: Dest,
    errors: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

#[derive(Debug)]
enum Dest {
    Stdout,
    Stderr,
    Null,
    // std Mutex: held only for one synchronous write (never across .await).
    File(Mutex<FileState>),
}

#[derive(Debug)]
struct FileState {
    cfg: FileStream,
    /// `None` after a failed (re)open; retried on the next line.
    file: Option<File>,
    /// Current size of `file`.
    size: u64,
    /// When `file` was opened or last rotated (for `rotate_every`).
    opened: Instant,
}

impl Sink {
    /// A sink for `cfg`; `kind` picks ringmaster's stdout or stderr for `Inherit`. For a file, its
    /// directories are created and it is opened (append, mode 0640) now, so errors show at start.
    pub fn open(cfg: &StreamConfig, kind: StreamKind) -> io::Result<Sink> {
        let dest = match cfg {
            StreamConfig::Inherit => match kind {
                StreamKind::Stdout => Dest::Stdout,
                StreamKind::Stderr => Dest::Stderr,
            },
            StreamConfig::Null => Dest::Null,
            StreamConfig::File(fs) => {
                let file = open_append(&fs.path)?;
                let size = file.metadata()?.len();
                Dest::File(Mutex::new(FileState {
                    cfg: fs.clone(),
                    file: Some(file),
                    size,
                    opened: Instant::now(),
                }))
            }
        };
        Ok(Sink {
            inner: Arc::new(SinkInner {
                dest,
                errors: AtomicU64::new(0),
                last_warn: Mutex::new(None),
            }),
        })
    }

    /// Append `line` (adding `\n` if missing); failures are counted and logged, never raised.
    pub fn write_line(&self, line: &[u8]) {
        let result = match &self.inner.dest {
            Dest::Null => Ok(()),
            Dest::Stdout => write_std(&mut io::stdout().lock(), line),
            Dest::Stderr => write_std(&mut io::stderr().lock(), line),
            Dest::File(state) => lock(state).write_line(line),
        };
        if let Err(e) = result {
            self.record_error(&e);
        }
    }

    /// Flush ringmaster's stdout/stderr (file writes are unbuffered); failures are counted.
    pub fn flush(&self) {
        let result = match &self.inner.dest {
            Dest::Null => Ok(()),
            Dest::Stdout => io::stdout().flush(),
            Dest::Stderr => io::stderr().flush(),
            Dest::File(state) => lock(state).file.as_mut().map_or(Ok(()), |f| f.flush()),
        };
        if let Err(e) = result {
            self.record_error(&e);
        }
    }

    /// How many writes (or rotations/reopens) failed so far.
    pub fn write_errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    fn record_error(&self, error: &io::Error) {
        let total = self.inner.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = lock(&self.inner.last_warn);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(destination = %self.describe(), %error, errors_total = total, "output write failed");
        }
    }

    fn describe(&self) -> String {
        match &self.inner.dest {
            Dest::Stdout => "stdout".to_owned(),
            Dest::Stderr => "stderr".to_owned(),
            Dest::Null => "null".to_owned(),
            Dest::File(state) => lock(state).cfg.path.display().to_string(),
        }
    }
}

fn write_std(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    out.write_all(line)?;
    if !line.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Create `path`'s directories and open it for appending (mode 0640 when created).
fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `rename`, where a missing source is not an error (that backup does not exist yet).
fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl FileState {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 40);
        if let Some(format) = &self.cfg.time_format {
            buf.extend_from_slice(format_utc(format, SystemTime::now()).as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            buf.push(b'\n');
        }

        let too_big = self.cfg.max_bytes > 0 && self.size > 0 && self.size + buf.len() as u64 > self.cfg.max_bytes;
        let too_old = self
            .cfg
            .rotate_every
            .is_some_and(|every| self.opened.elapsed() >= every);
        let mut rotate_error = None;
        if too_big || too_old {
            rotate_error = self.rotate().err();
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("log file not open"))?;
        file.write_all(&buf)?;
        self.size += buf.len() as u64;
        rotate_error.map_or(Ok(()), Err)
    }

    /// Rotate: shift numbered backups and start a fresh file, or truncate in place with no backups.
    fn rotate(&mut self) -> io::Result<()> {
        self.opened = Instant::now();
        let count = self.cfg.backup_count;
        if count == 0 {
            if let Some(file) = &self.file {
                file.set_len(0)?;
                self.size = 0;
                return Ok(());
            }
            return self.reopen();
        }
        self.file = None;
        let path = self.cfg.path.clone();
        // path.(N-1) → path.N (replacing the oldest) … path.1 → path.2, then path → path.1.
        let mut result = Ok(());
        for n in (1..count).rev() {
            result = result.and(rename_if_exists(&backup_path(&path, n), &backup_path(&path, n + 1)));
        }
        result = result.and(rename_if_exists(&path, &backup_path(&path, 1)));
        // Whatever happened to the backups, go on writing to `path`.
        result.and(self.reopen())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let file = open_append(&self.cfg.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }
}

/// Render `time` in UTC with a strftime subset: `%Y %m %d %H %M %S %f` (microseconds) `%F %T %%`;
/// other `%x` sequences are copied as they are.
pub fn format_utc(format: &str, time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let (hour, minute, second) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{year:04}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('f') => out.push_str(&format!("{:06}", since.subsec_micros())),
            Some('F') => out.push_str(&format!("{year:04}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Largest read buffer of one pump.
const MAX_READ: usize = 16 * 1024;

/// Read `reader` until EOF (or a read error), writing each line to `sink` and `tail`.
///
/// Lines are split on `\n` (which is not passed on); a line longer than `max_line` bytes is cut
/// into `max_line`-byte pieces, each a line (a `max_line` of 0 counts as 1); a final line without
/// `\n` is written at EOF. The sink is flushed at EOF.
pub async fn pump<R: AsyncRead + Unpin>(mut reader: R, sink: Sink, tail: TailBuffer, max_line: usize) {
    let max_line = max_line.max(1);
    let emit = |line: &[u8]| {
        sink.write_line(line);
        tail.push(line);
    };
    let mut pending: Vec<u8> = Vec::new();
    // Most children are quiet: start small and grow only while reads fill the buffer, so that
    // hundreds of idle pipes cost little memory.
    let mut buf = vec![0u8; 512];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if n == buf.len() && buf.len() < MAX_READ {
                    buf.resize(buf.len() * 2, 0);
                }
                n
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading child output failed; treating as EOF");
                break;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + i];
            if line.is_empty() {
                emit(line);
            }
            for piece in line.chunks(max_line) {
                emit(piece);
            }
            start += i + 1;
        }
        // An unfinished line longer than max_line: pass on its full pieces now. Strictly longer,
        // so a line of exactly max_line bytes whose '\n' is in the next read stays whole.
        while pending.len() - start > max_line {
            emit(&pending[start..start + max_line]);
            start += max_line;
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        emit(&pending);
    }
    sink.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;

    fn file_cfg(path: &Path) -> FileStream {
        FileStream {
            path: path.to_owned(),
            max_bytes: 0,
            backup_count: 0,
            rotate_every: None,
            time_format: None,
        }
    }

    fn file_sink(cfg: FileStream) -> Sink {
        Sink::open(&StreamConfig::File(cfg), StreamKind::Stdout).expect("open file sink")
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("read log file")
    }

    #[tokio::test]
    async fn pump_lines_long_line_and_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/deeper/out.log");
        let sink = file_sink(file_cfg(&path));
        let tail = TailBuffer::default();
        let (mut tx, rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            // Pieces cut mid-line, including a line of exactly max_line split before its '\n'.
            let pieces: [&[u8]; 7] = [
                b"one\ntw",
                b"o\n\n",
                b"0123456789",
                b"\n",
                b"abcdefghijklmnopqrstuvwxy",
                b"z\n",
                b"par",
            ];
            for p in pieces {
                tx.write_all(p).await.expect("write");
                tokio::task::yield_now().await;
            }
            tx.write_all(b"tial").await.expect("write");
        });
        pump(rx, sink.clone(), tail.clone(), 10).await;
        writer.await.expect("writer task");
        let expected = "one\ntwo\n\n0123456789\nabcdefghij\nklmnopqrst\nuvwxyz\npartial\n";
        assert_eq!(read(&path), expected);
        assert_eq!(tail.lines(100).join("\n") + "\n", expected);
        assert_eq!(sink.write_errors(), 0);
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
    }

    #[tokio::test]
    async fn pump_from_slice_appends_to_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.log");
        std::fs::write(&path, "before\n").expect("seed");
        let sink = file_sink(file_cfg(&path));
        pump(&b"a\nb"[..], sink, TailBuffer::default(), 4096).await;
        assert_eq!(read(&path), "before\na\nb\n");
    }

    #[test]
    fn size_rotation_keeps_backup_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.log");
        let sink = file_sink(FileStream {
            max_bytes: 10,
            backup_count: 2,
            ..file_cfg(&path)
        });
        for line in ["0000", "1111", "2222", "3333", "4444", "5555\n", "6666"] {
            sink.write_line(line.as_bytes());
        }
        assert_eq!(read(&path), "6666\n");
        assert_eq!(read(&backup_path(&path, 1)), "4444\n5555\n");
        assert_eq!(read(&backup_path(&path, 2)), "2222\n3333\n");
        assert!(!backup_path(&path, 3).exists());
        assert_eq!(sink.write_errors(), 0);
    }

    #[test]
    fn size_rotation_without_backups_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.log");
        let sink = file_sink(FileStream {
            max_bytes: 10,
            ..file_cfg(&path)
        });
        for line in ["0000", "1111", "2222"] {
            sink.write_line(line.as_bytes());
        }
        assert_eq!(read(&path), "2222\n");
        assert!(!backup_path(&path, 1).exists());
        // A single line larger than max_bytes is still written whole.
        sink.write_line(b"a line longer than ten bytes");
        assert_eq!(read(&path), "a line longer than ten bytes\n");
    }

    #[test]
    fn time_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.log");
        let sink = file_sink(FileStream {
            backup_count: 1,
            rotate_every: Some(Duration::from_millis(50)),
            ..file_cfg(&path)
        });
        sink.write_line(b"a");
        std::thread::sleep(Duration::from_millis(70));
        sink.write_line(b"b");
        sink.write_line(b"c");
        assert_eq!(read(&path), "b\nc\n");
        assert_eq!(read(&backup_path(&path, 1)), "a\n");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let tail = TailBuffer::new(3, 1024);
        for i in 0..5 {
            tail.push(format!("line {i}").as_bytes());
        }
        assert_eq!(tail.lines(10), ["line 2", "line 3", "line 4"]);
        assert_eq!(tail.lines(2), ["line 3", "line 4"]);
        assert!(tail.lines(0).is_empty());

        let small = TailBuffer::new(100, 10);
        for line in ["aaaa", "bbbb", "cccc"] {
            small.push(line.as_bytes());
        }
        assert_eq!(small.lines(10), ["bbbb", "cccc"]);
        small.push(b"\xffzzzzzzzzzzzz");
        assert_eq!(small.lines(10), ["\u{fffd}zzzzzzzzz"]);
    }

    #[test]
    fn time_format_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.log");
        let sink = file_sink(FileStream {
            time_format: Some("%Y-%m-%dT%H:%M:%S.%f%%".to_owned()),
            ..file_cfg(&path)
        });
        sink.write_line(b"hello");
        let text = read(&path);
        let (stamp, rest) = text.split_once(' ').expect("prefix then space");
        assert_eq!(rest, "hello\n");
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999999%");
    }

    #[test]
    fn format_utc_known_times() {
        let at = |secs: u64, micros: u64| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
        assert_eq!(format_utc("%F %T", at(0, 0)), "1970-01-01 00:00:00");
        assert_eq!(format_utc("%Y/%m/%d", at(951_782_400, 0)), "2000/02/29");
        assert_eq!(
            format_utc("%Y-%m-%d %H:%M:%S.%f", at(1_709_210_096, 789_012)),
            "2024-02-29 12:34:56.789012"
        );
        assert_eq!(format_utc("%F %T", at(4_102_444_799, 0)), "2099-12-31 23:59:59");
        assert_eq!(format_utc("100%% %q %", at(0, 0)), "100% %q %");
    }

    #[tokio::test]
    async fn null_writes_nothing() {
        let sink = Sink::open(&StreamConfig::Null, StreamKind::Stderr).expect("null sink");
        let tail = TailBuffer::default();
        pump(&b"x\ny\n"[..], sink.clone(), tail.clone(), 100).await;
        assert_eq!(sink.write_errors(), 0);
        assert_eq!(tail.lines(10), ["x", "y"]);
    }

    #[test]
    fn uncreatable_directory_counts_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").expect("create blocking file");
        let cfg = StreamConfig::File(file_cfg(&blocker.join("sub/out.log")));
        assert!(Sink::open(&cfg, StreamKind::Stdout).is_err());

        // Opened fine, then its directory is replaced by a file: rotation cannot reopen it.
        let logs = dir.path().join("logs");
        let sink = file_sink(FileStream {
            max_bytes: 4,
            backup_count: 1,
            ..file_cfg(&logs.join("out.log"))
        });
        sink.write_line(b"abc");
        assert_eq!(sink.write_errors(), 0);
        std::fs::remove_dir_all(&logs).expect("remove logs dir");
        std::fs::write(&logs, "").expect("replace dir by a file");
        sink.write_line(b"def");
        sink.write_line(b"ghi");
        sink.flush();
        assert_eq!(sink.write_errors(), 2);
    }
}
