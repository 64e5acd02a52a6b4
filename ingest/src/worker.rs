//! The archive sink: CDRs (decoded, validated and pseudonymised by the shared driver,
//! [`cdrflow_kafka::driver`]) are buffered per partition; a partition's unit is rotated by
//! rows, bytes or age (also on a quiet partition) and written as Parquet files committed
//! together ([`cdrflow_archive::store`]); then its offsets are committed for monitoring.
//!
//! Encoding and writing run beside reading (see `Encoding`): the units due at once are
//! encoded on the encoders' pool (one thread per core) and written and committed there,
//! while the worker reads on; a revoke waits for them.
//!
//! When the archive cannot be written (disk full, read-only, unreachable) the partitions are
//! paused and the write retried with backoff: memory stays bounded and nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cdrflow_kafka::driver::{Due, Io, Sink};
use cdrflow_kafka::{
    DeadLetters, Fence, Fenced, GroupChange, PositionStore, Retried, SourceOptions, WorkerConsumer, WorkerStats,
    WritesUnderWay,
};
use cdrflow_schemas::{Cdr, Decoder, Pseudonymiser};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use rustc_hash::FxHashMap;

use cdrflow_archive::encode::{ArchivedCdr, parquet_bytes, record_batch};
use cdrflow_archive::{Archive, EncodedUnit, UnitFile, UnitManifest, utc_date};

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
    rows: Rows,
    /// Rough size of `rows`.
    bytes: usize,
    /// When the first message of this unit arrived.
    opened: Option<Instant>,
}

/// A unit's rows, in chunks of at most [`Rows::CHUNK`].
///
/// One vector per unit grew by doubling: each step copied every row so far to a new block
/// and faulted its pages in, so a unit touched about twice its size in fresh memory, on
/// the reading thread (a quarter of that thread's page faults, and as many bytes copied,
/// were in the vector's growth: `benches/RESULTS.md` §17). Here only the first chunk grows,
/// up to ~1 MiB; rows past it go to new chunks of their own, and a full chunk is never
/// moved.
#[derive(Debug, Default)]
struct Rows {
    /// Full chunks, then the one being filled.
    chunks: Vec<Vec<ArchivedCdr>>,
}

impl Rows {
    /// Rows per chunk: ~1 MiB of them. The first chunk grows to it as a vector does, so a
    /// quiet partition's unit of a few rows takes a few rows' room.
    const CHUNK: usize = 4096;

    #[inline]
    fn push(&mut self, row: ArchivedCdr) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < Self::CHUNK => last.push(row),
            _ => {
                let mut chunk = Vec::with_capacity(if self.chunks.is_empty() { 16 } else { Self::CHUNK });
                chunk.push(row);
                self.chunks.push(chunk);
            }
        }
    }

    /// Every chunk but the last is full.
    fn len(&self) -> usize {
        self.chunks.last().map_or(0, |last| (self.chunks.len() - 1) * Self::CHUNK + last.len())
    }

    fn iter(&self) -> impl Iterator<Item = &ArchivedCdr> {
        self.chunks.iter().flatten()
    }
}

struct ArchivePositions {
    archive: Archive,
    /// The encoders' jobs (encode, write, commit): a revoke waits for them.
    writes: Arc<WritesUnderWay>,
}

impl PositionStore for ArchivePositions {
    fn next_offsets(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        self.archive.positions(topic, partitions)
    }
    fn describe(&self) -> String {
        format!("archive at {}", self.archive.describe())
    }
    /// Waits for the units being encoded and written, if any (`Encoding` says why).
    fn revoking(&self, partitions: &[i32]) {
        self.writes.wait_before_revoke(partitions, "archive write");
    }
}

