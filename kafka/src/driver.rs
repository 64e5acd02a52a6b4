//! The worker loop every sink shares: poll → apply group changes → decode and validate →
//! hand valid CDRs to the sink, dead-letter and count the rest → let the sink write what is
//! due → periodic chores; on stop, write what is held.
//!
//! One thread: librdkafka's rebalance callbacks run inside `poll` here
//! ([`crate::consumer`] explains the protocol), so assignment changes never interleave with
//! handling or writing a message. What is the sink's own — its per-partition state, when a
//! unit is due, how it is written atomically with its offsets, how a failed write is retried
//! (through [`WorkerConsumer::retry_paused`], which pauses consumption meanwhile) — lives
//! behind [`Sink`]: the archive (`cdrflow-ingest`) and the ClickHouse counters
//! (`cdrflow-aggregate`) are its two implementations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use cdrflow_schemas::{Cdr, Decoder, Format};
use rdkafka::Message;
use rdkafka::consumer::Consumer;

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

/// Runs a worker over `sink` until `stop` is set; then writes everything held and leaves
/// the group.
pub fn run<S: Sink>(
    sink: &mut S,
    consumer: &WorkerConsumer,
    decoder: &Decoder,
    src: &SourceOptions,
    mut dead_letters: Option<DeadLetters>,
    stats: &WorkerStats,
    stop: &'static AtomicBool,
) -> Result<()> {
    let mut chores = Chores::new(S::WORKER);
    // The clock is read once per 64 messages or when idle (ClockGate's docs say why).
    let mut clock = ClockGate::every(64);
    while !stop.load(Ordering::Relaxed) {
        let msg = consumer.consumer.poll(Duration::from_millis(100));
        for change in consumer.take_changes() {
            sink.group_change(change);
        }
        let idle = msg.is_none();
        let mut just_read = None;
        match msg {
            Some(Ok(m)) => {
                let (p, offset) = (m.partition(), m.offset());
                // A message of a partition no longer held cannot arrive (same thread as the
                // revoke), but be strict about it all the same.
                if sink.saw(p, offset) {
                    just_read = Some(p);
                    stats.consumed.fetch_add(1, Ordering::Relaxed);
                    let payload = m.payload().unwrap_or(&[]);
                    if src.format == Format::AvroConfluent
                        && !writer_schema_known(sink, consumer, decoder, src, stats, p, payload, stop)?
                    {
                        continue;
                    }
                    match decoder.decode(src.format, &src.csv, payload) {
                        Ok(cdr) => {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                            sink.accept(p, offset, cdr, stats);
                        }
                        Err(why) => {
                            stats.reject(why.reason);
                            sink.rejected(p);
                            if let Some(dl) = dead_letters.as_mut() {
                                dl.send(&src.topic, p, offset, m.key(), payload, &why)?;
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => consumer.poll_error(&e),
            None => {}
        }
        let timers = clock.open(idle);
        let due = sink.due(just_read, timers.then(Instant::now));
        if due != Due::Nothing {
            sink.write(due, &mut Io { consumer, dead_letters: &mut dead_letters, stats, stop })?;
        }
        if timers {
            chores.run(consumer, stats, dead_letters.as_ref(), || sink.held());
        }
    }
    tracing::info!(worker = S::WORKER, "stopping: writing what was read");
    sink.write(Due::All, &mut Io { consumer, dead_letters: &mut dead_letters, stats, stop })?;
    consumer.consumer.unsubscribe();
    Ok(())
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
