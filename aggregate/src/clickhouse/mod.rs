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
//! — the counters *and* the `last_offset` of every partition in it — is visible, or none of it is. When an insert's
//! outcome is unknown (the connection broke after sending), the sink reads the partition's
//! position back before retrying, so a unit that did land is not inserted twice.
//!
//! # What a modern ClickHouse cluster changes
//!
//! With `ReplicatedMergeTree` (ClickHouse ≥ 20), each inserted block's hash is kept in
//! ZooKeeper/Keeper and a retried identical block is dropped (`insert_deduplicate`), and
//! `insert_deduplication_token` (≥ 22.2) makes that explicit: the unit's
//! `group/topic/partition/first-last` offsets are the natural token, which also fences a
//! zombie worker re-inserting a unit another member already wrote. `insert_quorum` makes a
//! unit durable on several replicas before the worker moves on. Reads of positions must
//! then go to the local replicated table (or use `select_sequential_consistency`), not
//! through a `Distributed` table that may lag. The cluster DDL is in `deploy/`.

pub mod config;
pub mod encoder;
pub mod service;

pub use config::ClickHouseConfig;
pub use service::{CellSource, ClickHouse};
