//! `cdrflow reconcile`: the three stores checked against each other.
//!
//! 1. **Kafka ↔ archive**, per partition: the archive's committed units (its commit
//!    markers) must cover the offsets contiguously from the start of what Kafka holds, with
//!    no gap and no overlap, up to at least the ingest group's committed offset (the worker
//!    commits an offset to Kafka only after the unit holding it is committed to the archive);
//!    how far behind the end of the partition it is, is reported.
//! 2. **The archive's files**: every file a commit lists must exist with the rows it lists;
//!    a data file that no commit lists (left by an interrupted unit, or copied in) is named.
//! 3. **ClickHouse's streaming log**, per partition: its flushes must cover the offsets
//!    contiguously, without overlap, and no flush may be stored twice.
//! 4. **Counters**: recomputed from the archive with the aggregator's own rollup
//!    ([`cdrflow_aggregate::rebuild`]) and compared, cell by cell, with what the dashboards
//!    read (`counters_current`) for the selected dates and region.
//!
//! A check that checked nothing is a mismatch too: a consumer group that holds no position
//! on a topic that has messages (a mistyped `--ingest-group`, say: the groups that do are
//! listed), an archive without any unit of the topic, a selection with no file and no
//! counter (`nothing_checked`). A missing archive or a reversed date range is an error.
//!
//! Every mismatch is named; the command exits non-zero if there is any. Run it when the
//! workers have caught up (or on closed dates): a sink that is behind shows as a mismatch
//! of counters, and the partition table shows the positions that explain it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use cdrflow_aggregate::clickhouse::ClickHouse;
use cdrflow_aggregate::rebuild::{Selection, recompute};
use cdrflow_archive::Archive;
use cdrflow_schemas::{Counters, LineRegistry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

/// What to reconcile.
pub struct ReconcileOptions {
    /// The archive (directory or `s3://`).
    pub archive: String,
    /// Kafka bootstrap servers, if Kafka is to be asked.
    pub brokers: Option<String>,
    /// The ingest workers' consumer group (its committed offsets are reported).
    pub ingest_group: String,
    /// The aggregator's consumer group (its rows in the streaming log).
    pub aggregate_group: String,
    /// Topic, dates, region.
    pub selection: Selection,
    /// Line registry (thresholds) used to recompute.
    pub lines: std::sync::Arc<LineRegistry>,
}

/// One partition's positions in the three stores.
#[derive(Debug, Default, Serialize)]
pub struct PartitionPositions {
    pub partition: i32,
    /// Kafka's first retained offset and its end (when `--brokers` is given).
    pub kafka_low: Option<i64>,
    pub kafka_high: Option<i64>,
    /// The ingest group's committed offset (monitoring only).
    pub kafka_committed: Option<i64>,
    /// The aggregator group's committed offset (monitoring only).
    pub kafka_committed_aggregate: Option<i64>,
    /// Next offset after the archive's last committed unit.
    pub archive_next: Option<i64>,
    pub archive_units: usize,
    pub archive_rows: u64,
    /// Next offset after the streaming log's last flush.
    pub clickhouse_next: Option<i64>,
    pub clickhouse_flushes: usize,
}

/// A named disagreement.
#[derive(Debug, Serialize)]
pub struct Mismatch {
    /// A stable code: `archive_gap`, `archive_overlap`, `archive_missing_start`,
    /// `missing_file`, `file_rows`, `uncommitted_file`, `clickhouse_gap`,
    /// `clickhouse_overlap`, `clickhouse_doubled`, `counters_differ`, and for checks that
    /// would check nothing: `group_without_positions`, `archive_empty`, `nothing_checked`.
    pub kind: &'static str,
    pub partition: Option<i32>,
    /// What, in words.
    pub what: String,
}

/// The report (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct Report {
    pub topic: String,
    pub from_date: Option<String>,
    pub to_date: Option<String>,
    pub region: Option<u8>,
    pub partitions: Vec<PartitionPositions>,
    pub files_checked: usize,
    pub archive_rows_read: u64,
    pub cells_compared: usize,
    /// Whether Kafka was asked (`--brokers`): without it, its offsets were not checked.
    pub kafka_checked: bool,
    pub mismatches: Vec<Mismatch>,
}

