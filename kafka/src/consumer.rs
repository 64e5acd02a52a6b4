//! A consumer-group member whose read positions live in the sink.
//!
//! # The rebalance protocol
//!
//! Kafka's committed offsets are for lag monitoring only; the truth about how far a
//! partition has been processed is written by the sink in the same atomic step as the data
//! (a Parquet file's name, a ClickHouse insert's `last_offset`). So:
//!
//! 1. **Assign.** When the group hands this member partitions, librdkafka calls
//!    [`SinkPositioned::rebalance`] from inside `poll`, on the worker's own thread. Before
//!    assigning, it asks the sink ([`PositionStore::next_offsets`]) where each partition
//!    stands and assigns each partition *at that offset* (or at the beginning if the sink
//!    has nothing for it). If the sink cannot be read, it retries with backoff: assigning
//!    at any other offset could lose or repeat data. The worker then sees
//!    [`GroupChange::Assigned`].
//! 2. **Revoke.** When partitions are taken away, the callback records
//!    [`GroupChange::Revoked`] and unassigns before it returns. The worker drains the
//!    changes right after `poll` returns and **abandons** its unflushed work for those
//!    partitions: nothing of it has reached the sink, so the next owner, reading its
//!    position from the sink, re-reads exactly that work. Because callbacks and message
//!    handling share one thread, no message of a revoked partition is handled after the
//!    revoke (one read ahead of it is dropped unhandled: [`Positioned`]). A sink whose
//!    writes run beside the worker's thread (the aggregator's inserts, the archive's
//!    writes on the encoders' pool) is asked first
//!    ([`PositionStore::revoking`]) and the callback returns only once none is under way,
//!    so no flush for a revoked partition can be under way when it is given up.
//! 3. **Flush.** A worker writes a unit (data + the offsets it covers) to the sink in one
//!    atomic step, then commits the offsets to Kafka, for monitoring.
//!
//! A member that is killed simply stops; its partitions move on after the session timeout
//! and their new owner starts from what the sink holds.
//!
//! # A write that outlives the member's place in the group
//!
//! The group waits for a member only so long: a rebalance goes on without a member that has
//! not rejoined within `max.poll.interval.ms` (the classic protocol's rebalance timeout),
//! and joining takes a poll. A worker's thread that waits for a stalled write (it waits
//! when units fall full) or whose revoke waits for one (inside `poll`) cannot rejoin, so
//! another member may get its partitions, read their positions from the sink and, in the
//! archive, remove the files of every uncommitted unit. If the stalled write then woke and
//! committed, the partition would hold two units over the same offsets, or a commit listing
//! files the new owner removed. So a write beside the worker's thread asks a [`Fence`]
//! before each step that makes it visible, and stops there, uncommitted, once either holds:
//! - the worker's thread has not started a read for half of `max.poll.interval.ms`
//!   ([`WorkerConsumer::poll`] stamps the first poll of each): a rebalance begun meanwhile may go on
//!   without this member before the write ends, and half the timeout is left for a step
//!   already past its check;
//! - librdkafka says the assignment is lost ([`Consumer::assignment_lost`]: the session
//!   expired, or it left the group itself).
//!
//! The unit is then abandoned like any unflushed work of a revoked partition, and whoever
//! holds the partition next reads it again. Not covered: a step that passed its check and
//! then stalls for longer than the time left; a check cannot reach into a request already
//! sent (the README's Known limits).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::Offset;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use crate::settings::{KafkaSettings, Property};
use crate::stats::{OutOfRange, WorkerStats};

/// Where a sink says each partition stands.
pub trait PositionStore: Send + Sync + 'static {
    /// The next offset to read for each of these partitions of `topic`; a partition the
    /// sink has never written is absent (read it from the beginning).
    fn next_offsets(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>>;
    /// The sink, for log lines ("ClickHouse at …", "archive at …").
    fn describe(&self) -> String;
    /// These partitions are being revoked: returns once no write of the sink that may
    /// cover them is under way beside the worker's thread, so that their next owner reads
    /// positions such a write has already moved (the aggregator's inserts and the archive's
    /// writes run beside it: [`WritesUnderWay`]). Called from inside `poll`, before the
    /// partitions are given up.
    fn revoking(&self, _partitions: &[i32]) {}
}

