//! Running totals of a worker, shared by its loop and its `/metrics` endpoint.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cdrflow_schemas::Reason;

/// What a worker has done so far. Every field is a Prometheus counter or gauge.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Messages read from Kafka.
    pub consumed: AtomicU64,
    /// Valid CDRs accepted.
    pub accepted: AtomicU64,
    /// Valid CDRs of calls already counted (re-sends and corrections; aggregator only).
    pub duplicates: AtomicU64,
    /// Rejected messages, by reason (index into `Reason::ALL`).
    pub rejected: [AtomicU64; Reason::ALL.len()],
    /// Units written to the sink (archive units or ClickHouse flushes).
    pub units: AtomicU64,
    /// Files (archive) or rows (ClickHouse) written.
    pub written: AtomicU64,
    /// Failed sink writes (each retried).
    pub sink_errors: AtomicU64,
    /// The same, by why (`unreachable`, `quorum_not_reached`, `replica_read_only`, `disk`, …).
    pub sink_error_reasons: Mutex<BTreeMap<&'static str, u64>>,
    /// Duration of the last successful sink write, microseconds.
    pub last_write_us: AtomicU64,
    /// Consumer lag per assigned partition (high watermark − next offset), refreshed now and then.
    pub lag: Mutex<BTreeMap<i32, i64>>,
    /// The partitions this member holds, as the group last assigned them.
    pub held: Mutex<std::collections::BTreeSet<i32>>,
    /// Set while a sink write is failing (and being retried); cleared by the next success.
    pub sink_failing: AtomicBool,
    /// What librdkafka says about the brokers and the batches (shared by the worker's clients).
    pub kafka: std::sync::Arc<crate::KafkaHealth>,
    /// Failed requests to the schema registry (each retried; Avro feeds).
    pub registry_failures: AtomicU64,
    /// Partitions that cannot be read: partition → the offset they are stuck at.
    pub stalled: Mutex<BTreeMap<i32, i64>>,
    /// Partitions whose position (from the sink) lies outside the topic's log, so that
    /// librdkafka stopped fetching them (`auto.offset.reset=error`): partition → where.
    pub out_of_range: Mutex<BTreeMap<i32, OutOfRange>>,
}

/// A partition's next offset outside the topic's log ([`WorkerStats::out_of_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// The next offset to read: the position the sink holds.
    pub position: i64,
    /// The log's first offset (earlier ones were deleted).
    pub first: i64,
    /// The log's end (the offset the next message will get).
    pub end: i64,
}

impl OutOfRange {
    /// What happened and what the operator can do, for the log.
    pub fn explain(&self, topic: &str, partition: i32) -> String {
        let OutOfRange { position, first, end } = *self;
        if position < first {
            format!(
                "partition {partition} of {topic}: the position the sink holds ({position}) is before the topic's first offset ({first}): \
                 offsets {position} to {} were deleted (retention, or delete-records) before this group read them. \
                 Nothing is read from the partition, and nothing is skipped. To go on from {first} and accept the gap \
                 (cdrflow reconcile lists it), restart with --kafka-option auto.offset.reset=earliest",
                first - 1
            )
        } else {
            format!(
                "partition {partition} of {topic}: the position the sink holds ({position}) is past the topic's end ({end}): \
                 the topic was deleted and made again, or its log was truncated (an unclean leader election). \
                 Nothing is read from the partition, so nothing is read twice. If the topic is new, \
                 run the workers under a new --group (the sink keeps positions per group and topic)"
            )
        }
    }
}

impl WorkerStats {
    /// Counts one rejected message.
    pub fn reject(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).expect("every reason is in ALL");
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed sink write and why.
    pub fn sink_error(&self, reason: &'static str) {
        self.sink_errors.fetch_add(1, Ordering::Relaxed);
        *self.sink_error_reasons.lock().expect("not poisoned").entry(reason).or_default() += 1;
    }

    /// Records partitions the group assigned to this member.
    pub fn hold(&self, partitions: &[i32]) {
        self.held.lock().expect("not poisoned").extend(partitions);
    }

    /// Records partitions the group took away; their lag samples go with them.
    pub fn release(&self, partitions: &[i32]) {
        self.held.lock().expect("not poisoned").retain(|p| !partitions.contains(p));
        self.lag.lock().expect("not poisoned").retain(|p, _| !partitions.contains(p));
    }

