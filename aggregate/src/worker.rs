//! The ClickHouse sink: CDRs (decoded and validated by the shared driver,
//! [`cdrflow_kafka::driver`]) are counted once per call (the re-send window) and rolled up
//! per partition; every partition is flushed at once, by interval or size, as one atomic
//! insert per shard ([`crate::clickhouse`] says why it is atomic), made on a thread of its
//! own while this one reads on (`crate::writing` says how the protocol is kept); then offsets
//! are committed for monitoring.
//!
//! While ClickHouse is unreachable the partitions are paused and the insert retried with
//! backoff: nothing is consumed, so memory stays bounded, and nothing is lost, because
//! positions only advance with a successful insert.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cdrflow_kafka::driver::{Due, Io, Sink};
use cdrflow_kafka::{
    DeadLetters, GroupChange, PositionStore, Retried, SourceOptions, WorkerConsumer, WorkerStats, WritesUnderWay,
};
use cdrflow_schemas::versions::call_key;
use cdrflow_schemas::{Cdr, Decoder, Pseudonymiser};
use rustc_hash::FxHashMap;

use crate::clickhouse::service::Layout;
use crate::clickhouse::{ClickHouse, ClickHouseConfig};
use crate::rollup::{CountedCalls, PartitionRollup};
use crate::writing::{PartitionUnit, ShardOutcome, ShardUnits, Writer, member_prefix, revoke_wait_limit};

/// What an aggregator needs.
#[derive(Clone, Debug)]
pub struct AggregateOptions {
    /// What it reads (the archive worker dead-letters by default; this one counts).
    pub source: SourceOptions,
    /// Where the counters go.
    pub clickhouse: ClickHouseConfig,
    /// Flush every partition at least this often.
    pub flush_interval: Duration,
    /// Flush early when this many messages are unflushed.
    pub flush_max_messages: u64,
    /// The window within which a call is counted once, in hours of call start time.
    pub window_hours: u32,
}

/// Positions for the consumer, read from ClickHouse, together with the calls each newly
/// assigned partition counted recently (its [`CountedCalls`]), read in the same step.
struct ClickHousePositions {
    ch: ClickHouse,
    group: String,
    rt: Arc<tokio::runtime::Runtime>,
    window_hours: u32,
    /// Windows read for partitions just assigned, for the loop to take.
    loaded: Arc<Mutex<FxHashMap<i32, CountedCalls>>>,
    /// The writer's thread's inserts: a revoke waits for them.
    writing: Arc<WritesUnderWay>,
}

