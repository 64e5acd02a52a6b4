//! Counters inserted beside the reading thread: one flush's inserts at most under way.
//!
//! An insert costs the aggregator nothing but time: ClickHouse's (reading positions back,
//! writing the part). When the worker's thread made it itself, reading stopped meanwhile —
//! during a catch-up with 500 ms flushes, 17–19 % of the time (`benches/RESULTS.md` §16),
//! and more against a cluster, where a quorum insert waits for a second replica. So a flush
//! takes every partition's unit, hands the units to the writer's thread, which encodes them
//! ([`Writer`]), and the worker goes back to reading. The exactly-once protocol
//! (`crate::worker`'s `take_units` states it) is kept whole:
//!
//! - **One flush at a time.** The next flush first takes this one's outcome (waiting for it
//!   if need be), so a partition's units land in order and the position check before each
//!   sees the one before it.
//! - **A revoke waits for the insert under way.** The consumer's rebalance callback calls
//!   [`PositionStore::revoking`](cdrflow_kafka::PositionStore::revoking) before it gives
//!   partitions up; it returns once the writer is idle ([`WritesUnderWay`]). Their next
//!   owner therefore reads positions that the insert has already moved, or that it never
//!   will, as when the worker's thread inserted itself (no insert could be under way while
//!   its `poll` served the group). The writer being idle is not enough when its last attempt
//!   gave up on an insert that ClickHouse still runs (past `--insert-timeout-s`): that
//!   insert can still land after the next owner read its positions. So the revoke then also
//!   waits until ClickHouse runs no insert of this member ([`member_prefix`],
//!   `system.processes`), for at most [`revoke_wait_limit`].
//! - **The writer makes one attempt.** A failed one is handed back and retried by the
//!   worker's thread, with consumption paused and the group served meanwhile, exactly as
//!   before: the position check before each retry settles an attempt whose outcome is
//!   unknown.
//! - **A partition positioned again** (revoked, rewound) since its unit was taken has the
//!   outcome of that unit ignored: not retried, not committed for monitoring. Its owner
//!   read its position after the attempt ended.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use anyhow::{Context, Result};
use cdrflow_kafka::{WorkerStats, WriteUnderWay, WritesUnderWay};
use cdrflow_schemas::LineRegistry;

use crate::clickhouse::encoder::{Unit, encode};
use crate::clickhouse::service::STILL_RUNNING;
use crate::clickhouse::{ClickHouse, ClickHouseConfig};
use crate::rollup::PartitionRollup;

/// One partition's unit: its rollup, encoded as rows of `counters_log` by the insert
/// itself (borrowed from the rollup: [`encode`]), on the writer's thread.
pub(crate) struct PartitionUnit {
    /// Its partition.
    pub partition: i32,
    /// The first offset it covers.
    pub first: i64,
    /// The last offset it covers.
    pub last: i64,
    /// When the flush was made, UTC seconds.
    pub flushed_at: u32,
    /// Its counters.
    pub rollup: PartitionRollup,
}

/// The units of one shard of `counters_log`, inserted as one insert.
pub(crate) struct ShardUnits {
    /// The shard (0 when `counters_log` is not distributed).
    pub shard: u32,
    /// Its units, in partition order.
    pub units: Vec<PartitionUnit>,
    /// The query id of its last insert, while that insert's outcome is unknown (it failed
    /// as seen from here): ClickHouse may still be running it.
    pub unsettled: Option<String>,
}

/// How a shard's one attempt ended.
pub(crate) struct ShardOutcome {
    /// The shard and the units still to insert (failed) or inserted (done): those found
    /// landed already, or overwritten by another writer, have left.
    pub shard: ShardUnits,
    /// Partitions another writer's unit landed over: to read again from ClickHouse's
    /// position, with the offset it holds.
    pub rewinds: Vec<(i32, i64)>,
    /// The rows inserted, or why the attempt failed.
    pub result: Result<usize>,
}

/// The writer's thread: takes one flush's shards at a time, makes one attempt at each, and
/// sends back how each went. It has its own runtime and its own ClickHouse client (a
/// current-thread runtime drives its connections only while it runs a task, so the two
/// threads must not share one).
pub(crate) struct Writer {
    /// Each flush's shards, with its token of [`WritesUnderWay`].
    jobs: Option<mpsc::SyncSender<(Vec<ShardUnits>, WriteUnderWay)>>,
    outcomes: mpsc::Receiver<Vec<ShardOutcome>>,
    under_way: Arc<WritesUnderWay>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread, inserting as `group` reading `topic`.
    pub fn start(
        cfg: ClickHouseConfig,
        group: String,
        topic: String,
        lines: Arc<LineRegistry>,
        stats: Arc<WorkerStats>,
        under_way: Arc<WritesUnderWay>,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the ClickHouse writer's runtime")?;
        let (jobs, take) = mpsc::sync_channel::<(Vec<ShardUnits>, WriteUnderWay)>(1);
        let (give, outcomes) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("clickhouse-insert".into())
            .spawn(move || {
                let ch = ClickHouse::new(cfg);
                for (shards, token) in take {
                    let outcome: Vec<ShardOutcome> = shards
                        .into_iter()
                        .map(|mut shard| {
                            let mut rewinds = Vec::new();
                            let result = attempt(&rt, &ch, (&group, &topic, &lines), &mut shard, &mut rewinds, &stats);
                            ShardOutcome { shard, rewinds, result }
                        })
                        .collect();
                    // Sent before the write ends: whoever sees none under way finds the outcome.
                    let sent = give.send(outcome);
                    drop(token);
                    if sent.is_err() {
                        break;
                    }
                }
            })
            .context("starting the ClickHouse writer's thread")?;
        Ok(Writer { jobs: Some(jobs), outcomes, under_way, thread: Some(thread) })
    }

