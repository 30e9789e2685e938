//! The dead-letter file: documents Elasticsearch refused for good (400, 403, 404, 413 alone…)
//! and, when an input says so, lines that do not parse. One JSON object per line with the
//! reason, the source file and offset, and the document, so an operator can fix and replay them.
//! A write is flushed and fsynced before the batch holding it is acknowledged. A file moved away
//! by an operator is left alone; the next letter starts a new one at the path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

/// One refused document or line.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// Why: `status 400 mapper_parsing_exception: …`, `parse_error: …`.
    pub reason: String,
    /// HTTP status of the item, when Elasticsearch answered.
    pub status: Option<u16>,
    /// Source file.
    pub file: PathBuf,
    /// Byte offset of the line in it.
    pub offset: u64,
    /// Target index, when known.
    pub index: Option<String>,
    /// The document (or raw line), as sent or read.
    pub document: Vec<u8>,
}

/// Appends letters to one file.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetters {
    /// Letters go to `path` (created with its directory on first use).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `letters` and fsync.
    pub fn write(&self, letters: &[Letter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        for l in letters {
            let document = match serde_json::from_slice::<Value>(&l.document) {
                Ok(v) => v,
                Err(_) => Value::from(String::from_utf8_lossy(&l.document)),
            };
            let line = json!({
                "time": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "reason": l.reason,
                "status": l.status,
                "file": l.file.to_string_lossy(),
                "offset": l.offset,
                "index": l.index,
                "document": document,
            });
            serde_json::to_writer(&mut out, &line).map_err(io::Error::other)?;
            out.push(b'\n');
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // Moved away or deleted by an operator: start a new file at the path.
        let moved = match (guard.as_ref(), std::fs::metadata(&self.path)) {
            (Some(f), Ok(at_path)) => f.metadata().map(|m| m.ino() != at_path.ino()).unwrap_or(true),
            (Some(_), Err(_)) => true,
            (None, _) => false,
        };
        if moved {
            *guard = None;
        }
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            *guard = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let file = guard.as_mut().expect("opened above");
        file.write_all(&out)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: u64) -> Letter {
        Letter {
            reason: "mapper_parsing_exception: x".into(),
            status: Some(400),
            file: PathBuf::from("/var/log/a.log"),
            offset,
            index: Some("logs-2026.11.23".into()),
            document: br#"{"a":1}"#.to_vec(),
        }
    }

    #[test]
    fn appends_and_starts_again_when_moved_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/dead.ndjson");
        let d = DeadLetters::new(path.clone());
        d.write(&[letter(1), letter(2)]).expect("write");
        std::fs::rename(&path, dir.path().join("replayed.ndjson")).expect("move");
        d.write(&[letter(3)]).expect("write");
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .expect("new file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["offset"], 3);
        assert_eq!(lines[0]["document"]["a"], 1);
        assert_eq!(lines[0]["status"], 400);
        let old = std::fs::read_to_string(dir.path().join("replayed.ndjson")).expect("old");
        assert_eq!(old.lines().count(), 2);
    }
}
