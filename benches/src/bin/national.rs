//! National scale: pushes `--cdrs` (default 100 M) CDRs through one ingest worker and one
//! aggregator, then rebuilds all counters from the archive, and records wall time, peak
//! memory, CPU time and CDRs/s of each. The mock broker holds ~5 MiB per partition, so the
//! feed goes in slices: each slice is generated (distinct call ids, the next stretch of
//! time) while both workers consume, and the next starts once both have caught up.
//! At the end the ClickHouse totals and the archive's rows are checked against the sum of the
//! slices' ground truth.
//!
//! ```sh
//! benches/scripts/national.sh                    # 100 M, ~20 min on 2 cores
//! cargo run --release -p cdrflow-benches --bin national -- --cdrs 2000000   # a short run
//! ```
//! Rates: `wall` is CDRs over the whole run's wall time, with the generator, the broker and
//! both workers sharing the machine; `per CPU-second` is CDRs over the worker's own CPU time
//! (user + system), which is what one core of it sustains.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use cdrflow_benches::{Broker, Totals, caught_up, cpu_seconds, peak_rss_mib, run, spawn, stop, wait};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// CDRs in all.
    #[arg(long, default_value_t = 100_000_000)]
    cdrs: u64,
    /// CDRs per slice. The feed is keyed by region, so Moscow's partition takes ~9 % of
    /// a slice, and the mock broker keeps ~5 MiB per partition: 500 k fits, 1 M does not.
    #[arg(long, default_value_t = 500_000)]
    slice: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 96)]
    partitions: u32,
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
const START_MS: i64 = 1_643_673_600_000;
const CALLS_PER_DAY: f64 = 320_000.0;

