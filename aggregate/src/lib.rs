//! # cdrflow-aggregate — Kafka → ClickHouse hourly counters, exactly once
//!
//! A consumer-group worker that decodes and validates each CDR with `cdrflow-schemas`,
//! rolls it up per (region, line, UTC hour) with the counters defined in
//! [`cdrflow_schemas::counters`], and flushes each Kafka partition's rollup to ClickHouse
//! as one insert that also carries the offsets it covers ([`clickhouse`]'s module docs
//! say why that insert is atomic). Positions are read back from ClickHouse on every
//! assignment ([`cdrflow_kafka::consumer`] explains the protocol), so a SIGKILL at any
//! moment neither loses nor double-counts.
//!
//! - [`rollup`] — the in-memory state per partition;
//! - [`clickhouse`] — the sink: configuration, row encoding, inserts and positions,
//!   migrations, dashboard queries;
//! - [`worker`] — the sink side of the shared worker loop ([`cdrflow_kafka::driver`]):
//!   count once, roll up, flush;
//! - `writing` — the thread that inserts each flush while the worker reads on;
//! - [`rebuild`] — the same rollup over the archive (`cdrflow backfill`).
//!
//! It reads the archive through `cdrflow-archive` and never depends on `cdrflow-ingest`.

pub mod clickhouse;
pub mod rebuild;
pub mod rollup;
pub mod worker;
mod writing;

pub use worker::{AggregateOptions, run};
