//! The rollup of one Kafka partition since its last flush.

use cdrflow_schemas::{Cdr, Counters, HourKey, LineRegistry, classify};
use rustc_hash::FxHashMap;

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
    pub rows: FxHashMap<HourKey, Counters>,
}

impl PartitionRollup {
    /// Notes that the message at `offset` was read (whatever became of it).
    #[inline]
    pub fn saw(&mut self, offset: i64) {
        self.first_offset.get_or_insert(offset);
        self.last_offset = offset;
        self.messages += 1;
    }

    /// Adds a valid CDR to its hour.
    #[inline]
    pub fn add(&mut self, cdr: &Cdr, lines: &LineRegistry) {
        let (key, out_of_hours) = classify(cdr, lines);
        self.rows.entry(key).or_default().record(cdr, lines.line(cdr.line), out_of_hours);
    }

    /// Whether there is anything to flush.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
}
