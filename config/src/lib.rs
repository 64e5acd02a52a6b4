//! # cdrflow-config — the configuration file
//!
//! `--config FILE` or `CDRFLOW_CONFIG`, documented by `deploy/cdrflow.example.toml`. It
//! owns the file's keys, their checks and how they become each command's environment;
//! secrets are never values in the file. It depends on no worker crate.
//!
//! Precedence, highest first: command-line flags, environment variables, the file, built-in
//! defaults. The file works by filling in the environment variable of every setting it holds
//! that the environment does not already set (each worker flag has one, shown by `--help`),
//! so clap then applies flags over environment over file in one place. Kafka properties
//! (`[kafka.properties]`) are merged under `--kafka-option`s of the same key.
//!
//! Secrets are never values in the file: it names files (`[secrets]`), and the
//! environment may hold them (`CDRFLOW_CALLER_KEY`, `CDRFLOW_CLICKHOUSE_PASSWORD`,
//! `CDRFLOW_KAFKA_SASL_PASSWORD`, …), as in a Kubernetes Secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where CDRs come from.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// The archive workers.
    #[serde(default)]
    pub ingest: IngestSection,
    /// The counter workers.
    #[serde(default)]
    pub aggregate: AggregateSection,
    /// Where counters go.
    #[serde(default)]
    pub clickhouse: ClickHouseSection,
    /// Files that hold secrets.
    #[serde(default)]
    pub secrets: SecretsSection,
    /// `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
}

/// `[kafka]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`.
    pub brokers: Option<String>,
    /// Topic of CDRs.
    pub topic: Option<String>,
    /// `json` or `asterisk-csv`.
    pub format: Option<String>,
    /// For asterisk-csv: the region of the feed.
    pub csv_region: Option<u8>,
    /// Kafka session timeout.
    pub session_timeout_ms: Option<u32>,
    /// Threads that decode ahead of the sink (0: decode as each message is handled).
    pub decode_threads: Option<u32>,
    /// The line registry file.
    pub lines: Option<PathBuf>,
    /// librdkafka properties passed through (TLS, SASL, timeouts); no secrets.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `[ingest]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// Consumer group.
    pub group: Option<String>,
    /// Archive location: a directory or s3://BUCKET/PREFIX.
    pub out: Option<String>,
    /// Rows per unit.
    pub max_rows: Option<u64>,
    /// MiB per unit.
    pub max_mib: Option<u64>,
    /// Unit age in ms.
    pub max_age_ms: Option<u64>,
    /// Dead-letter topic.
    pub dead_letter_topic: Option<String>,
}

/// `[aggregate]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSection {
    /// Consumer group.
    pub group: Option<String>,
    /// Flush interval in ms.
    pub flush_interval_ms: Option<u64>,
    /// Flush at this many unflushed messages.
    pub flush_max_messages: Option<u64>,
    /// The re-send window in hours.
    pub window_hours: Option<u32>,
}

/// `[clickhouse]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    /// HTTP(S) interface.
    pub url: Option<String>,
    /// Database.
    pub database: Option<String>,
    /// User.
    pub user: Option<String>,
}

/// `[secrets]`: paths of files, never the secrets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// The caller-number hashing key.
    pub caller_key_file: Option<PathBuf>,
    /// The ClickHouse password.
    pub clickhouse_password_file: Option<PathBuf>,
    /// Kafka's `sasl.password`.
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// Kafka's `ssl.key.password`.
    pub kafka_ssl_key_password_file: Option<PathBuf>,
}

/// `[metrics]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address, e.g. `0.0.0.0:9464`.
    pub addr: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// JSON lines instead of text.
    pub json: Option<bool>,
    /// Filter, e.g. `info` or `cdrflow=debug,info`.
    pub level: Option<String>,
}

/// Kafka properties from the file, for [`kafka_properties`].
static PROPERTIES: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// The `[kafka.properties]` of the loaded file (empty without one).
pub fn kafka_properties() -> &'static [(String, String)] {
    PROPERTIES.get().map(Vec::as_slice).unwrap_or(&[])
}

pub use cdrflow_kafka::settings::is_secret_property;

