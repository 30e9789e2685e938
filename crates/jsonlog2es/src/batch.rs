//! A batch: one `_bulk` body plus what it means for the checkpoints. The reader fills it; a
//! shipper sends it and reports it done; the committer applies its positions in batch order.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::FileKey;
use crate::dead_letter::Letter;

/// One document of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Its action + source lines in [`Batch::body`].
    pub start: usize,
    /// End (exclusive) of its lines in the body.
    pub end: usize,
    /// Index into [`Batch::sources`] of the file it came from.
    pub source: u32,
    /// Byte offset of the line in that file.
    pub offset: u64,
}

/// Where a file stands once a batch is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    /// The file.
    pub key: FileKey,
    /// Its truncation generation.
    pub epoch: u32,
    /// First byte not yet consumed (lines shipped, dropped or skipped before it).
    pub offset: u64,
    /// Hash of the bytes before `offset`, when the reader knows them.
    pub end_hash: Option<u64>,
    /// Its path when read.
    pub path: Arc<Path>,
}

/// Everything the reader hands a shipper at once.
#[derive(Debug, Default)]
pub struct Batch {
    /// Position in the reader's output; the committer applies batches in this order.
    pub seq: u64,
    /// NDJSON `_bulk` body.
    pub body: Vec<u8>,
    /// Its documents, in body order.
    pub items: Vec<Item>,
    /// Files whose position this batch moves.
    pub sources: Vec<SourcePos>,
    /// Files no longer at any watched path, closed by the reader.
    pub gone: Vec<FileKey>,
    /// Lines the reader refused (`invalid = dead_letter`); written before the batch settles.
    pub letters: Vec<Letter>,
    /// When the first content went in (for the flush interval).
    pub opened: Option<Instant>,
}

impl Batch {
    /// The index of `key`'s entry in [`Batch::sources`], created at `offset` if absent.
    pub fn source(&mut self, key: FileKey, epoch: u32, path: &Arc<Path>, offset: u64) -> u32 {
        self.opened.get_or_insert_with(Instant::now);
        if let Some(i) = self.sources.iter().rposition(|s| s.key == key && s.epoch == epoch) {
            return i as u32;
        }
        self.sources.push(SourcePos {
            key,
            epoch,
            offset,
            end_hash: None,
            path: path.clone(),
        });
        (self.sources.len() - 1) as u32
    }

    /// True when nothing at all is in it.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.gone.is_empty() && self.letters.is_empty()
    }
}