/// Runs every check.
pub fn run(opts: &ReconcileOptions, ch: &ClickHouse, rt: &tokio::runtime::Runtime) -> Result<Report> {
    let sel = &opts.selection;
    let topic = &sel.topic;
    let archive = Archive::open_existing(&opts.archive)?;
    let mut mismatches = Vec::new();
    let mut parts: BTreeMap<i32, PartitionPositions> = BTreeMap::new();
    fn at(parts: &mut BTreeMap<i32, PartitionPositions>, p: i32) -> &mut PartitionPositions {
        parts.entry(p).or_insert_with(|| PartitionPositions { partition: p, ..Default::default() })
    }

    // Kafka.
    let mut kafka_messages = 0;
    if let Some(brokers) = &opts.brokers {
        let groups = [opts.ingest_group.as_str(), opts.aggregate_group.as_str()];
        let positions = kafka_positions(brokers, topic, &groups)?;
        for (p, (low, high, committed)) in &positions {
            let e = at(&mut parts, *p);
            (e.kafka_low, e.kafka_high) = (Some(*low), Some(*high));
            (e.kafka_committed, e.kafka_committed_aggregate) = (committed[0], committed[1]);
            kafka_messages += high - low;
        }
        if kafka_messages > 0 && positions.values().all(|(_, _, c)| c[0].is_none()) {
            let others = match groups_with_offsets(brokers, topic, positions.len() as i32, &groups) {
                Ok(g) => names_of("groups with committed offsets on the topic", &g),
                Err(e) => format!("the brokers could not list the groups: {e:#}"),
            };
            mismatches.push(Mismatch {
                kind: "group_without_positions",
                partition: None,
                what: format!(
                    "the ingest group {} holds no committed offset of {topic}, which holds {kafka_messages} messages: nothing of Kafka's side was checked; check --ingest-group ({others})",
                    opts.ingest_group,
                ),
            });
        }
    }

    // The archive's units, and their files.
    let archived_partitions = archive.partitions(topic)?;
    if archived_partitions.is_empty() {
        mismatches.push(Mismatch {
            kind: "archive_empty",
            partition: None,
            what: format!(
                "the archive at {} holds no unit of topic {topic}: nothing of it was checked; check --archive and --topic ({})",
                archive.describe(),
                names_of("topics it holds", &archive.topics()?)
            ),
        });
    }
    let files: BTreeSet<String> = archive.data_files()?.into_iter().collect();
    let mut listed = BTreeSet::new();
    let mut files_checked = 0;
    // Every partition the archive holds, and every one the ingest group committed offsets
    // of: a partition the archive lacks entirely is a gap too.
    let committed_ingest: Vec<i32> =
        parts.values().filter(|e| e.kafka_committed.is_some()).map(|e| e.partition).collect();
    let archive_side: BTreeSet<i32> = archived_partitions.into_iter().chain(committed_ingest).collect();
    for p in archive_side {
        let units = archive.committed(topic, p)?;
        let e = at(&mut parts, p);
        e.archive_units = units.len();
        e.archive_rows = units.iter().map(|u| u.rows).sum();
        e.archive_next = units.iter().map(|u| u.last_offset + 1).max();
        if let (Some(first), Some(low)) = (units.first(), e.kafka_low)
            && first.first_offset > low
        {
            mismatches.push(Mismatch {
                kind: "archive_missing_start",
                partition: Some(p),
                what: format!(
                    "offsets {low}–{} are in Kafka but in no archive unit of partition {p}",
                    first.first_offset - 1
                ),
            });
        }
        let ranges: Vec<(i64, i64)> = units.iter().map(|u| (u.first_offset, u.last_offset)).collect();
        check_ranges(p, &ranges, e.kafka_committed, &ARCHIVE_UNITS, &mut mismatches);
        for u in &units {
            for f in &u.files {
                listed.insert(f.path.clone());
                if !sel.covers(&f.path) {
                    continue;
                }
                files_checked += 1;
                if !files.contains(&f.path) {
                    mismatches.push(Mismatch {
                        kind: "missing_file",
                        partition: Some(p),
                        what: format!(
                            "{} (offsets {}–{}, {} rows) is listed by its commit but not in the archive",
                            f.path, u.first_offset, u.last_offset, f.rows
                        ),
                    });
                    continue;
                }
                let rows = cdrflow_archive::read::row_count(archive.get(&f.path)?.into())
                    .with_context(|| format!("reading {}", f.path))?;
                if rows != f.rows {
                    mismatches.push(Mismatch {
                        kind: "file_rows",
                        partition: Some(p),
                        what: format!("{} holds {rows} rows; its commit says {}", f.path, f.rows),
                    });
                }
            }
        }
    }
    for f in files.difference(&listed).filter(|f| sel.covers(f)) {
        mismatches.push(Mismatch {
            kind: "uncommitted_file",
            partition: None,
            what: format!("{f} is in the archive but no commit lists it (readers must ignore it)"),
        });
    }

    // ClickHouse's streaming log.
    let flushes = rt.block_on(ch.log_units(&opts.aggregate_group, topic))?;
    let archived_rows: u64 = parts.values().map(|p| p.archive_rows).sum();
    if flushes.is_empty() && (kafka_messages > 0 || archived_rows > 0) {
        let others: Vec<String> =
            rt.block_on(ch.log_groups(topic))?.into_iter().filter(|g| *g != opts.aggregate_group).collect();
        mismatches.push(Mismatch {
            kind: "group_without_positions",
            partition: None,
            what: format!(
                "ClickHouse holds no flush of the aggregator group {} for {topic}, which has messages: nothing of ClickHouse's side was checked; check --aggregate-group and --database ({})",
                opts.aggregate_group,
                names_of("groups with flushes of the topic", &others)
            ),
        });
    }
    // Every partition with flushes, and every one the aggregator group committed offsets of.
    let mut by_partition: BTreeMap<i32, Vec<_>> =
        parts.values().filter(|e| e.kafka_committed_aggregate.is_some()).map(|e| (e.partition, Vec::new())).collect();
    for f in flushes {
        by_partition.entry(f.kafka_partition as i32).or_default().push(f);
    }
    for (p, flushes) in &by_partition {
        let p = *p;
        let e = at(&mut parts, p);
        e.clickhouse_flushes = flushes.len();
        e.clickhouse_next = flushes.iter().map(|f| f.last_offset as i64 + 1).max();
        let ranges: Vec<(i64, i64)> = flushes.iter().map(|f| (f.first_offset as i64, f.last_offset as i64)).collect();
        check_ranges(p, &ranges, e.kafka_committed_aggregate, &CLICKHOUSE_FLUSHES, &mut mismatches);
        for f in flushes {
            if f.rows > f.cells {
                mismatches.push(Mismatch {
                    kind: "clickhouse_doubled",
                    partition: Some(p),
                    what: format!(
                        "ClickHouse holds the flush of offsets {}–{} of partition {p} more than once ({} rows for {} cells)",
                        f.first_offset, f.last_offset, f.rows, f.cells
                    ),
                });
            }
        }
    }

    // Counters: the archive recomputed vs what dashboards read.
    let recomputed = recompute(&archive, sel, &opts.lines, true, 1, |_, _, _| {})?;
    let (from, to) = sel.hours()?;
    let stored: HashMap<(u8, String, i64), Counters> = rt
        .block_on(ch.current_counters(from, to, sel.region))?
        .into_iter()
        .map(|(r, l, h, c)| ((r, l, h), c))
        .collect();
    let mut archive_cells: BTreeMap<(u8, String, i64), &Counters> = BTreeMap::new();
    for (k, cell) in &recomputed.rollup.rows {
        archive_cells.insert((k.region.0, opts.lines.line(k.line).id.clone(), k.hour), &cell.counters);
    }
    let hour = |h: i64| jiff::Timestamp::from_second(h).map(|t| t.to_string()).unwrap_or_default();
    let mut cells_compared = 0;
    let mut keys: BTreeSet<&(u8, String, i64)> = archive_cells.keys().collect();
    keys.extend(stored.keys());
    for k in keys {
        cells_compared += 1;
        let (a, s) = (archive_cells.get(k).copied(), stored.get(k));
        let zero = Counters::default();
        let (a, s) = (a.unwrap_or(&zero), s.unwrap_or(&zero));
        if a != s {
            mismatches.push(Mismatch {
                kind: "counters_differ",
                partition: None,
                what: format!(
                    "region {} line {} hour {}: the archive gives offered={} answered={} abandoned={}, ClickHouse offered={} answered={} abandoned={}",
                    k.0,
                    k.1,
                    hour(k.2),
                    a.offered,
                    a.answered,
                    a.abandoned,
                    s.offered,
                    s.answered,
                    s.abandoned
                ),
            });
        }
    }
    if files_checked == 0 && cells_compared == 0 {
        let dates: Vec<&str> = files
            .iter()
            .filter(|f| f.contains(&format!("/{topic}-p")))
            .filter_map(|f| f.split('/').next()?.strip_prefix("dt="))
            .collect();
        let held = match (dates.iter().min(), dates.iter().max()) {
            (Some(a), Some(b)) => format!("the archive holds {topic} from {a} to {b}"),
            _ => format!("the archive holds no file of {topic}"),
        };
        mismatches.push(Mismatch {
            kind: "nothing_checked",
            partition: None,
            what: format!(
                "the selection ({}) holds no archive file and no counter: nothing was compared; {held}",
                describe_selection(sel)
            ),
        });
    }
    Ok(Report {
        topic: topic.clone(),
        from_date: sel.from_date.clone(),
        to_date: sel.to_date.clone(),
        region: sel.region,
        partitions: parts.into_values().collect(),
        files_checked,
        archive_rows_read: recomputed.rows,
        cells_compared,
        kafka_checked: opts.brokers.is_some(),
        mismatches,
    })
}

