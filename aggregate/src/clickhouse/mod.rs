//! The ClickHouse sink, one file per role (as Vector's sinks are laid out):
//!
//! - [`config`] — where ClickHouse is and how to log in (password from a file or the environment);
//! - [`encoder`] — a partition's rollup → rows of `cdrflow.counters_log`;
//! - [`service`] — inserts, positions, migrations and dashboard queries over HTTP.
//!
//! # Why an interrupted flush cannot leave half a unit
//!
//! A flush is one `INSERT … FORMAT RowBinary` holding the unit of every assigned Kafka
//! partition with unflushed work (rows per partition ≤ regions × lines × hours touched,
//! capped well below `max_insert_block_size` by the flush triggers), so the server forms
//! **one block**; the table's partition key `toYYYYMM(flushed_at)` is constant within the
//! insert (one `flushed_at` per flush), so the block becomes **one part**. A
//! MergeTree part is written into a `tmp_insert_*` directory and renamed into place only
//! when complete; if the client dies, the connection drops or the server is killed before
//! that, the temporary directory is discarded on the next start. So either the whole unit
//! — the counters *and* the `last_offset` of every partition in it — is visible, or none of it is.
//! (That needs a server that tells a body cut short from a complete one. Releases before
//! the fix of ClickHouse issue #9666 (2020), Debian's 18.16 among them, insert what arrived
//! when a request body ends early: the rows of every complete chunk of a chunked insert,
//! or of a body shorter than its Content-Length; seen here on 18.16. A client killed
//! between two chunks of a unit, which the crate sends every ~256 KiB of rows, leaves part
//! of the unit with the unit's positions; `cdrflow reconcile` finds its cells short of the
//! archive. README, Known limits.) When an insert's
//! outcome is unknown (the connection broke after sending, or its answer took longer than
//! `--insert-timeout-s`), the sink reads the partition's position back before retrying, so a
//! unit that did land is not inserted twice. An insert the client gave up on may still be
//! running on the server, though, and land after that read: so each insert carries its own
//! query id, and the retry first waits until the server no longer runs it
//! ([`service::ClickHouse::running`], `system.processes`).
//!
//! # On a cluster: replicas and shards
//!
//! In the cluster layout (`cdrflow migrate --cluster`, `deploy/clickhouse-cluster/`)
//! `counters_log` is a Distributed table over a ReplicatedMergeTree `counters_log_local`,
//! sharded by `kafka_partition`. Three things keep the argument above true there:
//!
//! 1. **One insert per shard.** A Distributed insert that spans shards is as many inserts as
//!    shards, so it is not all or nothing. The aggregator reads the layout
//!    ([`service::Layout`]) and sends one insert per shard per flush, holding the units of
//!    the partitions that land there; each becomes one block, one part, on one replica,
//!    and replicates. Positions are per partition, and a partition lives on one shard, so
//!    a crash between two shards' inserts is a partition-by-partition matter, as on one
//!    server. Every insert is `insert_distributed_sync`: it returns once the shard holds it.
//! 2. **Quorum writes, consistent reads.** With `--insert-quorum N` (required when shards
//!    have replicas) an insert returns once N replicas of its shard hold it, and every read
//!    is `select_sequential_consistency`: a replica lacking a confirmed insert refuses to
//!    answer (Code 289) rather than hand out stale positions — which is what made an
//!    aggregator restarted against a lagging replica count again. While a replica is down
//!    or not fetching, quorum writes to its shard wait (Codes 285, 286, 319), the
//!    aggregator pauses and says why (`cdrflow_sink_errors_total{reason}`); it resumes when
//!    the replica is back. Quorum inserts are serialised per shard: a new one waits (286)
//!    until the previous one is confirmed — for as long as that takes, as cdrflow sets
//!    `insert_quorum_timeout` to a week ([`service::QUORUM_WAIT_MS`]): on 18.16 a pending
//!    quorum that times out stops blocking the next insert while its part stays and
//!    replicates later.
//! 3. **Every insert is preceded by a check of every partition in it.** Its position is read
//!    back. Right after the unit: it landed (a retry whose first attempt had succeeded).
//!    At or before its first offset: it did not. Anywhere else: another writer's unit landed
//!    over those offsets — a dead member's quorum insert confirmed only once the lagging
//!    replica fetched it, after this member had read its positions (serialised, it is
//!    confirmed before ours can be) — and the partition is read again from there
//!    (`worker::rewind`). Checking only after a failed insert was not enough: a partition
//!    that had no unit in the failed insert met the late unit in a later flush (seen in
//!    `tests/cluster.rs`).
//!
//! What remains: a zombie member whose insert reaches ClickHouse only after a new owner's
//! insert of the same offsets was confirmed would count twice. So would an insert given up
//! on whose member dies, or gives its partitions up after waiting for it longer than
//! `crate::writing`'s `revoke_wait_limit` (a revoke waits for the member's inserts that
//! ClickHouse still runs; the new owner does not know their query ids), and a check that
//! reaches a server other than the one running the insert (a load balancer before replicas). ClickHouse ≥ 22.2 fences it
//! with `insert_deduplication_token` (the unit's group/topic/partition/offsets), which 18.16
//! lacks; `cdrflow reconcile` names such an overlap (`clickhouse_overlap`).

pub mod config;
pub mod encoder;
pub mod service;

pub use config::ClickHouseConfig;
pub use service::{CellSource, ClickHouse};
