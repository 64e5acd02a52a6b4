//! `cdrflow config check FILE`, and finding `--config` before clap parses.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE and print the settings it gives each worker (secrets redacted); exits 1 naming every problem.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

pub fn run(c: ConfigCommand) -> Result<()> {
    match c {
        ConfigCommand::Check { file } => check(&file),
    }
}

/// Checks everything the file names and reports every problem at once (an operator fixing
/// a deploy should not learn of one missing secret per run).
fn check(path: &Path) -> Result<()> {
    let file = cdrflow_config::ConfigFile::load(path)?;
    let mut problems = file.file_problems(path);
    let base = path.parent().unwrap_or(Path::new("."));
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
    let props = cdrflow_kafka::WorkerConsumer::properties(&kafka, "cdrflow-config-check", 45_000);
    if let Err(e) = super::check_kafka_properties(&props) {
        problems.push(format!("[kafka.properties]: {e:#}"));
    }
    if let Some(lines) = &file.kafka.lines {
        let p = base.join(lines);
        if let Err(e) = cdrflow_schemas::LineRegistry::from_toml_file(&p) {
            problems.push(format!("[kafka] lines {}: {e}", p.display()));
        }
    }
    if let Some(f) = &file.secrets.caller_key_file {
        let p = base.join(f);
        if let Ok(key) = std::fs::read(&p)
            && let Err(e) = cdrflow_schemas::Pseudonymiser::new(key.trim_ascii())
        {
            problems.push(format!("[secrets] caller_key_file {}: {e}", p.display()));
        }
    }
    if let Some(out) = &file.ingest.out
        && let Err(e) = cdrflow_archive::Archive::describe_location(out)
    {
        problems.push(format!("[ingest] out {out}: {e:#}"));
    }
    if !problems.is_empty() {
        bail!("config file {}: {} problem(s):\n  {}", path.display(), problems.len(), problems.join("\n  "));
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
pub fn config_in_args() -> Option<(PathBuf, String)> {
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
