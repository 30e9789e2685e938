//! The collection schedule: when each (collection, target) is due.
//!
//! Due times are absolute: `k × interval + offset` milliseconds since the epoch, where the
//! offset is a stable hash of the plugin, collection and target modulo the interval. So the
//! schedule never drifts (a late tick does not push later ones back), jobs of equal intervals
//! are spread over the interval instead of all firing on the same second, and a new leader
//! taking over continues the very same schedule. A slot the manager could not serve in time
//! (it was not leader, or stalled) is skipped and counted, never run late in a burst.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::collection::Collection;

/// One scheduled (collection, target).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The collection.
    pub collection: Arc<Collection>,
    /// The target.
    pub target: String,
    interval_ms: u64,
    offset_ms: u64,
}

/// A due job: the entry and the slot it was due at.
#[derive(Debug, Clone)]
pub struct Due<'a> {
    /// What to run.
    pub entry: &'a Entry,
    /// Its slot, milliseconds since the epoch.
    pub due_ms: u64,
}

/// Every periodic (collection, target), ordered by next due time.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: Vec<Entry>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

/// FNV-1a: stable across processes and versions (std's hasher is neither).
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The first slot `k × interval + offset` strictly after `after_ms`.
pub fn next_slot(after_ms: u64, interval_ms: u64, offset_ms: u64) -> u64 {
    if after_ms < offset_ms {
        return offset_ms;
    }
    ((after_ms - offset_ms) / interval_ms + 1) * interval_ms + offset_ms
}

impl Schedule {
    /// The schedule of every enabled periodic collection, first slots after `now_ms`.
    pub fn new(collections: &[Arc<Collection>], now_ms: u64) -> Self {
        let mut s = Self::default();
        for c in collections {
            if !c.enabled || c.interval.is_zero() {
                continue;
            }
            let interval_ms = (c.interval.as_millis() as u64).max(1);
            for target in &c.targets {
                let offset_ms = stable_hash(&[&c.plugin, &c.name, target]) % interval_ms;
                let idx = s.entries.len();
                s.entries.push(Entry {
                    collection: c.clone(),
                    target: target.clone(),
                    interval_ms,
                    offset_ms,
                });
                s.heap.push(Reverse((next_slot(now_ms, interval_ms, offset_ms), idx)));
            }
        }
        s
    }

    /// Number of scheduled (collection, target) pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is periodic.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest due time, milliseconds since the epoch.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Every job due at or before `now_ms`, each rescheduled at its next slot after `now_ms`;
    /// and how many slots were skipped because they were more than one interval late.
    pub fn take_due(&mut self, now_ms: u64) -> (Vec<Due<'_>>, u64) {
        let mut due = Vec::new();
        let mut skipped = 0;
        while let Some(&Reverse((t, idx))) = self.heap.peek() {
            if t > now_ms {
                break;
            }
            self.heap.pop();
            let e = &self.entries[idx];
            // Slots in (t, now] were missed too: they are skipped, not run in a burst.
            let next = next_slot(now_ms, e.interval_ms, e.offset_ms);
            skipped += (next - t) / e.interval_ms - 1;
            self.heap.push(Reverse((next, idx)));
            due.push((idx, t));
        }
        let entries = &self.entries;
        let due = due
            .into_iter()
            .map(|(idx, due_ms)| Due {
                entry: &entries[idx],
                due_ms,
            })
            .collect();
        (due, skipped)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::collection::Collection;

    fn collection(name: &str, interval: Duration, targets: &[&str]) -> Arc<Collection> {
        let text = "[c]\nmethod = TCP\nport = 1\n".to_string();
        let ini = ironwork_core::ini::Ini::parse(std::path::Path::new("t.ini"), &text).unwrap();
        let mut report = ironwork_core::config::Report::default();
        let mut r = report.section(std::path::Path::new("t.ini"), &ini.sections[0]);
        let mut c = crate::config::read_collection(&mut r, "p", name, std::path::Path::new("/")).unwrap();
        c.interval = interval;
        c.targets = targets.iter().map(|t| t.to_string()).collect();
        Arc::new(c)
    }

    #[test]
    fn slots_keep_their_phase_however_late_the_ticks_are() {
        let c = collection("a", Duration::from_secs(10), &["t"]);
        let mut s = Schedule::new(&[c], 1_000_000);
        let first = s.next_due().unwrap();
        let phase = first % 10_000;
        assert!(first > 1_000_000 && first <= 1_010_000);
        // Ticks arrive late by varying amounts; every slot stays on the phase.
        let mut now = first;
        for late in [0u64, 3, 999, 17, 4_000] {
            now += late;
            let (due, skipped) = s.take_due(now);
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].due_ms % 10_000, phase);
            assert_eq!(skipped, 0);
            now = s.next_due().unwrap();
            assert_eq!(now % 10_000, phase);
        }
    }

    #[test]
    fn missed_slots_are_skipped_and_counted_not_replayed() {
        let c = collection("a", Duration::from_secs(1), &["t"]);
        let mut s = Schedule::new(&[c], 0);
        let first = s.next_due().unwrap();
        let (due, skipped) = s.take_due(first + 5_500);
        assert_eq!(due.len(), 1, "one run, not six");
        assert_eq!(skipped, 5);
        assert!(s.next_due().unwrap() > first + 5_500);
    }

    #[test]
    fn targets_of_one_interval_are_spread_over_it() {
        let targets: Vec<String> = (0..200).map(|i| format!("host{i}")).collect();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        let c = collection("a", Duration::from_secs(60), &refs);
        let s = Schedule::new(&[c], 0);
        let mut per_10s = [0usize; 6];
        for Reverse((t, _)) in s.heap.iter() {
            per_10s[((t % 60_000) / 10_000) as usize] += 1;
        }
        assert!(per_10s.iter().all(|&n| n > 15), "{per_10s:?}");
    }

    #[test]
    fn on_demand_and_disabled_collections_are_not_scheduled() {
        let a = collection("a", Duration::ZERO, &["t"]);
        let mut b = (*collection("b", Duration::from_secs(5), &["t"])).clone();
        b.enabled = false;
        assert!(Schedule::new(&[a, Arc::new(b)], 0).is_empty());
    }

    #[test]
    fn next_slot_is_strictly_after() {
        assert_eq!(next_slot(0, 10, 3), 3);
        assert_eq!(next_slot(3, 10, 3), 13);
        assert_eq!(next_slot(12, 10, 3), 13);
        assert_eq!(next_slot(13, 10, 3), 23);
    }
}
