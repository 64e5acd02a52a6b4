//! # cdrflow-ingest — Kafka → Parquet archive, exactly once
//!
//! A consumer-group worker that decodes, validates and pseudonymises each CDR with
//! `cdrflow-schemas` and archives it as Parquet under Hive partitions
//! `dt=YYYY-MM-DD/region=NN/` (the UTC date of the call's start), each file named after the
//! Kafka partition and offset range of the unit of work it belongs to.
//!
//! - [`worker`] — the consume → buffer → rotate → write loop.
//!
//! The archive's format — layout, commit protocol, encoder, reader — is not here but in
//! `cdrflow-archive`, which readers (`backfill`, `reconcile`) share; this crate only writes
//! through it. It never depends on `cdrflow-aggregate`.

pub mod worker;

pub use worker::{IngestOptions, run};
