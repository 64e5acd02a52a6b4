//! The subcommands: each one's arguments and run function in its own module, and the
//! argument groups they share (Kafka, ClickHouse, the archive selection) defined once here.

pub mod aggregate;
pub mod backfill;
pub mod broker;
pub mod config;
pub mod demo;
pub mod generate;
pub mod ingest;
pub mod migrate;
pub mod reconcile;
pub mod report;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use cdrflow_kafka::settings::{Property, is_secret_property};
use cdrflow_schemas::{CsvFeed, Format, LineRegistry, RegionCode, Regions};
use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum)]
pub enum WireFormat {
    /// One JSON object per record (see the README's CDR contract).
    Json,
    /// Asterisk cdr_csv lines.
    AsteriskCsv,
    /// Confluent-framed Avro (schemas/avro/cdr_v1.avsc as the reader schema); needs --schema-registry.
    AvroConfluent,
}

impl From<WireFormat> for Format {
    fn from(f: WireFormat) -> Format {
        match f {
            WireFormat::Json => Format::Json,
            WireFormat::AsteriskCsv => Format::AsteriskCsv,
            WireFormat::AvroConfluent => Format::AvroConfluent,
        }
    }
}

/// Where cdrflow's ClickHouse database is.
#[derive(clap::Args, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP interface. User: CDRFLOW_CLICKHOUSE_USER; password: CDRFLOW_CLICKHOUSE_PASSWORD_FILE or CDRFLOW_CLICKHOUSE_PASSWORD.
    #[arg(long = "clickhouse", env = "CDRFLOW_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub url: String,
    /// Database for cdrflow's tables.
    #[arg(long, env = "CDRFLOW_CLICKHOUSE_DATABASE", default_value = "cdrflow")]
    pub database: String,
    /// On a replicated cluster: replicas of a shard that must hold each insert (insert_quorum;
    /// reads then use select_sequential_consistency). Set it to the replicas per shard
    /// (deploy/clickhouse-cluster/README.md); 0 on one server.
    #[arg(long, env = "CDRFLOW_CLICKHOUSE_INSERT_QUORUM", default_value_t = 0)]
    pub insert_quorum: u32,
    /// Seconds a flush's insert may take once its rows are sent before it is given up and
    /// retried (the retry waits until ClickHouse no longer runs it); also the longest wait
    /// for the aggregator's reads (positions, its window of calls) before they are retried.
    #[arg(long, env = "CDRFLOW_CLICKHOUSE_INSERT_TIMEOUT_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub insert_timeout_s: u64,
}

impl ClickHouseArgs {
    pub fn config(&self) -> Result<ClickHouseConfig> {
        let mut cfg = ClickHouseConfig::from_env(&self.url, &self.database)?;
        cfg.insert_quorum = self.insert_quorum;
        cfg.insert_timeout = std::time::Duration::from_secs(self.insert_timeout_s);
        Ok(cfg)
    }

    /// A client of a server that answers and holds cdrflow's schema at the version this
    /// build needs (else the error says to run `cdrflow migrate`).
    pub fn connect(&self, rt: &tokio::runtime::Runtime) -> Result<ClickHouse> {
        let ch = ClickHouse::new(self.config()?);
        rt.block_on(async {
            ch.ping().await?;
            ch.check_schema().await
        })?;
        Ok(ch)
    }
}

/// Whether two paths name one file (as written, or once resolved when both exist): an
/// output named like an input or another output would be written over it.
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// The cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A thread count given as `flag`, refused above 4 per core before anything starts (a typo
/// such as 100000 would start that many threads); `holds` says what each thread holds,
/// `hint` ends the error with the usual choice.
pub fn at_most_4_per_core(flag: &str, n: usize, holds: &str, hint: &str) -> Result<usize> {
    let cores = cores();
    if n > 4 * cores {
        bail!(
            "{flag} {n} is more than 4 per core on this machine ({cores} cores): {holds}; use at most {}{hint}",
            4 * cores
        );
    }
    Ok(n)
}

/// What every worker reads, and how to reach Kafka.
#[derive(clap::Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "CDRFLOW_BROKERS")]
    pub brokers: String,
    /// Topic of CDRs.
    #[arg(long, env = "CDRFLOW_TOPIC", default_value = "cdrs")]
    pub topic: String,
    /// Wire format of the topic.
    #[arg(long, value_enum, env = "CDRFLOW_FORMAT", default_value = "json")]
    pub format: WireFormat,
    /// For asterisk-csv: the region of the feed (else each line's accountcode).
    #[arg(long, env = "CDRFLOW_CSV_REGION")]
    pub region: Option<u8>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Kafka session timeout: how long a dead member's partitions wait before moving on.
    #[arg(long, env = "CDRFLOW_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    pub session_timeout_ms: u32,
    /// Extra librdkafka property KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    /// Passwords are refused here: set CDRFLOW_KAFKA_SASL_PASSWORD(_FILE) or CDRFLOW_KAFKA_SSL_KEY_PASSWORD(_FILE).
    /// Overrides the config file's [kafka.properties] of the same key, and the workers' tuning.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
    /// Line registry file (default: the built-in one).
    #[arg(long, env = "CDRFLOW_LINES")]
    pub lines: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "CDRFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Threads that decode batches of messages ahead of the sink, beside the thread that
    /// reads and writes (JSON and CSV feeds); 0 decodes each message as it is handled.
    #[arg(long, env = "CDRFLOW_DECODE_THREADS", default_value_t = 1)]
    pub decode_threads: usize,
}

