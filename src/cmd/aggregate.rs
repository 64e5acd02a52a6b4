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
    /// Start a group that has counted nothing of the topic although other groups have (the
    /// dashboards add every group's counts, so a new group counts the topic again from its
    /// start): for a topic made again under its old name, or after the others' counts were
    /// removed. Without it such a start is refused (a mistyped --group).
    #[arg(long)]
    new_group: bool,
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
    let rt = super::runtime()?;
    let ch = a.clickhouse.connect(&rt)?;
    let topic = &opts.source.topic;
    let counted: Vec<String> = rt.block_on(ch.log_groups(topic))?;
    if !counted.is_empty() && !counted.contains(&a.group) {
        if !a.new_group {
            let (noun, verb) = if counted.len() == 1 { ("group", "has") } else { ("groups", "have") };
            bail!(
                "the aggregator group {} has counted nothing of topic {topic}, while {noun} {} {verb}: a new group reads the topic from its start, and the dashboards, which add every group's counts, would count those calls again. Check --group (CDRFLOW_AGGREGATE_GROUP); if the topic was made again, or those groups' counts were removed, pass --new-group",
                a.group,
                counted.join(", ")
            );
        }
        tracing::warn!(
            group = a.group,
            others = counted.join(", "),
            "--new-group: a new group starts on a topic other groups have counted"
        );
    }
    drop((ch, rt));
    let stats = a.kafka.stats("aggregate", "rows")?;
    cdrflow_aggregate::run(opts, stop, stats)
}