/// A sink's writes under way beside the worker's thread (the aggregator's inserts, the
/// archive's encode-and-write jobs), for [`PositionStore::revoking`] to wait on.
///
/// A count, not a flag: a write hands its outcome back before it ends here, and the worker
/// may take that outcome and start the next write in between; a flag cleared then would
/// say "idle" during the next write.
#[derive(Default)]
pub struct WritesUnderWay {
    /// Writes begun and not yet ended.
    count: Mutex<u32>,
    /// Signalled when `count` falls to 0.
    idle: Condvar,
}

impl WritesUnderWay {
    /// Counts one more write under way until the returned token is dropped: move it with
    /// the write, and drop it once the write's outcome has been handed back.
    pub fn begin(self: &Arc<Self>) -> WriteUnderWay {
        *self.count.lock().expect("not poisoned") += 1;
        WriteUnderWay(self.clone())
    }

    /// Whether no write is under way (every outcome has been handed back).
    pub fn is_idle(&self) -> bool {
        *self.count.lock().expect("not poisoned") == 0
    }

    /// For [`PositionStore::revoking`]: returns once no write is under way, saying how
    /// long it waited for `what` if it had to.
    pub fn wait_before_revoke(&self, partitions: &[i32], what: &str) {
        let count = self.count.lock().expect("not poisoned");
        if *count == 0 {
            return;
        }
        let started = std::time::Instant::now();
        drop(self.idle.wait_while(count, |n| *n > 0).expect("not poisoned"));
        tracing::info!(
            partitions = partitions.len(),
            waited_ms = started.elapsed().as_millis() as u64,
            "waited for the {what} under way before giving partitions up"
        );
    }
}

/// One write under way ([`WritesUnderWay::begin`]); it ends when dropped.
pub struct WriteUnderWay(Arc<WritesUnderWay>);

impl Drop for WriteUnderWay {
    fn drop(&mut self) {
        let mut n = self.0.count.lock().expect("not poisoned");
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Whether a write beside the worker's thread may still make its work visible: asked before
/// each step of it (the module's "A write that outlives the member's place in the group").
/// Cheap: a clock reading and a flag, no request.
///
/// It holds the consumer weakly: a write still under way when the worker stops must not keep
/// the consumer open (it closes, leaving the group, on the worker's own thread).
#[derive(Clone)]
pub struct Fence {
    /// The member's consumer: when its thread last polled, and librdkafka's word on its
    /// assignment.
    consumer: std::sync::Weak<BaseConsumer<SinkPositioned>>,
}

/// Why a [`Fence`] stopped a write (find it in an error's chain to count it apart).
#[derive(Debug)]
pub struct Fenced(String);

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fenced {}

impl Fence {
    /// `Ok` unless this member may have lost its partitions: then a [`Fenced`] error saying
    /// why the write stops uncommitted. The write is retried on the worker's thread (which
    /// polls first, so it passes unless one write alone takes that long) while the partition
    /// is still held, and dropped once it is revoked.
    pub fn check(&self) -> Result<()> {
        let Some(consumer) = self.consumer.upgrade() else {
            return Err(Fenced("the worker's consumer is closed: not committing".into()).into());
        };
        let ctx = consumer.context();
        let polled = Duration::from_millis(ctx.poll_started_ms.load(Ordering::Acquire));
        let since = ctx.started.elapsed().saturating_sub(polled);
        if since > ctx.rebalance_timeout / 2 {
            return Err(Fenced(format!(
                "the worker's thread has not polled Kafka for {:.1} s, over half of max.poll.interval.ms ({} s): the \
                 group may give its partitions to another member before this write ends, so it stops \
                 uncommitted (if single writes take this long, raise --kafka-option max.poll.interval.ms or make \
                 units smaller)",
                since.as_secs_f64(),
                ctx.rebalance_timeout.as_secs()
            ))
            .into());
        }
        if consumer.assignment_lost() {
            return Err(Fenced(
                "this worker lost its place in the consumer group while writing (its session expired, or it left \
                 the group): not committing; the partitions' next owner reads this work again"
                    .into(),
            )
            .into());
        }
        Ok(())
    }
}

/// A change of this member's assignment, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// These partitions are now ours, positioned where the sink says.
    Assigned(Vec<i32>),
    /// These partitions are no longer ours: abandon their unflushed work.
    Revoked(Vec<i32>),
}

/// The consumer context that positions partitions from the sink.
pub struct SinkPositioned {
    /// Where positions are read.
    store: Arc<dyn PositionStore>,
    /// The one topic this worker reads.
    topic: String,
    /// Changes not yet seen by the worker.
    changes: Mutex<Vec<GroupChange>>,
    /// Set when the process is stopping: give up waiting for the sink.
    stopping: &'static AtomicBool,
    /// The worker's totals: the partitions held, for `/readyz` and the lag gauge.
    stats: Arc<WorkerStats>,
    /// The bootstrap servers, for messages about them.
    brokers: String,
    /// When each partition was last positioned, for messages read ahead of it.
    positioned: Positioned,
    /// When the worker's thread last started a poll, in ms since `started` ([`Fence`]).
    poll_started_ms: AtomicU64,
    /// When the consumer was made.
    started: std::time::Instant,
    /// How long the group waits for this member to rejoin a rebalance
    /// (`max.poll.interval.ms`).
    rebalance_timeout: Duration,
}

/// When each partition was last *positioned* — assigned or revoked by the group, or sought
/// by the sink ([`WorkerConsumer::reposition`]) — on a counter the worker reads after every
/// poll.
///
/// The driver reads messages ahead of handling them (a batch is decoded on another thread
/// while the one before it is handled). A message read before its partition was positioned
/// again belongs to the old position: the sink abandoned that partition's unflushed work
/// (revoke, rewind), or it is no longer ours, and fetching resumes from the new position.
/// Such a message is dropped unhandled ([`Positioned::stale`]); its partition's next owner,
/// or this worker from the new position, reads it again. Anything else read ahead stays
/// valid: the paused retry's seek back ([`WorkerConsumer::retry_paused`]) goes to a message
/// read *after* every one held, so those held come first.
#[derive(Default)]
pub struct Positioned {
    /// Bumped each time partitions are positioned.
    epoch: AtomicU64,
    /// The epoch at which each partition was last positioned.
    at: Mutex<HashMap<i32, u64>>,
}

impl Positioned {
    /// The current epoch: stamp a message with it right after the poll that read it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Records that these partitions were positioned just now.
    pub fn mark(&self, parts: &[i32]) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut at = self.at.lock().expect("not poisoned");
        for &p in parts {
            at.insert(p, epoch);
        }
    }

