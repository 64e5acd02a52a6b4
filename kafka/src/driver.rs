//! The worker loop every sink shares: poll → apply group changes → decode and validate →
//! hand valid CDRs to the sink, dead-letter and count the rest → let the sink write what is
//! due → periodic chores; on stop, write what is held.
//!
//! One thread reads, handles and writes: librdkafka's rebalance callbacks run inside `poll`
//! here ([`crate::consumer`] explains the protocol), so assignment changes never interleave
//! with handling or writing a message. Only decoding, which is pure, runs beside it, on
//! batches read ahead ([`run`] says how the order and the group protocol are kept).
//!
//! What is the sink's own — its per-partition state, when a unit is due, how it is written
//! atomically with its offsets, how a failed write is retried (through
//! [`WorkerConsumer::retry_paused`], which pauses consumption meanwhile) — lives behind
//! [`Sink`]: the archive (`cdrflow-ingest`) and the ClickHouse counters (`cdrflow-aggregate`)
//! are its two implementations.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cdrflow_schemas::{Cdr, Decoder, Format, Rejection};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use crate::registry::RegistryError;
use crate::{Chores, ClockGate, DeadLetters, GroupChange, Retried, SourceOptions, WorkerConsumer, WorkerStats};

/// Which partitions' work to write now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    Nothing,
    /// These partitions' units.
    Partitions(Vec<i32>),
    /// Everything held (a flush of every partition, or the last write before stopping).
    All,
}

/// What the driver lends a sink while it writes.
pub struct Io<'a> {
    /// The consumer: [`WorkerConsumer::retry_paused`] while the sink fails, commits for
    /// monitoring after a write, seeks.
    pub consumer: &'a WorkerConsumer,
    /// The dead-letter producer, flushed before a unit's offsets are recorded (so no
    /// reject is lost once its offset counts as done).
    pub dead_letters: &'a mut Option<DeadLetters>,
    /// The worker's totals.
    pub stats: &'a WorkerStats,
    /// Set when the process is stopping.
    pub stop: &'static AtomicBool,
}

impl Io<'_> {
    /// Delivers every queued dead letter (before a unit's offsets are recorded).
    pub fn flush_dead_letters(&mut self) -> Result<()> {
        match self.dead_letters.as_mut() {
            Some(dl) => dl.flush(),
            None => Ok(()),
        }
    }

    /// The number of the last dead letter queued ([`DeadLetters::mark`]; 0 if none).
    pub fn dead_letters_mark(&self) -> usize {
        self.dead_letters.as_ref().map_or(0, DeadLetters::mark)
    }

    /// Delivers the dead letters queued up to `mark` ([`DeadLetters::flush_to`]): those of
    /// the units read before it, before their offsets are recorded.
    pub fn flush_dead_letters_to(&mut self, mark: usize) -> Result<()> {
        match self.dead_letters.as_mut() {
            Some(dl) => dl.flush_to(mark),
            None => Ok(()),
        }
    }
}

/// A sink: what a worker does with the CDRs of the partitions it holds.
pub trait Sink {
    /// `ingest` or `aggregate`: names the worker in logs and metrics.
    const WORKER: &'static str;

    /// The group assigned or revoked partitions: state to open (positioned by the sink's
    /// [`crate::PositionStore`]), or unwritten work to abandon (its next owner reads it again).
    fn group_change(&mut self, change: GroupChange);

    /// Notes that the message at `offset` of `partition` was read, whatever becomes of it
    /// (a unit covers the offsets of its rejects too); `false` if the partition is not held.
    fn saw(&mut self, partition: i32, offset: i64) -> bool;

    /// A valid CDR read from `partition` at `offset`.
    fn accept(&mut self, partition: i32, offset: i64, cdr: Cdr, stats: &WorkerStats);

    /// A rejected message of `partition` (already counted and dead-lettered).
    fn rejected(&mut self, _partition: i32) {}

    /// What to write now. `just_read` is the partition of the message just handled;
    /// `now` is given when the clock was read (timers may fire: age, interval).
    fn due(&self, just_read: Option<i32>, now: Option<Instant>) -> Due;

