//! `cdrflow` — call-detail records of citizen hotlines, from Kafka to a Parquet archive and
//! to hourly counters in ClickHouse. A thin command line over the workspace's crates.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow::synthetic::{FeedOptions, Generator, Message};
use cdrflow_schemas::{CsvFeed, Format, LineRegistry, RegionCode, Regions};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cdrflow", version, about = "Call-detail records of citizen hotlines (122, 117, 112, 8-800, governors' lines): Kafka → Parquet archive and hourly ClickHouse counters", long_about = None)]
struct Cli {
    /// Log as JSON lines instead of text (for log shippers).
    #[arg(long, global = true, env = "CDRFLOW_LOG_JSON")]
    log_json: bool,
    /// Configuration file (TOML; see deploy/cdrflow.example.toml). Flags override environment
    /// variables, which override the file.
    #[arg(long, global = true, env = "CDRFLOW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline here: embedded Kafka, local ClickHouse (installed if missing), a national feed,
    /// ingest and aggregate; print national and regional summaries; stop everything.
    Demo(DemoArgs),
    /// Generate the synthetic national feed (deterministic from --seed) to a file, stdout or Kafka, with its ground truth.
    Generate(GenerateArgs),
    /// Check a file of records (one per line) against the CDR contract; prints {"accepted","rejected","reasons"} as JSON.
    Validate(ValidateArgs),
    /// Create or upgrade cdrflow's ClickHouse database, tables and dashboard views (idempotent, versioned).
    Migrate(MigrateArgs),
    /// Consume CDRs and archive them as Parquet under dt=YYYY-MM-DD/region=NN/, exactly once.
    /// The caller-hashing key comes from CDRFLOW_CALLER_KEY_FILE or CDRFLOW_CALLER_KEY.
    Ingest(IngestArgs),
    /// Consume CDRs and keep per-region, per-line, per-hour counters in ClickHouse, exactly once.
    Aggregate(AggregateArgs),
    /// Check Kafka offsets, the Parquet archive and ClickHouse against each other; names every mismatch and exits 1 if any.
    Reconcile(ReconcileArgs),
    /// Rebuild the counters of some dates (and a region) from the Parquet archive, replacing those hours at once.
    Backfill(BackfillArgs),
    /// Write one region's calls over a range of dates as a self-contained HTML page with charts.
    Report(ReportArgs),
    /// Check a configuration file: syntax, keys, values, referenced files, librdkafka properties.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Host librdkafka's mock Kafka cluster (tests and demo only: in memory, ~5 MiB per partition); prints the bootstrap address first.
    Broker(BrokerArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE and print the settings it gives each worker (secrets redacted); exits 1 naming the problem.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WireFormat {
    /// One JSON object per record (see the README's CDR contract).
    Json,
    /// Asterisk cdr_csv lines.
    AsteriskCsv,
}

impl From<WireFormat> for Format {
    fn from(f: WireFormat) -> Format {
        match f {
            WireFormat::Json => Format::Json,
            WireFormat::AsteriskCsv => Format::AsteriskCsv,
        }
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Messages to produce (good, re-sent and bad together).
    #[arg(long, default_value_t = 100_000)]
    cdrs: u64,
    /// Seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Wire format.
    #[arg(long, value_enum, default_value = "json")]
    format: WireFormat,
    /// Write to this file instead of stdout (ignored with --brokers).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Produce to Kafka at these bootstrap servers instead of writing lines.
    #[arg(long, requires = "topic")]
    brokers: Option<String>,
    /// Kafka topic (with --brokers).
    #[arg(long)]
    topic: Option<String>,
    /// Messages per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Write the exact expected counters per (region, line, UTC hour) here, as JSON lines;
    /// the summary (messages, valid, bad by reason, …) goes to FILE.summary.json.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// First instant of the feed (RFC 3339).
    #[arg(long, default_value = "2022-02-01T00:00:00Z")]
    start: String,
    /// National calls per day at the mean (sets how much time N calls span).
    #[arg(long, default_value_t = 320_000.0)]
    calls_per_day: f64,
    /// Only this region's centre (a CSV feed of one PBX); default all regions.
    #[arg(long)]
    region: Option<u8>,
    /// Share of deliberately bad records.
    #[arg(long, default_value_t = 0.005)]
    bad_share: f64,
    /// Share of records delivered 10 min–6 h late.
    #[arg(long, default_value_t = 0.01)]
    late_share: f64,
    /// Share of records sent a second time.
    #[arg(long, default_value_t = 0.002)]
    resent_share: f64,
    /// Call-id sequence numbers start after this (feeds made in slices use disjoint ranges).
    #[arg(long, default_value_t = 0)]
    first_seq: u64,
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Wire format of the records.
    #[arg(long, value_enum)]
    format: WireFormat,
    /// For asterisk-csv: the region whose PBX wrote the file. Without it, each line's
    /// accountcode must hold the region code.
    #[arg(long)]
    region: Option<u8>,
    /// Write each rejected line here as `reason<TAB>detail<TAB>line`.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Line registry file (default: the built-in one).
    #[arg(long, env = "CDRFLOW_LINES")]
    lines: Option<PathBuf>,
    /// The records, one per line ("-" for stdin).
    #[arg(default_value = "-")]
    file: PathBuf,
}

#[derive(clap::Args, Clone)]
struct ClickHouseArgs {
    /// ClickHouse HTTP interface. User: CDRFLOW_CLICKHOUSE_USER; password: CDRFLOW_CLICKHOUSE_PASSWORD_FILE or CDRFLOW_CLICKHOUSE_PASSWORD.
    #[arg(long = "clickhouse", env = "CDRFLOW_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    url: String,
    /// Database for cdrflow's tables.
    #[arg(long, env = "CDRFLOW_CLICKHOUSE_DATABASE", default_value = "cdrflow")]
    database: String,
}

impl ClickHouseArgs {
    fn config(&self) -> Result<cdrflow_aggregate::clickhouse::ClickHouseConfig> {
        cdrflow_aggregate::clickhouse::ClickHouseConfig::from_env(&self.url, &self.database)
    }
}

#[derive(clap::Args, Clone)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "CDRFLOW_BROKERS")]
    brokers: String,
    /// Topic of CDRs.
    #[arg(long, env = "CDRFLOW_TOPIC", default_value = "cdrs")]
    topic: String,
    /// Consumer group.
    #[arg(long, env = "CDRFLOW_GROUP")]
    group: Option<String>,
    /// Wire format of the topic.
    #[arg(long, value_enum, env = "CDRFLOW_FORMAT", default_value = "json")]
    format: WireFormat,
    /// For asterisk-csv: the region of the feed (else each line's accountcode).
    #[arg(long, env = "CDRFLOW_CSV_REGION")]
    region: Option<u8>,
    /// Kafka session timeout: how long a dead member's partitions wait before moving on.
    #[arg(long, env = "CDRFLOW_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    session_timeout_ms: u32,
    /// Extra librdkafka property KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    /// Passwords are refused here: set CDRFLOW_KAFKA_SASL_PASSWORD(_FILE) or CDRFLOW_KAFKA_SSL_KEY_PASSWORD(_FILE).
    /// Overrides the config file's [kafka.properties] of the same key.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    /// Line registry file (default: the built-in one).
    #[arg(long, env = "CDRFLOW_LINES")]
    lines: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "CDRFLOW_METRICS_ADDR")]
    metrics_addr: Option<String>,
}

impl KafkaArgs {
    /// The worker's stats, exported on --metrics-addr if given.
    fn stats(
        &self,
        worker: &'static str,
        written_what: &'static str,
    ) -> Result<std::sync::Arc<cdrflow_kafka::WorkerStats>> {
        let stats = std::sync::Arc::new(cdrflow_kafka::WorkerStats::default());
        if let Some(addr) = &self.metrics_addr {
            cdrflow::metrics::serve(addr, stats.clone(), worker, written_what)?;
        }
        Ok(stats)
    }

    fn settings(&self) -> Result<cdrflow_kafka::KafkaSettings> {
        let mut extra: Vec<(String, String)> = cdrflow::config::kafka_properties().to_vec();
        for kv in &self.kafka_options {
            let (k, v) = kv.split_once('=').with_context(|| format!("--kafka-option {kv}: expected KEY=VALUE"))?;
            if cdrflow::config::is_secret_property(k) {
                bail!(
                    "--kafka-option {k}: secrets do not go on the command line; set CDRFLOW_KAFKA_SASL_PASSWORD_FILE or CDRFLOW_KAFKA_SSL_KEY_PASSWORD_FILE"
                );
            }
            extra.retain(|(key, _)| key != k);
            extra.push((k.to_owned(), v.to_owned()));
        }
        for (env, key) in
            [("CDRFLOW_KAFKA_SASL_PASSWORD", "sasl.password"), ("CDRFLOW_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password")]
        {
            if let Some(v) = cdrflow::config::secret_from_env(env)? {
                extra.push((key.to_owned(), v));
            }
        }
        Ok(cdrflow_kafka::KafkaSettings { brokers: self.brokers.clone(), extra })
    }

    fn lines(&self) -> Result<std::sync::Arc<LineRegistry>> {
        Ok(match &self.lines {
            Some(p) => std::sync::Arc::new(LineRegistry::from_toml_file(p).map_err(anyhow::Error::msg)?),
            None => LineRegistry::builtin(),
        })
    }

    /// What a worker reads; `default_group` unless --group; `dead_letters` as decided by the worker.
    fn source(&self, default_group: &str, dead_letter_topic: Option<String>) -> Result<cdrflow_kafka::SourceOptions> {
        Ok(cdrflow_kafka::SourceOptions {
            kafka: self.settings()?,
            group: self.group.clone().unwrap_or_else(|| default_group.to_owned()),
            topic: self.topic.clone(),
            format: self.format.into(),
            csv: self.csv()?,
            session_timeout_ms: self.session_timeout_ms,
            dead_letter_topic,
            lines: self.lines()?,
        })
    }

    fn csv(&self) -> Result<CsvFeed> {
        Ok(match region_arg(self.region)? {
            Some(r) => CsvFeed::Region(r),
            None => CsvFeed::FromAccountcode,
        })
    }
}

#[derive(clap::Args)]
struct MigrateArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Print the connection settings (password redacted) and the migrations cdrflow knows,
    /// and exit without connecting.
    #[arg(long)]
    dry_run: bool,
    /// Create the cluster layout on this ClickHouse cluster (remote_servers name): ON CLUSTER,
    /// ReplicatedMergeTree tables and Distributed tables over them (see deploy/clickhouse-cluster/).
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// Print every statement (of --cluster's layout if given) and exit without connecting.
    #[arg(long)]
    print: bool,
}

