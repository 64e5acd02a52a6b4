//! Running totals of a worker, shared by its loop and its `/metrics` endpoint.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Duration of the last successful sink write, microseconds.
    pub last_write_us: AtomicU64,
    /// Consumer lag per assigned partition (high watermark − next offset), refreshed now and then.
    pub lag: Mutex<BTreeMap<i32, i64>>,
}

impl WorkerStats {
    /// Counts one rejected message.
    pub fn reject(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).expect("every reason is in ALL");
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
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
        counter("sink_units_total", "Units written to the sink.", l(&self.units));
        counter(&format!("{written_what}_written_total"), "Files or rows written to the sink.", l(&self.written));
        counter("sink_errors_total", "Failed sink writes (retried).", l(&self.sink_errors));
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
/// cached watermarks, no network round trip) and log progress every ten seconds.
pub struct Chores {
    worker: &'static str,
    last_lag: std::time::Instant,
    last_report: std::time::Instant,
}

impl Chores {
    /// Chores of a worker named `worker` (`ingest`, `aggregate`).
    pub fn new(worker: &'static str) -> Self {
        let now = std::time::Instant::now();
        Chores { worker, last_lag: now, last_report: now }
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
            *stats.lag.lock().expect("not poisoned") = consumer.lag();
        }
        if self.last_report.elapsed() >= Duration::from_secs(10) {
            self.last_report = Instant::now();
            let mut held = assigned();
            held.sort_unstable();
            stats.log_progress(self.worker, &held);
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
