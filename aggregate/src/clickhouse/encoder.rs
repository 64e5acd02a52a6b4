//! A partition's rollup → rows of `counters_log` (see `schemas/sql/migrations/001_counters.sql`).

use cdrflow_schemas::{Counters, LineRegistry, Regions};
use serde::{Deserialize, Serialize};

use crate::rollup::PartitionRollup;

/// One row of `counters_log`.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CounterRow {
    pub consumer_group: String,
    pub topic: String,
    pub kafka_partition: u16,
    pub first_offset: u64,
    pub last_offset: u64,
    pub flushed_at: u32,
    pub region: u8,
    pub line: String,
    pub hour: u32,
    pub local_hour: u32,
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub unanswered: u64,
    pub answered_within_sl: u64,
    pub abandoned_after_sl: u64,
    pub wait_sum_ms: u64,
    pub wait_max_ms: u64,
    pub talk_sum_ms: u64,
    pub transferred_out: u64,
    pub out_of_hours: u64,
    pub topic_names: Vec<String>,
    pub topic_calls: Vec<u64>,
    pub age_band_names: Vec<String>,
    pub age_band_calls: Vec<u64>,
    pub channel_names: Vec<String>,
    pub channel_calls: Vec<u64>,
    pub call_ids: Vec<u64>,
}

/// Which flush a row belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// Consumer group of the aggregator.
    pub group: &'a str,
    /// Kafka topic.
    pub topic: &'a str,
    /// Kafka partition.
    pub partition: i32,
    /// When the flush was made, UTC seconds.
    pub flushed_at: u32,
}

/// Where a row's counters belong: the flush's offsets, and the cell's region, line and
/// hour (UTC and the region's local wall clock, hours since the epoch in seconds).
struct Place<'a> {
    first: i64,
    last: i64,
    region: u8,
    line: &'a str,
    hour: i64,
    local_hour: i64,
}

fn row(unit: &Unit<'_>, at: Place<'_>, c: &Counters, calls: &[u64]) -> CounterRow {
    let Place { first, last, region, line, hour, local_hour } = at;
    let (age_band_names, age_band_calls) = c.named_age_bands().map(|(k, n)| (k.to_owned(), n)).unzip();
    let (channel_names, channel_calls) = c.named_channels().map(|(k, n)| (k.to_owned(), n)).unzip();
    CounterRow {
        consumer_group: unit.group.to_owned(),
        topic: unit.topic.to_owned(),
        kafka_partition: unit.partition as u16,
        first_offset: first as u64,
        last_offset: last as u64,
        flushed_at: unit.flushed_at,
        region,
        line: line.to_owned(),
        hour: hour as u32,
        local_hour: local_hour as u32,
        offered: c.offered,
        answered: c.answered,
        abandoned: c.abandoned,
        short_abandoned: c.short_abandoned,
        unanswered: c.unanswered,
        answered_within_sl: c.answered_within_sl,
        abandoned_after_sl: c.abandoned_after_sl,
        wait_sum_ms: c.wait_sum_ms,
        wait_max_ms: c.wait_max_ms,
        talk_sum_ms: c.talk_sum_ms,
        transferred_out: c.transferred_out,
        out_of_hours: c.out_of_hours,
        topic_names: c.by_topic.keys().map(|k| k.to_string()).collect(),
        topic_calls: c.by_topic.values().copied().collect(),
        age_band_names,
        age_band_calls,
        channel_names,
        channel_calls,
        call_ids: calls.to_vec(),
    }
}

/// The rows of one flush: one per (region, line, hour) touched, all carrying the unit's
/// offset range and the keys of the calls it counted; a unit with no valid CDR gets one
/// checkpoint row (region 0, zeros).
pub fn encode(unit: &Unit<'_>, rollup: &PartitionRollup, lines: &LineRegistry) -> Vec<CounterRow> {
    let first = rollup.first_offset.unwrap_or(rollup.last_offset);
    let last = rollup.last_offset;
    if rollup.rows.is_empty() {
        let checkpoint = Place { first, last, region: 0, line: "", hour: 0, local_hour: 0 };
        return vec![row(unit, checkpoint, &Counters::default(), &[])];
    }
    let mut keys: Vec<_> = rollup.rows.keys().copied().collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| {
            let region = Regions::get().by_code(k.region.0).expect("validated region");
            let local_hour = k.hour + i64::from(region.offset_seconds(k.hour));
            let cell = &rollup.rows[&k];
            let at = Place { first, last, region: k.region.0, line: &lines.line(k.line).id, hour: k.hour, local_hour };
            row(unit, at, &cell.counters, &cell.calls)
        })
        .collect()
}