impl PositionStore for ClickHousePositions {
    fn next_offsets(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>> {
        let started = Instant::now();
        self.rt.block_on(async {
            let positions = self.ch.positions(&self.group, topic).await?;
            let mut loaded: FxHashMap<i32, CountedCalls> =
                partitions.iter().map(|&p| (p, CountedCalls::new(self.window_hours))).collect();
            for (p, hour, call) in self.ch.recent_calls(&self.group, topic, partitions, self.window_hours).await? {
                if let Some(window) = loaded.get_mut(&p) {
                    window.first_time(call, hour);
                }
            }
            let calls: usize = loaded.values().map(CountedCalls::len).sum();
            tracing::info!(
                partitions = partitions.len(),
                calls,
                ms = started.elapsed().as_millis() as u64,
                "read the partitions' positions and the calls they counted recently"
            );
            *self.loaded.lock().expect("not poisoned") = loaded;
            Ok(positions)
        })
    }
    fn describe(&self) -> String {
        format!("ClickHouse at {}", self.ch.config().url)
    }
    /// Waits for the insert under way, if any, and then for any insert of this member that
    /// ClickHouse still runs although the client gave up on it ([`crate::writing`] says why).
    fn revoking(&self, partitions: &[i32]) {
        self.writing.wait_before_revoke(partitions, "counters insert");
        let (prefix, limit) = (member_prefix(&self.group), revoke_wait_limit(self.ch.config()));
        let (started, mut waited) = (Instant::now(), false);
        loop {
            match self.rt.block_on(self.ch.running_from(&prefix)) {
                Ok(0) => break,
                Ok(_) if started.elapsed() < limit => {
                    waited = true;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(running) => {
                    tracing::warn!(
                        running,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "giving partitions up while ClickHouse still runs an insert of this aggregator that it gave up on: if it lands after their next owner read its positions, its calls count twice (cdrflow reconcile names the overlap)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "could not ask ClickHouse whether an insert of this aggregator still runs; giving partitions up"
                    );
                    return;
                }
            }
        }
        if waited {
            tracing::info!(
                partitions = partitions.len(),
                waited_ms = started.elapsed().as_millis() as u64,
                "waited for an insert ClickHouse still ran, which this aggregator had given up on, before giving partitions up"
            );
        }
    }
}

/// Everything the loop carries between messages.
struct State {
    /// Unflushed work per assigned partition.
    partitions: FxHashMap<i32, PartitionRollup>,
    /// Calls counted recently per assigned partition, flushed or not.
    counted: FxHashMap<i32, CountedCalls>,
    /// Windows read from ClickHouse on assignment, not yet taken.
    loaded: Arc<Mutex<FxHashMap<i32, CountedCalls>>>,
    /// The window's length.
    window_hours: u32,
    /// Messages read and not yet flushed, over all partitions.
    unflushed: u64,
    /// When the last flush finished.
    last_flush: Instant,
}

/// Runs an aggregator until `stop` is set (then flushes and returns).
pub fn run(opts: AggregateOptions, stop: &'static AtomicBool, stats: Arc<WorkerStats>) -> Result<()> {
    let rt =
        Arc::new(tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?);
    let src = &opts.source;
    let ch = ClickHouse::new(opts.clickhouse.clone());
    let loaded = Arc::new(Mutex::new(FxHashMap::default()));
    let inserts = Arc::new(WritesUnderWay::default());
    let store = Arc::new(ClickHousePositions {
        ch: ch.clone(),
        group: src.group.clone(),
        rt: rt.clone(),
        window_hours: opts.window_hours,
        loaded: loaded.clone(),
        writing: inserts.clone(),
    });
    let layout = rt.block_on(ch.layout())?;
    if layout.replicas > 1 && opts.clickhouse.insert_quorum < 2 {
        anyhow::bail!(
            "{}.counters_log has {} replicas per shard: exactly once needs --insert-quorum (CDRFLOW_CLICKHOUSE_INSERT_QUORUM) of at least 2, so that positions are never read from a replica that lacks a confirmed flush (see deploy/clickhouse-cluster/README.md)",
            opts.clickhouse.database,
            layout.replicas
        );
    }
    if layout.shards() > 0 {
        tracing::info!(
            shards = layout.shards(),
            replicas = layout.replicas,
            quorum = opts.clickhouse.insert_quorum,
            "counters_log is distributed: one insert per shard per flush"
        );
    }
    let consumer = WorkerConsumer::new(
        &src.kafka,
        &src.group,
        &src.topic,
        src.session_timeout_ms,
        store.clone(),
        stop,
        stats.clone(),
    )?;
    let dead_letters = match &src.dead_letter_topic {
        Some(t) => Some(DeadLetters::new(&src.kafka, t, &src.group, stats.kafka.clone())?),
        None => None,
    };
    // Counters need no caller identity: hashes are never written here.
    let decoder = Decoder::new(src.lines.clone(), Pseudonymiser::check_only());
    let state = State {
        partitions: FxHashMap::default(),
        counted: FxHashMap::default(),
        loaded,
        window_hours: opts.window_hours,
        unflushed: 0,
        last_flush: Instant::now(),
    };
    tracing::info!(group = src.group, topic = src.topic, clickhouse = opts.clickhouse.url, "aggregator started");
    let src = src.clone();
    let writer = Writer::start(
        opts.clickhouse.clone(),
        src.group.clone(),
        src.topic.clone(),
        src.lines.clone(),
        stats.clone(),
        inserts,
    )?;
    let mut sink = ClickHouseSink { opts, rt, ch, store, layout, state, writer, writing: None };
    cdrflow_kafka::driver::run(&mut sink, &consumer, &decoder, &src, dead_letters, &stats, stop)
}

/// ClickHouse's counters as a [`Sink`].
struct ClickHouseSink {
    opts: AggregateOptions,
    rt: Arc<tokio::runtime::Runtime>,
    ch: ClickHouse,
    store: Arc<ClickHousePositions>,
    layout: Layout,
    state: State,
    /// The thread that inserts each flush while this one reads on.
    writer: Writer,
    /// The positioning epoch when the units handed to the writer were taken, until their
    /// outcome is taken.
    writing: Option<u64>,
}

impl ClickHouseSink {
    /// Takes the outcome of the flush handed to the writer, if any (waiting for it if
    /// `block`): counts and commits what landed, rewinds the partitions another writer's
    /// unit landed over, and retries here what failed. A partition positioned again since
    /// its unit was taken is left to its owner ([`crate::writing`]).
    fn settle(&mut self, io: &mut Io<'_>, block: bool) -> Result<()> {
        let Some(taken_at) = self.writing else { return Ok(()) };
        let Some(outcomes) = self.writer.outcome(block)? else { return Ok(()) };
        self.writing = None;
        let state = &mut self.state;
        let positioned = io.consumer.positioned();
        for ShardOutcome { mut shard, rewinds, result } in outcomes {
            let held = |state: &State, p: i32| !positioned.stale(p, taken_at) && state.partitions.contains_key(&p);
            let rewinds: Vec<(i32, i64)> = rewinds.into_iter().filter(|(p, _)| held(state, *p)).collect();
            shard.units.retain(|u| held(state, u.partition));
            match result {
                Ok(rows) => {
                    written_units(io.consumer, io.stats, &shard, rows);
                    for (p, _) in rewinds {
                        rewind(io.consumer, io.stop, &self.store, state, p)?;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        shard = shard.shard,
                        error = format!("{e:#}"),
                        "inserting counters failed; retrying with consumption paused"
                    );
                    insert_units(&self.opts, &self.rt, &self.ch, &self.store, shard, rewinds, io, state)?;
                }
            }
        }
        Ok(())
    }
}

impl Sink for ClickHouseSink {
    const WORKER: &'static str = "aggregate";

    fn group_change(&mut self, change: GroupChange) {
        apply(change, &mut self.state);
    }

    fn saw(&mut self, p: i32, offset: i64) -> bool {
        let Some(part) = self.state.partitions.get_mut(&p) else { return false };
        part.saw(offset);
        self.state.unflushed += 1;
        true
    }

    /// Counted once: a call already counted within the window is skipped (schemas::versions).
    fn accept(&mut self, p: i32, _offset: i64, cdr: Cdr, stats: &WorkerStats) {
        let call = call_key(&cdr.call_id);
        let counted = self.state.counted.get_mut(&p).expect("assigned with its rollup");
        if counted.first_time(call, cdr.utc_hour()) {
            let part = self.state.partitions.get_mut(&p).expect("saw() holds it");
            part.add(&cdr, call, &self.opts.source.lines);
        } else {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every partition at once, when enough messages are unflushed or the interval passed;
    /// no partition when the clock was read and the writer has finished a flush (a write
    /// that takes its outcome).
    fn due(&self, _just_read: Option<i32>, now: Option<Instant>) -> Due {
        let interval = now.is_some_and(|now| now - self.state.last_flush >= self.opts.flush_interval);
        if self.state.unflushed >= self.opts.flush_max_messages || interval {
            Due::All
        } else if now.is_some() && self.writing.is_some() && self.writer.is_idle() {
            Due::Partitions(Vec::new())
        } else {
            Due::Nothing
        }
    }

    /// The outcome of the flush under way is taken (waited for if a new flush is due), and
    /// the new flush handed to the writer; when stopping, waited for as well.
    fn write(&mut self, due: Due, io: &mut Io<'_>) -> Result<()> {
        match due {
            Due::Nothing => Ok(()),
            Due::Partitions(_) => self.settle(io, false),
            Due::All => {
                self.settle(io, true)?;
                // After the outcome: its retry may serve the group, and a partition revoked
                // and assigned again meanwhile is not the one whose unit is taken now.
                let taken_at = io.consumer.positioned().epoch();
                let shards = take_units(&self.layout, io, &mut self.state)?;
                if !shards.is_empty() {
                    self.writer.send(shards)?;
                    self.writing = Some(taken_at);
                }
                if io.stop.load(Ordering::Relaxed) { self.settle(io, true) } else { Ok(()) }
            }
        }
    }

    fn held(&self) -> Vec<i32> {
        self.state.partitions.keys().copied().collect()
    }
}

/// Applies a group change: new partitions start empty with the window read from
/// ClickHouse, revoked ones are abandoned.
fn apply(change: GroupChange, state: &mut State) {
    match change {
        GroupChange::Assigned(parts) => {
            let mut loaded = state.loaded.lock().expect("not poisoned");
            for p in parts {
                state.partitions.entry(p).or_default();
                let window = loaded.remove(&p).unwrap_or_else(|| CountedCalls::new(state.window_hours));
                state.counted.insert(p, window);
            }
        }
        GroupChange::Revoked(parts) => {
            for p in parts {
                if let Some(r) = state.partitions.remove(&p).filter(|r| r.messages > 0) {
                    state.unflushed -= r.messages;
                    tracing::info!(
                        partition = p,
                        messages = r.messages,
                        "abandoned the unflushed counters of a revoked partition; its new owner counts them again"
                    );
                }
                // The window holds unflushed calls too: the next owner reads it back.
                state.counted.remove(&p);
            }
        }
    }
}

/// Takes every partition's unflushed work as units, grouped by the shard of `counters_log`
/// it lands on, for ONE insert per shard (one insert on one server; each is one block and
/// one part: all or nothing, see [`crate::clickhouse`]); dead letters are delivered first,
/// so no reject is lost once its offset is recorded. The inserts run on the writer's thread
/// ([`crate::writing`]), one attempt each; a failed one is retried here ([`insert_units`]).
///
/// Before every attempt — the first too — the position of *every* partition in the insert
/// is read back (from the rows at or after its unit's start only:
/// [`ClickHouse::positions_of_units`]), because an earlier attempt's outcome may be unknown
/// (the connection broke after sending, a quorum was not confirmed in time), and because
/// another writer's unit may have landed since the partition was assigned (a dead member's
/// quorum insert, confirmed only when a lagging replica fetched it, after this member had
/// read its partitions' positions):
///
/// - right after the unit (`last + 1`): it landed; it leaves the insert;
/// - at or before the unit's first offset: it did not; it stays;
/// - anywhere else: *another* writer's unit landed over these offsets — a dead member's
///   insert whose quorum was confirmed only now (quorum inserts are serialised per shard:
///   it is confirmed before ours can be written, so the check before ours sees it), or a
///   zombie's. The unit leaves the insert and the partition is read again from the
///   position ClickHouse holds, with its window of counted calls, as on a new assignment
///   ([`rewind`]).
///
/// A partition revoked while waiting leaves the insert too (its new owner re-reads it).
fn take_units(layout: &Layout, io: &mut Io<'_>, state: &mut State) -> Result<Vec<ShardUnits>> {
    state.last_flush = Instant::now();
    if state.unflushed == 0 {
        return Ok(Vec::new());
    }
    io.flush_dead_letters()?;
    let flushed_at = jiff::Timestamp::now().as_second() as u32;
    let mut shards: std::collections::BTreeMap<u32, Vec<PartitionUnit>> = std::collections::BTreeMap::new();
    let mut pending: Vec<i32> = state.partitions.iter().filter(|(_, r)| !r.is_empty()).map(|(p, _)| *p).collect();
    pending.sort_unstable();
    for p in pending {
        let Some(rollup) = state.partitions.get_mut(&p).map(std::mem::take) else { continue };
        state.unflushed -= rollup.messages;
        let first = rollup.first_offset.unwrap_or(rollup.last_offset);
        shards.entry(layout.shard_of(p)).or_default().push(PartitionUnit {
            partition: p,
            first,
            last: rollup.last_offset,
            flushed_at,
            rollup,
        });
    }
    Ok(shards.into_iter().map(|(shard, units)| ShardUnits { shard, units, unsettled: None }).collect())
}

/// Retries a shard's insert whose attempt on the writer's thread failed, as [`take_units`]
/// says: with consumption paused and the group served meanwhile, until it is written or
/// every partition in it revoked. `rewinds` are those its failed attempt found.
#[allow(clippy::too_many_arguments)]
fn insert_units(
    opts: &AggregateOptions,
    rt: &tokio::runtime::Runtime,
    ch: &ClickHouse,
    store: &ClickHousePositions,
    mut shard: ShardUnits,
    mut rewinds: Vec<(i32, i64)>,
    io: &mut Io<'_>,
    state: &mut State,
) -> Result<()> {
    let (consumer, stats, stop) = (io.consumer, io.stats, io.stop);
    let (group, topic) = (&opts.source.group, &opts.source.topic);
    let mut written = 0;
    while !shard.units.is_empty() {
        // Any revoke of a partition in the insert ends the wait, so its rows leave the
        // insert before the next attempt (its new owner re-reads them).
        let first = shard.units[0].partition;
        let ours: Vec<i32> = shard.units.iter().map(|u| u.partition).collect();
        let lines = &opts.source.lines;
        let attempt = || crate::writing::attempt(rt, ch, (group, topic, lines), &mut shard, &mut rewinds, stats);
        let outcome = consumer.retry_paused(first, "writing counters to ClickHouse", stop, attempt, |change| {
            apply(change, state);
            ours.iter().all(|p| state.partitions.contains_key(p))
        })?;
        match outcome {
            Retried::Done(rows) => {
                written += rows;
                break;
            }
            Retried::Revoked => shard.units.retain(|u| state.partitions.contains_key(&u.partition)),
        }
    }
    written_units(consumer, stats, &shard, written);
    for (p, _) in rewinds {
        if state.partitions.contains_key(&p) {
            rewind(consumer, stop, store, state, p)?;
        }
    }
    Ok(())
}

/// Counts a shard's insert and commits its partitions' offsets, for monitoring.
fn written_units(consumer: &WorkerConsumer, stats: &WorkerStats, shard: &ShardUnits, rows: usize) {
    if rows > 0 {
        stats.units.fetch_add(1, Ordering::Relaxed);
        stats.written.fetch_add(rows as u64, Ordering::Relaxed);
    }
    consumer.commit_for_monitoring(&shard.units.iter().map(|u| (u.partition, u.last + 1)).collect());
}

/// Reads partition `p` again from where ClickHouse stands, with the calls it counted, as
/// on a new assignment: its unflushed work is dropped and the consumer seeks.
/// The read is retried, with consumption paused, while ClickHouse fails (as an insert is);
/// if `p` is revoked meanwhile, its new owner reads it instead.
fn rewind(
    consumer: &WorkerConsumer,
    stop: &'static AtomicBool,
    store: &ClickHousePositions,
    state: &mut State,
    p: i32,
) -> Result<()> {
    let read = consumer.retry_paused(
        p,
        "reading the partition's position and counted calls from ClickHouse",
        stop,
        || store.next_offsets(&consumer.topic, &[p]),
        |change| {
            apply(change, state);
            state.partitions.contains_key(&p)
        },
    )?;
    let Retried::Done(positions) = read else { return Ok(()) };
    let next = positions.get(&p).copied();
    apply(GroupChange::Revoked(vec![p]), state);
    apply(GroupChange::Assigned(vec![p]), state);
    let at = next.map_or(rdkafka::Offset::Beginning, rdkafka::Offset::Offset);
    consumer.reposition(p, at).with_context(|| format!("seeking partition {p} to {at:?}"))?;
    tracing::info!(partition = p, at = ?at, "partition read again from ClickHouse's position");
    Ok(())
}
