//! # cdrflow-feed — feeds of hotline CDRs
//!
//! - [`generator`] — the synthetic national feed: deterministic from a seed, shaped by the
//!   field reports (region sizes, daily and weekly curves, schedules, dispositions, waits,
//!   topics, age bands, transfers, re-sends, late and bad records), with the exact
//!   ground-truth counters of what it emitted ([`TruthRow`], [`FeedSummary`]). `cdrflow
//!   generate`, the demo, the tests and the benches all use it.
//! - [`output`] — the ground-truth and summary files a run leaves, their national totals
//!   read back, and the pacing of a feed produced at a set rate.
//! - [`validate`](mod@validate) — onboarding a real feed: a file of records checked with the workers' own
//!   decoder, counted by rejection reason (`cdrflow validate`).
//!
//! It depends only on `cdrflow-schemas` (the CDR, its wire formats, the counters): never on
//! Kafka, ClickHouse, the archive or the command line.

pub mod generator;
pub mod output;
pub mod validate;

pub use generator::{AvroWriter, FeedOptions, FeedSummary, Generator, Message, TruthRow};
pub use output::{Pacer, truth_totals};
pub use validate::{ValidationReport, validate};