    /// Whether a message of `partition` read at epoch `read_at` was read before the
    /// partition was positioned again (drop it unhandled).
    pub fn stale(&self, partition: i32, read_at: u64) -> bool {
        self.epoch() > read_at && self.at.lock().expect("not poisoned").get(&partition).is_some_and(|&e| e > read_at)
    }
}

impl ClientContext for SinkPositioned {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.stats.kafka.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.stats.kafka.error(&self.brokers, "consumer", &error, reason);
    }
}

impl SinkPositioned {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut p: Vec<i32> = tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        p.sort_unstable();
        p
    }

    /// Reads positions, retrying with backoff while the sink is unreachable.
    fn positions(&self, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.store.next_offsets(&self.topic, partitions) {
                Ok(p) => return Some(p),
                Err(e) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        return None;
                    }
                    tracing::error!(error = format!("{e:#}"), sink = self.store.describe(), retry_in = ?backoff,
                        "cannot read partition positions from the sink; not consuming until it answers");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

impl ConsumerContext for SinkPositioned {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts = self.partitions(tpl);
                if parts.is_empty() && matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
                    // KIP-848 and cooperative assignors call back with nothing new after an
                    // incremental revoke: nothing to position, nothing to report.
                    let _ = consumer.incremental_assign(tpl);
                    return;
                }
                let Some(positions) = self.positions(&parts) else {
                    return;
                };
                for &p in &parts {
                    let at = positions.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o));
                    if let Err(e) = tpl.set_partition_offset(&self.topic, p, at) {
                        tracing::error!(partition = p, error = %e, "cannot set the partition's position");
                    }
                }
                tracing::info!(topic = self.topic, partitions = ?parts, positions = ?positions, sink = self.store.describe(),
                    "partitions assigned at the positions the sink holds");
                // The classic protocol's eager strategies hand over the whole assignment;
                // KIP-848's consumer protocol (and cooperative-sticky) only what changes.
                let assigned = if matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assign failed");
                }
                // A partition this member paused (a paused retry, a message put back) and
                // then lost keeps that pause when it is assigned again: librdkafka resets
                // only its own pauses on assignment. Such a partition was never fetched again,
                // its lag growing with no error said. Resumed here; a retry still waiting
                // pauses it again when it sees the assignment.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::error!(error = %e, partitions = ?parts, "resuming newly assigned partitions failed");
                }
                self.stats.hold(&parts);
                self.positioned.mark(&parts);
                self.changes.lock().expect("not poisoned").push(GroupChange::Assigned(parts));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts = self.partitions(tpl);
                self.store.revoking(&parts);
                tracing::info!(topic = self.topic, partitions = ?parts, "partitions revoked");
                self.stats.release(&parts);
                self.positioned.mark(&parts);
                self.changes.lock().expect("not poisoned").push(GroupChange::Revoked(parts));
                let unassigned = if matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let parts = self.partitions(tpl);
                self.store.revoking(&parts);
                let _ = consumer.unassign();
                self.stats.release(&parts);
                self.positioned.mark(&parts);
                self.changes.lock().expect("not poisoned").push(GroupChange::Revoked(parts));
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            // Nothing new to commit: not an error.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // A commit racing a rebalance (KIP-848's member epochs, the classic generations):
            // the next flush commits again, and positions live in the sink anyway.
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::StaleMemberEpoch
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress,
            )) => tracing::debug!("a monitoring commit raced a rebalance; the next one catches up"),
            Err(e) => {
                tracing::warn!(error = %e, "committing offsets for lag monitoring failed (positions live in the sink; nothing is lost)")
            }
        }
    }
}

