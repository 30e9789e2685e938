//! What the sink keeps: per index the stored `_id`s (with how often each was seen, for 409s and
//! fault closures), a document count and optionally the documents; index patterns; counters.

use std::collections::{hash_map, BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// No document slot: the document is not kept.
const NO_SLOT: u32 = u32::MAX;

/// The 64-bit hash of an `_id`: a multiply per 8 bytes (as Fx does) and murmur3's finaliser.
/// Not for adversarial input: the ids come from the tests and benchmarks driving the sink.
fn id_hash(id: &str) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mut h = id.len() as u64;
    let mut chunks = id.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    // A multiply only carries differences upwards; the table takes buckets from the low bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// For keys that already are hashes.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One `_id` of an index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Items that carried this `_id` so far, faulted and failed ones included.
    seen: u32,
    /// Last version written (kept after a delete, as Elasticsearch does); 0 if never written.
    version: u32,
    /// Index into [`Index::docs`], or [`NO_SLOT`].
    slot: u32,
    /// Whether a document is stored under this `_id` now.
    stored: bool,
    /// Where the id is in [`IdTable::names`]: offset << 16 | length.
    name: u64,
}

impl Entry {
    fn unseen() -> Self {
        Self {
            seen: 0,
            version: 0,
            slot: NO_SLOT,
            stored: false,
            name: 0,
        }
    }
}

/// The `_id`s of one index: the table maps an id's hash to its entry's position, entries are
/// appended to a vector and names to one arena. So a new id costs no allocation, the table's
/// buckets are 16 bytes (a million ids fit the CPU cache better) and growing it never reads the
/// names. With `Box<str>` keys and SipHash, the id table took half the sink's time.
#[derive(Debug, Default)]
struct IdTable {
    by_hash: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Ids whose hash another id already has (almost never).
    collided: HashMap<Box<str>, u32>,
    entries: Vec<Entry>,
    names: String,
}

impl IdTable {
    fn name<'a>(names: &'a str, e: &Entry) -> &'a str {
        let (at, len) = ((e.name >> 16) as usize, (e.name & 0xffff) as usize);
        names.get(at..at + len).unwrap_or("")
    }

    fn get(&self, id: &str) -> Option<&Entry> {
        self.get_hashed(id_hash(id), id)
    }

    /// The entry of `id` and whether it was just added (unseen).
    fn find_or_add(&mut self, id: &str) -> (&mut Entry, bool) {
        self.find_or_add_hashed(id_hash(id), id)
    }

    fn get_hashed(&self, hash: u64, id: &str) -> Option<&Entry> {
        let at = match self.by_hash.get(&hash) {
            Some(&at) if Self::name(&self.names, &self.entries[at as usize]) == id => at,
            Some(_) => *self.collided.get(id)?,
            None => return None,
        };
        self.entries.get(at as usize)
    }

    /// One probe of the table for the common cases (a new id, or a known one).
    fn find_or_add_hashed(&mut self, hash: u64, id: &str) -> (&mut Entry, bool) {
        let next = u32::try_from(self.entries.len()).expect("fewer than 4 billion ids per index");
        let (at, new) = match self.by_hash.entry(hash) {
            hash_map::Entry::Vacant(v) => (*v.insert(next), true),
            hash_map::Entry::Occupied(o) if Self::name(&self.names, &self.entries[*o.get() as usize]) == id => {
                (*o.get(), false)
            }
            hash_map::Entry::Occupied(_) => match self.collided.entry(id.into()) {
                hash_map::Entry::Occupied(o) => (*o.get(), false),
                hash_map::Entry::Vacant(v) => (*v.insert(next), true),
            },
        };
        if new {
            let name = ((self.names.len() as u64) << 16) | id.len() as u64;
            self.names.push_str(id);
            self.entries.push(Entry {
                name,
                ..Entry::unseen()
            });
        }
        (&mut self.entries[at as usize], new)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> + '_ {
        self.entries.iter().map(|e| (Self::name(&self.names, e), e))
    }
}