impl KafkaArgs {
    /// The worker's stats, exported on --metrics-addr if given.
    pub fn stats(&self, worker: &'static str, written_what: &'static str) -> Result<Arc<cdrflow_kafka::WorkerStats>> {
        let stats = Arc::new(cdrflow_kafka::WorkerStats::default());
        if let Some(addr) = &self.metrics_addr {
            cdrflow_kafka::metrics::serve(addr, stats.clone(), worker, written_what)?;
        }
        Ok(stats)
    }

    pub fn settings(&self) -> Result<cdrflow_kafka::KafkaSettings> {
        kafka_settings(&self.brokers, &self.kafka_options)
    }

    pub fn lines(&self) -> Result<Arc<LineRegistry>> {
        lines(self.lines.as_ref())
    }

    /// `--decode-threads`, bounded ([`at_most_4_per_core`]).
    fn decode_threads(&self) -> Result<usize> {
        at_most_4_per_core(
            "--decode-threads",
            self.decode_threads,
            "each holds batches of messages",
            "; 1 (the default) keeps a 2-core worker busy",
        )
    }

    /// What a worker reads as `group`; `dead_letters` as decided by the worker.
    pub fn source(&self, group: &str, dead_letter_topic: Option<String>) -> Result<cdrflow_kafka::SourceOptions> {
        // One variable once named the group of both kinds of worker: set in an environment
        // they share, it put ingest workers and aggregators in one group, each kind then
        // reading only the partitions the other was not given. Ignoring it now would start
        // a worker in the default group, from the topic's start: refused instead.
        if std::env::var_os("CDRFLOW_GROUP").is_some() {
            bail!(
                "CDRFLOW_GROUP is set, but is no longer read: it named the group of ingest workers and aggregators alike, and one value shared by both splits the topic between them. Unset it; then name the group with CDRFLOW_INGEST_GROUP (ingest), CDRFLOW_AGGREGATE_GROUP (aggregate) or --group"
            );
        }
        if group.trim().is_empty() {
            bail!("--group is empty: name the consumer group");
        }
        Ok(cdrflow_kafka::SourceOptions {
            kafka: self.settings()?,
            group: group.to_owned(),
            topic: self.topic.clone(),
            format: self.format.into(),
            csv: csv_feed(self.region)?,
            session_timeout_ms: self.session_timeout_ms,
            dead_letter_topic,
            lines: self.lines()?,
            registry: self.registry.client(self.format.into())?,
            schema_wait: std::time::Duration::from_secs(self.registry.schema_wait_s),
            decode_threads: self.decode_threads()?,
        })
    }
}

/// The schema registry of an Avro feed.
#[derive(clap::Args, Clone)]
pub struct RegistryArgs {
    /// For avro-confluent: the schema registry's Confluent-compatible API, e.g.
    /// http://127.0.0.1:18081/apis/ccompat/v7 (deploy/local/registry.sh). User:
    /// CDRFLOW_SCHEMA_REGISTRY_USER; password: CDRFLOW_SCHEMA_REGISTRY_PASSWORD_FILE or
    /// CDRFLOW_SCHEMA_REGISTRY_PASSWORD; private CA: CDRFLOW_SCHEMA_REGISTRY_CA_FILE.
    #[arg(long, env = "CDRFLOW_SCHEMA_REGISTRY_URL")]
    pub schema_registry: Option<String>,
    /// For avro-confluent: seconds to wait for a writer schema id the registry does not
    /// know before its records are dead-lettered as unknown_schema (an unreachable registry
    /// is waited for without limit).
    #[arg(long, env = "CDRFLOW_SCHEMA_WAIT_S", default_value_t = 300)]
    pub schema_wait_s: u64,
}

impl RegistryArgs {
    /// The registry client an Avro feed needs (and only an Avro feed).
    pub fn client(&self, format: Format) -> Result<Option<Arc<cdrflow_kafka::registry::SchemaRegistry>>> {
        match (format, &self.schema_registry) {
            (Format::AvroConfluent, Some(url)) => {
                Ok(Some(Arc::new(cdrflow_kafka::registry::SchemaRegistry::from_env(url)?)))
            }
            (Format::AvroConfluent, None) => bail!(
                "--format avro-confluent needs --schema-registry URL (or CDRFLOW_SCHEMA_REGISTRY_URL): the registry's Confluent-compatible API, e.g. http://127.0.0.1:18081/apis/ccompat/v7 (bash deploy/local/registry.sh start)"
            ),
            (_, _) => Ok(None),
        }
    }
}

