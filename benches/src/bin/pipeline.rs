//! The end-to-end bench: on one mock broker, one topic, in one run, measures
//! (a) the raw consume rate of the topic with librdkafka doing no work,
//! (b) one `cdrflow ingest` worker archiving the same topic from the start,
//! (c) one `cdrflow aggregate` worker counting the same topic from the start,
//! and prints b/a and c/a.
//!
//! ```sh
//! deploy/local/clickhouse.sh start
//! cargo run --release -p cdrflow-benches --bin pipeline -- --cdrs 800000 --partitions 48
//! ```
//! Worker times run from process start (group join included) until the sink holds every
//! partition up to its end. The mock broker keeps ~5 MiB per partition, so the topic is
//! sized to fit (48 partitions for 800 k CDRs, lz4-compressed batches); if a hot partition still
//! overflows, the rates count only what the broker holds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Parser)]
struct Args {
    /// Messages in the topic.
    #[arg(long, default_value_t = 800_000)]
    cdrs: u64,
    /// Partitions (the mock broker keeps ~5 MiB each: 48 hold ~800 k CDRs).
    #[arg(long, default_value_t = 48)]
    partitions: u32,
    /// The cdrflow binary.
    #[arg(long, default_value = "target/release/cdrflow")]
    cdrflow: String,
    /// Ingest's unit age and the aggregator's flush interval (ms): the last unit waits this
    /// long, so keep it small against the run's length.
    #[arg(long, default_value_t = 500)]
    flush_ms: u64,
    /// ClickHouse HTTP interface.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let work = std::env::temp_dir().join(format!("cdrflow-pipeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut broker = Command::new(&a.cdrflow)
        .args(["broker", "--partitions", &a.partitions.to_string(), "--topic", "cdrs", "--topic", "cdrs.dlq"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} broker (build it with cargo build --release)", a.cdrflow))?;
    let mut line = String::new();
    BufReader::new(broker.stdout.take().unwrap()).read_line(&mut line)?;
    let bootstrap = line.trim().to_owned();
    let result = run(&a, &bootstrap, &work);
    let _ = broker.kill();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(a: &Args, bootstrap: &str, work: &std::path::Path) -> Result<()> {
    let status = Command::new(&a.cdrflow)
        .args([
            "generate",
            "--cdrs",
            &a.cdrs.to_string(),
            "--seed",
            "7",
            "--resent-share",
            "0",
            "--brokers",
            bootstrap,
            "--topic",
            "cdrs",
        ])
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("generate failed");
    }
    // The mock broker may have dropped the oldest data of a hot partition: count what it holds.
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let mut total = 0i64;
    let mut held = std::collections::HashMap::new();
    for p in 0..a.partitions as i32 {
        let (low, high) = probe.fetch_watermarks("cdrs", p, Duration::from_secs(10))?;
        total += high - low;
        if high > low {
            held.insert(p, high);
        }
    }
    // A sink has caught up when every partition that holds data is read to its end
    // (an empty partition never gets a position).
    let caught_up =
        |pos: &std::collections::HashMap<i32, i64>| held.iter().all(|(p, high)| pos.get(p).is_some_and(|n| n >= high));
    println!("topic: {total} messages held in {} partitions ({} produced)", a.partitions, a.cdrs);

    // (a) raw consume: every message fetched, nothing done with it.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "raw-consume")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions as i32 {
        tpl.add_partition_offset("cdrs", p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let t = Instant::now();
    let mut n = 0i64;
    while n < total {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            n += 1;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("raw consume stalled at {n}/{total}");
        }
    }
    let raw = total as f64 / t.elapsed().as_secs_f64();
    drop(c);
    println!("(a) raw consume (librdkafka, no work): {raw:>10.0} msg/s");

    // (b) one ingest worker.
    let out = work.join("archive");
    let out_s = out.to_string_lossy().into_owned();
    let t = Instant::now();
    let mut w = spawn(
        a,
        &[
            "ingest",
            "--brokers",
            bootstrap,
            "--topic",
            "cdrs",
            "--group",
            "bench-ingest",
            "--out",
            &out_s,
            "--max-age-ms",
            &a.flush_ms.to_string(),
        ],
        &[("CDRFLOW_CALLER_KEY", "bench-key-0123456789abcdef")],
    )?;
    let archive = cdrflow_ingest::archive::Archive::open_dir(&out)?;
    let parts: Vec<i32> = (0..a.partitions as i32).collect();
    wait(&mut w, || Ok(caught_up(&archive.committed_positions("cdrs", &parts)?)))?;
    let ingest = total as f64 / t.elapsed().as_secs_f64();
    stop(&mut w);
    println!("(b) one ingest worker:                 {ingest:>10.0} msg/s   b/a = {:.2}", ingest / raw);

    // (c) one aggregator.
    let db = "cdrflow_bench";
    let ch = ClickHouse::new(ClickHouseConfig::from_env(&a.clickhouse, db)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        ch.drop_database().await?;
        ch.migrate().await
    })?;
    let t = Instant::now();
    let mut w = spawn(
        a,
        &[
            "aggregate",
            "--brokers",
            bootstrap,
            "--topic",
            "cdrs",
            "--group",
            "bench-aggregate",
            "--clickhouse",
            &a.clickhouse,
            "--database",
            db,
            "--flush-interval-ms",
            &a.flush_ms.to_string(),
        ],
        &[],
    )?;
    wait(&mut w, || Ok(caught_up(&rt.block_on(ch.positions("bench-aggregate", "cdrs"))?)))?;
    let aggregate = total as f64 / t.elapsed().as_secs_f64();
    stop(&mut w);
    println!("(c) one aggregator:                    {aggregate:>10.0} msg/s   c/a = {:.2}", aggregate / raw);
    Ok(())
}

fn spawn(a: &Args, args: &[&str], envs: &[(&str, &str)]) -> Result<Child> {
    let mut cmd = Command::new(&a.cdrflow);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Ok(cmd.spawn()?)
}

fn wait(w: &mut Child, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    while !done()? {
        if let Some(s) = w.try_wait()? {
            bail!("the worker exited early: {s}");
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the worker did not catch up in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn stop(w: &mut Child) {
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let _ = w.wait();
}
