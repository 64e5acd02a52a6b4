//! # cdrflow
//!
//! The `cdrflow` binary's library: the commands that are not a worker of their own crate.
//!
//! - [`broker`] — the embedded mock Kafka cluster for tests and the demo (`cdrflow broker`);
//! - [`demo`] — the whole pipeline on this machine (`cdrflow demo`);
//!
//! The CDR itself is defined once, in [`cdrflow_schemas`].

pub mod broker;
pub mod config;
pub mod demo;
pub mod grafana;
pub mod kafka_tools;
pub mod metrics;
pub mod reconcile;
pub mod report;
pub mod signals;
