//! # cdrflow-audit — the three stores checked against each other
//!
//! [`reconcile`]: Kafka's offsets and the consumer groups' committed offsets, the Parquet
//! archive's commit markers and files, and ClickHouse's flushes and counters; every mismatch
//! named, and a check that checked nothing is a mismatch too (`cdrflow reconcile`).
//!
//! It reads through the crates that own each store (`cdrflow-archive`, the ClickHouse sink
//! of `cdrflow-aggregate`) and never writes to any of them.

pub mod reconcile;

pub use reconcile::{ReconcileOptions, Report, print, run};