#[derive(clap::Args)]
struct AggregateArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
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
    /// redacted, and exit without connecting.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct IngestArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
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
    /// redacted, and exit without connecting.
    #[arg(long)]
    dry_run: bool,
}

/// Which part of the archive.
#[derive(clap::Args)]
struct SelectionArgs {
    /// Topic whose archive units are read.
    #[arg(long, env = "CDRFLOW_TOPIC", default_value = "cdrs")]
    topic: String,
    /// First UTC date (YYYY-MM-DD, the archive's dt), inclusive.
    #[arg(long)]
    from_date: Option<jiff::civil::Date>,
    /// Last UTC date, inclusive.
    #[arg(long)]
    to_date: Option<jiff::civil::Date>,
    /// One region (its code) only.
    #[arg(long)]
    region: Option<u8>,
}

impl SelectionArgs {
    fn selection(&self) -> cdrflow_aggregate::rebuild::Selection {
        cdrflow_aggregate::rebuild::Selection {
            topic: self.topic.clone(),
            from_date: self.from_date.map(|d| d.to_string()),
            to_date: self.to_date.map(|d| d.to_string()),
            region: self.region,
        }
    }
}

#[derive(clap::Args)]
struct ReconcileArgs {
    /// The archive: a directory or s3://BUCKET/PREFIX.
    #[arg(long, env = "CDRFLOW_ARCHIVE")]
    archive: String,
    /// Kafka bootstrap servers (omit to skip Kafka's offsets).
    #[arg(long, env = "CDRFLOW_BROKERS")]
    brokers: Option<String>,
    /// The ingest workers' consumer group.
    #[arg(long, default_value = "cdrflow-ingest")]
    ingest_group: String,
    /// The aggregators' consumer group.
    #[arg(long, default_value = "cdrflow-aggregate")]
    aggregate_group: String,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BackfillArgs {
    /// The archive to rebuild from: a directory or s3://BUCKET/PREFIX.
    #[arg(long = "from", env = "CDRFLOW_ARCHIVE")]
    archive: String,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Region code (e.g. 38 for Irkutsk Oblast).
    #[arg(long)]
    region: u8,
    /// First UTC date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: jiff::civil::Date,
    /// Last UTC date, inclusive.
    #[arg(long)]
    to: jiff::civil::Date,
    /// The HTML file to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// CDRs in the generated national feed.
    #[arg(long, default_value_t = 300_000)]
    cdrs: u64,
    /// Seed of the feed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the feed, the archive and the logs go (cleared first).
    #[arg(long, default_value = "cdrflow-demo")]
    workdir: PathBuf,
    /// Kafka partitions of the embedded broker.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// Number of brokers.
    #[arg(long, default_value_t = 3)]
    brokers: i32,
    /// Topic to create (repeatable).
    #[arg(long = "topic", default_value = "cdrs")]
    topics: Vec<String>,
    /// Partitions per topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Also write the bootstrap address to this file.
    #[arg(long)]
    address_file: Option<PathBuf>,
    /// Read fault-injection commands from stdin (tests): down ID | up ID | rtt ID MS | errors API CODE N.
    #[arg(long)]
    control: bool,
}

fn main() {
    // The config file becomes environment variables before clap reads flags and environment,
    // so a setting only the file holds (a required --out, say) is found.
    if let Some((path, command)) = config_in_args() {
        match cdrflow::config::ConfigFile::load(&path) {
            Ok(file) => file.apply(&command, &path),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let cli = Cli::parse();
    // Workers take SIGTERM as "drain and stop" from their first moment (a pod may be stopped
    // while it starts); the loops read the flag once they run.
    if matches!(cli.command, Command::Ingest(_) | Command::Aggregate(_)) {
        let _ = cdrflow::signals::stop_flag();
    }
    init_logs(cli.log_json);
    let result = match cli.command {
        Command::Demo(a) => cdrflow::demo::run(cdrflow::demo::DemoOptions {
            cdrs: a.cdrs,
            seed: a.seed,
            workdir: a.workdir,
            partitions: a.partitions,
        }),
        Command::Generate(a) => generate(a),
        Command::Validate(a) => validate(a),
        Command::Migrate(a) => migrate(a),
        Command::Aggregate(a) => aggregate(a),
        Command::Ingest(a) => ingest(a),
        Command::Reconcile(a) => reconcile(a),
        Command::Backfill(a) => backfill(a),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Report(a) => report(a),
        Command::Broker(a) => cdrflow::broker::run(cdrflow::broker::BrokerOptions {
            brokers: a.brokers,
            topics: a.topics,
            partitions: a.partitions,
            address_file: a.address_file,
            control: a.control,
        }),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CDRFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
}

fn region_arg(code: Option<u8>) -> Result<Option<RegionCode>> {
    code.map(|c| {
        Regions::get()
            .by_code(c)
            .map(|r| r.code)
            .with_context(|| format!("--region {c} is not a federal subject code (e.g. 38 for Irkutsk Oblast)"))
    })
    .transpose()
}

fn generate(a: GenerateArgs) -> Result<()> {
    let start: jiff::Timestamp = a
        .start
        .parse()
        .with_context(|| format!("--start {}: expected an RFC 3339 instant such as 2022-02-01T00:00:00Z", a.start))?;
    for (name, v) in [("--bad-share", a.bad_share), ("--late-share", a.late_share), ("--resent-share", a.resent_share)]
    {
        if !(0.0..=0.5).contains(&v) {
            bail!("{name} must be between 0 and 0.5");
        }
    }
    if a.calls_per_day.is_nan() || a.calls_per_day <= 0.0 {
        bail!("--calls-per-day must be positive");
    }
    let opts = FeedOptions {
        cdrs: a.cdrs,
        seed: a.seed,
        format: a.format.into(),
        start_ms: start.as_millisecond(),
        calls_per_day: a.calls_per_day,
        region: region_arg(a.region)?,
        bad_share: a.bad_share,
        late_share: a.late_share,
        resent_share: a.resent_share,
        first_seq: a.first_seq,
    };
    let mut feed = Generator::new(opts);
    let bar = indicatif::ProgressBar::new(a.cdrs).with_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} CDRs {per_sec} eta {eta} {wide_bar}")
            .expect("template"),
    );
    let started = Instant::now();
    // With --rate, the feed is paced in small steps (~200 a second) so that it streams
    // steadily, as a telecom feed does, instead of arriving in bursts.
    let step = a.rate.map_or(1024, |rate| ((rate / 200.0) as u64).clamp(1, 1024));
    let pace = |n: u64| {
        if n.is_multiple_of(1024) {
            bar.set_position(n);
        }
        if let Some(rate) = a.rate
            && n.is_multiple_of(step)
        {
            let due = Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    let mut n = 0u64;
    match (&a.brokers, &a.topic) {
        (Some(brokers), Some(topic)) => {
            let settings = cdrflow_kafka::KafkaSettings { brokers: brokers.clone(), extra: Vec::new() };
            let producer = cdrflow_kafka::producer::producer(&settings)?;
            let mut sink = |m: Message<'_>| -> std::io::Result<()> {
                let record = rdkafka::producer::BaseRecord::to(topic).key(m.key).payload(m.payload);
                cdrflow_kafka::producer::send(&producer, record).map_err(std::io::Error::other)
            };
            while feed.emit_next(&mut sink)? {
                n += 1;
                pace(n);
            }
            let delivered = cdrflow_kafka::producer::flush(&producer, Duration::from_secs(120))?;
            tracing::info!(delivered, topic, "produced");
        }
        _ => {
            let out: Box<dyn Write> = match &a.out {
                Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut out = BufWriter::with_capacity(1 << 20, out);
            let mut sink = |m: Message<'_>| -> std::io::Result<()> {
                out.write_all(m.payload)?;
                out.write_all(b"\n")
            };
            while feed.emit_next(&mut sink)? {
                n += 1;
                pace(n);
            }
            out.flush().context("writing the feed")?;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let summary = feed.summary();
    if let Some(path) = &a.truth {
        let mut w =
            BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
        feed.write_truth(&mut w)?;
        w.flush()?;
        let sp = summary_path(path);
        std::fs::write(&sp, serde_json::to_vec_pretty(summary)?)
            .with_context(|| format!("writing {}", sp.display()))?;
    }
    tracing::info!(
        messages = summary.messages,
        valid = summary.valid_messages,
        resent = summary.resent,
        late = summary.late,
        bad = summary.bad,
        seconds = format!("{secs:.2}"),
        per_second = format!("{:.0}", summary.messages as f64 / secs),
        "feed generated"
    );
    Ok(())
}

/// Where `--truth FILE` puts the summary.
fn summary_path(truth: &std::path::Path) -> PathBuf {
    let mut s = truth.as_os_str().to_owned();
    s.push(".summary.json");
    PathBuf::from(s)
}

fn validate(a: ValidateArgs) -> Result<()> {
    let lines = match &a.lines {
        Some(p) => std::sync::Arc::new(LineRegistry::from_toml_file(p).map_err(anyhow::Error::msg)?),
        None => LineRegistry::builtin(),
    };
    let csv = match region_arg(a.region)? {
        Some(r) => CsvFeed::Region(r),
        None => CsvFeed::FromAccountcode,
    };
    let input: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?,
        ))
    };
    let mut rejects = match &a.rejects {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)),
        None => None,
    };
    let report =
        cdrflow::validate::validate(input, a.format.into(), csv, lines, rejects.as_mut().map(|w| w as &mut dyn Write))?;
    if let Some(w) = rejects.as_mut() {
        w.flush()?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

fn migrate(a: MigrateArgs) -> Result<()> {
    let cfg = a.clickhouse.config()?;
    if let Some(c) = &a.cluster
        && !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("--cluster {c}: a cluster name from remote_servers (letters, digits, _ and -)");
    }
    if a.print {
        let stmts = match &a.cluster {
            Some(c) => cdrflow_schemas::sql::cluster_schema(&cfg.database, c),
            None => std::iter::once(cdrflow_schemas::sql::BOOTSTRAP)
                .chain(cdrflow_schemas::sql::MIGRATIONS.iter().map(|m| m.sql))
                .flat_map(|t| cdrflow_schemas::sql::statements(&cdrflow_schemas::sql::for_database(t, &cfg.database)))
                .collect(),
        };
        for s in stmts {
            println!("{s};\n");
        }
        return Ok(());
    }
    if a.dry_run {
        let migrations: Vec<String> =
            cdrflow_schemas::sql::MIGRATIONS.iter().map(|m| format!("{:03}_{}", m.version, m.name)).collect();
        let out = serde_json::json!({
            "worker": "migrate",
            "clickhouse": { "url": cfg.url, "database": cfg.database, "user": cfg.user, "password": cfg.password.as_ref().map(|_| "<set>") },
            "migrations": migrations,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let ch = cdrflow_aggregate::clickhouse::ClickHouse::new(cfg);
    let applied = runtime()?.block_on(async {
        ch.ping().await?;
        ch.migrate_on(a.cluster.as_deref()).await
    })?;
    if applied.is_empty() {
        tracing::info!(database = a.clickhouse.database, "schema is up to date");
    }
    Ok(())
}

fn aggregate(a: AggregateArgs) -> Result<()> {
    let opts = cdrflow_aggregate::AggregateOptions {
        source: a.kafka.source("cdrflow-aggregate", a.dead_letter_topic.clone())?,
        clickhouse: a.clickhouse.config()?,
        flush_interval: Duration::from_millis(a.flush_interval_ms),
        flush_max_messages: a.flush_max_messages,
        window_hours: a.window_hours,
    };
    if a.flush_interval_ms == 0 || a.flush_max_messages == 0 {
        bail!("--flush-interval-ms and --flush-max-messages must be above 0");
    }
    if a.dry_run {
        let ch = &opts.clickhouse;
        return dry_run(
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
    let ch = cdrflow_aggregate::clickhouse::ClickHouse::new(opts.clickhouse.clone());
    runtime()?.block_on(ch.ping())?;
    let stats = a.kafka.stats("aggregate", "rows")?;
    cdrflow_aggregate::run(opts, stop, stats)
}

fn ingest(a: IngestArgs) -> Result<()> {
    let pseudonymiser = cdrflow_schemas::Pseudonymiser::from_env()?;
    let dead_letters = if a.no_dead_letters {
        None
    } else {
        Some(a.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", a.kafka.topic)))
    };
    let opts = cdrflow_ingest::IngestOptions {
        source: a.kafka.source("cdrflow-ingest", dead_letters)?,
        out: a.out.clone(),
        max_rows: a.max_rows,
        max_bytes: a.max_mib << 20,
        max_age: Duration::from_millis(a.max_age_ms),
    };
    if a.max_rows == 0 || a.max_mib == 0 || a.max_age_ms == 0 {
        bail!("--max-rows, --max-mib and --max-age-ms must be above 0");
    }
    if a.dry_run {
        let archive = cdrflow_ingest::archive::Archive::open(&opts.out)?;
        return dry_run(
            "ingest",
            &opts.source,
            &a.kafka,
            serde_json::json!({
                "out": archive.describe(),
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

fn report(a: ReportArgs) -> Result<()> {
    region_arg(Some(a.region))?;
    let ch = cdrflow_aggregate::clickhouse::ClickHouse::new(a.clickhouse.config()?);
    let rt = runtime()?;
    rt.block_on(ch.ping())?;
    let o = cdrflow::report::ReportOptions { region: a.region, from: a.from, to: a.to };
    let r = cdrflow::report::run(&ch, &rt, &o, &a.out)?;
    tracing::info!(out = %a.out.display(), region = r.region, offered = r.offered, lines = r.lines.len(), "report written");
    Ok(())
}

fn reconcile(a: ReconcileArgs) -> Result<()> {
    let ch = cdrflow_aggregate::clickhouse::ClickHouse::new(a.clickhouse.config()?);
    let rt = runtime()?;
    rt.block_on(ch.ping())?;
    let opts = cdrflow::reconcile::ReconcileOptions {
        archive: a.archive,
        brokers: a.brokers,
        ingest_group: a.ingest_group,
        aggregate_group: a.aggregate_group,
        selection: a.selection.selection(),
        lines: LineRegistry::builtin(),
    };
    let report = cdrflow::reconcile::run(&opts, &ch, &rt)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        cdrflow::reconcile::print(&report);
    }
    if !report.mismatches.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn backfill(a: BackfillArgs) -> Result<()> {
    let ch = cdrflow_aggregate::clickhouse::ClickHouse::new(a.clickhouse.config()?);
    let rt = runtime()?;
    rt.block_on(ch.ping())?;
    let archive = cdrflow_ingest::archive::Archive::open(&a.archive)?;
    let sel = a.selection.selection();
    let lines = LineRegistry::builtin();
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{spinner} reading the archive {wide_bar} {pos}/{len} files {msg}")
            .expect("template"),
    );
    let recomputed = cdrflow_aggregate::rebuild::recompute(&archive, &sel, &lines, false, |done, total, rows| {
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(format!("{rows} rows"));
    })?;
    bar.finish_and_clear();
    let read_s = started.elapsed().as_secs_f64();
    let (rows, files, superseded) = (recomputed.rows, recomputed.files, recomputed.superseded);
    let rebuilt = rt.block_on(cdrflow_aggregate::rebuild::write_rebuild(&ch, &sel, recomputed.rollup, &lines))?;
    let summary = serde_json::json!({
        "files": files,
        "rows": rows,
        "superseded_versions": superseded,
        "rebuild_id": rebuilt.rebuild_id,
        "cells": rebuilt.cells,
        "emptied_cells": rebuilt.emptied,
        "seconds": started.elapsed().as_secs_f64(),
        "rows_per_second_reading": (rows as f64 / read_s.max(1e-9)).round(),
    });
    tracing::info!(files, rows, cells = rebuilt.cells, "rebuilt the counters from the archive");
    println!("{summary}");
    Ok(())
}

/// What `--dry-run` prints: the resolved settings, secrets redacted, after librdkafka has
/// accepted the properties.
fn dry_run(worker: &str, source: &cdrflow_kafka::SourceOptions, k: &KafkaArgs, more: serde_json::Value) -> Result<()> {
    check_kafka_properties(&source.kafka)?;
    let properties: serde_json::Map<String, serde_json::Value> = source
        .kafka
        .extra
        .iter()
        .map(|(key, v)| {
            let v = if cdrflow::config::is_secret_property(key) { "<redacted>".to_owned() } else { v.clone() };
            (key.clone(), v.into())
        })
        .collect();
    let mut out = serde_json::json!({
        "worker": worker,
        "kafka": {
            "brokers": source.kafka.brokers,
            "topic": source.topic,
            "group": source.group,
            "format": format!("{:?}", source.format),
            "session_timeout_ms": source.session_timeout_ms,
            "dead_letter_topic": source.dead_letter_topic,
            "properties": properties,
        },
        "lines": k.lines.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in".to_owned()),
        "metrics_addr": k.metrics_addr,
    });
    if let (Some(o), serde_json::Value::Object(m)) = (out.as_object_mut(), more) {
        o.extend(m);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// librdkafka checks property names and values (and files such as ssl.ca.location) when a
/// client is created; nothing connects until it is used.
fn check_kafka_properties(k: &cdrflow_kafka::KafkaSettings) -> Result<()> {
    let mut c = k.client_config();
    c.set("group.id", "cdrflow-config-check");
    let _: rdkafka::consumer::BaseConsumer =
        c.create().map_err(|e| anyhow::anyhow!("Kafka properties rejected by librdkafka: {e}"))?;
    Ok(())
}

/// `cdrflow config check FILE`.
fn config_check(path: &std::path::Path) -> Result<()> {
    let file = cdrflow::config::ConfigFile::load(path)?;
    file.check_files(path)?;
    let mut kafka = cdrflow_kafka::KafkaSettings {
        brokers: file.kafka.brokers.clone().unwrap_or_else(|| "localhost:9092".to_owned()),
        extra: file.kafka.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    for (key, f) in [
        ("sasl.password", &file.secrets.kafka_sasl_password_file),
        ("ssl.key.password", &file.secrets.kafka_ssl_key_password_file),
    ] {
        if f.is_some() {
            kafka.extra.push((key.to_owned(), "checked-placeholder".to_owned()));
        }
    }
    check_kafka_properties(&kafka)?;
    if let Some(lines) = &file.kafka.lines {
        let p = path.parent().unwrap_or(std::path::Path::new(".")).join(lines);
        LineRegistry::from_toml_file(&p).map_err(|e| anyhow::anyhow!("[kafka] lines {}: {e}", p.display()))?;
    }
    if let Some(f) = &file.secrets.caller_key_file {
        let p = path.parent().unwrap_or(std::path::Path::new(".")).join(f);
        let key = std::fs::read(&p).with_context(|| format!("[secrets] caller_key_file {}", p.display()))?;
        cdrflow_schemas::Pseudonymiser::new(key.trim_ascii())
            .map_err(|e| anyhow::anyhow!("[secrets] caller_key_file {}: {e}", p.display()))?;
    }
    if let Some(out) = &file.ingest.out {
        cdrflow_ingest::archive::Archive::open(out).with_context(|| format!("[ingest] out {out}"))?;
    }
    let env = |cmd: &str| -> serde_json::Value {
        file.environment(cmd, path).into_iter().map(|(k, v)| (k.to_owned(), serde_json::Value::from(v))).collect()
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "file": path.display().to_string(),
            "ok": true,
            "kafka_properties": file.kafka.properties,
            "ingest_environment": env("ingest"),
            "aggregate_environment": env("aggregate"),
        }))?
    );
    Ok(())
}

/// `--config FILE` (or `CDRFLOW_CONFIG`) and the subcommand, found before clap parses
/// (the global flags before the subcommand are `--log-json` and `--config`).
fn config_in_args() -> Option<(PathBuf, String)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut path = std::env::var_os("CDRFLOW_CONFIG").map(PathBuf::from);
    let mut command = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--config" {
            path = args.get(i + 1).map(PathBuf::from);
            i += 1;
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        } else if !a.starts_with('-') && command.is_none() {
            command = Some(a.clone());
        }
        i += 1;
    }
    Some((path?, command.unwrap_or_default()))
}
