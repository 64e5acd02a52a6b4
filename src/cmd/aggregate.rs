//! `cdrflow aggregate`: the counters worker (Kafka → ClickHouse).

use std::time::Duration;

use anyhow::{Result, bail};

use super::{ClickHouseArgs, KafkaArgs};

#[derive(clap::Args)]
pub struct AggregateArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Consumer group of the aggregators.
    #[arg(long, env = "CDRFLOW_AGGREGATE_GROUP", default_value = "cdrflow-aggregate")]
    group: String,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Flush each partition's counters at least this often (ms).
    #[arg(long, env = "CDRFLOW_FLUSH_INTERVAL_MS", default_value_t = 5000)]
    flush_interval_ms: u64,
    /// Flush early once this many messages are unflushed.
    #[arg(long, env = "CDRFLOW_FLUSH_MAX_MESSAGES", default_value_t = 500_000)]
    flush_max_messages: u64,
    /// Skip re-sent CDRs of calls counted within this many hours (of call start) before
    /// the newest call of their partition; older re-sends count again (backfill fixes them).
    #[arg(long, env = "CDRFLOW_WINDOW_HOURS", default_value_t = 48)]
    window_hours: u32,
    /// Send rejected messages here too (by default only the archive worker dead-letters; the aggregator counts).
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Resolve and check the settings (flags, environment, config file), print them with secrets
    /// redacted and the effective Kafka properties, and exit without connecting to anything.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: AggregateArgs) -> Result<()> {
    if a.flush_interval_ms == 0 || a.flush_max_messages == 0 {
        bail!("--flush-interval-ms and --flush-max-messages must be above 0");
    }
    let opts = cdrflow_aggregate::AggregateOptions {
        source: a.kafka.source(&a.group, a.dead_letter_topic.clone())?,
        clickhouse: a.clickhouse.config()?,
        flush_interval: Duration::from_millis(a.flush_interval_ms),
        flush_max_messages: a.flush_max_messages,
        window_hours: a.window_hours,
    };
    if a.dry_run {
        let ch = &opts.clickhouse;
        return super::dry_run(
            "aggregate",
            &opts.source,
            &a.kafka,
            serde_json::json!({
                "clickhouse": { "url": ch.url, "database": ch.database, "user": ch.user, "password": ch.password.as_ref().map(|_| "<set>") },
                "flush_interval_ms": a.flush_interval_ms,
                "flush_max_messages": a.flush_max_messages,
                "window_hours": a.window_hours,
            }),
        );
    }
    let stop = cdrflow::signals::stop_flag()?;
    a.clickhouse.connect(&super::runtime()?)?;
    let stats = a.kafka.stats("aggregate", "rows")?;
    cdrflow_aggregate::run(opts, stop, stats)
}