impl ConfigFile {
    /// Reads and checks `path`; errors name the file, the key and the fix.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {} (see deploy/cdrflow.example.toml)", path.display()))?;
        let c: ConfigFile = toml::from_str(&text).map_err(|e| {
            let hint = if e.message().contains("password") || e.message().contains("key`") {
                "\nsecrets do not go in the file: name a file under [secrets] or set the environment variable"
            } else {
                ""
            };
            // The parser's own message quotes the line, which may hold a secret: its number
            // and key only.
            let line = e.span().map_or(String::new(), |s| {
                let number = text[..s.start].matches('\n').count() + 1;
                let line = text.lines().nth(number - 1).unwrap_or("");
                match line.split_once('=') {
                    Some((key, _)) => format!(", line {number} (`{} = …`)", key.trim()),
                    None => format!(", line {number}"),
                }
            });
            anyhow::anyhow!("config file {}{line}: {}{hint}", path.display(), e.message().trim_end())
        })?;
        c.check(path)?;
        Ok(c)
    }

    /// Checks what a parser cannot: secrets kept out, values in range.
    fn check(&self, path: &Path) -> Result<()> {
        let at = |key: &str| format!("config file {}: {key}", path.display());
        for key in self.kafka.properties.keys() {
            if is_secret_property(key) {
                bail!(
                    "{}: secrets do not go in the file; use [secrets] kafka_sasl_password_file / kafka_ssl_key_password_file or CDRFLOW_KAFKA_SASL_PASSWORD",
                    at(&format!("[kafka.properties] {key}"))
                );
            }
            if key == "bootstrap.servers" {
                bail!("{}: set [kafka] brokers instead", at("[kafka.properties] bootstrap.servers"));
            }
        }
        if let Some(f) = &self.kafka.format
            && !["json", "asterisk-csv"].contains(&f.as_str())
        {
            bail!("{}: `{f}` is not a format; use json or asterisk-csv", at("[kafka] format"));
        }
        if let Some(u) = &self.clickhouse.url
            && cdrflow_kafka::settings::credentials_in_url(u).is_some()
        {
            bail!(
                "{}: the URL holds a user or password: secrets do not go in the file; set user under [clickhouse] and clickhouse_password_file under [secrets]",
                at("[clickhouse] url")
            );
        }
        if let Some(u) = &self.clickhouse.url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("{}: `{u}` is not an http:// or https:// URL of ClickHouse's HTTP interface", at("[clickhouse] url"));
        }
        for (key, v) in [
            ("[ingest] max_rows", self.ingest.max_rows),
            ("[ingest] max_mib", self.ingest.max_mib),
            ("[ingest] max_age_ms", self.ingest.max_age_ms),
            ("[aggregate] flush_interval_ms", self.aggregate.flush_interval_ms),
            ("[aggregate] flush_max_messages", self.aggregate.flush_max_messages),
        ] {
            if v == Some(0) {
                bail!("{}: must be above 0", at(key));
            }
        }
        Ok(())
    }

    /// Every file the config names that is missing, unreadable or empty (`config check`
    /// reports them all at once; a worker only reads the files it needs, when it needs them).
    pub fn file_problems(&self, path: &Path) -> Vec<String> {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut problems = Vec::new();
        for (key, file) in [
            ("[secrets] caller_key_file", &self.secrets.caller_key_file),
            ("[secrets] clickhouse_password_file", &self.secrets.clickhouse_password_file),
            ("[secrets] kafka_sasl_password_file", &self.secrets.kafka_sasl_password_file),
            ("[secrets] kafka_ssl_key_password_file", &self.secrets.kafka_ssl_key_password_file),
            ("[kafka] lines", &self.kafka.lines),
        ] {
            if let Some(f) = file {
                let f = base.join(f);
                match std::fs::metadata(&f) {
                    Err(e) => problems.push(format!("{key}: cannot read {}: {e}", f.display())),
                    Ok(m) if m.len() == 0 => problems.push(format!("{key}: {} is empty", f.display())),
                    Ok(_) => {}
                }
            }
        }
        problems
    }

    /// The environment variables this file sets for `command` (an entry per setting it holds).
    pub fn environment(&self, command: &str, path: &Path) -> Vec<(&'static str, String)> {
        let base = path.parent().unwrap_or(Path::new("."));
        let file = |p: &PathBuf| base.join(p).to_string_lossy().into_owned();
        let mut env: Vec<(&'static str, Option<String>)> = vec![
            ("CDRFLOW_BROKERS", self.kafka.brokers.clone()),
            ("CDRFLOW_TOPIC", self.kafka.topic.clone()),
            ("CDRFLOW_FORMAT", self.kafka.format.clone()),
            ("CDRFLOW_CSV_REGION", self.kafka.csv_region.map(|r| r.to_string())),
            ("CDRFLOW_SESSION_TIMEOUT_MS", self.kafka.session_timeout_ms.map(|v| v.to_string())),
            ("CDRFLOW_DECODE_THREADS", self.kafka.decode_threads.map(|v| v.to_string())),
            ("CDRFLOW_LINES", self.kafka.lines.as_ref().map(file)),
            ("CDRFLOW_CLICKHOUSE_URL", self.clickhouse.url.clone()),
            ("CDRFLOW_CLICKHOUSE_DATABASE", self.clickhouse.database.clone()),
            ("CDRFLOW_CLICKHOUSE_USER", self.clickhouse.user.clone()),
            ("CDRFLOW_CALLER_KEY_FILE", self.secrets.caller_key_file.as_ref().map(file)),
            ("CDRFLOW_CLICKHOUSE_PASSWORD_FILE", self.secrets.clickhouse_password_file.as_ref().map(file)),
            ("CDRFLOW_KAFKA_SASL_PASSWORD_FILE", self.secrets.kafka_sasl_password_file.as_ref().map(file)),
            ("CDRFLOW_KAFKA_SSL_KEY_PASSWORD_FILE", self.secrets.kafka_ssl_key_password_file.as_ref().map(file)),
            ("CDRFLOW_METRICS_ADDR", self.metrics.addr.clone()),
            ("CDRFLOW_LOG_JSON", self.log.json.map(|v| v.to_string())),
            ("CDRFLOW_LOG", self.log.level.clone()),
        ];
        match command {
            "ingest" => env.extend([
                ("CDRFLOW_INGEST_GROUP", self.ingest.group.clone()),
                ("CDRFLOW_OUT", self.ingest.out.clone()),
                ("CDRFLOW_MAX_ROWS", self.ingest.max_rows.map(|v| v.to_string())),
                ("CDRFLOW_MAX_MIB", self.ingest.max_mib.map(|v| v.to_string())),
                ("CDRFLOW_MAX_AGE_MS", self.ingest.max_age_ms.map(|v| v.to_string())),
                ("CDRFLOW_DEAD_LETTER_TOPIC", self.ingest.dead_letter_topic.clone()),
            ]),
            "aggregate" => env.extend([
                ("CDRFLOW_AGGREGATE_GROUP", self.aggregate.group.clone()),
                ("CDRFLOW_FLUSH_INTERVAL_MS", self.aggregate.flush_interval_ms.map(|v| v.to_string())),
                ("CDRFLOW_FLUSH_MAX_MESSAGES", self.aggregate.flush_max_messages.map(|v| v.to_string())),
                ("CDRFLOW_WINDOW_HOURS", self.aggregate.window_hours.map(|v| v.to_string())),
            ]),
            "reconcile" => env.extend([
                ("CDRFLOW_ARCHIVE", self.ingest.out.clone()),
                ("CDRFLOW_INGEST_GROUP", self.ingest.group.clone()),
                ("CDRFLOW_AGGREGATE_GROUP", self.aggregate.group.clone()),
            ]),
            "backfill" => env.push(("CDRFLOW_ARCHIVE", self.ingest.out.clone())),
            _ => {}
        }
        env.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
    }

    /// Fills in the environment for `command` where it is unset, and keeps the Kafka
    /// properties for the workers. Call once, before any thread starts.
    pub fn apply(&self, command: &str, path: &Path) {
        for (k, v) in self.environment(command, path) {
            if std::env::var_os(k).is_none() {
                // SAFETY: called from main before the runtime, the logger or any other thread starts.
                unsafe { std::env::set_var(k, v) };
            }
        }
        let _ = PROPERTIES.set(self.kafka.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    }
}

/// Secret values from `NAME_FILE` (a path) or `NAME` (the value), the file first.
pub fn secret_from_env(name: &str) -> Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    if let Some(path) = std::env::var_os(&file_var) {
        let v = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the file named by {file_var} ({})", Path::new(&path).display()))?;
        return Ok(Some(v.trim().to_owned()));
    }
    Ok(std::env::var(name).ok())
}