/// Kafka settings from the brokers, the config file's properties, `--kafka-option`s and the
/// secrets in the environment.
pub fn kafka_settings(brokers: &str, options: &[String]) -> Result<cdrflow_kafka::KafkaSettings> {
    let mut extra: Vec<(String, String)> = cdrflow_config::kafka_properties().to_vec();
    for kv in options {
        let (k, v) = kv.split_once('=').with_context(|| format!("--kafka-option {kv}: expected KEY=VALUE"))?;
        if is_secret_property(k) {
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
        if let Some(v) = cdrflow_config::secret_from_env(env)? {
            extra.push((key.to_owned(), v));
        }
    }
    Ok(cdrflow_kafka::KafkaSettings { brokers: brokers.to_owned(), extra })
}

/// The line registry: a file, or the built-in one.
pub fn lines(file: Option<&PathBuf>) -> Result<Arc<LineRegistry>> {
    Ok(match file {
        Some(p) => Arc::new(LineRegistry::from_toml_file(p).map_err(anyhow::Error::msg)?),
        None => LineRegistry::builtin(),
    })
}

/// Where a CSV feed's region comes from: `--region`, or each line's accountcode.
pub fn csv_feed(region: Option<u8>) -> Result<CsvFeed> {
    Ok(match region_arg(region)? {
        Some(r) => CsvFeed::Region(r),
        None => CsvFeed::FromAccountcode,
    })
}

/// Which part of the archive.
#[derive(clap::Args)]
pub struct SelectionArgs {
    /// Topic whose archive units are read.
    #[arg(long, env = "CDRFLOW_TOPIC", default_value = "cdrs")]
    pub topic: String,
    /// First UTC date (YYYY-MM-DD, the archive's dt), inclusive.
    #[arg(long)]
    pub from_date: Option<jiff::civil::Date>,
    /// Last UTC date, inclusive.
    #[arg(long)]
    pub to_date: Option<jiff::civil::Date>,
    /// One region (its code) only.
    #[arg(long)]
    pub region: Option<u8>,
}

impl SelectionArgs {
    /// The selection; a reversed date range or an unknown region is refused.
    pub fn selection(&self) -> Result<cdrflow_aggregate::rebuild::Selection> {
        if let (Some(from), Some(to)) = (self.from_date, self.to_date)
            && from > to
        {
            bail!("--from-date {from} is after --to-date {to}: the range is empty; swap them");
        }
        region_arg(self.region)?;
        if self.topic.trim().is_empty() {
            bail!("--topic is empty");
        }
        Ok(cdrflow_aggregate::rebuild::Selection {
            topic: self.topic.clone(),
            from_date: self.from_date.map(|d| d.to_string()),
            to_date: self.to_date.map(|d| d.to_string()),
            region: self.region,
        })
    }
}

pub fn region_arg(code: Option<u8>) -> Result<Option<RegionCode>> {
    code.map(|c| {
        Regions::get()
            .by_code(c)
            .map(|r| r.code)
            .with_context(|| format!("--region {c} is not a federal subject code (e.g. 38 for Irkutsk Oblast)"))
    })
    .transpose()
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// What `--dry-run` prints: the resolved settings, secrets redacted, and the consumer's
/// effective librdkafka properties (after the workers' tuning and the protocol's forced
/// settings, each marked with where it comes from), once librdkafka has accepted them.
/// Nothing is created, resolved or connected to.
pub fn dry_run(
    worker: &str,
    source: &cdrflow_kafka::SourceOptions,
    k: &KafkaArgs,
    more: serde_json::Value,
) -> Result<()> {
    let props = cdrflow_kafka::WorkerConsumer::properties(&source.kafka, &source.group, source.session_timeout_ms);
    check_kafka_properties(&props)?;
    let shown: serde_json::Map<String, serde_json::Value> = props
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({ "value": p.shown_value(), "from": p.source.name() });
            if let Some(ignored) = p.shown_ignored() {
                v["overridden"] =
                    format!("the operator's {ignored} is ignored: the exactly-once protocol needs this value").into();
            }
            (p.key.clone(), v)
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
            "decode_threads": source.decode_threads,
            "consumer_properties": shown,
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

/// librdkafka checks property names and values, and loads the files they name (TLS
/// certificates and keys), when a client is created. The client is made without
/// `bootstrap.servers`, so nothing is resolved or connected to.
pub fn check_kafka_properties(props: &[Property]) -> Result<()> {
    let offline: Vec<Property> = props.iter().filter(|p| p.key != "bootstrap.servers").cloned().collect();
    let mut c = cdrflow_kafka::settings::client_config(&offline);
    if c.get("group.id").is_none() {
        c.set("group.id", "cdrflow-config-check");
    }
    // Only errors: librdkafka would warn that this throwaway client has no brokers.
    c.set("log_level", "3");
    let _: rdkafka::consumer::BaseConsumer =
        c.create().map_err(|e| anyhow::anyhow!("Kafka properties rejected by librdkafka: {e}"))?;
    Ok(())
}
