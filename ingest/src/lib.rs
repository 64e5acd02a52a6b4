//! # cdrflow-ingest — Kafka → Parquet archive, exactly once
//!
//! A consumer-group worker that decodes, validates and pseudonymises each CDR with
//! `cdrflow-schemas` and archives it as Parquet under Hive partitions
//! `dt=YYYY-MM-DD/region=NN/` (the UTC date of the call's start), each file named after the
//! Kafka partition and offset range of the unit of work it belongs to.
//!
//! - [`archive`] — the archive's layout and its commit protocol (how a unit of work, which
//!   may span many `dt`/`region` files, becomes visible all at once, and how a worker
//!   recovers its position from the archive);
//! - [`encode`] — CDRs → Arrow → Parquet (zstd, statistics, rows sorted by start);
//! - [`worker`] — the consume → buffer → rotate → write loop.

pub mod archive;
pub mod encode;
pub mod read;
pub mod worker;

pub use worker::{IngestOptions, run};
