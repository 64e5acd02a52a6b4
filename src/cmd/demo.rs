//! `cdrflow demo`: the whole pipeline on this machine ([`cdrflow::demo`]).

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// CDRs in the generated national feed.
    #[arg(long, default_value_t = 300_000)]
    cdrs: u64,
    /// Seed of the feed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the feed, the archive and the logs go: a new or empty directory, or one an earlier
    /// demo made (it holds .cdrflow-demo), which is cleared first; any other is refused.
    #[arg(long, default_value = "cdrflow-demo")]
    workdir: PathBuf,
    /// Kafka partitions of the demo's topic.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// A ClickHouse to use instead of the local one (deploy/local/clickhouse.sh, on
    /// CDRFLOW_CH_HTTP_PORT, default 8123, started if it is not running).
    #[arg(long = "clickhouse", env = "CDRFLOW_CLICKHOUSE_URL")]
    clickhouse: Option<String>,
    /// The database the demo creates for its counters; it must not exist yet (the demo never
    /// drops a database it did not create).
    #[arg(long, default_value = "cdrflow_demo")]
    database: String,
    /// Keep the demo's database at the end (by default it is dropped, as the demo created it).
    #[arg(long)]
    keep_database: bool,
    /// Use librdkafka's in-memory mock cluster instead of the local Apache Kafka (for a
    /// machine without Java; by default the demo uses deploy/local/kafka.sh when installed).
    #[arg(long)]
    embedded_broker: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    cdrflow::demo::run(cdrflow::demo::DemoOptions {
        cdrs: a.cdrs,
        seed: a.seed,
        workdir: a.workdir,
        partitions: a.partitions,
        clickhouse: a.clickhouse,
        database: a.database,
        keep_database: a.keep_database,
        embedded_broker: a.embedded_broker,
    })
}
