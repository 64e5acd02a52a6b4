//! # cdrflow
//!
//! The `cdrflow` binary's library: only what is wiring, not a feature of its own crate.
//!
//! - [`demo`] — the whole pipeline on this machine, as processes (`cdrflow demo`);
//! - [`signals`] — SIGTERM/SIGINT as the flag the workers' loops read.
//!
//! The CDR is defined once, in `cdrflow-schemas`; every feature lives in a library crate
//! (feed, config, kafka, archive, ingest, aggregate, audit, dashboards).

pub mod demo;
pub mod signals;