    /// Hands one flush's shards over; the caller has taken the previous outcome.
    pub fn send(&self, shards: Vec<ShardUnits>) -> Result<()> {
        let token = self.under_way.begin();
        if self.jobs.as_ref().expect("until dropped").send((shards, token)).is_err() {
            anyhow::bail!("the ClickHouse writer's thread ended unexpectedly");
        }
        Ok(())
    }

    /// The outcome of the flush handed over: waits for it if `block`, else `None` while it
    /// is under way.
    pub fn outcome(&self, block: bool) -> Result<Option<Vec<ShardOutcome>>> {
        let gone = || anyhow::anyhow!("the ClickHouse writer's thread ended unexpectedly");
        if block {
            return self.outcomes.recv().map(Some).map_err(|_| gone());
        }
        match self.outcomes.try_recv() {
            Ok(o) => Ok(Some(o)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(gone()),
        }
    }

    /// Whether no insert is under way (its outcome, if any, is ready).
    pub fn is_idle(&self) -> bool {
        self.under_way.is_idle()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its job, if any, is done.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A query id for an insert of `group` into `shard`, unique to it: the process, the time
/// and a count of the inserts made.
fn insert_id(group: &str, shard: u32) -> String {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    format!("{}shard{shard}-{n}", member_prefix(group))
}

/// How every query id of this member's inserts begins: the group, then this process (its
/// pid and start, as members in containers share pid 1), so that a revoke can ask
/// ClickHouse whether any insert of this member still runs ([`ClickHouse::running_from`]).
pub(crate) fn member_prefix(group: &str) -> String {
    static MEMBER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let member = MEMBER.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}.{nanos:x}", std::process::id())
    });
    format!("cdrflow-{group}-{member}-")
}

/// How long a revoke waits for an insert of this member that ClickHouse still runs: twice
/// the client's own patience, at least 30 s (the group's rebalance waits meanwhile).
pub(crate) fn revoke_wait_limit(cfg: &ClickHouseConfig) -> std::time::Duration {
    (cfg.insert_timeout * 2).max(std::time::Duration::from_secs(30))
}

/// One attempt at inserting a shard's units as one insert. If the shard's last insert
/// failed as seen from here, the attempt first makes sure ClickHouse no longer runs it: an
/// insert the client gave up on (a timeout after its rows were sent) can still land, and a
/// position read before it does would send its units again, to be counted twice. Every
/// partition's position is then read back (from the rows at or after its unit's start only:
/// [`ClickHouse::positions_of_units`]), and each unit is kept, dropped as landed already, or
/// dropped with its partition to rewind, as `crate::worker`'s `take_units` says. Each failed
/// attempt counts as a sink error, whichever request of it failed.
pub(crate) fn attempt(
    rt: &tokio::runtime::Runtime,
    ch: &ClickHouse,
    (group, topic, lines): (&str, &str, &LineRegistry),
    shard: &mut ShardUnits,
    rewinds: &mut Vec<(i32, i64)>,
    stats: &WorkerStats,
) -> Result<usize> {
    let started = Instant::now();
    let result = (|| {
        let id = shard.shard;
        if let Some(earlier) = &shard.unsettled
            && rt.block_on(ch.running(earlier))?
        {
            anyhow::bail!(
                "ClickHouse at {} {STILL_RUNNING} (query_id {earlier}), which this aggregator gave up waiting for: \
                 it may still land, so its units are checked and sent again only once it has ended",
                ch.config().url
            );
        }
        let units = &mut shard.units;
        let firsts: Vec<(i32, i64)> = units.iter().map(|u| (u.partition, u.first)).collect();
        let pos = rt.block_on(ch.positions_of_units(group, topic, &firsts))?;
        units.retain(|u| match pos.get(&u.partition).copied() {
            None => true,
            Some(next) if next <= u.first => true,
            Some(next) if next == u.last + 1 => {
                tracing::warn!(shard = id, partition = u.partition, "the unit had landed after all; not repeating it");
                false
            }
            Some(next) => {
                tracing::warn!(shard = id, partition = u.partition, first = u.first, last = u.last, clickhouse_next = next,
                    "another writer's unit landed over these offsets (a dead member's quorum insert confirmed late, or a zombie's): reading the partition again from where ClickHouse stands");
                rewinds.push((u.partition, next));
                false
            }
        });
        if units.is_empty() {
            return Ok(0);
        }
        let positions_ms = started.elapsed().as_millis() as u64;
        let encoded: Vec<_> = units
            .iter()
            .flat_map(|u| {
                let unit = Unit { group, topic, partition: u.partition, flushed_at: u.flushed_at };
                encode(&unit, &u.rollup, lines)
            })
            .collect();
        let rows = encoded.len();
        let query_id = insert_id(group, id);
        shard.unsettled = Some(query_id.clone());
        rt.block_on(ch.insert_unit(&query_id, encoded))?;
        shard.unsettled = None;
        tracing::debug!(
            shard = id,
            partitions = units.len(),
            rows,
            positions_ms,
            insert_ms = started.elapsed().as_millis() as u64 - positions_ms,
            "counters inserted"
        );
        Ok(rows)
    })();
    match &result {
        Ok(_) => stats.last_write_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed),
        Err(e) => stats.sink_error(crate::clickhouse::service::failure_reason(e)),
    }
    result
}