/// Consumer properties the workers set unless the operator sets them.
///
/// - `fetch.wait.max.ms=100`: a fetch of a quiet partition returns within 100 ms.
/// - `fetch.min.bytes=262144`: a fetch returns once 256 KiB are ready (or after those
///   100 ms), not at the first byte. A steady feed was otherwise fetched a few messages at a
///   time, one request after another: at 50 000 CDRs/s this took the broker from ~79 % to
///   ~65 % of a core and the aggregator from ~38 % to ~24 % (`benches/RESULTS.md` §15); a
///   backlog fills every fetch anyway, and a quiet feed waits at most the 100 ms.
/// - `auto.offset.reset=error`: a partition is assigned at the position its sink holds, so
///   this setting only acts when that position is outside the topic's log: before its first
///   offset (retention deleted records this group never read) or past its end (the topic
///   was made again, or its log truncated). librdkafka's `earliest` then read from the start
///   without a word: a silent gap in the first case, everything read twice in the second.
///   With `error` the partition is not read, and the worker says why and what to do
///   ([`crate::stats::OutOfRange::explain`]); an operator who accepts a gap sets `earliest`.
///   A safety default, not a speed one; it sits here so that the operator can choose.
/// - `fetch.queue.backoff.ms=50`: once a partition's pre-fetched queue is over librdkafka's
///   thresholds, its next fetch waits this long (default 1000 ms). A worker that decodes as
///   it reads empties the queue during a second's wait and then idles on it; at 50 ms the
///   aggregator went from ~120 k to ~360 k CDRs/s (`benches/RESULTS.md` §3). The default since
///   the whole suite (crash, broker-loss and cluster tests included) passed with it on the
///   real broker; the 4-record shortfall once seen with it came from the mock broker.
pub const CONSUMER_TUNING: &[(&str, &str)] = &[
    ("fetch.wait.max.ms", "100"),
    ("fetch.min.bytes", "262144"),
    ("auto.offset.reset", "error"),
    ("fetch.queue.backoff.ms", "50"),
];

/// A worker's consumer: one topic, one group, positions from the sink.
pub struct WorkerConsumer {
    /// The librdkafka consumer (seen, weakly, by the [`Fence`]s of writes beside the
    /// worker); polled only through [`WorkerConsumer::poll`] and [`WorkerConsumer::poll_more`].
    consumer: Arc<BaseConsumer<SinkPositioned>>,
    /// The topic.
    pub topic: String,
}