fn main() -> Result<()> {
    let a = Args::parse();
    let _ = std::fs::remove_dir_all(&a.work);
    std::fs::create_dir_all(&a.work)?;
    let work = a.work.canonicalize()?;
    let broker = Broker::start(&a.cdrflow, a.partitions, &["cdrs", "cdrs.dlq"])?;
    let ch = ClickHouse::new(ClickHouseConfig::from_env(&a.clickhouse, DB)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        ch.drop_database().await?;
        ch.migrate().await
    })
    .context("ClickHouse: is it running? deploy/local/clickhouse.sh start")?;

    let archive_dir = work.join("archive");
    let archive_s = archive_dir.to_string_lossy().into_owned();
    let parts: Vec<i32> = (0..a.partitions as i32).collect();
    let started = Instant::now();
    let mut ingest = spawn(
        &a.cdrflow,
        &["ingest", "--brokers", &broker.bootstrap, "--topic", "cdrs", "--out", &archive_s, "--max-age-ms", "2000"],
        &[("CDRFLOW_CALLER_KEY", "national-bench-key-0123456789")],
        Some(&work.join("ingest.log")),
    )?;
    let mut aggregate = spawn(
        &a.cdrflow,
        &[
            "aggregate",
            "--brokers",
            &broker.bootstrap,
            "--topic",
            "cdrs",
            "--clickhouse",
            &a.clickhouse,
            "--database",
            DB,
            "--flush-interval-ms",
            "2000",
        ],
        &[],
        Some(&work.join("aggregate.log")),
    )?;
    let archive = cdrflow_ingest::archive::Archive::open_dir(&archive_dir)?;

    let slices = a.cdrs.div_ceil(a.slice);
    let span_ms = (a.slice as f64 / CALLS_PER_DAY * 86_400_000.0) as i64;
    let (mut truth, mut valid, mut messages) = (Totals::default(), 0u64, 0u64);
    for i in 0..slices {
        let n = a.slice.min(a.cdrs - i * a.slice);
        let start = jiff::Timestamp::from_millisecond(START_MS + i as i64 * span_ms)?.to_string();
        let truth_file = work.join("truth.jsonl");
        run(
            &a.cdrflow,
            &[
                "generate",
                "--cdrs",
                &n.to_string(),
                "--seed",
                &(i + 1).to_string(),
                "--first-seq",
                &(i * a.slice * 4).to_string(),
                "--start",
                &start,
                "--brokers",
                &broker.bootstrap,
                "--topic",
                "cdrs",
                "--truth",
                &truth_file.to_string_lossy(),
            ],
        )?;
        truth += Totals::of_truth(&truth_file)?;
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.join("truth.jsonl.summary.json"))?)?;
        valid += summary["valid_messages"].as_u64().unwrap_or(0);
        messages += summary["messages"].as_u64().unwrap_or(0);
        // (Had the broker dropped data before a worker read it, the totals at the end would
        // fall short of the truth.)
        let (held, _) = broker.held("cdrs", a.partitions)?;
        wait(&mut ingest, Duration::from_secs(1800), || {
            Ok(caught_up(&held, &archive.committed_positions("cdrs", &parts)?))
        })?;
        wait(&mut aggregate, Duration::from_secs(1800), || {
            Ok(caught_up(&held, &rt.block_on(ch.positions("cdrflow-aggregate", "cdrs"))?))
        })?;
        let done = messages;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "slice {}/{slices}: {done} CDRs in {secs:.0} s ({:.0} CDRs/s), ingest {:.0} MiB, aggregate {:.0} MiB",
            i + 1,
            done as f64 / secs,
            peak_rss_mib(ingest.id()).unwrap_or(0.0),
            peak_rss_mib(aggregate.id()).unwrap_or(0.0)
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = |pid: u32| cpu_seconds(pid).unwrap_or(f64::NAN);
    let (ingest_cpu, aggregate_cpu) = (cpu(ingest.id()), cpu(aggregate.id()));
    let (ingest_rss, aggregate_rss) =
        (peak_rss_mib(ingest.id()).unwrap_or(f64::NAN), peak_rss_mib(aggregate.id()).unwrap_or(f64::NAN));
    stop(&mut ingest);
    stop(&mut aggregate);

    let streamed = rt.block_on(Totals::of_dashboards(&a.clickhouse, DB))?;
    // The rebuild, a month at a time: one backfill holds its selection's cells in memory and
    // writes them as one insert (one part), so a whole year at national scale is rebuilt in
    // month-sized steps, each atomic.
    let t = Instant::now();
    let last_day = jiff::Timestamp::from_millisecond(START_MS + slices as i64 * span_ms + 86_400_000)?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let mut month = jiff::civil::date(2022, 2, 1);
    let (mut rows, mut cells, mut superseded, mut files, mut rebuild_rss) = (0u64, 0u64, 0u64, 0u64, 0f64);
    while month <= last_day {
        let end = month.last_of_month();
        let (out, rss) = run_measured(
            &a.cdrflow,
            &[
                "backfill",
                "--from",
                &archive_s,
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
    let archive_bytes: u64 = walk_size(&archive_dir);

    let result = serde_json::json!({
        "cdrs": messages,
        "valid_messages": valid,
        "slices": slices,
        "partitions": a.partitions,
        "wall_seconds": wall.round(),
        "cdrs_per_second_wall": (messages as f64 / wall).round(),
        "ingest": {
            "cpu_seconds": ingest_cpu.round(),
            "cdrs_per_cpu_second": (messages as f64 / ingest_cpu).round(),
            "peak_rss_mib": ingest_rss.round(),
            "archive_rows": backfill["rows"],
            "archive_gib": (archive_bytes as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0,
        },
        "aggregate": {
            "cpu_seconds": aggregate_cpu.round(),
            "cdrs_per_cpu_second": (messages as f64 / aggregate_cpu).round(),
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
    Ok(())
}

/// Runs `cdrflow ARGS`, sampling its peak memory; its stdout and peak RSS (MiB).
fn run_measured(cdrflow: &str, args: &[&str]) -> Result<(Vec<u8>, f64)> {
    use std::io::Read;
    let mut child = std::process::Command::new(cdrflow)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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
        bail!("cdrflow {} failed: {status}", args.join(" "));
    }
    Ok((reader.join().expect("reader"), peak))
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
