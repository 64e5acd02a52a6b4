//! `cdrflow reconcile`: the three stores checked against each other.

use anyhow::Result;
use cdrflow_schemas::LineRegistry;

use super::{ClickHouseArgs, SelectionArgs};

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The archive: a directory or s3://BUCKET/PREFIX.
    #[arg(long, env = "CDRFLOW_ARCHIVE")]
    archive: String,
    /// Kafka bootstrap servers (omit to skip Kafka's offsets).
    #[arg(long, env = "CDRFLOW_BROKERS")]
    brokers: Option<String>,
    /// The ingest workers' consumer group (its committed offsets are checked against the archive).
    #[arg(long, env = "CDRFLOW_INGEST_GROUP", default_value = "cdrflow-ingest")]
    ingest_group: String,
    /// The aggregators' consumer group (its flushes in ClickHouse are checked).
    #[arg(long, env = "CDRFLOW_AGGREGATE_GROUP", default_value = "cdrflow-aggregate")]
    aggregate_group: String,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ReconcileArgs) -> Result<()> {
    let selection = a.selection.selection()?;
    let rt = super::runtime()?;
    let ch = a.clickhouse.connect(&rt)?;
    let opts = cdrflow_audit::reconcile::ReconcileOptions {
        archive: a.archive,
        brokers: a.brokers,
        ingest_group: a.ingest_group,
        aggregate_group: a.aggregate_group,
        selection,
        lines: LineRegistry::builtin(),
    };
    let report = cdrflow_audit::reconcile::run(&opts, &ch, &rt)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        cdrflow_audit::reconcile::print(&report);
    }
    if !report.mismatches.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