    /// `Ok` when the worker is ready (`/readyz`): it holds partitions and its sink answers;
    /// else what it waits for.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.kafka.down_since().is_some() {
            return Err("Kafka cannot be reached (see the log for the address and the fix)");
        }
        if self.held.lock().expect("not poisoned").is_empty() {
            return Err("holds no partition of the topic (yet): waiting for the group to assign some");
        }
        if self.sink_failing.load(Ordering::Relaxed) {
            return Err(
                "the sink (or an Avro feed's schema registry) is failing; it is retried and consumption is paused (see the log)",
            );
        }
        if !self.out_of_range.lock().expect("not poisoned").is_empty() {
            return Err(
                "a partition's position from the sink is outside the topic's log: nothing is read from it (see the log for what to do)",
            );
        }
        if !self.stalled.lock().expect("not poisoned").is_empty() {
            return Err(
                "a partition cannot be read: its batches fail to decode (see the log for the partition and offset)",
            );
        }
        Ok(())
    }

    /// Rejected messages of every reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|r| r.load(Ordering::Relaxed)).sum()
    }

    /// Logs progress (every worker's periodic line).
    pub fn log_progress(&self, worker: &str, assigned: &[i32]) {
        let l = |x: &AtomicU64| x.load(Ordering::Relaxed);
        tracing::info!(
            worker,
            consumed = l(&self.consumed),
            accepted = l(&self.accepted),
            rejected = self.rejected_total(),
            units = l(&self.units),
            written = l(&self.written),
            sink_errors = l(&self.sink_errors),
            lag = self.lag.lock().expect("not poisoned").values().sum::<i64>(),
            assigned = ?assigned,
            "progress"
        );
    }

    /// The Prometheus text exposition of these totals; `worker` labels every series
    /// (`ingest` or `aggregate`), and `written` is named by `written_what` (`files`, `rows`).
    /// Labels hold only codes and numbers, never record content.
    pub fn prometheus(&self, worker: &str, written_what: &str) -> String {
        let mut s = String::new();
        let l = |x: &AtomicU64| x.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP cdrflow_{name} {help}\n# TYPE cdrflow_{name} counter\ncdrflow_{name}{{worker=\"{worker}\"}} {v}\n"
            );
        };
        counter("records_consumed_total", "Messages read from Kafka.", l(&self.consumed));
        counter("records_accepted_total", "Valid CDRs accepted.", l(&self.accepted));
        counter(
            "records_duplicate_total",
            "Valid CDRs of calls already counted (re-sent or corrected), not counted again.",
            l(&self.duplicates),
        );
        counter(
            "schema_registry_failures_total",
            "Failed requests to the schema registry (Avro feeds; retried with consumption paused).",
            l(&self.registry_failures),
        );
        counter("sink_units_total", "Units written to the sink.", l(&self.units));
        counter(&format!("{written_what}_written_total"), "Files or rows written to the sink.", l(&self.written));
        let _ = write!(
            s,
            "# HELP cdrflow_sink_errors_total Failed sink writes (retried), by why.\n# TYPE cdrflow_sink_errors_total counter\n"
        );
        let reasons = self.sink_error_reasons.lock().expect("not poisoned");
        if reasons.is_empty() {
            let _ = writeln!(s, "cdrflow_sink_errors_total{{worker=\"{worker}\"}} {}", l(&self.sink_errors));
        }
        for (reason, v) in reasons.iter() {
            let _ = writeln!(s, "cdrflow_sink_errors_total{{worker=\"{worker}\",reason=\"{reason}\"}} {v}");
        }
        drop(reasons);
        let _ = write!(
            s,
            "# HELP cdrflow_records_rejected_total Rejected messages by reason.\n# TYPE cdrflow_records_rejected_total counter\n"
        );
        for (r, v) in Reason::ALL.iter().zip(&self.rejected) {
            let _ =
                writeln!(s, "cdrflow_records_rejected_total{{worker=\"{worker}\",reason=\"{}\"}} {}", r.code(), l(v));
        }
        let _ = write!(
            s,
            "# HELP cdrflow_sink_write_seconds Duration of the last sink write.\n# TYPE cdrflow_sink_write_seconds gauge\n"
        );
        let _ =
            writeln!(s, "cdrflow_sink_write_seconds{{worker=\"{worker}\"}} {}", l(&self.last_write_us) as f64 / 1e6);
        for (name, help, map) in [
            (
                "kafka_errors_total",
                "Errors librdkafka reported, by kind (all_brokers_down, broker_transport_failure, …).",
                &self.kafka.errors,
            ),
            (
                "consume_errors_total",
                "Messages or batches Kafka could not hand over (e.g. a codec this build lacks), by kind.",
                &self.kafka.consume_errors,
            ),
        ] {
            let _ = write!(s, "# HELP cdrflow_{name} {help}\n# TYPE cdrflow_{name} counter\n");
            for (kind, v) in map.lock().expect("not poisoned").iter() {
                let _ = writeln!(s, "cdrflow_{name}{{worker=\"{worker}\",kind=\"{kind}\"}} {v}");
            }
        }
        let _ = write!(
            s,
            "# HELP cdrflow_kafka_unreachable 1 while Kafka cannot be reached.\n# TYPE cdrflow_kafka_unreachable gauge\ncdrflow_kafka_unreachable{{worker=\"{worker}\"}} {}\n",
            self.kafka.down_since().is_some() as u8
        );
        let _ = write!(
            s,
            "# HELP cdrflow_partition_stalled The offset a partition that cannot be read is stuck at.\n# TYPE cdrflow_partition_stalled gauge\n"
        );
        for (p, o) in self.stalled.lock().expect("not poisoned").iter() {
            let _ = writeln!(s, "cdrflow_partition_stalled{{worker=\"{worker}\",partition=\"{p}\"}} {o}");
        }
        let _ = write!(
            s,
            "# HELP cdrflow_partition_out_of_range The position (from the sink) of a partition whose log no longer holds it.\n# TYPE cdrflow_partition_out_of_range gauge\n"
        );
        for (p, o) in self.out_of_range.lock().expect("not poisoned").iter() {
            let _ =
                writeln!(s, "cdrflow_partition_out_of_range{{worker=\"{worker}\",partition=\"{p}\"}} {}", o.position);
        }
        let _ = write!(
            s,
            "# HELP cdrflow_consumer_lag Messages behind the end of each assigned partition.\n# TYPE cdrflow_consumer_lag gauge\n"
        );
        for (p, lag) in self.lag.lock().expect("not poisoned").iter() {
            let _ = writeln!(s, "cdrflow_consumer_lag{{worker=\"{worker}\",partition=\"{p}\"}} {lag}");
        }
        s
    }
}

