//! National scale: pushes `--cdrs` (default 100 M) CDRs through one ingest worker and one
//! aggregator on a real Kafka broker, then rebuilds all counters from the archive, and
//! records wall time, peak memory, CPU time and CDRs/s of each, and the disk the topic takes.
//!
//! One `cdrflow generate` produces the whole feed (distinct call ids, 312 days of calls at
//! 320 k a day; 0.5 % bad, 1 % late, 0.2 % re-sent) into a fresh topic of its own
//! (`bench-national-PID-UNIXMS`, `--partitions`, zstd-compressed batches so that 100 M CDRs
//! fit the disk) while both workers consume it from the start. At the end the ClickHouse
//! totals and the archive's rows are checked against the generator's ground truth; the
//! topic is then deleted unless `--keep-topic`.
//!
//! ```sh
//! benches/scripts/national.sh                    # 100 M (starts the local Kafka if needed)
//! cargo run --release -p cdrflow-benches --bin national -- --cdrs 2000000   # a short run
//! ```
//! Rates: `wall` is CDRs over the whole run's wall time (workers' start to both caught up),
//! with the generator, the broker and both workers sharing the machine; `per CPU-second` is
//! CDRs over the worker's own CPU time (user + system), which is what one core of it sustains.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use cdrflow_benches::{
    Kafka, Totals, apparent_size, caught_up, consumed, cpu_seconds, peak_rss_mib, spawn, stop, topic_disk_bytes,
};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// CDRs in all (messages: good, re-sent and bad together).
    #[arg(long, default_value_t = 100_000_000)]
    cdrs: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 96)]
    partitions: u32,
    /// How the generator compresses its batches (the topic of 100 M CDRs is ~40 GiB of JSON).
    #[arg(long, default_value = "zstd")]
    compression: String,
    /// Kafka bootstrap servers (`deploy/local/kafka.sh bootstrap`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The broker's `log.dirs`, to measure the topic on disk (skipped if the topic is not there).
    #[arg(long, default_value = "target/cdrflow-local/kafka/default/node-1/data")]
    kafka_data: PathBuf,
    /// Leave the topic on the broker at the end (it is deleted by default).
    #[arg(long)]
    keep_topic: bool,
    /// Working directory (the archive, logs, result.json); emptied first.
    #[arg(long, default_value = "target/bench-national")]
    work: PathBuf,
    /// The cdrflow binary.
    #[arg(long, default_value = "target/release/cdrflow")]
    cdrflow: String,
    /// ClickHouse HTTP interface.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
}

const DB: &str = "cdrflow_national";
/// The feed's first instant: 2022-02-01T00:00:00Z.
const START: &str = "2022-02-01T00:00:00Z";
const START_MS: i64 = 1_643_673_600_000;
const CALLS_PER_DAY: u64 = 320_000;
const INGEST_METRICS: &str = "127.0.0.1:19593";
const AGGREGATE_METRICS: &str = "127.0.0.1:19594";