impl WorkerConsumer {
    /// The effective librdkafka properties of a worker's consumer: the operator's over
    /// [`CONSUMER_TUNING`], and the protocol's over both ([`crate::settings`]). `--dry-run`
    /// prints exactly these.
    ///
    /// With the classic group protocol (the default) the member's session timeout,
    /// heartbeat and assignment strategy are client settings; with KIP-848's
    /// `group.protocol=consumer` (Kafka 4 brokers) the group coordinator owns them (broker
    /// settings `group.consumer.session.timeout.ms` and friends) and librdkafka refuses
    /// them, so they are left out.
    pub fn properties(settings: &KafkaSettings, group: &str, session_timeout_ms: u32) -> Vec<Property> {
        let consumer_protocol = settings.extra.iter().any(|(k, v)| k == "group.protocol" && v == "consumer");
        let mut protocol: Vec<(&str, String)> = vec![
            // The protocol: positions live in the sink, never in auto-commits.
            ("group.id", group.to_owned()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
        ];
        if !consumer_protocol {
            protocol.extend([
                ("session.timeout.ms", session_timeout_ms.to_string()),
                ("heartbeat.interval.ms", (session_timeout_ms / 4).max(100).to_string()),
                ("partition.assignment.strategy", "range,roundrobin".into()),
            ]);
        }
        settings.layered_for(crate::settings::Role::Consumer, CONSUMER_TUNING, &protocol)
    }

    /// Joins `group` on `topic`. `session_timeout_ms` bounds how long a killed member's
    /// partitions wait before moving on (librdkafka's default 45 s; tests use ~6 s).
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topic: &str,
        session_timeout_ms: u32,
        store: Arc<dyn PositionStore>,
        stopping: &'static AtomicBool,
        stats: Arc<WorkerStats>,
    ) -> Result<Self> {
        let props = Self::properties(settings, group, session_timeout_ms);
        crate::settings::warn_ignored(&props);
        // librdkafka's default unless set (it refuses a value it cannot parse).
        let rebalance_timeout = props
            .iter()
            .find(|p| p.key == "max.poll.interval.ms")
            .and_then(|p| p.value.parse().ok())
            .map_or(Duration::from_secs(300), Duration::from_millis);
        let ctx = SinkPositioned {
            store,
            topic: topic.to_owned(),
            changes: Mutex::new(Vec::new()),
            stopping,
            stats,
            brokers: settings.brokers.clone(),
            positioned: Positioned::default(),
            poll_started_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
            rebalance_timeout,
        };
        let consumer: BaseConsumer<SinkPositioned> = crate::settings::client_config(&props)
            .create_with_context(ctx)
            .with_context(|| format!("creating a Kafka consumer for {}", settings.brokers))?;
        consumer.subscribe(&[topic]).with_context(|| format!("subscribing to {topic}"))?;
        Ok(WorkerConsumer { consumer: Arc::new(consumer), topic: topic.to_owned() })
    }

