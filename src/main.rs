//! `cdrflow` — call-detail records of citizen hotlines, from Kafka to a Parquet archive and
//! to hourly counters in ClickHouse. This file only parses the command line and dispatches:
//! each subcommand's arguments and run function live in [`cmd`], the features in the
//! workspace's library crates.

mod cmd;

/// jemalloc is the whole process's allocator: Rust's, and, through its unprefixed `malloc`
/// and `free`, librdkafka's (statically linked). With glibc's, the reading thread slept on
/// the lock of the fetch thread's arena whenever it freed a message that thread had
/// allocated (a third of its waits in a `perf` trace of its context switches), and a worker
/// frees every message it reads that way (the decoded CDRs' strings, made on the decode
/// threads, are freed on the encoders' too). One ingest worker over 1 M CDRs: median
/// 546 k msg/s with glibc's malloc, 614 k with jemalloc (`benches/RESULTS.md` §23).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cdrflow", version, about = "Call-detail records of citizen hotlines (122, 117, 112, 8-800, governors' lines): Kafka → Parquet archive and hourly ClickHouse counters", long_about = None)]
struct Cli {
    /// Log as JSON lines instead of text (for log shippers); fatal errors too.
    #[arg(long, global = true, env = "CDRFLOW_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new(),
          action = clap::ArgAction::SetTrue)]
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
    /// Run the whole pipeline here: Kafka, local ClickHouse (installed if missing), a national feed,
    /// ingest and aggregate; print national and regional summaries; stop everything.
    Demo(cmd::demo::DemoArgs),
    /// Generate the synthetic national feed (deterministic from --seed) to a file, stdout or Kafka, with its ground truth.
    Generate(cmd::generate::GenerateArgs),
    /// Check a file of records (one per line) against the CDR contract; prints {"accepted","rejected","reasons"} as JSON.
    Validate(cmd::validate::ValidateArgs),
    /// Create or upgrade cdrflow's ClickHouse database, tables and dashboard views (idempotent, versioned).
    Migrate(cmd::migrate::MigrateArgs),
    /// Consume CDRs and archive them as Parquet under dt=YYYY-MM-DD/region=NN/, exactly once.
    /// The caller-hashing key comes from CDRFLOW_CALLER_KEY_FILE or CDRFLOW_CALLER_KEY.
    Ingest(cmd::ingest::IngestArgs),
    /// Consume CDRs and keep per-region, per-line, per-hour counters in ClickHouse, exactly once.
    Aggregate(cmd::aggregate::AggregateArgs),
    /// Check Kafka offsets, the Parquet archive and ClickHouse against each other; names every mismatch and exits 1 if any.
    Reconcile(cmd::reconcile::ReconcileArgs),
    /// Rebuild the counters of some dates (and a region) from the Parquet archive, replacing those hours at once.
    Backfill(cmd::backfill::BackfillArgs),
    /// Write one region's calls over a range of dates as a self-contained HTML page with charts.
    Report(cmd::report::ReportArgs),
    /// Check a configuration file: syntax, keys, values, referenced files, librdkafka properties.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Host librdkafka's mock Kafka cluster (the demo on a machine without Java: in memory, ~5 MiB per partition); prints the bootstrap address first.
    Broker(cmd::broker::BrokerArgs),
}

fn main() {
    // Logs first (flag or environment), so that even a bad config file is reported in the
    // format the operator asked for.
    let json = log_json_requested();
    init_logs(json);
    // The config file becomes environment variables before clap reads flags and environment,
    // so a setting only the file holds (a required --out, say) is found.
    if let Some((path, command)) = cmd::config::config_in_args() {
        match cdrflow_config::ConfigFile::load(&path) {
            Ok(file) => file.apply(&command, &path),
            Err(e) => fatal(&e, json),
        }
    }
    let cli = Cli::parse();
    // Workers take SIGTERM as "drain and stop" from their first moment (a pod may be stopped
    // while it starts); the loops read the flag once they run.
    if matches!(cli.command, Command::Ingest(_) | Command::Aggregate(_)) {
        let _ = cdrflow::signals::stop_flag();
    }
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Migrate(a) => cmd::migrate::run(a),
        Command::Aggregate(a) => cmd::aggregate::run(a),
        Command::Ingest(a) => cmd::ingest::run(a),
        Command::Reconcile(a) => cmd::reconcile::run(a),
        Command::Backfill(a) => cmd::backfill::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Config(c) => cmd::config::run(c),
        Command::Broker(a) => cmd::broker::run(a),
    };
    if let Err(e) = result {
        fatal(&e, cli.log_json || json);
    }
}

/// `--log-json` or a true `CDRFLOW_LOG_JSON` (`1`, `true`, `yes`, `on`), before clap parses.
fn log_json_requested() -> bool {
    std::env::args().skip(1).any(|a| a == "--log-json")
        || std::env::var("CDRFLOW_LOG_JSON")
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "y" | "on"))
}

/// Text logs on stderr (colours only on a terminal), or JSON lines.
fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CDRFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json { b.json().init() } else { b.init() }
}

/// Reports a fatal error (as a JSON log line under `--log-json`) and exits 1.
fn fatal(e: &anyhow::Error, json: bool) -> ! {
    if json {
        tracing::error!(error = format!("{e:#}"), "fatal");
    } else {
        eprintln!("error: {e:#}");
    }
    std::process::exit(1);
}
