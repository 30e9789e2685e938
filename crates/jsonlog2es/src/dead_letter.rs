//! The dead-letter file: documents Elasticsearch refused for good (400, 403, 404, 413 alone…)
//! and, when an input says so, lines that do not parse. One JSON object per line with the
//! reason, the source file and offset, and the document, so an operator can fix and replay them.
//! A write is flushed and fsynced before the batch holding it is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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
