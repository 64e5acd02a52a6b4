//! The ingest loop: consume → decode, validate, pseudonymise → buffer per partition →
//! rotate (by rows, bytes or age, also for a quiet partition) → write the unit's Parquet
//! files and commit it ([`crate::archive`]) → commit offsets for monitoring.
//!
//! One thread: librdkafka's rebalance callbacks run inside `poll` here, so assignment
//! changes never interleave with handling or writing ([`cdrflow_kafka::consumer`]). When the
//! archive cannot be written (disk full, read-only, unreachable) the partitions are paused
//! and the write retried with backoff: memory stays bounded and nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cdrflow_kafka::{
    Chores, ClockGate, DeadLetters, GroupChange, PositionStore, Retried, SourceOptions, WorkerConsumer, WorkerStats,
};
use cdrflow_schemas::{Decoder, Pseudonymiser};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rustc_hash::FxHashMap;

use cdrflow_archive::encode::{ArchivedCdr, parquet_bytes, record_batch};
use cdrflow_archive::{Archive, UnitFile, UnitManifest, utc_date};

/// What an ingest worker needs.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// What it reads, and where rejects go.
    pub source: SourceOptions,
    /// Where the archive is: a local directory or `s3://bucket/prefix`.
    pub out: String,
    /// Close a unit at this many rows.
    pub max_rows: usize,
    /// Close a unit at about this many bytes of buffered CDRs.
    pub max_bytes: usize,
    /// Close a unit this long after its first message, even if no other arrives.
    pub max_age: Duration,
}

/// Unflushed work of one partition.
#[derive(Debug, Default)]
struct PartitionBuffer {
    /// First offset since the last unit.
    first_offset: Option<i64>,
    /// Last offset read.
    last_offset: i64,
    /// Messages read (valid or not).
    messages: u64,
    /// Rejected among them.
    rejected: u64,
    /// The valid CDRs.
    rows: Vec<ArchivedCdr>,
    /// Rough size of `rows`.
    bytes: usize,
    /// When the first message of this unit arrived.
    opened: Option<Instant>,
}

struct ArchivePositions(Archive);

impl PositionStore for ArchivePositions {
    fn next_offsets(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        self.0.positions(topic, partitions)
    }
    fn describe(&self) -> String {
        format!("archive at {}", self.0.describe())
    }
}

/// Runs an ingest worker until `stop` is set (then writes what it holds and returns).
pub fn run(
    opts: IngestOptions,
    pseudonymiser: Pseudonymiser,
    stop: &'static AtomicBool,
    stats: Arc<WorkerStats>,
) -> Result<()> {
    let src = &opts.source;
    let archive = Archive::open(&opts.out)?;
    let store = Arc::new(ArchivePositions(archive.clone()));
    let consumer = WorkerConsumer::new(&src.kafka, &src.group, &src.topic, src.session_timeout_ms, store, stop, stats.clone())?;
    let mut dead_letters = match &src.dead_letter_topic {
        Some(t) => Some(DeadLetters::new(&src.kafka, t, &src.group, stats.kafka.clone())?),
        None => None,
    };
    let decoder = Decoder::new(src.lines.clone(), pseudonymiser);
    let mut buffers: FxHashMap<i32, PartitionBuffer> = FxHashMap::default();
    let mut chores = Chores::new("ingest");
    tracing::info!(group = src.group, topic = src.topic, archive = opts.out, "ingest worker started");

    let mut clock = ClockGate::every(64);
    while !stop.load(Ordering::Relaxed) {
        let msg = consumer.consumer.poll(Duration::from_millis(100));
        for change in consumer.take_changes() {
            apply(change, &mut buffers);
        }
        let timers = clock.open(msg.is_none());
        let mut touched = None;
        if let Some(msg) = msg {
            match msg {
                Ok(m) => {
                    let p = m.partition();
                    touched = Some(p);
                    let Some(buf) = buffers.get_mut(&p) else { continue };
                    stats.consumed.fetch_add(1, Ordering::Relaxed);
                    buf.first_offset.get_or_insert(m.offset());
                    buf.last_offset = m.offset();
                    buf.messages += 1;
                    buf.opened.get_or_insert_with(Instant::now);
                    let payload = m.payload().unwrap_or(&[]);
                    match decoder.decode(src.format, &src.csv, payload) {
                        Ok(cdr) => {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                            buf.bytes += 160 + cdr.call_id.len() + cdr.dialled.len();
                            buf.rows.push(ArchivedCdr { partition: p, offset: m.offset(), cdr });
                        }
                        Err(why) => {
                            buf.rejected += 1;
                            stats.reject(why.reason);
                            if let Some(dl) = dead_letters.as_mut() {
                                dl.send(&src.topic, p, m.offset(), m.key(), payload, &why)?;
                            }
                        }
                    }
                }
                Err(e) => consumer.poll_error(&e),
            }
        }
        // Rotate the partition just read if its unit is full; when the clock gate opens, every
        // partition whose unit is full or old enough (quiet ones too).
        let full = |b: &PartitionBuffer| b.messages > 0 && (b.rows.len() >= opts.max_rows || b.bytes >= opts.max_bytes);
        let due: Vec<i32> = if timers {
            let now = Instant::now();
            buffers
                .iter()
                .filter(|(_, b)| full(b) || (b.messages > 0 && b.opened.is_some_and(|t| now - t >= opts.max_age)))
                .map(|(p, _)| *p)
                .collect()
        } else {
            touched.filter(|p| buffers.get(p).is_some_and(full)).into_iter().collect()
        };
        for p in due {
            write_unit(&opts, &archive, &consumer, &mut dead_letters, &mut buffers, p, &stats, stop)?;
        }
        if timers {
            chores.run(&consumer, &stats, dead_letters.as_ref(), || buffers.keys().copied().collect());
        }
    }
    tracing::info!("stopping: writing what was read");
    let mut held: Vec<i32> = buffers.iter().filter(|(_, b)| b.messages > 0).map(|(p, _)| *p).collect();
    held.sort_unstable();
    for p in held {
        write_unit(&opts, &archive, &consumer, &mut dead_letters, &mut buffers, p, &stats, stop)?;
    }
    consumer.consumer.unsubscribe();
    Ok(())
}

