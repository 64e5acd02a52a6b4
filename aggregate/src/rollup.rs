//! The rollup of one Kafka partition since its last flush, and the calls it already counted.

use cdrflow_schemas::{Cdr, Counters, HourKey, LineRegistry, classify};
use rustc_hash::{FxHashMap, FxHashSet};

/// One (region, line, hour) cell of a rollup.
#[derive(Debug, Default, Clone)]
pub struct Cell {
    /// Its counters.
    pub counters: Counters,
    /// The call keys it counted ([`cdrflow_schemas::versions::call_key`]).
    pub calls: Vec<u64>,
}

/// Unflushed work of one partition: the counters of the CDRs read, and which offsets
/// they (and the rejected messages among them) came from.
#[derive(Debug, Default)]
pub struct PartitionRollup {
    /// First offset read since the last flush.
    pub first_offset: Option<i64>,
    /// Last offset read since the last flush.
    pub last_offset: i64,
    /// Messages read (valid or not).
    pub messages: u64,
    /// Counters per (region, line, hour).
    pub rows: FxHashMap<HourKey, Cell>,
}

impl PartitionRollup {
    /// Notes that the message at `offset` was read (whatever became of it).
    #[inline]
    pub fn saw(&mut self, offset: i64) {
        self.first_offset.get_or_insert(offset);
        self.last_offset = offset;
        self.messages += 1;
    }

    /// Adds a valid CDR, whose call key is `call`, to its hour.
    #[inline]
    pub fn add(&mut self, cdr: &Cdr, call: u64, lines: &LineRegistry) {
        let (key, out_of_hours) = classify(cdr, lines);
        let cell = self.rows.entry(key).or_default();
        cell.counters.record(cdr, lines.line(cdr.line), out_of_hours);
        cell.calls.push(call);
    }

    /// Adds another rollup's cells to this one (its offsets are not taken: the rebuild,
    /// which merges the rollups of dates read apart, has none).
    pub fn absorb(&mut self, other: PartitionRollup) {
        for (key, cell) in other.rows {
            match self.rows.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(cell);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let mine = o.get_mut();
                    mine.counters.merge(&cell.counters);
                    mine.calls.extend(cell.calls);
                }
            }
        }
    }

    /// Whether there is anything to flush.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// The calls one partition has counted whose start hour lies within a window of the newest
/// start hour seen: what lets the aggregator skip re-sent CDRs (see
/// [`cdrflow_schemas::versions`]). Filled from ClickHouse when the partition is assigned,
/// then kept up to date as calls are counted; dropped with the partition on revoke.
#[derive(Debug)]
pub struct CountedCalls {
    /// Every key in the window.
    keys: FxHashSet<u64>,
    /// The same keys by start hour (seconds), for eviction.
    by_hour: FxHashMap<i64, Vec<u64>>,
    /// The newest start hour seen.
    newest_hour: i64,
    /// The window, in seconds.
    window_s: i64,
}

impl CountedCalls {
    /// An empty window of `window_hours`.
    pub fn new(window_hours: u32) -> Self {
        CountedCalls {
            keys: FxHashSet::default(),
            by_hour: FxHashMap::default(),
            newest_hour: i64::MIN,
            window_s: window_hours as i64 * 3600,
        }
    }

    /// Records that `call` (started in `hour`) is counted; `false` if it already was.
    #[inline]
    pub fn first_time(&mut self, call: u64, hour: i64) -> bool {
        if !self.keys.insert(call) {
            return false;
        }
        self.by_hour.entry(hour).or_default().push(call);
        if hour > self.newest_hour {
            // Once per new hour: forget the hours that left the window.
            self.newest_hour = hour;
            let oldest = hour.saturating_sub(self.window_s);
            let keys = &mut self.keys;
            self.by_hour.retain(|&h, calls| {
                if h < oldest {
                    for k in calls.iter() {
                        keys.remove(k);
                    }
                }
                h >= oldest
            });
        }
        true
    }

    /// Calls in the window.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_once_within_the_window_and_old_hours_are_forgotten() {
        let mut w = CountedCalls::new(2);
        assert!(w.first_time(1, 0));
        assert!(!w.first_time(1, 0), "a re-send is skipped");
        assert!(w.first_time(2, 3600));
        assert!(w.first_time(3, 2 * 3600));
        assert!(!w.first_time(1, 2 * 3600), "hour 0 is still within 2 h of hour 2");
        assert!(w.first_time(4, 3 * 3600));
        assert_eq!(w.len(), 3, "hour 0 left the window");
        assert!(w.first_time(1, 3 * 3600), "a re-send older than the window counts again");
    }
}