/// Runs an ingest worker until `stop` is set (then writes what it holds and returns).
pub fn run(
    opts: IngestOptions,
    pseudonymiser: Pseudonymiser,
    stop: &'static AtomicBool,
    stats: Arc<WorkerStats>,
) -> Result<()> {
    let src = opts.source.clone();
    let archive = Archive::open(&opts.out)?;
    let writes = Arc::new(WritesUnderWay::default());
    let store = Arc::new(ArchivePositions { archive: archive.clone(), writes: writes.clone() });
    let consumer =
        WorkerConsumer::new(&src.kafka, &src.group, &src.topic, src.session_timeout_ms, store, stop, stats.clone())?;
    let dead_letters = match &src.dead_letter_topic {
        Some(t) => Some(DeadLetters::new(&src.kafka, t, &src.group, stats.kafka.clone())?),
        None => None,
    };
    let decoder = Decoder::new(src.lines.clone(), pseudonymiser);
    tracing::info!(group = src.group, topic = src.topic, archive = opts.out, "ingest worker started");
    // The encoders' own pool, one thread per core, named so that `top -H` and the benches
    // tell them from the reading and decoding threads.
    let encoders = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("encode-{i}"))
        .build()
        .context("starting the Parquet encoders' threads")?;
    let fence = consumer.fence();
    let mut sink = ArchiveSink {
        opts: Arc::new(opts),
        archive,
        buffers: FxHashMap::default(),
        encoders,
        encoding: None,
        writes,
        fence,
    };
    cdrflow_kafka::driver::run(&mut sink, &consumer, &decoder, &src, dead_letters, &stats, stop)
}

/// The archive as a [`Sink`].
struct ArchiveSink {
    opts: Arc<IngestOptions>,
    archive: Archive,
    /// Unwritten work per held partition.
    buffers: FxHashMap<i32, PartitionBuffer>,
    /// The threads that encode units as Parquet.
    encoders: rayon::ThreadPool,
    /// Units taken from their buffers and being encoded and written, if any.
    encoding: Option<Encoding>,
    /// The encoders' jobs under way, for a revoke to wait on.
    writes: Arc<WritesUnderWay>,
    /// Whether this member still holds its partitions: asked before each step of a write.
    fence: Fence,
}

/// Units being encoded and written on the encoders' pool while the worker reads on.
///
/// Encoding is most of a write and pure, and writing is waiting on the disk (five syncs a
/// batch) or on object storage, so neither need stop the reading: the due units are taken
/// from their buffers (which start afresh), their rejects are delivered to the dead-letter
/// topic, and the units are handed to the pool, which encodes them and makes one attempt at
/// writing and committing them together ([`Archive::write_units`]); the worker's thread goes
/// back to reading. It takes the outcome when its clock is next read, or at once (waiting
/// for it) when more units fall full, so one batch at most is under way, and a partition's
/// units are committed in the order they were taken. Units that come of age meanwhile wait
/// for the batch and go with the next one: waiting for the batch each time one did kept the
/// worker's thread from reading a third of the time (`benches/RESULTS.md` §11), and a unit
/// is at most one batch later than `--max-age-ms` for it. The protocol is kept:
/// - a unit's offsets are recorded only by its commit in the archive, after its files, and
///   after its rejects reached the dead-letter topic;
/// - a revoke waits for the batch under way ([`PositionStore::revoking`]): a partition is
///   never given up while a unit of it is being written, so its next owner reads the
///   archive's position after that write;
/// - a failed write is retried by the worker's thread, unit by unit, with consumption
///   paused; a partition revoked or positioned again since its unit was taken has that unit
///   dropped then ([`cdrflow_kafka::Positioned::stale`]): its owner reads it again from the
///   archive's position, which the unit never reached;
/// - a write that may outlive this member's place in the group (the worker's thread,
///   waiting for it or in a revoke waiting for it, has not polled for half of
///   `max.poll.interval.ms`, or librdkafka says the assignment is lost) stops before its
///   next step, uncommitted ([`Fence`]): the group may give its partitions to another
///   member, which removes the unit's files and reads it again. Like any failed write, it
///   is then retried unit by unit while its partition is still held;
/// - stopping waits for the batch, then writes the rest at once.
struct Encoding {
    /// The positioning epoch when the units were taken.
    taken_at: u64,
    /// The units, encoded, in partition order, and how their write went (or why they could
    /// not be encoded), once ready.
    done: mpsc::Receiver<Result<Written>>,
    /// Set once they are in `done`.
    ready: Arc<AtomicBool>,
}

/// A batch of units, encoded, and the outcome of the one attempt at writing them.
struct Written {
    units: Vec<EncodedUnit>,
    /// How long the write took, or why it failed.
    write: Result<Duration>,
}

