//! `cdrflow ingest`: the archive worker (Kafka → Parquet).

use std::time::Duration;

use anyhow::{Result, bail};

use super::KafkaArgs;

#[derive(clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Consumer group of the archive workers.
    #[arg(long, env = "CDRFLOW_INGEST_GROUP", default_value = "cdrflow-ingest")]
    group: String,
    /// Where the archive goes: a local directory, or s3://BUCKET/PREFIX (credentials,
    /// region and endpoint from the AWS_* environment variables).
    #[arg(long, env = "CDRFLOW_OUT")]
    out: String,
    /// Close a unit (and its files) at this many rows.
    #[arg(long, env = "CDRFLOW_MAX_ROWS", default_value_t = 500_000)]
    max_rows: usize,
    /// Close a unit at about this many MiB of buffered records.
    #[arg(long, env = "CDRFLOW_MAX_MIB", default_value_t = 256)]
    max_mib: usize,
    /// Close a unit this many ms after its first record, even on a quiet partition.
    #[arg(long, env = "CDRFLOW_MAX_AGE_MS", default_value_t = 30_000)]
    max_age_ms: u64,
    /// Dead-letter topic for rejected records (default: TOPIC.dlq).
    #[arg(long, env = "CDRFLOW_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Count rejected records without sending them anywhere.
    #[arg(long, conflicts_with = "dead_letter_topic")]
    no_dead_letters: bool,
    /// Resolve and check the settings (flags, environment, config file), print them with secrets
    /// redacted and the effective Kafka properties, and exit without connecting to or creating anything.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: IngestArgs) -> Result<()> {
    let pseudonymiser = cdrflow_schemas::Pseudonymiser::from_env()?;
    if a.max_rows == 0 || a.max_mib == 0 || a.max_age_ms == 0 {
        bail!("--max-rows, --max-mib and --max-age-ms must be above 0");
    }
    let dead_letters = if a.no_dead_letters {
        None
    } else {
        Some(a.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", a.kafka.topic)))
    };
    let opts = cdrflow_ingest::IngestOptions {
        source: a.kafka.source(&a.group, dead_letters)?,
        out: a.out.clone(),
        max_rows: a.max_rows,
        max_bytes: a.max_mib << 20,
        max_age: Duration::from_millis(a.max_age_ms),
    };
    if a.dry_run {
        return super::dry_run(
            "ingest",
            &opts.source,
            &a.kafka,
            serde_json::json!({
                "out": cdrflow_archive::Archive::describe_location(&opts.out)?,
                "caller_key": "<set>",
                "max_rows": a.max_rows,
                "max_mib": a.max_mib,
                "max_age_ms": a.max_age_ms,
            }),
        );
    }
    let stop = cdrflow::signals::stop_flag()?;
    let stats = a.kafka.stats("ingest", "files")?;
    cdrflow_ingest::run(opts, pseudonymiser, stop, stats)
}
