//! A partition's rollup → rows of `counters_log` (see `schemas/sql/migrations/001_counters.sql`).

use std::sync::LazyLock;

use cdrflow_schemas::{Counters, LineRegistry, Regions};
use serde::Serialize;

use crate::rollup::PartitionRollup;

/// One row of `counters_log` (and of `counters_rebuilt`), borrowed from a rollup's cell: a
/// flush copies no counter, allocates no string, and serializes the breakdowns' arrays
/// straight from the cell's counters ([`Breakdown`]). Fields in the table's column order.
#[derive(Debug, Clone, Copy, clickhouse::Row, Serialize)]
#[allow(missing_docs)]
pub struct CounterRow<'a> {
    pub consumer_group: &'a str,
    pub topic: &'a str,
    pub kafka_partition: u16,
    pub first_offset: u64,
    pub last_offset: u64,
    pub flushed_at: u32,
    pub region: u8,
    pub line: &'a str,
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
    pub topic_names: Breakdown<'a>,
    pub topic_calls: Breakdown<'a>,
    pub age_band_names: Breakdown<'a>,
    pub age_band_calls: Breakdown<'a>,
    pub channel_names: Breakdown<'a>,
    pub channel_calls: Breakdown<'a>,
    pub call_ids: &'a [u64],
}

/// One array of a cell's breakdowns (its topics', age bands' or channels' names or calls,
/// those with calls only, in the counters' order), serialized from the counters as it is
/// written.
#[derive(Debug, Clone, Copy)]
pub struct Breakdown<'a> {
    counters: &'a Counters,
    part: Part,
}

#[derive(Debug, Clone, Copy)]
enum Part {
    TopicNames,
    TopicCalls,
    AgeBandNames,
    AgeBandCalls,
    ChannelNames,
    ChannelCalls,
}

impl<'a> Breakdown<'a> {
    fn of(counters: &'a Counters, part: Part) -> Self {
        Breakdown { counters, part }
    }
}

impl Serialize for Breakdown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.counters;
        match self.part {
            Part::TopicNames => s.collect_seq(c.by_topic.keys().map(|k| k.as_str())),
            Part::TopicCalls => s.collect_seq(c.by_topic.values()),
            Part::AgeBandNames => seq(s, || c.named_age_bands().map(|(k, _)| k)),
            Part::AgeBandCalls => seq(s, || c.named_age_bands().map(|(_, n)| n)),
            Part::ChannelNames => seq(s, || c.named_channels().map(|(k, _)| k)),
            Part::ChannelCalls => seq(s, || c.named_channels().map(|(_, n)| n)),
        }
    }
}

/// The items of `items()` as a sequence whose length is written first (RowBinary's arrays
/// need it; a filtered iterator does not know it in advance, so it is counted first).
fn seq<S: serde::Serializer, I: Iterator<Item: Serialize>>(s: S, items: impl Fn() -> I) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut out = s.serialize_seq(Some(items().count()))?;
    for item in items() {
        out.serialize_element(&item)?;
    }
    out.end()
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

/// The counters of a unit with no valid CDR: its checkpoint row's.
static NO_CALLS: LazyLock<Counters> = LazyLock::new(Counters::default);

fn row<'a>(unit: &Unit<'a>, at: Place<'a>, c: &'a Counters, calls: &'a [u64]) -> CounterRow<'a> {
    let Place { first, last, region, line, hour, local_hour } = at;
    CounterRow {
        consumer_group: unit.group,
        topic: unit.topic,
        kafka_partition: unit.partition as u16,
        first_offset: first as u64,
        last_offset: last as u64,
        flushed_at: unit.flushed_at,
        region,
        line,
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
        topic_names: Breakdown::of(c, Part::TopicNames),
        topic_calls: Breakdown::of(c, Part::TopicCalls),
        age_band_names: Breakdown::of(c, Part::AgeBandNames),
        age_band_calls: Breakdown::of(c, Part::AgeBandCalls),
        channel_names: Breakdown::of(c, Part::ChannelNames),
        channel_calls: Breakdown::of(c, Part::ChannelCalls),
        call_ids: calls,
    }
}