fn apply(change: GroupChange, buffers: &mut FxHashMap<i32, PartitionBuffer>) {
    match change {
        GroupChange::Assigned(parts) => {
            for p in parts {
                buffers.entry(p).or_default();
            }
        }
        GroupChange::Revoked(parts) => {
            for p in parts {
                if let Some(b) = buffers.remove(&p).filter(|b| b.messages > 0) {
                    tracing::info!(partition = p, messages = b.messages,
                        "abandoned the unwritten unit of a revoked partition; its new owner reads it again");
                }
            }
        }
    }
}

/// Writes and commits partition `p`'s unit.
#[allow(clippy::too_many_arguments)]
fn write_unit(
    opts: &IngestOptions,
    archive: &Archive,
    consumer: &WorkerConsumer,
    dead_letters: &mut Option<DeadLetters>,
    buffers: &mut FxHashMap<i32, PartitionBuffer>,
    p: i32,
    stats: &WorkerStats,
    stop: &'static AtomicBool,
) -> Result<()> {
    let Some(buf) = buffers.get_mut(&p).map(std::mem::take) else { return Ok(()) };
    if buf.messages == 0 {
        return Ok(());
    }
    // Dead letters reach Kafka before their offsets are recorded as done.
    if let Some(dl) = dead_letters.as_mut() {
        dl.flush()?;
    }
    let (first, last) = (buf.first_offset.unwrap_or(buf.last_offset), buf.last_offset);
    let mut groups: BTreeMap<(String, u8), Vec<&ArchivedCdr>> = BTreeMap::new();
    for r in &buf.rows {
        groups.entry((utc_date(r.cdr.start_ms), r.cdr.region.0)).or_default().push(r);
    }
    let mut files = Vec::with_capacity(groups.len());
    let mut encoded = Vec::with_capacity(groups.len());
    for ((dt, region), mut rows) in groups {
        rows.sort_by_key(|r| (r.cdr.start_ms, r.offset));
        let batch = record_batch(&rows, &opts.source.lines)?;
        let meta = [
            ("topic", opts.source.topic.clone()),
            ("partition", p.to_string()),
            ("first_offset", first.to_string()),
            ("last_offset", last.to_string()),
        ];
        let bytes = parquet_bytes(&batch, &meta)?;
        let path = Archive::data_path(&opts.source.topic, p, first, last, &dt, region);
        files.push(UnitFile { path: path.clone(), rows: rows.len() as u64 });
        encoded.push((path, bytes));
    }
    let manifest = UnitManifest {
        topic: opts.source.topic.clone(),
        partition: p,
        first_offset: first,
        last_offset: last,
        rows: buf.rows.len() as u64,
        rejected: buf.rejected,
        files,
    };
    let attempt = || -> Result<()> {
        let started = Instant::now();
        archive.begin(&manifest)?;
        archive.put_all_atomic(&encoded)?;
        archive.commit(&manifest)?;
        stats.last_write_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    };
    let attempt = || {
        attempt().inspect_err(|_| {
            stats.sink_error("archive_write");
        })
    };
    let outcome = consumer
        .retry_paused(p, "writing the archive", stop, attempt, |change| {
            apply(change, buffers);
            buffers.contains_key(&p)
        })
        .context("writing the archive")?;
    if outcome == Retried::Done(()) {
        stats.units.fetch_add(1, Ordering::Relaxed);
        stats.written.fetch_add(encoded.len() as u64, Ordering::Relaxed);
        consumer.commit_for_monitoring(&HashMap::from([(p, last + 1)]));
    }
    Ok(())
}