/// Encodes units and makes one attempt at writing and committing them together, while this
/// member holds its partitions (`fence`).
fn encode_and_write(
    opts: &IngestOptions,
    archive: &Archive,
    units: &[(i32, PartitionBuffer)],
    fence: &Fence,
) -> Result<Written> {
    let units = encode_units(opts, units)?;
    let started = Instant::now();
    let write = archive.write_units(&units, &|| fence.check()).map(|()| started.elapsed());
    Ok(Written { units, write })
}

impl ArchiveSink {
    /// Whether a unit is full (by rows or bytes).
    fn full(&self, b: &PartitionBuffer) -> bool {
        b.messages > 0 && (b.rows.len() >= self.opts.max_rows || b.bytes >= self.opts.max_bytes)
    }

    /// Takes the outcome of a batch's write (its units taken at positioning epoch
    /// `taken_at`): counts the units written and commits their offsets for monitoring, or,
    /// should the write have failed, writes them again one by one, in partition order, each
    /// retried with its partition paused until it is written or its partition revoked
    /// ([`write_unit`]): a retry rewrites what the batch wrote of it identically. The units
    /// go in one [`Archive::write_units`]: each step of the commit protocol once for all of
    /// them, so a batch costs five syncs, not six per unit (`benches/RESULTS.md` §14).
    fn commit(&mut self, outcome: Written, taken_at: u64, io: &mut Io<'_>) -> Result<()> {
        let Written { units, write } = outcome;
        match write {
            Ok(took) => {
                io.stats.last_write_us.store(took.as_micros() as u64, Ordering::Relaxed);
                for unit in &units {
                    written(io.stats, unit);
                }
                // Offsets for monitoring of the partitions still held only.
                let next = units
                    .iter()
                    .filter(|u| !io.consumer.positioned().stale(u.manifest.partition, taken_at))
                    .map(|u| (u.manifest.partition, u.manifest.last_offset + 1))
                    .collect();
                io.consumer.commit_for_monitoring(&next);
            }
            Err(e) => {
                io.stats.sink_error(failure_reason(&e));
                tracing::warn!(
                    error = format!("{e:#}"),
                    units = units.len(),
                    "writing the archive failed; retrying unit by unit"
                );
                for unit in units {
                    // Checked at its turn: a rebalance may have come since the write
                    // failed, or during a retry before it.
                    if self.still_held(unit.manifest.partition, taken_at, io) {
                        write_unit(&self.archive, &self.fence, io, &mut self.buffers, unit)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether partition `p` is still held as when its unit was taken: one positioned again
    /// since (revoked while the previous batch's write was retried, after the batch's write
    /// failed, or while an earlier unit's write was retried) has its unit abandoned, and its
    /// owner reads it again from the archive.
    fn still_held(&self, p: i32, taken_at: u64, io: &Io<'_>) -> bool {
        let held = !io.consumer.positioned().stale(p, taken_at) && self.buffers.contains_key(&p);
        if !held {
            tracing::info!(
                partition = p,
                "the partition moved while units were written; its new owner reads this unit again"
            );
        }
        held
    }
}

impl Sink for ArchiveSink {
    const WORKER: &'static str = "ingest";

    fn group_change(&mut self, change: GroupChange) {
        apply(change, &mut self.buffers);
    }

    fn saw(&mut self, p: i32, offset: i64) -> bool {
        let Some(buf) = self.buffers.get_mut(&p) else { return false };
        buf.first_offset.get_or_insert(offset);
        buf.last_offset = offset;
        buf.messages += 1;
        buf.opened.get_or_insert_with(Instant::now);
        true
    }

    fn accept(&mut self, p: i32, offset: i64, cdr: Cdr, _stats: &WorkerStats) {
        let buf = self.buffers.get_mut(&p).expect("saw() holds it");
        buf.bytes += 160 + cdr.call_id.len() + cdr.dialled.len();
        buf.rows.push(ArchivedCdr { partition: p, offset, cdr });
    }

    fn rejected(&mut self, p: i32) {
        if let Some(buf) = self.buffers.get_mut(&p) {
            buf.rejected += 1;
        }
    }

    /// The partition just read if its unit is full; when the clock was read, every partition
    /// whose unit is full, or old enough (quiet ones too) unless units are still encoding,
    /// and no partition when the batch under way is written (a write that takes its outcome).
    fn due(&self, just_read: Option<i32>, now: Option<Instant>) -> Due {
        let ready = self.encoding.as_ref().map(|e| e.ready.load(Ordering::Acquire));
        let due: Vec<i32> = match now {
            Some(now) => self
                .buffers
                .iter()
                .filter(|(_, b)| {
                    self.full(b)
                        || (ready != Some(false)
                            && b.messages > 0
                            && b.opened.is_some_and(|t| now - t >= self.opts.max_age))
                })
                .map(|(p, _)| *p)
                .collect(),
            None => just_read.filter(|p| self.buffers.get(p).is_some_and(|b| self.full(b))).into_iter().collect(),
        };
        if due.is_empty() && !(now.is_some() && ready == Some(true)) { Due::Nothing } else { Due::Partitions(due) }
    }

    /// The outcome of the batch under way is taken (waited for if more are due: a full unit,
    /// or stopping), and the due units handed to the pool to encode and write
    /// ([`Encoding`]); on `Due::All` (stopping) the rest is encoded and written at once.
    fn write(&mut self, due: Due, io: &mut Io<'_>) -> Result<()> {
        let (mut parts, now) = match due {
            Due::Nothing => return Ok(()),
            Due::Partitions(p) => (p, false),
            Due::All => (self.buffers.iter().filter(|(_, b)| b.messages > 0).map(|(p, _)| *p).collect(), true),
        };
        parts.sort_unstable();
        // Before the units are taken: committing the batch before them below may serve the
        // group (a retry while the archive fails), and a partition revoked and assigned again
        // meanwhile must count as moved since its unit was taken.
        let (taken_at, dead_letters) = (io.consumer.positioned().epoch(), io.dead_letters_mark());
        let mut units: Vec<(i32, PartitionBuffer)> = parts
            .into_iter()
            .filter_map(|p| self.buffers.get_mut(&p).map(std::mem::take).filter(|b| b.messages > 0).map(|b| (p, b)))
            .collect();
        if let Some(encoding) = self.encoding.take() {
            let outcome = if units.is_empty() && !now {
                match encoding.done.try_recv() {
                    Ok(outcome) => outcome,
                    Err(mpsc::TryRecvError::Empty) => {
                        self.encoding = Some(encoding);
                        return Ok(());
                    }
                    Err(mpsc::TryRecvError::Disconnected) => anyhow::bail!("the Parquet encoder stopped unexpectedly"),
                }
            } else {
                encoding.done.recv().context("the Parquet encoder stopped unexpectedly")?
            };
            self.commit(outcome?, encoding.taken_at, io)?;
            // That commit may have served the group: a unit whose partition moved meanwhile
            // is not written (no revoke waited for it); its owner reads it again.
            units.retain(|(p, _)| self.still_held(*p, taken_at, io));
        }
        if units.is_empty() {
            return Ok(());
        }
        // The units' dead letters reach Kafka before their offsets can be recorded as done.
        io.flush_dead_letters_to(dead_letters)?;
        if now {
            let outcome = self.encoders.install(|| encode_and_write(&self.opts, &self.archive, &units, &self.fence))?;
            return self.commit(outcome, taken_at, io);
        }
        let (tx, done) = mpsc::sync_channel(1);
        let ready = Arc::new(AtomicBool::new(false));
        let (opts, archive, fence, set) = (self.opts.clone(), self.archive.clone(), self.fence.clone(), ready.clone());
        // Counted from now: no poll serves the group between here and the spawn.
        let under_way = self.writes.begin();
        self.encoders.spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                encode_and_write(&opts, &archive, &units, &fence)
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("encoding a unit as Parquet panicked (a bug: please report it)")));
            let _ = tx.send(outcome);
            set.store(true, Ordering::Release);
            // Ends after the outcome is sent: whoever sees none under way finds it.
            drop(under_way);
        });
        self.encoding = Some(Encoding { taken_at, done, ready });
        Ok(())
    }

    fn held(&self) -> Vec<i32> {
        self.buffers.keys().copied().collect()
    }
}

/// Applies a group change: new partitions start empty, revoked ones are abandoned.
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
                    tracing::info!(
                        partition = p,
                        messages = b.messages,
                        "abandoned the unwritten unit of a revoked partition; its new owner reads it again"
                    );
                }
            }
        }
    }
}