/// The periodic chores of a worker loop: refresh the lag gauge every second (librdkafka's
/// cached watermarks, no network round trip), watch for partitions that cannot be read,
/// keep Kafka's health current, and log progress every ten seconds.
pub struct Chores {
    worker: &'static str,
    last_lag: std::time::Instant,
    last_report: std::time::Instant,
    /// Messages consumed at the last lag refresh (to tell that Kafka answers).
    last_consumed: u64,
    /// Per held partition: its next offset, since when it has not moved, and the
    /// consumption errors counted then.
    positions: BTreeMap<i32, (i64, std::time::Instant, u64)>,
    /// librdkafka's "offset out of range" errors counted at the last check of the ranges.
    resets_seen: u64,
    /// When the partitions' ranges were last checked.
    last_range_check: std::time::Instant,
}

/// How often partitions found outside the topic's log are checked (and named) again.
const RANGE_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a partition with messages ahead may stay put, while consumption errors recur,
/// before it is named as unreadable.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(10);

impl Chores {
    /// Chores of a worker named `worker` (`ingest`, `aggregate`).
    pub fn new(worker: &'static str) -> Self {
        let now = std::time::Instant::now();
        Chores {
            worker,
            last_lag: now,
            last_report: now,
            last_consumed: 0,
            positions: BTreeMap::new(),
            resets_seen: 0,
            last_range_check: now,
        }
    }

    /// Does whatever is due; `assigned` lists the partitions held, for the log line.
    pub fn run(
        &mut self,
        consumer: &crate::WorkerConsumer,
        stats: &WorkerStats,
        dead_letters: Option<&crate::DeadLetters>,
        assigned: impl FnOnce() -> Vec<i32>,
    ) {
        use std::time::{Duration, Instant};
        if let Some(dl) = dead_letters {
            dl.poll();
        }
        if self.last_lag.elapsed() >= Duration::from_secs(1) {
            self.last_lag = Instant::now();
            let consumed = stats.consumed.load(Ordering::Relaxed);
            if consumed > self.last_consumed {
                stats.kafka.answered(consumer.brokers());
            } else {
                stats.kafka.refresh(consumer.brokers());
            }
            self.last_consumed = consumed;
            let (lag, next) = consumer.lag_and_positions();
            self.watch_stalls(consumer, stats, &lag, &next);
            self.watch_ranges(consumer, stats);
            *stats.lag.lock().expect("not poisoned") = lag;
        }
        if self.last_report.elapsed() >= Duration::from_secs(10) {
            self.last_report = Instant::now();
            let mut held = assigned();
            held.sort_unstable();
            stats.log_progress(self.worker, &held);
        }
    }