fn main() -> Result<()> {
    let a = Args::parse();
    let _ = std::fs::remove_dir_all(&a.work);
    std::fs::create_dir_all(&a.work)?;
    let work = a.work.canonicalize()?;
    let mut kafka = Kafka::connect(&a.brokers)?;
    kafka.keep = a.keep_topic;
    let topic = kafka.fresh_topic("bench-national", a.partitions)?;
    eprintln!("topic {topic} ({} partitions) on {}", a.partitions, kafka.bootstrap);
    let ch = ClickHouse::new(ClickHouseConfig::from_env(&a.clickhouse, DB)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        ch.drop_database().await?;
        ch.migrate().await
    })
    .context("ClickHouse: is it running? deploy/local/clickhouse.sh start")?;
    let broker_pid: Option<u32> = a
        .kafka_data
        .parent()
        .and_then(|node| std::fs::read_to_string(node.join("kafka.pid")).ok())
        .and_then(|s| s.trim().parse().ok());
    let broker_cpu_before = broker_pid.and_then(cpu_seconds);

    let archive_dir = work.join("archive");
    let archive_s = archive_dir.to_string_lossy().into_owned();
    let parts: Vec<i32> = (0..a.partitions as i32).collect();
    let (ingest_group, aggregate_group) = (format!("{topic}-ingest"), format!("{topic}-aggregate"));
    let started = Instant::now();
    let mut ingest = spawn(
        &a.cdrflow,
        &[
            "ingest",
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            &topic,
            "--group",
            &ingest_group,
            "--out",
            &archive_s,
            "--max-age-ms",
            "2000",
            "--metrics-addr",
            INGEST_METRICS,
        ],
        &[("CDRFLOW_CALLER_KEY", "national-bench-key-0123456789")],
        Some(&work.join("ingest.log")),
    )?;
    let mut aggregate = spawn(
        &a.cdrflow,
        &[
            "aggregate",
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            &topic,
            "--group",
            &aggregate_group,
            "--clickhouse",
            &a.clickhouse,
            "--database",
            DB,
            "--flush-interval-ms",
            "2000",
            "--metrics-addr",
            AGGREGATE_METRICS,
        ],
        &[],
        Some(&work.join("aggregate.log")),
    )?;
    let archive = cdrflow_archive::Archive::open_dir(&archive_dir)?;

    // The whole feed in one go, while both workers read it.
    let truth_file = work.join("truth.jsonl");
    let mut generate = spawn(
        &a.cdrflow,
        &[
            "generate",
            "--cdrs",
            &a.cdrs.to_string(),
            "--seed",
            "1",
            "--start",
            START,
            "--calls-per-day",
            &CALLS_PER_DAY.to_string(),
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            &topic,
            "--partitions",
            &a.partitions.to_string(),
            "--compression",
            &a.compression,
            "--truth",
            &truth_file.to_string_lossy(),
        ],
        &[],
        Some(&work.join("generate.log")),
    )?;
    let (mut generate_cpu, mut generate_rss, mut last_report) = (0f64, 0f64, Instant::now());
    let status = loop {
        if let Some(s) = generate.try_wait()? {
            break s;
        }
        generate_cpu = cpu_seconds(generate.id()).unwrap_or(generate_cpu);
        generate_rss = peak_rss_mib(generate.id()).unwrap_or(generate_rss);
        for (name, w) in [("ingest", &mut ingest), ("aggregate", &mut aggregate)] {
            if let Some(s) = w.try_wait()? {
                let _ = generate.kill();
                bail!("the {name} worker exited while the feed was produced: {s} (see {}/{name}.log)", work.display());
            }
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            last_report = Instant::now();
            progress(&kafka, &topic, a.partitions, started, &ingest, &aggregate);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("cdrflow generate failed: {status} (see {}/generate.log)", work.display());
    }
    let generate_wall = started.elapsed().as_secs_f64();
    let truth = Totals::of_truth(&truth_file)?;
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(work.join("truth.jsonl.summary.json"))?)?;
    let valid = summary["valid_messages"].as_u64().unwrap_or(0);
    let messages = summary["messages"].as_u64().unwrap_or(0);
    let (ends, total) = kafka.watermarks(&topic, a.partitions)?;
    eprintln!("generated {messages} CDRs ({total} in the topic) in {generate_wall:.0} s");
    if total != messages as i64 {
        bail!("the topic holds {total} messages, not the {messages} produced");
    }

    // Both workers up to the topic's end: first the cheap /metrics count, then the exact
    // positions (the archive's commit markers, the aggregator's positions in ClickHouse).
    let limit = Duration::from_secs(7200);
    let (mut ingest_done, mut aggregate_done) = (None, None);
    while ingest_done.is_none() || aggregate_done.is_none() {
        for (name, w) in [("ingest", &mut ingest), ("aggregate", &mut aggregate)] {
            if let Some(s) = w.try_wait()? {
                bail!("the {name} worker exited early: {s} (see {}/{name}.log)", work.display());
            }
        }
        if ingest_done.is_none()
            && consumed(INGEST_METRICS).unwrap_or(0) >= messages
            && caught_up(&ends, &archive.committed_positions(&topic, &parts)?)
        {
            ingest_done = Some(started.elapsed().as_secs_f64());
        }
        if aggregate_done.is_none()
            && consumed(AGGREGATE_METRICS).unwrap_or(0) >= messages
            && caught_up(&ends, &rt.block_on(ch.positions(&aggregate_group, &topic))?)
        {
            aggregate_done = Some(started.elapsed().as_secs_f64());
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            last_report = Instant::now();
            progress(&kafka, &topic, a.partitions, started, &ingest, &aggregate);
        }
        if started.elapsed() > limit {
            bail!("the workers did not catch up in {limit:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (ingest_done, aggregate_done) = (ingest_done.expect("done"), aggregate_done.expect("done"));
    let wall = started.elapsed().as_secs_f64();
    let cpu = |pid: u32| cpu_seconds(pid).unwrap_or(f64::NAN);
    let (ingest_cpu, aggregate_cpu) = (cpu(ingest.id()), cpu(aggregate.id()));
    let (ingest_rss, aggregate_rss) =
        (peak_rss_mib(ingest.id()).unwrap_or(f64::NAN), peak_rss_mib(aggregate.id()).unwrap_or(f64::NAN));
    let broker_cpu = broker_pid.and_then(cpu_seconds).zip(broker_cpu_before).map(|(after, before)| after - before);
    stop(&mut ingest);
    stop(&mut aggregate);
    let kafka_disk = topic_disk_bytes(&a.kafka_data, &topic, a.partitions);
    let gib = |b: u64| (b as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0;
    eprintln!(
        "both caught up in {wall:.0} s (ingest at {ingest_done:.0} s, aggregate at {aggregate_done:.0} s); topic on disk: {}",
        kafka_disk.map_or("not found".into(), |b| format!("{} GiB", gib(b)))
    );

    let streamed = rt.block_on(Totals::of_dashboards(&a.clickhouse, DB))?;
    // The rebuild, a month at a time: one backfill holds its selection's cells in memory and
    // writes them as one insert (one part), so a whole year at national scale is rebuilt in
    // month-sized steps, each atomic. The feed spans cdrs / calls-per-day days; late records
    // land up to 6 h later.
    let t = Instant::now();
    let days = a.cdrs.div_ceil(CALLS_PER_DAY) as i64 + 1;
    let last_day =
        jiff::Timestamp::from_millisecond(START_MS + days * 86_400_000)?.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut month = jiff::civil::date(2022, 2, 1);
    let (mut rows, mut cells, mut superseded, mut files, mut rebuild_rss) = (0u64, 0u64, 0u64, 0u64, 0f64);
    while month <= last_day {
        let end = month.last_of_month();
        let (out, rss) = run_measured(
            &a.cdrflow,
            &work.join("backfill.log"),
            &[
                "backfill",
                "--from",
                &archive_s,
                "--topic",
                &topic,
                "--clickhouse",
                &a.clickhouse,
                "--database",
                DB,
                "--from-date",
                &month.to_string(),
                "--to-date",
                &end.to_string(),
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out)?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        (rows, cells, superseded, files) =
            (rows + n("rows"), cells + n("cells"), superseded + n("superseded_versions"), files + n("files"));
        rebuild_rss = rebuild_rss.max(rss);
        eprintln!("rebuilt {month}..{end}: {v}");
        month = end.tomorrow()?;
    }
    let rebuild_wall = t.elapsed().as_secs_f64();
    let backfill = serde_json::json!({
        "rows": rows,
        "cells": cells,
        "superseded_versions": superseded,
        "files": files,
        "peak_rss_mib": rebuild_rss.round(),
        "rows_per_second": (rows as f64 / rebuild_wall).round(),
    });
    let rebuilt = rt.block_on(Totals::of_dashboards(&a.clickhouse, DB))?;
    let archive_bytes = apparent_size(&archive_dir);
    let per = |n: u64, secs: f64| (n as f64 / secs).round();

    let result = serde_json::json!({
        "cdrs": messages,
        "valid_messages": valid,
        "topic": topic,
        "partitions": a.partitions,
        "compression": a.compression,
        "kafka_topic_disk_gib": kafka_disk.map(gib),
        "wall_seconds": wall.round(),
        "cdrs_per_second_wall": per(messages, wall),
        "generate": {
            "wall_seconds": generate_wall.round(),
            "cdrs_per_second": per(messages, generate_wall),
            "cpu_seconds": generate_cpu.round(),
            "peak_rss_mib": generate_rss.round(),
        },
        "broker_cpu_seconds": broker_cpu.map(f64::round),
        "ingest": {
            "caught_up_at_seconds": ingest_done.round(),
            "cdrs_per_second_wall": per(messages, ingest_done),
            "cpu_seconds": ingest_cpu.round(),
            "cdrs_per_cpu_second": per(messages, ingest_cpu),
            "peak_rss_mib": ingest_rss.round(),
            "archive_rows": backfill["rows"],
            "archive_files": backfill["files"],
            "archive_gib": gib(archive_bytes),
        },
        "aggregate": {
            "caught_up_at_seconds": aggregate_done.round(),
            "cdrs_per_second_wall": per(messages, aggregate_done),
            "cpu_seconds": aggregate_cpu.round(),
            "cdrs_per_cpu_second": per(messages, aggregate_cpu),
            "peak_rss_mib": aggregate_rss.round(),
            "counters": streamed,
        },
        "truth": truth,
        "streamed_equals_truth": streamed == truth,
        "archive_rows_equal_valid_messages": backfill["rows"].as_u64() == Some(valid),
        "rebuild": {
            "wall_seconds": (rebuild_wall * 10.0).round() / 10.0,
            "summary": backfill,
            "rebuilt_equals_truth": rebuilt == truth,
        },
    });
    let pretty = serde_json::to_string_pretty(&result)?;
    println!("{pretty}");
    std::fs::write(work.join("result.json"), pretty)?;
    if streamed != truth || rebuilt != truth || backfill["rows"].as_u64() != Some(valid) {
        bail!("the counters or the archive do not match the ground truth: see above");
    }
    drop(kafka);
    Ok(())
}

/// One progress line: messages in the topic so far, and what each worker has consumed.
fn progress(
    kafka: &Kafka,
    topic: &str,
    partitions: u32,
    started: Instant,
    ingest: &std::process::Child,
    aggregate: &std::process::Child,
) {
    let in_topic = kafka.watermarks(topic, partitions).map(|(_, n)| n).unwrap_or(-1);
    eprintln!(
        "{:>5.0} s: topic {in_topic}, ingest {} ({:.0} MiB), aggregate {} ({:.0} MiB)",
        started.elapsed().as_secs_f64(),
        consumed(INGEST_METRICS).unwrap_or(0),
        peak_rss_mib(ingest.id()).unwrap_or(0.0),
        consumed(AGGREGATE_METRICS).unwrap_or(0),
        peak_rss_mib(aggregate.id()).unwrap_or(0.0),
    );
}

/// Runs `cdrflow ARGS` with its stderr appended to `log`, sampling its peak memory; its
/// stdout and peak RSS (MiB).
fn run_measured(cdrflow: &str, log: &std::path::Path, args: &[&str]) -> Result<(Vec<u8>, f64)> {
    use std::io::Read;
    let mut child = std::process::Command::new(cdrflow)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?)
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let mut peak = 0f64;
    let status = loop {
        peak = peak.max(peak_rss_mib(child.id()).unwrap_or(0.0));
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("cdrflow {} failed: {status} (see {})", args.join(" "), log.display());
    }
    Ok((reader.join().expect("reader"), peak))
}