/// One index.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) uuid: String,
    ids: IdTable,
    count: u64,
    seq_no: u64,
    docs: Vec<Option<serde_json::Value>>,
}

/// The result of writing one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Newly stored: version and sequence number.
    Created(u32, u64),
    /// Replaced (`index` on an existing `_id`).
    Updated(u32, u64),
    /// `create` on an existing `_id`: its current version.
    Conflict(u32),
    /// Deleted: the version after the delete and the sequence number.
    Deleted(u32, u64),
    /// `delete` of an `_id` not stored.
    NotFound,
}

impl Index {
    fn new(uuid: String) -> Self {
        Self {
            uuid,
            ids: IdTable::default(),
            count: 0,
            seq_no: 0,
            docs: Vec::new(),
        }
    }

    /// Count one more sighting of `id`; returns the sightings before it.
    pub(crate) fn see(&mut self, id: &str) -> u32 {
        let (e, _) = self.ids.find_or_add(id);
        e.seen += 1;
        e.seen - 1
    }

    /// Store `doc` under `id`: `create` refuses an existing `_id`, `index` replaces it.
    /// `counted` says whether [`Index::see`] already counted this item.
    pub(crate) fn write(&mut self, id: &str, create: bool, doc: Option<serde_json::Value>, counted: bool) -> Written {
        let seq_no = self.seq_no;
        let (entry, new) = self.ids.find_or_add(id);
        if new {
            *entry = Entry {
                seen: u32::from(!counted),
                version: 1,
                stored: true,
                slot: push_doc(&mut self.docs, doc),
                name: entry.name,
            };
            self.count += 1;
            self.seq_no += 1;
            return Written::Created(1, seq_no);
        }
        entry.seen += u32::from(!counted);
        if entry.stored && create {
            return Written::Conflict(entry.version);
        }
        let created = !entry.stored;
        entry.version += 1;
        entry.stored = true;
        match entry.slot {
            NO_SLOT => entry.slot = push_doc(&mut self.docs, doc),
            slot => self.docs[slot as usize] = doc,
        }
        self.seq_no += 1;
        if created {
            self.count += 1;
            Written::Created(entry.version, seq_no)
        } else {
            Written::Updated(entry.version, seq_no)
        }
    }

    /// Remove `id`. `counted` as for [`Index::write`].
    pub(crate) fn delete(&mut self, id: &str, counted: bool) -> Written {
        let seq_no = self.seq_no;
        let (entry, _) = self.ids.find_or_add(id);
        entry.seen += u32::from(!counted);
        if !entry.stored {
            return Written::NotFound;
        }
        entry.version += 1;
        entry.stored = false;
        let (version, slot) = (entry.version, entry.slot);
        if slot != NO_SLOT {
            self.docs[slot as usize] = None;
        }
        self.count -= 1;
        self.seq_no += 1;
        Written::Deleted(version, seq_no)
    }
}

fn push_doc(docs: &mut Vec<Option<serde_json::Value>>, doc: Option<serde_json::Value>) -> u32 {
    match doc {
        Some(d) => {
            docs.push(Some(d));
            u32::try_from(docs.len() - 1).unwrap_or(NO_SLOT)
        }
        None => NO_SLOT,
    }
}

/// Every index, by name.
#[derive(Debug, Default)]
pub(crate) struct Store {
    indices: BTreeMap<String, Index>,
    created: u64,
}

impl Store {
    /// The index called `name`, created empty if missing.
    pub(crate) fn index_mut(&mut self, name: &str) -> &mut Index {
        if !self.indices.contains_key(name) {
            self.created += 1;
            let uuid = format!("es-sink-index-{:06}", self.created);
            self.indices.insert(name.to_string(), Index::new(uuid));
        }
        self.indices.get_mut(name).expect("inserted above")
    }