    /// Polls for a message or an event (rebalance callbacks run inside), first noting when
    /// this poll started ([`Fence`]).
    pub fn poll(&self, timeout: Duration) -> Option<KafkaResult<rdkafka::message::BorrowedMessage<'_>>> {
        let ctx = self.consumer.context();
        ctx.poll_started_ms.store(ctx.started.elapsed().as_millis() as u64, Ordering::Release);
        self.consumer.poll(timeout)
    }

    /// Takes what librdkafka already holds, without waiting: for the polls that follow a
    /// [`WorkerConsumer::poll`] in one read, which noted the time for them all (reading the
    /// clock for each message cost ~40 ns here, a few per cent of a worker's time).
    pub fn poll_more(&self) -> Option<KafkaResult<rdkafka::message::BorrowedMessage<'_>>> {
        self.consumer.poll(Duration::ZERO)
    }

    /// The fence of this member's writes beside its thread ([`Fence`]).
    pub fn fence(&self) -> Fence {
        Fence { consumer: Arc::downgrade(&self.consumer) }
    }

    /// Leaves the group (on stopping, once the last writes are done).
    pub fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }

    /// The next offset to read of each assigned partition, as librdkafka holds it.
    pub fn position(&self) -> KafkaResult<TopicPartitionList> {
        self.consumer.position()
    }

    /// Assignment changes since the last call, in order.
    pub fn take_changes(&self) -> Vec<GroupChange> {
        std::mem::take(&mut *self.consumer.context().changes.lock().expect("not poisoned"))
    }

    /// When partitions were last positioned (for messages read ahead: [`Positioned`]).
    pub fn positioned(&self) -> &Positioned {
        &self.consumer.context().positioned
    }

    /// Seeks `partition` to `at` on the sink's word (it abandoned the partition's unflushed
    /// work): messages of it read ahead before now are dropped unhandled ([`Positioned`]).
    pub fn reposition(&self, partition: i32, at: Offset) -> KafkaResult<()> {
        self.positioned().mark(&[partition]);
        self.consumer.seek(&self.topic, partition, at, Duration::from_secs(10))
    }

    /// Commits `next offset` per partition to Kafka, asynchronously, for lag monitoring.
    pub fn commit_for_monitoring(&self, next: &HashMap<i32, i64>) {
        if next.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "async commit not queued");
        }
    }

    /// Pauses these partitions.
    fn pause_partitions(&self, parts: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        for &p in parts {
            tpl.add_partition(&self.topic, p);
        }
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(error = %e, ?parts, "pause failed");
        }
    }

    /// Pauses or resumes every assigned partition (while the sink is down).
    pub fn set_paused(&self, paused: bool) {
        if let Ok(tpl) = self.consumer.assignment() {
            let r = if paused { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
            if let Err(e) = r {
                tracing::warn!(error = %e, paused, "pause/resume failed");
            }
        }
    }

    /// Consumer lag per assigned partition: the high watermark librdkafka last saw minus the
    /// next offset to read (no network round trip). A partition from which nothing has been
    /// read yet counts from where it was assigned, so a quiet partition has a sample too,
    /// once the first fetch has told librdkafka its end.
    /// With it, the next offset to read of each assigned partition whose end is known.
    pub fn lag_and_positions(&self) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
        let Ok(assigned) = self.consumer.assignment() else { return Default::default() };
        let read = self.consumer.position().ok();
        let Ok(topic) = std::ffi::CString::new(self.topic.as_str()) else { return Default::default() };
        assigned
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| {
                let p = e.partition();
                let (mut low, mut high) = (0i64, 0i64);
                // SAFETY: librdkafka's cached watermark look-up (no network); the handle is live
                // for `self`, and the pointers are to locals that outlive the call.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        self.consumer.client().native_ptr(),
                        topic.as_ptr(),
                        p,
                        &mut low,
                        &mut high,
                    )
                };
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || high < 0 {
                    return None;
                }
                let position = read.as_ref().and_then(|r| r.find_partition(&self.topic, p)).map(|r| r.offset());
                let next = match (position, e.offset()) {
                    (Some(Offset::Offset(o)), _) | (_, Offset::Offset(o)) => o,
                    // Assigned at the beginning and nothing read yet: all of it is ahead.
                    _ => low.max(0),
                };
                Some(((p, (high - next).max(0)), (p, next)))
            })
            .unzip()
    }

    /// The assigned partitions whose next offset lies outside the topic's log, each with the
    /// log's first and end offsets. Asks the brokers (one round trip per partition), so it is
    /// called only after librdkafka reported an offset out of range, and now and then while
    /// one is ([`crate::stats::Chores`]).
    pub fn out_of_range(&self) -> BTreeMap<i32, OutOfRange> {
        let Ok(assigned) = self.consumer.assignment() else { return BTreeMap::new() };
        let read = self.consumer.position().ok();
        let mut out = BTreeMap::new();
        for e in assigned.elements_for_topic(&self.topic) {
            let p = e.partition();
            let position = read.as_ref().and_then(|r| r.find_partition(&self.topic, p)).map(|r| r.offset());
            // Assigned at the beginning (or the end) and nothing read: in range by definition.
            let ((Some(Offset::Offset(next)), _) | (_, Offset::Offset(next))) = (position, e.offset()) else {
                continue;
            };
            match self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(5)) {
                Ok((first, end)) if next < first || next > end => {
                    out.insert(p, OutOfRange { position: next, first, end });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot read the partition's first and end offsets")
                }
            }
        }
        out
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.consumer.context().brokers
    }

    /// Reports an error `poll` returned (counted, said at most every 30 s; see [`crate::health`]).
    pub fn poll_error(&self, e: &KafkaError) {
        let ctx = self.consumer.context();
        ctx.stats.kafka.poll_error(&ctx.brokers, e);
    }
}