/// A row with its sort key beside it: sorting a file's rows by start compares keys in one
/// array, not through a pointer per row into rows read minutes apart (the sort through the
/// pointers was ~5 % of the encoders' samples, `benches/RESULTS.md` §23).
struct ByStart<'a> {
    start_ms: i64,
    offset: i64,
    row: &'a ArchivedCdr,
}

/// A file's rows in order of start, then of offset. A unit is one partition's, so no two of
/// its rows share an offset: the order is total, and an unstable sort gives the stable one's.
fn in_order_of_start(mut keyed: Vec<ByStart<'_>>) -> Vec<&ArchivedCdr> {
    keyed.sort_unstable_by_key(|k| (k.start_ms, k.offset));
    keyed.into_iter().map(|k| k.row).collect()
}

/// Encodes units as Parquet, one file per date and region each, the files spread over
/// every core (the pool it runs in); the units come back in the order given.
fn encode_units(opts: &IngestOptions, units: &[(i32, PartitionBuffer)]) -> Result<Vec<EncodedUnit>> {
    // One job per file: (unit, date, region, rows). Rows are grouped by UTC day number; the
    // date is spelled once per file, not once per row.
    const DAY_MS: i64 = 86_400_000;
    let mut jobs: Vec<(usize, String, u8, Vec<ByStart<'_>>)> = Vec::new();
    for (u, (_, buf)) in units.iter().enumerate() {
        let mut groups: BTreeMap<(i64, u8), Vec<ByStart<'_>>> = BTreeMap::new();
        for r in buf.rows.iter() {
            let row = ByStart { start_ms: r.cdr.start_ms, offset: r.offset, row: r };
            groups.entry((r.cdr.start_ms.div_euclid(DAY_MS), r.cdr.region.0)).or_default().push(row);
        }
        jobs.extend(groups.into_iter().map(|((day, region), rows)| (u, utc_date(day * DAY_MS), region, rows)));
    }
    let span = |buf: &PartitionBuffer| (buf.first_offset.unwrap_or(buf.last_offset), buf.last_offset);
    let files: Vec<(usize, UnitFile, Vec<u8>)> = jobs
        .into_par_iter()
        .map(|(u, dt, region, keyed)| {
            let (p, buf) = &units[u];
            let (first, last) = span(buf);
            let rows = in_order_of_start(keyed);
            let batch = record_batch(&rows, &opts.source.lines)?;
            let meta = [
                ("topic", opts.source.topic.clone()),
                ("partition", p.to_string()),
                ("first_offset", first.to_string()),
                ("last_offset", last.to_string()),
            ];
            let bytes = parquet_bytes(&batch, &meta)?;
            let path = Archive::data_path(&opts.source.topic, *p, first, last, &dt, region);
            Ok((u, UnitFile { path, rows: rows.len() as u64 }, bytes))
        })
        .collect::<Result<_>>()?;
    let mut encoded: Vec<EncodedUnit> = units
        .iter()
        .map(|(p, buf)| {
            let (first, last) = span(buf);
            EncodedUnit {
                manifest: UnitManifest {
                    topic: opts.source.topic.clone(),
                    partition: *p,
                    first_offset: first,
                    last_offset: last,
                    rows: buf.rows.len() as u64,
                    rejected: buf.rejected,
                    files: Vec::new(),
                },
                files: Vec::new(),
            }
        })
        .collect();
    for (u, file, bytes) in files {
        encoded[u].files.push((file.path.clone(), bytes));
        encoded[u].manifest.files.push(file);
    }
    Ok(encoded)
}

/// Writes and commits one encoded unit, retrying (consumption paused) while the archive
/// cannot be written; abandons it if its partition is revoked meanwhile.
fn write_unit(
    archive: &Archive,
    fence: &Fence,
    io: &mut Io<'_>,
    buffers: &mut FxHashMap<i32, PartitionBuffer>,
    unit: EncodedUnit,
) -> Result<()> {
    let (consumer, stats, stop) = (io.consumer, io.stats, io.stop);
    let p = unit.manifest.partition;
    let unit = [unit];
    let attempt = || -> Result<()> {
        let started = Instant::now();
        archive.write_units(&unit, &|| fence.check())?;
        stats.last_write_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    };
    let attempt = || {
        attempt().inspect_err(|e| {
            stats.sink_error(failure_reason(e));
        })
    };
    let outcome = consumer
        .retry_paused(p, "writing the archive", stop, attempt, |change| {
            apply(change, buffers);
            buffers.contains_key(&p)
        })
        .context("writing the archive")?;
    if outcome == Retried::Done(()) {
        let m = &unit[0].manifest;
        written(stats, &unit[0]);
        consumer.commit_for_monitoring(&HashMap::from([(m.partition, m.last_offset + 1)]));
    }
    Ok(())
}

/// The `reason` a failed archive write counts under (`cdrflow_sink_errors_total`).
fn failure_reason(e: &anyhow::Error) -> &'static str {
    match e.chain().any(|c| c.is::<Fenced>()) {
        true => "archive_write_fenced",
        false => "archive_write",
    }
}