    /// Whether the index exists.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.indices.contains_key(name)
    }

    /// The names matched by an index pattern (`*` wildcards, comma lists, `_all`, `-excluded`),
    /// sorted; `Err(name)` for a concrete name that does not exist.
    pub(crate) fn resolve<'a>(&'a self, pattern: &str) -> Result<Vec<&'a str>, String> {
        let mut names: Vec<&'a str> = Vec::new();
        for part in pattern.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(excluded) = part.strip_prefix('-').filter(|_| !names.is_empty()) {
                names.retain(|n| !wildcard_match(excluded, n));
            } else if part == "_all" || part.contains('*') {
                let part = if part == "_all" { "*" } else { part };
                for name in self.indices.keys().filter(|n| wildcard_match(part, n)) {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            } else if let Some((name, _)) = self.indices.get_key_value(part) {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            } else {
                return Err(part.to_string());
            }
        }
        if pattern.split(',').all(|p| p.trim().is_empty()) {
            names.extend(self.indices.keys().map(String::as_str));
        }
        names.sort_unstable();
        Ok(names)
    }

    /// Documents stored in the indices matched by `pattern`; 0 when a concrete name is missing.
    pub(crate) fn count(&self, pattern: &str) -> u64 {
        self.resolve(pattern)
            .map(|names| names.iter().map(|n| self.indices[*n].count).sum())
            .unwrap_or(0)
    }

    /// Every index with its document count and uuid, sorted by name.
    pub(crate) fn indices(&self) -> Vec<(String, u64, String)> {
        self.indices
            .iter()
            .map(|(n, i)| (n.clone(), i.count, i.uuid.clone()))
            .collect()
    }

    /// The stored `_id`s of `index`, sorted.
    pub(crate) fn ids(&self, index: &str) -> Vec<String> {
        let Some(i) = self.indices.get(index) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = i
            .ids
            .iter()
            .filter(|(_, e)| e.stored)
            .map(|(id, _)| id.to_string())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Kept documents of the indices matched by `pattern`, by index name then in the order
    /// they were first stored.
    pub(crate) fn documents(&self, pattern: &str) -> Vec<serde_json::Value> {
        let names = self.resolve(pattern).unwrap_or_default();
        names
            .iter()
            .flat_map(|n| self.indices[*n].docs.iter().flatten().cloned())
            .collect()
    }

    /// The kept document `id` of `index`.
    pub(crate) fn document(&self, index: &str, id: &str) -> Option<serde_json::Value> {
        let i = self.indices.get(index)?;
        let e = i.ids.get(id).filter(|e| e.stored && e.slot != NO_SLOT)?;
        i.docs.get(e.slot as usize)?.clone()
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What the sink has done so far (a snapshot of its counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Bulk requests received, counted on arrival: refused, faulted and abandoned ones included.
    pub requests: u64,
    /// Bulk items answered.
    pub items: u64,
    /// Documents newly stored.
    pub created: u64,
    /// Documents replaced by `index`.
    pub updated: u64,
    /// Documents deleted.
    pub deleted: u64,
    /// `create` items answered 409.
    pub conflicts: u64,
    /// Items answered 400 because their source is not a JSON object (injected 400s not included).
    pub bad_documents: u64,
    /// Whole-request and per-item faults injected from the [`crate::FaultPlan`].
    pub injected_faults: u64,
    /// Bulk body bytes received, after decompression.
    pub bytes: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) items: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) updated: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) bad_documents: AtomicU64,
    pub(crate) injected_faults: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Counters {
    /// Add a request's tally.
    pub(crate) fn add(&self, s: &Stats) {
        let pairs = [
            (&self.requests, s.requests),
            (&self.items, s.items),
            (&self.created, s.created),
            (&self.updated, s.updated),
            (&self.deleted, s.deleted),
            (&self.conflicts, s.conflicts),
            (&self.bad_documents, s.bad_documents),
            (&self.injected_faults, s.injected_faults),
            (&self.bytes, s.bytes),
        ];
        for (counter, n) in pairs {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The current values.
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            items: get(&self.items),
            created: get(&self.created),
            updated: get(&self.updated),
            deleted: get(&self.deleted),
            conflicts: get(&self.conflicts),
            bad_documents: get(&self.bad_documents),
            injected_faults: get(&self.injected_faults),
            bytes: get(&self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hashes_spread_ids_that_differ_in_their_last_byte() {
        // Ids of 8 bytes differing only in the last one: a bare multiply would leave that
        // difference in the top bits, out of the bucket index.
        let buckets: std::collections::HashSet<u64> = (b' '..=b'~')
            .map(|c| id_hash(&format!("abcdefg{}", char::from(c))) & 0xffff)
            .collect();
        assert!(
            buckets.len() > 90,
            "{} distinct low 16-bit buckets of 95",
            buckets.len()
        );
    }

    #[test]
    fn ids_sharing_a_hash_are_kept_apart() {
        let mut table = IdTable::default();
        assert!(table.find_or_add_hashed(7, "a").1);
        table.find_or_add_hashed(7, "a").0.seen = 1;
        assert!(table.find_or_add_hashed(7, "b").1, "same hash, other id: a new entry");
        table.find_or_add_hashed(7, "b").0.seen = 2;
        assert!(!table.find_or_add_hashed(7, "b").1);
        assert_eq!(table.get_hashed(7, "a").map(|e| e.seen), Some(1));
        assert_eq!(table.get_hashed(7, "b").map(|e| e.seen), Some(2));
        assert!(table.get_hashed(7, "c").is_none());
        assert_eq!(table.collided.len(), 1);
        let mut names: Vec<&str> = table.iter().map(|(n, _)| n).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["a", "b"]);
    }

    #[test]
    fn wildcards_match_like_elasticsearch_patterns() {
        assert!(wildcard_match("mflog-*", "mflog-2026.11.23"));
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("m*-*.23", "mflog-2026.11.23"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
        assert!(!wildcard_match("mflog-*", "other"));
        assert!(!wildcard_match("a*b", "ab-a"));
        assert!(wildcard_match("a*a", "aa"));
        assert!(!wildcard_match("a*a", "a"));
    }

    #[test]
    fn create_conflicts_index_replaces_delete_frees() {
        let mut store = Store::default();
        let i = store.index_mut("x");
        assert_eq!(i.write("1", true, None, false), Written::Created(1, 0));
        assert_eq!(i.write("1", true, None, false), Written::Conflict(1));
        assert_eq!(i.write("1", false, None, false), Written::Updated(2, 1));
        assert_eq!(i.delete("1", false), Written::Deleted(3, 2));
        assert_eq!(i.delete("1", false), Written::NotFound);
        assert_eq!(i.write("1", true, None, false), Written::Created(4, 3));
        assert_eq!(i.see("1"), 6);
        assert_eq!(store.count("x"), 1);
        assert_eq!(store.ids("x"), vec!["1".to_string()]);
    }

    #[test]
    fn patterns_resolve_lists_wildcards_and_missing_names() {
        let mut store = Store::default();
        for name in ["a-1", "a-2", "b-1"] {
            store.index_mut(name).write("id", true, None, false);
        }
        assert_eq!(store.resolve("a-*").expect("ok"), vec!["a-1", "a-2"]);
        assert_eq!(store.resolve("b-1,a-2").expect("ok"), vec!["a-2", "b-1"]);
        assert_eq!(store.resolve("*,-a-*").expect("ok"), vec!["b-1"]);
        assert_eq!(store.resolve("").expect("ok").len(), 3);
        assert_eq!(store.resolve("c-*").expect("ok"), Vec::<&str>::new());
        assert_eq!(store.resolve("a-1,c"), Err("c".to_string()));
        assert_eq!(store.count("_all"), 3);
        assert_eq!(store.count("c"), 0);
    }
}
