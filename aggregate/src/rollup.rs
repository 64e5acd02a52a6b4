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
        // Room for sixteen calls at once: growing from four took up to three reallocations.
        let cell = self.rows.entry(key).or_insert_with(|| Cell { calls: Vec::with_capacity(16), ..Cell::default() });
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
///
/// A set of keys answers "counted already?" in one lookup; beside it, the keys of each
/// hour, so that the hour that leaves the window takes its own keys out of the set and
/// nothing else is visited. (A single map of keys to hours, swept when an hour left, visited
/// all 48 hours of keys every hour: 48 visits per call, which cost more than the rest of
/// the rollup; `benches/RESULTS.md` §19.)
#[derive(Debug)]
pub struct CountedCalls {
    /// Every key in the window.
    keys: FxHashSet<u64>,
    /// The keys of each hour held (hours since the epoch), by hour, oldest first.
    hours: Vec<(i32, Vec<u64>)>,
    /// Where in `hours` the last call's hour was: the next call's, mostly.
    last: usize,
    /// The newest start hour seen (hours since the epoch).
    newest_hour: i32,
    /// The window, in hours.
    window_hours: i32,
}

impl CountedCalls {
    /// An empty window of `window_hours`.
    pub fn new(window_hours: u32) -> Self {
        CountedCalls {
            keys: FxHashSet::default(),
            hours: Vec::new(),
            last: 0,
            newest_hour: i32::MIN,
            window_hours: i32::try_from(window_hours).unwrap_or(i32::MAX),
        }
    }

    /// Records that `call` (started in `hour`, seconds) is counted; `false` if it already
    /// was.
    ///
    /// When a call's hour is the newest yet, the hours more than the window behind it are
    /// forgotten, oldest first, each with its keys; a call older than the window is still
    /// held until then.
    #[inline]
    pub fn first_time(&mut self, call: u64, hour: i64) -> bool {
        let hour = hour.div_euclid(3600).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        if !self.keys.insert(call) {
            return false;
        }
        self.hour_of(hour).push(call);
        if hour > self.newest_hour {
            self.newest_hour = hour;
            let oldest = hour.saturating_sub(self.window_hours);
            let gone = self.hours.partition_point(|(h, _)| *h < oldest);
            if gone > 0 {
                for (_, keys) in self.hours.drain(..gone) {
                    for key in keys {
                        self.keys.remove(&key);
                    }
                }
                self.last = 0;
            }
        }
        true
    }

    /// The keys of `hour`, made if new, in their place by hour.
    #[inline]
    fn hour_of(&mut self, hour: i32) -> &mut Vec<u64> {
        if self.hours.get(self.last).is_none_or(|(h, _)| *h != hour) {
            self.last = match self.hours.binary_search_by_key(&hour, |(h, _)| *h) {
                Ok(at) => at,
                Err(at) => {
                    // A new newest hour holds about as many calls as the hour before it;
                    // a late one, a few.
                    let like = match at == self.hours.len() {
                        true => self.hours.last().map_or(0, |(_, keys)| keys.len()),
                        false => 0,
                    };
                    self.hours.insert(at, (hour, Vec::with_capacity(like)));
                    at
                }
            };
        }
        &mut self.hours[self.last].1
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

    #[test]
    fn the_window_agrees_with_a_plain_model_of_it() {
        // The model: every counted call with its hour; on each new newest hour, the hours
        // more than the window behind it are forgotten. Calls arrive mostly in order, some
        // late (older than the window too), some re-sent, with gaps of hours and days.
        for window in [0u32, 1, 2, 48] {
            let mut w = CountedCalls::new(window);
            let mut model: Vec<(u64, i64)> = Vec::new();
            let mut newest = i64::MIN;
            let mut hour = 1_640_995_200i64;
            let mut x = u64::from(window) + 1;
            for _ in 0..20_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                match x >> 58 {
                    0 => hour += 3600 * ((x >> 40) % 80) as i64,
                    1..=3 => hour += 3600,
                    _ => {}
                }
                let late = 3600 * ((x >> 20) % 100) as i64 * ((x >> 33) % 4 == 0) as i64;
                let (call, h) = ((x >> 45) % 3_000, hour - late);
                let expected = !model.iter().any(|(c, _)| *c == call);
                if expected {
                    model.push((call, h));
                    if h > newest {
                        newest = h;
                        model.retain(|(_, mh)| *mh >= h - i64::from(window) * 3600);
                    }
                }
                assert_eq!(w.first_time(call, h), expected, "call {call} at {h}, window {window}");
                assert_eq!(w.len(), model.len());
            }
        }
    }
}