/// What [`WorkerConsumer::retry_paused`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried<T> {
    /// The attempt succeeded.
    Done(T),
    /// The partition was revoked while waiting: abandon the unit (its new owner re-reads it).
    Revoked,
}

impl WorkerConsumer {
    /// Runs `attempt` until it succeeds. After a failure, consumption is paused (memory
    /// stays bounded), the group is served while waiting with backoff (`on_change` sees
    /// every assignment change), and the unit is abandoned if `partition` is revoked.
    /// Gives up with an error only when the process is stopping, or when a message read
    /// while waiting cannot be put back (`WorkerConsumer::put_back`).
    pub fn retry_paused<T>(
        &self,
        partition: i32,
        what: &str,
        stopping: &AtomicBool,
        mut attempt: impl FnMut() -> Result<T>,
        mut on_change: impl FnMut(GroupChange) -> bool,
    ) -> Result<Retried<T>> {
        let mut backoff = Duration::from_millis(200);
        let mut paused = false;
        let result = loop {
            match attempt() {
                Ok(v) => break Ok(Retried::Done(v)),
                Err(e) => {
                    self.consumer.context().stats.sink_failing.store(true, Ordering::Relaxed);
                    if !paused {
                        self.set_paused(true);
                        paused = true;
                    }
                    tracing::error!(error = format!("{e:#}"), partition, retry_in = ?backoff,
                        "{what} failed; consumption paused, nothing is lost");
                    if stopping.load(Ordering::Relaxed) && backoff >= Duration::from_secs(5) {
                        break Err(e.context(format!(
                            "stopping with partition {partition}'s unit unwritten; it is re-read on restart"
                        )));
                    }
                    // Waiting serves the group (heartbeats, rebalances). A partition assigned
                    // meanwhile is paused too; a message that still arrives is not handled
                    // now but read again after the wait (a seek back to it, or the worker
                    // stops: `put_back`), so nothing is skipped — with the cooperative
                    // protocols a member gains partitions without losing the one it is writing.
                    match self.poll(backoff) {
                        Some(Ok(m)) => {
                            use rdkafka::Message;
                            let (p, o) = (m.partition(), m.offset());
                            drop(m);
                            if let Err(e) = self.put_back(p, o) {
                                break Err(e);
                            }
                        }
                        Some(Err(e)) => self.poll_error(&e),
                        None => {}
                    }
                    let mut revoked = false;
                    for change in self.take_changes() {
                        if let GroupChange::Revoked(parts) = &change
                            && parts.contains(&partition)
                        {
                            revoked = true;
                        }
                        if let GroupChange::Assigned(parts) = &change {
                            self.pause_partitions(parts);
                        }
                        if !on_change(change) {
                            revoked = true;
                        }
                    }
                    if revoked {
                        tracing::warn!(partition, "partition revoked while waiting; its new owner re-reads the unit");
                        break Ok(Retried::Revoked);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if paused {
            self.consumer.context().stats.sink_failing.store(false, Ordering::Relaxed);
            self.set_paused(false);
            tracing::info!("{what} works again; consuming");
        }
        result
    }

    /// Puts a message read while waiting back in front of its partition, to be read again
    /// after the wait: the partition is paused and sought back to it. librdkafka has
    /// already moved past it, so if the seek fails while the partition is still ours,
    /// reading on would skip it (a hole in a unit): the worker stops instead, with an error,
    /// and on restart reads on from the sink's positions. A partition no longer ours is its
    /// new owner's to read.
    fn put_back(&self, p: i32, o: i64) -> Result<()> {
        self.pause_partitions(&[p]);
        let seek = || self.consumer.seek(&self.topic, p, Offset::Offset(o), Duration::from_secs(10));
        let held = || {
            // If the assignment cannot be read, assume the partition is held: the safe side.
            self.consumer.assignment().map_or(true, |a| a.find_partition(&self.topic, p).is_some())
        };
        let sought = seek_back(seek, held).with_context(|| {
            format!(
                "cannot seek partition {p} of {} back to offset {o}, a message read while the sink was failing; \
                 stopping rather than skip it (a restart reads on from the sink's positions)",
                self.topic
            )
        })?;
        match sought {
            true => tracing::info!(
                partition = p,
                offset = o,
                "a message read while waiting is put back, to be read after the wait"
            ),
            false => tracing::info!(
                partition = p,
                offset = o,
                "a message read while waiting was not put back: its partition is no longer ours"
            ),
        }
        Ok(())
    }
}

/// How many times a seek back is tried before the partition is checked.
const SEEK_BACK_TRIES: usize = 3;

/// Runs `seek` until it succeeds (`true`), at most [`SEEK_BACK_TRIES`] times; then its last
/// error if the partition is still `held`, else `false` (one no longer held is not ours to
/// read).
fn seek_back(mut seek: impl FnMut() -> KafkaResult<()>, held: impl Fn() -> bool) -> KafkaResult<bool> {
    let mut last = Ok(());
    for attempt in 1..=SEEK_BACK_TRIES {
        last = seek();
        match &last {
            Ok(()) => return Ok(true),
            Err(e) => tracing::warn!(error = %e, attempt, "seeking back to a message read while waiting failed"),
        }
    }
    match held() {
        true => last.map(|()| true),
        false => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::{KafkaError, KafkaResult, Positioned, SEEK_BACK_TRIES, seek_back};

    #[test]
    fn a_message_read_before_its_partition_was_positioned_again_is_stale_and_no_other() {
        let positioned = Positioned::default();
        positioned.mark(&[0, 1, 2]);
        let read = positioned.epoch();
        // Nothing since: nothing is stale, not even of partitions never positioned.
        assert!(!positioned.stale(1, read));
        assert!(!positioned.stale(7, read));
        // The sink seeks partition 1 (or the group revokes it): its earlier messages are
        // stale; those of the others are not.
        positioned.mark(&[1]);
        assert!(positioned.stale(1, read));
        assert!(!positioned.stale(0, read) && !positioned.stale(2, read) && !positioned.stale(7, read));
        // A message read after the positioning, in the same poll as it, is not.
        let after = positioned.epoch();
        assert!(!positioned.stale(1, after));
        // A revoke and a new assignment of partitions 0 and 9 in one poll.
        positioned.mark(&[0, 9]);
        positioned.mark(&[0, 9]);
        assert!(positioned.stale(0, after) && positioned.stale(9, after));
        assert!(!positioned.stale(1, after), "partition 1 was not positioned again");
    }

    /// A seek that fails a given number of times, then succeeds; counts its calls.
    fn seek_failing(times: usize, calls: &std::cell::Cell<usize>) -> impl FnMut() -> KafkaResult<()> + '_ {
        move || {
            calls.set(calls.get() + 1);
            match calls.get() <= times {
                true => Err(KafkaError::Seek("Local: Timed out".into())),
                false => Ok(()),
            }
        }
    }

    #[test]
    fn a_seek_back_that_keeps_failing_on_a_partition_still_held_is_an_error() {
        let calls = std::cell::Cell::new(0);
        let r = seek_back(seek_failing(usize::MAX, &calls), || true);
        assert!(matches!(r, Err(KafkaError::Seek(_))), "{r:?}");
        assert_eq!(calls.get(), SEEK_BACK_TRIES);
    }

    #[test]
    fn a_seek_back_that_fails_on_a_partition_given_up_is_no_error() {
        // Its new owner reads the message from the sink's position.
        let calls = std::cell::Cell::new(0);
        assert_eq!(seek_back(seek_failing(usize::MAX, &calls), || false).ok(), Some(false));
        assert_eq!(calls.get(), SEEK_BACK_TRIES);
    }

    #[test]
    fn a_seek_back_that_fails_and_then_works_is_no_error_and_not_repeated() {
        for fails in 0..SEEK_BACK_TRIES {
            let calls = std::cell::Cell::new(0);
            let held_asked = std::cell::Cell::new(false);
            let r = seek_back(seek_failing(fails, &calls), || {
                held_asked.set(true);
                true
            });
            assert_eq!(r.ok(), Some(true), "{fails} failures");
            assert_eq!(calls.get(), fails + 1, "tried until it worked, not after");
            assert!(!held_asked.get(), "a seek that worked needs no check");
        }
    }
}