/// Counts a unit written (its offsets are then committed to Kafka, for monitoring: the
/// archive's commit markers are the positions).
fn written(stats: &WorkerStats, unit: &EncodedUnit) {
    stats.units.fetch_add(1, Ordering::Relaxed);
    stats.written.fetch_add(unit.files.len() as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdrflow_schemas::LineRegistry;

    #[test]
    fn a_files_rows_go_in_order_of_start_then_offset() {
        let decoder = Decoder::new(LineRegistry::builtin(), Pseudonymiser::check_only());
        // Starts within a few seconds of each other, many shared, in an order a feed
        // might deliver them (by end); offsets rising as read.
        let mut x = 7u64;
        let rows: Vec<ArchivedCdr> = (0..5_000i64)
            .map(|offset| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let second = (x >> 59) as u32;
                let json = format!(
                    r#"{{"call_id":"38-{offset}","region":38,"dialled":"122","start":"2022-02-14T09:00:{second:02}Z","end":"2022-02-14T09:03:12Z","disposition":"busy"}}"#
                );
                ArchivedCdr { partition: 5, offset, cdr: decoder.decode_json(json.as_bytes()).expect("a valid CDR") }
            })
            .collect();
        let keyed = rows.iter().rev().map(|r| ByStart { start_ms: r.cdr.start_ms, offset: r.offset, row: r }).collect();
        let got: Vec<(i64, i64)> = in_order_of_start(keyed).iter().map(|r| (r.cdr.start_ms, r.offset)).collect();
        let mut want: Vec<(i64, i64)> = rows.iter().map(|r| (r.cdr.start_ms, r.offset)).collect();
        want.sort_by_key(|&(start, offset)| (start, offset));
        assert_eq!(got, want);
        assert!(got.windows(2).any(|w| w[0].0 == w[1].0), "starts shared, so offsets break ties");
    }

    #[test]
    fn rows_come_back_in_the_order_pushed_across_chunks_none_over_a_chunk() {
        let decoder = Decoder::new(LineRegistry::builtin(), Pseudonymiser::check_only());
        let cdr = decoder
            .decode_json(
                br#"{"call_id":"38-1","region":38,"dialled":"122","start":"2022-02-14T09:00:00Z",
                    "end":"2022-02-14T09:03:12Z","disposition":"busy"}"#,
            )
            .expect("a valid CDR");
        for n in [0, 1, Rows::CHUNK - 1, Rows::CHUNK, Rows::CHUNK + 1, 3 * Rows::CHUNK + 7] {
            let mut rows = Rows::default();
            for offset in 0..n as i64 {
                rows.push(ArchivedCdr { partition: 5, offset, cdr: cdr.clone() });
            }
            assert_eq!(rows.len(), n);
            let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (0..n as i64).collect::<Vec<_>>(), "{n} rows");
            assert!(rows.chunks.iter().all(|c| !c.is_empty() && c.len() <= Rows::CHUNK), "{n} rows");
            assert_eq!(rows.chunks.len(), n.div_ceil(Rows::CHUNK), "{n} rows");
        }
    }
}