    /// Writes that work, each unit in one atomic step with the offsets it covers, retrying
    /// while the sink fails; returns once it is written or abandoned (partition revoked).
    fn write(&mut self, due: Due, io: &mut Io<'_>) -> Result<()>;

    /// The partitions held, for the progress log.
    fn held(&self) -> Vec<i32>;
}

/// The most messages read in one batch.
const BATCH: usize = 1024;

/// A batch is closed once its keys and payloads reach this many bytes (CDRs are a few
/// hundred bytes, so this binds only a feed of large messages): with [`READ_AHEAD`] it
/// bounds the bytes held ahead of the sink, paused or not.
const BATCH_BYTES: usize = 1 << 20;

/// Batches read ahead beyond one per decode lane. With one or two, the reading thread and
/// a lane waited for each other about a third of the time on 2 cores (each preempted in
/// turn by librdkafka's fetch thread, and the lane idle while the sink wrote); 16 absorb
/// both (`benches/RESULTS.md` §11: 4, 16 and 32 measured).
const READ_AHEAD: usize = 16;

/// One message read, copied out of librdkafka's buffers.
struct Read {
    partition: i32,
    offset: i64,
    /// The positioning epoch right after the poll that read it ([`crate::Positioned`]).
    epoch: u64,
    /// Where its key is in the batch's bytes (`None`: it has none).
    key: Option<Range<usize>>,
    /// Where its payload is in the batch's bytes.
    payload: Range<usize>,
}

/// Messages read together, copied out so that a decode thread may work on them while the
/// batch before them is handled.
#[derive(Default)]
struct Batch {
    /// Keys and payloads, end to end.
    bytes: Vec<u8>,
    /// The messages, in the order read.
    read: Vec<Read>,
    /// One outcome per message once decoded ahead; empty: decode while handling (Avro).
    decoded: Vec<Result<Cdr, Rejection>>,
}

impl Batch {
    fn push(&mut self, m: &BorrowedMessage<'_>, epoch: u64) {
        let mut copy = |bytes: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(bytes);
            start..self.bytes.len()
        };
        let key = m.key().map(&mut copy);
        let payload = copy(m.payload().unwrap_or(&[]));
        self.read.push(Read { partition: m.partition(), offset: m.offset(), epoch, key, payload });
    }

    fn decode(&mut self, decoder: &Decoder, src: &SourceOptions) {
        let Batch { bytes, read, decoded } = self;
        decoded.clear();
        decoded.extend(read.iter().map(|r| decoder.decode(src.format, &src.csv, &bytes[r.payload.clone()])));
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.read.clear();
        self.decoded.clear();
    }
}

/// Runs a worker over `sink` until `stop` is set; then writes everything held and leaves
/// the group.
///
/// # Decoding ahead
///
/// With `src.decode_threads` ≥ 1 (JSON and CSV feeds), messages are read in batches of up
/// to 1 024 (or 1 MiB), copied out of librdkafka, and decoded on their own threads while
/// this one reads up to `READ_AHEAD` (16) batches ahead and hands the oldest decoded batch to
/// the sink: decoding is most of a worker's time, and it is pure, so only the order of
/// handling matters, and it is kept (batches go round the decode threads and come back in
/// the order read). Reading ahead meets two events between a message's read and its
/// handling, both handled by the message's positioning epoch ([`crate::Positioned`]):
///
/// - a **group change** (seen by the poll that read a later message) is applied to the
///   sink at once, as without read-ahead; messages of the partitions it names that were
///   read before it are then stale and dropped unhandled (their unflushed work was
///   abandoned, or they are no longer ours);
/// - a **seek by the sink** ([`WorkerConsumer::reposition`]: the aggregator reading a
///   partition again from ClickHouse's position) makes that partition's earlier messages
///   stale in the same way; fetching resumes from the new position.
///
/// The paused retry's seek back is not a positioning: it goes to a message read after
/// every one held, which are then still handled first. With `decode_threads` = 0, or an
/// Avro feed (a writer schema may have to be fetched before a message can be decoded),
/// each message is decoded as it is handled, one poll at a time.
pub fn run<S: Sink>(
    sink: &mut S,
    consumer: &WorkerConsumer,
    decoder: &Decoder,
    src: &SourceOptions,
    dead_letters: Option<DeadLetters>,
    stats: &WorkerStats,
    stop: &'static AtomicBool,
) -> Result<()> {
    let lanes = if src.format == Format::AvroConfluent { 0 } else { src.decode_threads };
    let mut w = Worker {
        sink,
        consumer,
        decoder,
        src,
        dead_letters,
        stats,
        stop,
        chores: Chores::new(S::WORKER),
        // The clock is read once per 64 messages or when idle (ClockGate's docs say why).
        clock: ClockGate::every(64),
        changes_seen: consumer.positioned().epoch(),
    };
    std::thread::scope(|scope| -> Result<()> {
        let mut decode = Vec::with_capacity(lanes);
        for i in 0..lanes {
            // Room for every batch in flight: neither side blocks on a full channel.
            let (to_lane, lane_in) = mpsc::sync_channel::<Batch>(READ_AHEAD + 1);
            let (lane_out, from_lane) = mpsc::sync_channel::<Batch>(READ_AHEAD + 1);
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn_scoped(scope, move || {
                    for mut batch in lane_in {
                        batch.decode(decoder, src);
                        if lane_out.send(batch).is_err() {
                            break;
                        }
                    }
                })
                .context("starting a decode thread")?;
            decode.push(Lane { to: to_lane, from: from_lane });
        }
        let result = if decode.is_empty() { w.run_inline() } else { w.run_ahead(&decode) };
        // Dropping the lanes ends their threads.
        drop(decode);
        result
    })?;
    tracing::info!(worker = S::WORKER, "stopping: writing what was read");
    w.sink.write(Due::All, &mut Io { consumer, dead_letters: &mut w.dead_letters, stats, stop })?;
    consumer.unsubscribe();
    Ok(())
}

