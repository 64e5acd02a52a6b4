//! # cdrflow-schemas — the one definition of a call-detail record
//!
//! Everything that says what a CDR *is* lives here, and every other crate uses it:
//!
//! - [`Cdr`] — the validated record ([`cdr`]);
//! - the wire formats: JSON ([`json`], field table there) and Asterisk `cdr_csv`
//!   ([`asterisk_csv`]), both decoded by a [`Decoder`] into the same [`Cdr`];
//! - validation and its typed rejection reasons ([`validate`], [`Reason`]);
//! - the registries: regions with their IANA time zones ([`region`]) and lines with their
//!   thresholds and working hours ([`line`](mod@line));
//! - caller pseudonymisation ([`pseudonym`]);
//! - the counters' definitions ([`counters`]) and the archive's Arrow schema ([`archive`]);
//! - the ClickHouse DDL and the dashboard queries ([`sql`], files in `schemas/sql/`).
//!
//! It depends on no other cdrflow crate, and on nothing that talks to the world: no Kafka,
//! no ClickHouse client, no filesystem layout.

#![warn(missing_docs)]

pub mod archive;
pub mod asterisk_csv;
pub mod avro;
pub mod cdr;
pub mod counters;
pub mod json;
mod json_fast;
pub mod line;
pub mod pseudonym;
pub mod region;
pub mod reject;
pub mod sql;
pub mod time;
pub mod validate;
pub mod versions;
mod word;

pub use asterisk_csv::{CsvFeed, encode_asterisk_csv};
pub use cdr::{AgeBand, Cdr, Channel, Disposition, SCHEMA_VERSION};
pub use compact_str::CompactString;
pub use counters::{Counters, HourKey, TopicCounts, classify};
pub use json::encode_json;
pub use line::{Line, LineIdx, LineRegistry};
pub use pseudonym::{CallerHash, Pseudonymiser};
pub use region::{Region, RegionCode, Regions};
pub use reject::{Reason, Rejection};
pub use validate::{Clock, Decoder, Limits};

/// A wire format of CDRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per message ([`json`]).
    Json,
    /// One Asterisk `cdr_csv` line per message ([`asterisk_csv`]).
    AsteriskCsv,
    /// Confluent-framed Avro with a schema registry ([`avro`]).
    AvroConfluent,
}

impl Format {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::AsteriskCsv => "asterisk-csv",
            Format::AvroConfluent => "avro-confluent",
        }
    }
}
