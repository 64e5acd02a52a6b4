//! # cdrflow-archive — the Parquet archive's format, in one place
//!
//! Owns everything about the archive that a writer and a reader must agree on:
//!
//! - [`store`] — where files go (`dt=YYYY-MM-DD/region=NN/TOPIC-pPPP-FIRST-LAST.parquet`,
//!   named after the Kafka offsets they cover), the commit protocol (intent, files, commit
//!   marker) that makes a unit visible all at once, listing and reading committed units, on
//!   a local filesystem or in S3 (`object_store`);
//! - [`encode`] — CDRs → Arrow record batches → Parquet bytes, in the archive's schema
//!   ([`cdrflow_schemas::archive`]);
//! - [`read`] — Parquet files → CDRs again, for rebuilds and audits.
//!
//! The ingest worker writes through it, `backfill` and `reconcile` read through it. It never
//! depends on Kafka or ClickHouse, nor on any worker crate.

pub mod encode;
pub mod read;
pub mod store;

pub use encode::ArchivedCdr;
pub use store::{Archive, EncodedUnit, UnitFile, UnitManifest};

/// The archive's `dt` of a UTC instant in milliseconds: its UTC date, `YYYY-MM-DD`.
pub fn utc_date(ms: i64) -> String {
    let (y, m, d) = cdrflow_schemas::time::civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}