/// The rows of one flush: one per (region, line, hour) touched, all carrying the unit's
/// offset range and the keys of the calls it counted; a unit with no valid CDR gets one
/// checkpoint row (region 0, zeros).
pub fn encode<'a>(unit: &Unit<'a>, rollup: &'a PartitionRollup, lines: &'a LineRegistry) -> Vec<CounterRow<'a>> {
    let first = rollup.first_offset.unwrap_or(rollup.last_offset);
    let last = rollup.last_offset;
    if rollup.rows.is_empty() {
        let checkpoint = Place { first, last, region: 0, line: "", hour: 0, local_hour: 0 };
        return vec![row(unit, checkpoint, &NO_CALLS, &[])];
    }
    let mut cells: Vec<_> = rollup.rows.iter().collect();
    cells.sort_unstable_by_key(|(k, _)| **k);
    cells
        .into_iter()
        .map(|(k, cell)| {
            let region = Regions::get().by_code(k.region.0).expect("validated region");
            let local_hour = k.hour + i64::from(region.offset_seconds(k.hour));
            let at = Place { first, last, region: k.region.0, line: &lines.line(k.line).id, hour: k.hour, local_hour };
            row(unit, at, &cell.counters, &cell.calls)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::Cell;
    use cdrflow_schemas::{HourKey, RegionCode};
    use serde_json::json;

    #[test]
    fn a_row_carries_its_cells_breakdowns_with_calls_only_names_beside_calls() {
        let lines = LineRegistry::builtin();
        let line = lines.by_number("122").expect("a built-in line");
        let mut c = Counters { offered: 5, answered: 3, ..Counters::default() };
        c.by_age_band = [0, 2, 0, 0, 0, 3];
        c.by_channel = [4, 0, 1, 0];
        c.by_topic.add("housing", 2);
        c.by_topic.add("covid", 3);
        let mut r = PartitionRollup::default();
        r.saw(10);
        r.saw(11);
        let hour = 1_700_000_000 / 3600 * 3600;
        r.rows.insert(HourKey { region: RegionCode(38), line, hour }, Cell { counters: c, calls: vec![7, 9] });
        let unit = Unit { group: "g", topic: "t", partition: 3, flushed_at: 5 };
        let rows = encode(&unit, &r, &lines);
        assert_eq!(rows.len(), 1);
        let v = serde_json::to_value(rows[0]).unwrap();
        let (bands, channels) = (Counters::age_band_names(), Counters::channel_names());
        assert_eq!(
            [&v["consumer_group"], &v["topic"], &v["kafka_partition"], &v["first_offset"], &v["last_offset"]],
            [&json!("g"), &json!("t"), &json!(3), &json!(10), &json!(11)]
        );
        assert_eq!(
            [&v["region"], &v["line"], &v["hour"], &v["offered"]],
            [&json!(38), &json!(lines.line(line).id), &json!(hour), &json!(5)]
        );
        assert_eq!(v["topic_names"], json!(["covid", "housing"]));
        assert_eq!(v["topic_calls"], json!([3, 2]));
        assert_eq!(v["age_band_names"], json!([bands[1], bands[5]]));
        assert_eq!(v["age_band_calls"], json!([2, 3]));
        assert_eq!(v["channel_names"], json!([channels[0], channels[2]]));
        assert_eq!(v["channel_calls"], json!([4, 1]));
        assert_eq!(v["call_ids"], json!([7, 9]));

        // A unit with no valid CDR: one checkpoint row, every array empty.
        let mut empty = PartitionRollup::default();
        empty.saw(12);
        let rows = encode(&unit, &empty, &lines);
        let v = serde_json::to_value(rows[0]).unwrap();
        assert_eq!([&v["region"], &v["first_offset"], &v["last_offset"]], [&json!(0), &json!(12), &json!(12)]);
        for array in [
            "topic_names",
            "topic_calls",
            "age_band_names",
            "age_band_calls",
            "channel_names",
            "channel_calls",
            "call_ids",
        ] {
            assert_eq!(v[array], json!([]), "{array}");
        }
    }
}
