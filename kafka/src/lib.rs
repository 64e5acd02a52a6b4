//! # cdrflow-kafka — the Kafka side of every worker
//!
//! It owns everything a worker does with Kafka, and never depends on a sink (the archive,
//! ClickHouse): sinks plug in through [`driver::Sink`] and [`PositionStore`].
//!
//! - [`consumer`]: a consumer-group member whose read positions come from the sink, not
//!   from Kafka's committed offsets (the exactly-once protocol of docs/design.md);
//! - [`driver`]: the worker loop every sink shares, over the [`driver::Sink`] trait;
//! - [`dead_letter`]: rejected messages, with their original bytes and the reason, to the
//!   dead-letter topic;
//! - [`producer`]: the producer settings every cdrflow producer shares;
//! - [`settings`]: connection settings (brokers, TLS/SASL pass-through) and the effective
//!   properties of each client (tuning, operator, protocol);
//! - [`health`]: librdkafka's errors and logs turned into one clear line, metrics and readiness;
//! - [`stats`]: a worker's totals and its periodic chores; [`metrics`] serves them as
//!   `/metrics`, `/healthz` and `/readyz`;
//! - [`registry`]: the schema registry of an Avro feed (Confluent-compatible REST API):
//!   writer schemas by id for the decoder, and registering the synthetic feed's schema;
//! - [`admin`]: topic set-up and watermarks for the commands;
//! - [`mock`]: librdkafka's mock cluster in a process (`cdrflow broker`), for the demo on a
//!   machine without Java only.

pub mod admin;
pub mod consumer;
pub mod dead_letter;
pub mod driver;
pub mod health;
pub mod metrics;
pub mod mock;
pub mod producer;
pub mod registry;
pub mod settings;
pub mod stats;

pub use consumer::{
    CONSUMER_TUNING, Fence, Fenced, GroupChange, PositionStore, Positioned, Retried, SinkPositioned, WorkerConsumer,
    WriteUnderWay, WritesUnderWay,
};
pub use dead_letter::DeadLetters;
pub use health::KafkaHealth;
pub use settings::{KafkaSettings, SourceOptions};
pub use stats::{Chores, ClockGate, WorkerStats};
