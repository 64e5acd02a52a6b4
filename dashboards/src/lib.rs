//! # cdrflow-dashboards — what the dashboards show
//!
//! - [`grafana`] — the Grafana dashboard, made from the named queries of
//!   `schemas/sql/dashboards.sql` (and back: a panel's SQL is the named query);
//! - [`report`] — one region's calls over a range of dates as a self-contained HTML page
//!   with SVG charts (`cdrflow report`);
//! - [`summary`] — the national summary in plain text (`cdrflow demo`).
//!
//! Queries come only from `cdrflow-schemas` (the SQL lives there, each statement tested);
//! this crate never writes.

pub mod grafana;
pub mod report;
pub mod summary;