    /// A partition whose position (from the sink) is outside the topic's log is not read
    /// (`auto.offset.reset=error`, [`crate::consumer::CONSUMER_TUNING`]): librdkafka says
    /// "offset out of range" once and stops fetching it. Each such error has the partitions'
    /// ranges checked against the brokers; one found outside is named with what happened and
    /// what to do, again every 30 s, and `/readyz` turns unready until it is no longer held.
    fn watch_ranges(&mut self, consumer: &crate::WorkerConsumer, stats: &WorkerStats) {
        let held = stats.held.lock().expect("not poisoned").clone();
        let mut out = stats.out_of_range.lock().expect("not poisoned");
        out.retain(|p, _| held.contains(p));
        let resets = stats.kafka.consume_errors_of(rdkafka::error::RDKafkaErrorCode::AutoOffsetReset);
        let recheck = !out.is_empty() && self.last_range_check.elapsed() >= RANGE_RECHECK;
        if resets == self.resets_seen && !recheck {
            return;
        }
        self.resets_seen = resets;
        self.last_range_check = std::time::Instant::now();
        drop(out);
        let found = consumer.out_of_range();
        for (p, o) in &found {
            tracing::error!(
                topic = consumer.topic,
                partition = p,
                position = o.position,
                first = o.first,
                end = o.end,
                "{}",
                o.explain(&consumer.topic, *p)
            );
        }
        *stats.out_of_range.lock().expect("not poisoned") = found;
    }

    /// A partition is unreadable when it has messages ahead, has not moved for [`STALL`], and
    /// consumption errors came meanwhile (a partition paused because the sink is down does
    /// not move either, but raises no such error). It is named with its offset and the fix,
    /// at most every 30 s, and `/readyz` turns unready until it moves again.
    fn watch_stalls(
        &mut self,
        consumer: &crate::WorkerConsumer,
        stats: &WorkerStats,
        lag: &BTreeMap<i32, i64>,
        next: &BTreeMap<i32, i64>,
    ) {
        let now = std::time::Instant::now();
        let errors = stats.kafka.consume_errors_total();
        self.positions.retain(|p, _| next.contains_key(p));
        let mut stalled = stats.stalled.lock().expect("not poisoned");
        stalled.retain(|p, _| next.contains_key(p));
        for (&p, &offset) in next {
            let entry = self.positions.entry(p).or_insert((offset, now, errors));
            if entry.0 != offset || lag.get(&p).copied().unwrap_or(0) == 0 {
                *entry = (offset, now, errors);
                if stalled.remove(&p).is_some() {
                    tracing::info!(topic = consumer.topic, partition = p, offset, "the partition is read again");
                }
                continue;
            }
            if now.duration_since(entry.1) >= STALL && errors > entry.2 {
                let first = stalled.insert(p, offset).is_none();
                if first || now.duration_since(entry.1).as_secs().is_multiple_of(30) {
                    tracing::error!(
                        topic = consumer.topic,
                        partition = p,
                        offset,
                        error = stats.kafka.last_consume_error().unwrap_or_default(),
                        "cannot read {} partition {p} at offset {offset}: Kafka hands over no message there while consumption errors recur. Nothing is skipped (the position stays), but nothing after it is read. Likely a batch this build cannot decode: check the producer's compression.type (cdrflow reads none, gzip, snappy, lz4 and zstd) or a corrupt segment (kafka-dump-log)",
                        consumer.topic
                    );
                }
            }
        }
    }
}

/// Whether the clock is worth reading: every `n`-th message, or whenever a poll came back
/// empty. Workers check their timers (unit age, flush interval, chores) only then: reading
/// the clock per message per partition cost ~10 % of an ingest worker (perf, see
/// benches/RESULTS.md), and a few hundred microseconds of timer slack cost nothing.
pub struct ClockGate {
    n: u32,
    count: u32,
}

impl ClockGate {
    /// A gate that opens every `n` messages.
    pub fn every(n: u32) -> Self {
        ClockGate { n: n.max(1), count: 0 }
    }

    /// Call once per poll; `idle` when the poll returned no message.
    pub fn open(&mut self, idle: bool) -> bool {
        self.count += 1;
        if idle || self.count >= self.n {
            self.count = 0;
            true
        } else {
            false
        }
    }
}