/// A decode thread's channels.
struct Lane {
    to: mpsc::SyncSender<Batch>,
    from: mpsc::Receiver<Batch>,
}

/// What the worker loop carries.
struct Worker<'a, S: Sink> {
    sink: &'a mut S,
    consumer: &'a WorkerConsumer,
    decoder: &'a Decoder,
    src: &'a SourceOptions,
    dead_letters: Option<DeadLetters>,
    stats: &'a WorkerStats,
    stop: &'static AtomicBool,
    chores: Chores,
    clock: ClockGate,
    /// The positioning epoch when group changes were last taken (changes come with a new one).
    changes_seen: u64,
}

impl<S: Sink> Worker<'_, S> {
    /// One poll at a time, each message decoded as it is handled.
    fn run_inline(&mut self) -> Result<()> {
        let mut batch = Batch::default();
        while !self.stop.load(Ordering::Relaxed) {
            self.read(&mut batch, Duration::from_millis(100), 1);
            if batch.read.is_empty() {
                self.tick(None, true)?;
            } else {
                self.handle(&mut batch)?;
            }
            batch.clear();
        }
        Ok(())
    }

    /// Batches decoded on the lanes' threads while this one reads and handles: up to
    /// [`READ_AHEAD`] more batches in flight than there are lanes, so that every lane has
    /// work queued while the oldest batch is handled, or the sink writes.
    fn run_ahead(&mut self, lanes: &[Lane]) -> Result<()> {
        let mut in_flight: VecDeque<usize> = VecDeque::new();
        let mut next_lane = 0;
        let mut spare: Vec<Batch> = Vec::new();
        let gone = || anyhow::anyhow!("a decode thread ended unexpectedly");
        while !self.stop.load(Ordering::Relaxed) {
            let mut read = false;
            if in_flight.len() < lanes.len() + READ_AHEAD {
                let wait = if in_flight.is_empty() { Duration::from_millis(100) } else { Duration::ZERO };
                let mut batch = spare.pop().unwrap_or_default();
                self.read(&mut batch, wait, BATCH);
                if batch.read.is_empty() {
                    spare.push(batch);
                } else {
                    lanes[next_lane].to.send(batch).map_err(|_| gone())?;
                    in_flight.push_back(next_lane);
                    next_lane = (next_lane + 1) % lanes.len();
                    read = true;
                }
            }
            if in_flight.len() >= lanes.len() + READ_AHEAD || (!read && !in_flight.is_empty()) {
                let lane = in_flight.pop_front().expect("not empty");
                let mut batch = lanes[lane].from.recv().map_err(|_| gone())?;
                self.handle(&mut batch)?;
                batch.clear();
                spare.push(batch);
            } else if !read {
                self.tick(None, true)?;
            }
        }
        // Stopping: what was read is handled, so that the last write covers it.
        while let Some(lane) = in_flight.pop_front() {
            let mut batch = lanes[lane].from.recv().map_err(|_| gone())?;
            self.handle(&mut batch)?;
        }
        Ok(())
    }

    /// Reads up to `max` messages (and about [`BATCH_BYTES`]) into `batch`: the first poll
    /// waits up to `wait`, the others take only what librdkafka already holds. Group changes
    /// are applied to the sink right after the poll that saw them (librdkafka's rebalance
    /// callbacks run inside `poll`, on this thread: [`crate::consumer`] explains the
    /// protocol).
    fn read(&mut self, batch: &mut Batch, wait: Duration, max: usize) {
        let mut first = true;
        while batch.read.len() < max && batch.bytes.len() < BATCH_BYTES {
            let polled = if first { self.consumer.poll(wait) } else { self.consumer.poll_more() };
            first = false;
            let epoch = self.consumer.positioned().epoch();
            if epoch != self.changes_seen {
                self.changes_seen = epoch;
                for change in self.consumer.take_changes() {
                    self.sink.group_change(change);
                }
            }
            match polled {
                None => break,
                Some(Ok(m)) => batch.push(&m, epoch),
                Some(Err(e)) => self.consumer.poll_error(&e),
            }
        }
    }

    /// Hands a batch's messages to the sink in order: each valid CDR is accepted, each
    /// rejected message counted and dead-lettered; after each, the sink writes what is due.
    fn handle(&mut self, batch: &mut Batch) -> Result<()> {
        let Batch { bytes, read, decoded } = batch;
        let mut decoded = decoded.drain(..);
        for r in read.iter() {
            let outcome = decoded.next();
            let p = r.partition;
            // Read before its partition was positioned again: its new position re-reads it.
            let fresh = !self.consumer.positioned().stale(p, r.epoch);
            let mut just_read = None;
            if fresh && self.sink.saw(p, r.offset) {
                just_read = Some(p);
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                let payload = &bytes[r.payload.clone()];
                let outcome = match outcome {
                    Some(outcome) => outcome,
                    None => {
                        if self.src.format == Format::AvroConfluent
                            && !writer_schema_known(
                                self.sink,
                                self.consumer,
                                self.decoder,
                                self.src,
                                self.stats,
                                p,
                                payload,
                                self.stop,
                            )?
                        {
                            continue;
                        }
                        self.decoder.decode(self.src.format, &self.src.csv, payload)
                    }
                };
                match outcome {
                    Ok(cdr) => {
                        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        self.sink.accept(p, r.offset, cdr, self.stats);
                    }
                    Err(why) => {
                        self.stats.reject(why.reason);
                        self.sink.rejected(p);
                        if let Some(dl) = self.dead_letters.as_mut() {
                            let key = r.key.clone().map(|k| &bytes[k]);
                            dl.send(&self.src.topic, p, r.offset, key, payload, &why)?;
                        }
                    }
                }
            }
            self.tick(just_read, false)?;
        }
        Ok(())
    }

    /// After a message (`just_read`: its partition) or an empty poll (`idle`): the sink
    /// writes what is due; the timers and chores run when the clock is read.
    fn tick(&mut self, just_read: Option<i32>, idle: bool) -> Result<()> {
        let timers = self.clock.open(idle);
        let due = self.sink.due(just_read, timers.then(Instant::now));
        if due != Due::Nothing {
            let mut io = Io {
                consumer: self.consumer,
                dead_letters: &mut self.dead_letters,
                stats: self.stats,
                stop: self.stop,
            };
            self.sink.write(due, &mut io)?;
        }
        if timers {
            let sink = &*self.sink;
            self.chores.run(self.consumer, self.stats, self.dead_letters.as_ref(), || sink.held());
        }
        Ok(())
    }
}