/// `what: a, b` or `what: none`.
fn names_of(what: &str, items: &[String]) -> String {
    if items.is_empty() { format!("{what}: none") } else { format!("{what}: {}", items.join(", ")) }
}

/// The selection in words.
fn describe_selection(sel: &Selection) -> String {
    let dates = match (&sel.from_date, &sel.to_date) {
        (None, None) => "all dates".to_owned(),
        (f, t) => format!("{} to {}", f.as_deref().unwrap_or("…"), t.as_deref().unwrap_or("…")),
    };
    match sel.region {
        Some(r) => format!("{}, {dates}, region {r}", sel.topic),
        None => format!("{}, {dates}", sel.topic),
    }
}

/// The consumer groups (other than `skip`) that hold a committed offset on `topic`.
fn groups_with_offsets(brokers: &str, topic: &str, partitions: i32, skip: &[&str]) -> Result<Vec<String>> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating a Kafka client")?;
    let groups = c
        .fetch_group_list(None, Duration::from_secs(10))
        .with_context(|| format!("listing the consumer groups at {brokers}"))?;
    let mut out = Vec::new();
    for g in groups.groups().iter().map(|g| g.name()).filter(|g| !skip.contains(g)).take(100) {
        let member: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", g).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let Ok(committed) = member.committed_offsets(tpl, Duration::from_secs(10)) else { continue };
        if committed.elements().iter().any(|e| matches!(e.offset(), Offset::Offset(_))) {
            out.push(g.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Whose offset ranges [`check_ranges`] checks, and how its mismatches are named.
struct RangeHolder {
    gap: &'static str,
    overlap: &'static str,
    /// One range, in words ("archive unit").
    one: &'static str,
    /// Several ("archive units").
    many: &'static str,
    /// What an overlap means, appended to its description.
    overlap_means: &'static str,
    /// The consumer group whose committed offsets the ranges must reach.
    group: &'static str,
}

const ARCHIVE_UNITS: RangeHolder = RangeHolder {
    gap: "archive_gap",
    overlap: "archive_overlap",
    one: "archive unit",
    many: "archive units",
    overlap_means: "",
    group: "ingest",
};

const CLICKHOUSE_FLUSHES: RangeHolder = RangeHolder {
    gap: "clickhouse_gap",
    overlap: "clickhouse_overlap",
    one: "ClickHouse flush",
    many: "ClickHouse flushes",
    overlap_means: ": those offsets are counted twice",
    group: "aggregator",
};

/// Names every gap and overlap between consecutive offset ranges `[first, last]` (in order)
/// of partition `p`, and the offsets its group committed past the last range: a worker
/// commits an offset to Kafka only after the sink holds it, so those were lost.
fn check_ranges(p: i32, ranges: &[(i64, i64)], committed: Option<i64>, h: &RangeHolder, out: &mut Vec<Mismatch>) {
    let next = ranges.iter().map(|r| r.1 + 1).max().unwrap_or(0);
    if let Some(committed) = committed.filter(|c| *c > next) {
        out.push(Mismatch {
            kind: h.gap,
            partition: Some(p),
            what: format!(
                "offsets {next}–{} of partition {p} are in no {} (the {} group committed them)",
                committed - 1,
                h.one,
                h.group
            ),
        });
    }
    for w in ranges.windows(2) {
        let ((a_first, a_last), (b_first, b_last)) = (w[0], w[1]);
        if b_first > a_last + 1 {
            out.push(Mismatch {
                kind: h.gap,
                partition: Some(p),
                what: format!("offsets {}–{} of partition {p} are in no {}", a_last + 1, b_first - 1, h.one),
            });
        } else if b_first <= a_last {
            out.push(Mismatch {
                kind: h.overlap,
                partition: Some(p),
                what: format!(
                    "{} {a_first}–{a_last} and {b_first}–{b_last} of partition {p} overlap{}",
                    h.many, h.overlap_means
                ),
            });
        }
    }
}

/// Per partition of `topic`: (low, high, each group's committed offset, in `groups` order).
type KafkaPositions = BTreeMap<i32, (i64, i64, Vec<Option<i64>>)>;

/// Reads the watermarks of `topic` once, and the committed offsets of each group (a client
/// per group: the group id is a client setting).
fn kafka_positions(brokers: &str, topic: &str, groups: &[&str]) -> Result<KafkaPositions> {
    let client = |group: &str| -> Result<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating a Kafka client")
    };
    let c = client(groups.first().copied().unwrap_or("cdrflow-reconcile"))?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the metadata of {topic} at {brokers}: is Kafka there?"))?;
    let n = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    if n == 0 {
        anyhow::bail!("Kafka at {brokers} has no topic {topic}: check --topic and --brokers");
    }
    let mut out = BTreeMap::new();
    for p in 0..n {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        out.insert(p, (low, high, Vec::with_capacity(groups.len())));
    }
    for (i, group) in groups.iter().enumerate() {
        let own;
        let consumer = if i == 0 {
            &c
        } else {
            own = client(group)?;
            &own
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .with_context(|| format!("reading the committed offsets of group {group}"))?;
        for (p, entry) in out.iter_mut() {
            let done = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            entry.2.push(done);
        }
    }
    Ok(out)
}

/// The report as a table for people.
pub fn print(r: &Report) {
    let range = match (&r.from_date, &r.to_date) {
        (None, None) => "all dates".to_owned(),
        (f, t) => format!("{} to {}", f.as_deref().unwrap_or("…"), t.as_deref().unwrap_or("…")),
    };
    let region = r.region.map(|x| format!(", region {x}")).unwrap_or_default();
    println!("reconcile {} ({range}{region})\n", r.topic);
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>12} {:>6} {:>10} {:>12} {:>7}",
        "partition", "kafka low", "kafka end", "committed", "archive next", "units", "rows", "ch next", "flushes"
    );
    let o = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    for p in &r.partitions {
        println!(
            "{:>9} {:>10} {:>10} {:>10} {:>12} {:>6} {:>10} {:>12} {:>7}",
            p.partition,
            o(p.kafka_low),
            o(p.kafka_high),
            o(p.kafka_committed),
            o(p.archive_next),
            p.archive_units,
            p.archive_rows,
            o(p.clickhouse_next),
            p.clickhouse_flushes
        );
    }
    println!(
        "\n{} files checked, {} archived rows recomputed, {} (region, line, hour) cells compared",
        r.files_checked, r.archive_rows_read, r.cells_compared
    );
    if r.mismatches.is_empty() && r.kafka_checked {
        println!("no mismatch: Kafka, the archive and ClickHouse agree");
    } else if r.mismatches.is_empty() {
        println!(
            "no mismatch: the archive and ClickHouse agree (Kafka was not asked: give --brokers to check its offsets too)"
        );
    } else {
        println!("{} mismatches:", r.mismatches.len());
        for m in &r.mismatches {
            println!("  {:<22} {}", m.kind, m.what);
        }
    }
}