/// Avro: makes sure the writer schema of a message is known before it is decoded, fetching
/// it from the schema registry. The registry being down, or not knowing the id yet, is not
/// the record's fault: consumption pauses and the fetch is retried (counted in
/// `cdrflow_schema_registry_failures_total`, logged with the registry's URL) until it
/// works; only an id still unknown after `--schema-wait-s` goes on to be dead-lettered as
/// `unknown_schema`. `false` if the partition was revoked meanwhile (the message is left
/// to its new owner).
#[allow(clippy::too_many_arguments)]
fn writer_schema_known<S: Sink>(
    sink: &mut S,
    consumer: &WorkerConsumer,
    decoder: &Decoder,
    src: &SourceOptions,
    stats: &WorkerStats,
    partition: i32,
    payload: &[u8],
    stop: &'static AtomicBool,
) -> Result<bool> {
    let Ok((id, _)) = cdrflow_schemas::avro::frame(payload) else { return Ok(true) };
    if decoder.avro.get(id).is_some() {
        return Ok(true);
    }
    let Some(registry) = src.registry.as_deref() else {
        anyhow::bail!("an Avro feed needs --schema-registry URL (the Confluent-compatible API)");
    };
    let since = Instant::now();
    let outcome = consumer.retry_paused(
        partition,
        &format!("fetching Avro writer schema {id} from the schema registry at {}", registry.url()),
        stop,
        || match registry.load(id, &decoder.avro) {
            Ok(()) => Ok(()),
            Err(e) => {
                stats.registry_failures.fetch_add(1, Ordering::Relaxed);
                match e {
                    RegistryError::UnknownId { .. } if since.elapsed() >= src.schema_wait => {
                        tracing::warn!(id, partition, waited = ?since.elapsed(), "writer schema still unknown to the registry: its records are dead-lettered as unknown_schema");
                        Ok(())
                    }
                    e => Err(anyhow::Error::new(e)),
                }
            }
        },
        |change| {
            sink.group_change(change);
            true
        },
    )?;
    Ok(outcome == Retried::Done(()))
}
