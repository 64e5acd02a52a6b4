//! The end-to-end bench: on one Kafka broker, one topic, in one run, measures
//! (a) the raw consume rate of the topic with librdkafka doing no work,
//! (b) one `cdrflow ingest` worker archiving the same topic from the start, its units closed
//!     at `--flush-ms` of age (many small files: the archive the peers below read), then
//!     (b′) another with every default (units of up to 30 s), stopped once it has read the
//!     whole topic: it writes what it holds on stop, and its time runs until it has exited
//!     with every partition committed,
//! (c) one `cdrflow aggregate` worker counting the same topic from the start,
//! and prints b/a and c/a, with each worker's peak memory.
//!
//! With `--peers` (what `benches/scripts/peers.sh` runs, after installing the Python peers), the
//! same run goes on with the peers side by side:
//! (d) ClickHouse's Kafka table engine with a materialized view into a summing table
//!     (`benches/sql/kafka_engine_peer.sql`) on the same topic: its rate, its totals against
//!     the ground truth, and its totals again after the server is SIGKILLed mid-topic;
//! (e) Parquet writing: cdrflow's encoder and pyarrow on the same rows (the archive of (b));
//! (f) rebuilding the counters from that archive: `cdrflow backfill` and DuckDB;
//! (g) freshness: a steady feed at each `--freshness-rates` (1 000 and 50 000 CDRs/s) into
//!     a fresh topic read at once by one aggregator (its default flush interval, unless
//!     `--freshness-flush-ms`) and by the Kafka engine; p50 and p99 seconds from a CDR's
//!     produce time to its call being visible to the dashboards (`counters_current`) and
//!     in the engine's table (`cdrflow_benches::freshness` says how), and the aggregator's
//!     inserts per second. `--freshness` runs (g) alone.
//!
//! ```sh
//! deploy/local/kafka.sh start && deploy/local/clickhouse.sh start
//! cargo run --release -p cdrflow-benches --bin pipeline -- --cdrs 1000000 --partitions 64
//! benches/scripts/peers.sh            # the same with --peers (starts Kafka and ClickHouse if needed)
//! ```
//! The broker is a real Kafka (`--brokers`, the local one of `deploy/local/kafka.sh` by
//! default). Each run produces the feed (lz4-compressed batches, as the generator's default)
//! into a fresh topic of its own, `bench-pipeline-PID-UNIXMS`, deleted at the end unless
//! `--keep-topics`. Worker times run from process start (group join included) until the
//! sink holds every partition up to its end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use cdrflow_benches::{
    CatchUp, Kafka, Totals, caught_up, cores, cpu_by_thread, cpu_per_message, cpu_seconds, peak_rss_mib, run, spawn,
    stop, wait_catch_up,
};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Parser)]
struct Args {
    /// Messages in the topic.
    #[arg(long, default_value_t = 1_000_000)]
    cdrs: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// Kafka bootstrap servers (`deploy/local/kafka.sh bootstrap`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Leave the run's topics on the broker at the end (they are deleted by default).
    #[arg(long)]
    keep_topics: bool,
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
    /// Also run the peers: ClickHouse's Kafka engine, pyarrow, DuckDB (see the module doc).
    #[arg(long)]
    peers: bool,
    /// The Python with pyarrow and duckdb (for --peers).
    #[arg(long, default_value = "python3")]
    python: String,
    /// A librdkafka property KEY=VALUE passed to both workers (repeatable), to try consumer
    /// tuning against the same raw baseline.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    /// Run only the freshness measurement (g), which --peers also runs.
    #[arg(long)]
    freshness: bool,
    /// Steady feed rates of the freshness measurement, CDRs a second.
    #[arg(long, value_delimiter = ',', default_value = "1000,50000")]
    freshness_rates: Vec<u64>,
    /// Seconds of steady feed at each rate (after 3 s of warm-up, not counted).
    #[arg(long, default_value_t = 20)]
    freshness_seconds: u64,
    /// The aggregator's flush interval in the freshness measurement (ms); its own default
    /// if not given.
    #[arg(long)]
    freshness_flush_ms: Option<u64>,
}

const DB: &str = "cdrflow_bench";
/// Where the workers serve `/metrics` during the bench (to see when they start consuming).
const INGEST_METRICS: &str = "127.0.0.1:19591";
const AGGREGATE_METRICS: &str = "127.0.0.1:19592";

fn main() -> Result<()> {
    let a = Args::parse();
    let work = std::env::temp_dir().join(format!("cdrflow-pipeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut kafka = Kafka::connect(&a.brokers)?;
    kafka.keep = a.keep_topics;
    let result = bench(&a, &mut kafka, &work);
    drop(kafka);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn bench(a: &Args, kafka: &mut Kafka, work: &Path) -> Result<()> {
    if !a.freshness {
        throughput(a, kafka, work)?;
    }
    if a.freshness || a.peers {
        for &rate in &a.freshness_rates {
            freshness(a, kafka, rate)?;
        }
    }
    Ok(())
}

/// (a) to (f).
fn throughput(a: &Args, kafka: &mut Kafka, work: &Path) -> Result<()> {
    let topic = kafka.fresh_topic("bench-pipeline", a.partitions)?;
    let topic = topic.as_str();
    println!("topic: {topic} ({} partitions) on {}", a.partitions, kafka.bootstrap);
    let truth = work.join("truth.jsonl");
    // The peers cannot dead-letter: with --peers every record is valid, for all alike.
    let bad_share = if a.peers { "0" } else { "0.005" };
    run(
        &a.cdrflow,
        &[
            "generate",
            "--cdrs",
            &a.cdrs.to_string(),
            "--seed",
            "7",
            "--resent-share",
            "0",
            "--bad-share",
            bad_share,
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            topic,
            "--partitions",
            &a.partitions.to_string(),
            "--truth",
            &truth.to_string_lossy(),
        ],
    )?;
    let (ends, total) = kafka.watermarks(topic, a.partitions)?;
    println!("topic: {total} messages in {} partitions", ends.len());
    if total != a.cdrs as i64 {
        bail!("the topic holds {total} messages, not the {} produced", a.cdrs);
    }

    // (a) raw consume: every message fetched, nothing done with it.
    // With the workers' consumer tuning and --kafka-option, so that only the work differs.
    let mut raw_config = ClientConfig::new();
    raw_config
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", format!("{topic}-raw-consume"))
        .set("enable.auto.commit", "false");
    for (key, value) in cdrflow_kafka::CONSUMER_TUNING {
        raw_config.set(*key, *value);
    }
    for kv in &a.kafka_options {
        let (key, value) = kv.split_once('=').context("--kafka-option takes KEY=VALUE")?;
        raw_config.set(key, value);
    }
    let c: BaseConsumer = raw_config.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let t = Instant::now();
    let cpu_before = cpu_seconds(std::process::id());
    let mut n = 0i64;
    let mut first_message = None;
    while n < total {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            first_message.get_or_insert_with(Instant::now);
            n += 1;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("raw consume stalled at {n}/{total}");
        }
    }
    let t_raw = t.elapsed();
    let raw = total as f64 / t_raw.as_secs_f64();
    // From its first message to its last: the span a worker's reading rate covers (neither
    // holds the first fetch's wait).
    let raw_reading = first_message.map_or(f64::NAN, |f| (total - 1) as f64 / f.elapsed().as_secs_f64());
    let raw_cpu = cpu_seconds(std::process::id()).zip(cpu_before).map(|(after, before)| after - before);
    drop(c);
    println!("(a) raw consume (librdkafka, no work): {raw:>10.0} msg/s");
    println!("    from its first message to its last: {raw_reading:>10.0} msg/s");
    // Measured: 0.51 s before the first message whether the topic held 1 M or 4 M CDRs,
    // from which librdkafka read at 2.5-3.0 M msg/s (benches/RESULTS.md §23).
    let wait = first_message.map_or(t_raw, |f| f.duration_since(t));
    if wait * 10 > t_raw {
        println!(
            "    note: {:.2} s of (a)'s {:.2} s passed before its first message (offsets looked up, the first \
             fetch): (a) understates librdkafka's pace and the ratios to it below flatter the workers; the reading \
             ones compare like with like",
            wait.as_secs_f64(),
            t_raw.as_secs_f64()
        );
    }
    if let Some(cpu) = raw_cpu {
        println!("    CPU: {:.2} µs/msg (this process, all threads)", cpu * 1e6 / total as f64);
    }

    let options: Vec<String> = a.kafka_options.iter().flat_map(|o| ["--kafka-option".to_owned(), o.clone()]).collect();

    // (b) one ingest worker.
    let (ingest_group, aggregate_group) = (format!("{topic}-ingest"), format!("{topic}-aggregate"));
    let out = work.join("archive");
    let out_s = out.to_string_lossy().into_owned();
    let t = Instant::now();
    let mut w = spawn(
        &a.cdrflow,
        &[
            "ingest",
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            topic,
            "--group",
            &ingest_group,
            "--out",
            &out_s,
            "--max-age-ms",
            &a.flush_ms.to_string(),
            "--metrics-addr",
            INGEST_METRICS,
        ]
        .into_iter()
        .chain(options.iter().map(String::as_str))
        .collect::<Vec<_>>(),
        &[("CDRFLOW_CALLER_KEY", "bench-key-0123456789abcdef")],
        None,
    )?;
    let archive = cdrflow_archive::Archive::open_dir(&out)?;
    let parts: Vec<i32> = (0..a.partitions as i32).collect();
    let ingest = wait_catch_up(&mut w, t, INGEST_METRICS, total as u64, Duration::from_secs(600), || {
        Ok(caught_up(&ends, &archive.committed_positions(topic, &parts)?))
    })?;
    let rss = peak_rss_mib(w.id()).unwrap_or(f64::NAN);
    let busy = cpu_seconds(w.id()).unwrap_or(f64::NAN) / ingest.whole.as_secs_f64();
    let threads = cpu_by_thread(w.id());
    stop(&mut w);
    let (whole, steady) = (ingest.rate(total), ingest.steady_rate(total));
    println!(
        "(b) one ingest worker:                 {whole:>10.0} msg/s   b/a = {:.2}   peak RSS {rss:.0} MiB",
        whole / raw
    );
    println!("    once consuming (start-up and group join excluded): {steady:>10.0} msg/s   b/a = {:.2}", steady / raw);
    print_reading(&ingest, total, raw_reading, "b/a");
    println!("    CPU used: {:.0} % of one core", busy * 100.0);
    print_cpu(&threads, total, ingest.machine_busy);

    // (b′) one ingest worker with every default: units close by rows (500 000), size or age
    // (30 s), so a catch-up of this length closes none until it is stopped, which writes
    // what it holds. Timed from spawn to exit, every partition committed.
    let out_default = work.join("archive-default-age");
    let out_default_s = out_default.to_string_lossy().into_owned();
    let group = format!("{topic}-ingest-default-age");
    let t = Instant::now();
    let mut w = spawn(
        &a.cdrflow,
        &["ingest", "--brokers", &kafka.bootstrap, "--topic", topic, "--group", &group, "--out", &out_default_s]
            .into_iter()
            .chain(["--metrics-addr", INGEST_METRICS])
            .chain(options.iter().map(String::as_str))
            .collect::<Vec<_>>(),
        &[("CDRFLOW_CALLER_KEY", "bench-key-0123456789abcdef")],
        None,
    )?;
    let read = wait_catch_up(&mut w, t, INGEST_METRICS, total as u64, Duration::from_secs(600), || {
        Ok(cdrflow_benches::consumed(INGEST_METRICS).is_some_and(|n| n >= total as u64))
    })?;
    let threads = cpu_by_thread(w.id());
    stop(&mut w);
    let whole = t.elapsed();
    // (e) and (f) read the archive of (b); this one is only counted.
    let default_archive = cdrflow_archive::Archive::open_dir(&out_default)?;
    if !caught_up(&ends, &default_archive.committed_positions(topic, &parts)?) {
        bail!("(b′) the ingest worker stopped without committing every partition to its end");
    }
    let files = default_archive.data_files()?.len();
    let last_write = whole.saturating_sub(read.whole).as_secs_f64();
    let written = CatchUp { whole, ..read };
    println!(
        "(b′) the same with every default (units of up to 30 s), stopped once it has read everything: {:>10.0} msg/s   b/a = {:.2}",
        written.rate(total),
        written.rate(total) / raw
    );
    println!(
        "    once consuming: {:>10.0} msg/s   b/a = {:.2}; {files} files; the last units written on stop took {:.2} s",
        written.steady_rate(total),
        written.steady_rate(total) / raw,
        last_write
    );
    println!("    (CPU until it had read everything: the write on stop is not in it)");
    print_cpu(&threads, total, written.machine_busy);

    // (c) one aggregator.
    let (ch, rt) = fresh_counters(a)?;
    let t = Instant::now();
    let mut w = spawn(
        &a.cdrflow,
        &aggregate_args(a, &kafka.bootstrap, topic, &aggregate_group)
            .iter()
            .map(String::as_str)
            .chain(["--flush-interval-ms", &a.flush_ms.to_string()])
            .chain(options.iter().map(String::as_str))
            .collect::<Vec<_>>(),
        &[],
        None,
    )?;
    let caught = wait_catch_up(&mut w, t, AGGREGATE_METRICS, total as u64, Duration::from_secs(600), || {
        Ok(caught_up(&ends, &rt.block_on(ch.positions(&aggregate_group, topic))?))
    })?;
    let aggregate = caught.rate(total);
    let steady = caught.steady_rate(total);
    let rss = peak_rss_mib(w.id()).unwrap_or(f64::NAN);
    let busy = cpu_seconds(w.id()).unwrap_or(f64::NAN) / caught.whole.as_secs_f64();
    let threads = cpu_by_thread(w.id());
    stop(&mut w);
    println!(
        "(c) one aggregator:                    {aggregate:>10.0} msg/s   c/a = {:.2}   peak RSS {rss:.0} MiB",
        aggregate / raw
    );
    println!("    once consuming (start-up and group join excluded): {steady:>10.0} msg/s   c/a = {:.2}", steady / raw);
    print_reading(&caught, total, raw_reading, "c/a");
    println!("    CPU used: {:.0} % of one core", busy * 100.0);
    print_cpu(&threads, total, caught.machine_busy);
    if !a.peers {
        return Ok(());
    }
    let truth = Totals::of_truth(&truth)?;
    let ours = rt.block_on(Totals::of_dashboards(&a.clickhouse, DB))?;
    println!("    totals: {ours} (ground truth: {truth}) {}", ours.verdict(&truth));

    // (d) ClickHouse's Kafka engine on the same topic of the same broker. (Debian's
    // ClickHouse 18.16 links the system's librdkafka, 2.0.2 on bookworm, which reads from
    // Kafka 4: see benches/RESULTS.md.)
    let peer = Peer::new(&a.clickhouse)?;
    let t = Instant::now();
    rt.block_on(peer.create(&kafka.bootstrap, topic, &format!("{topic}-ch-engine")))?;
    let limit = Duration::from_secs(600);
    loop {
        if rt.block_on(peer.totals())?.offered >= total as u64 {
            break;
        }
        if t.elapsed() > limit {
            bail!("ClickHouse's Kafka engine did not read the topic in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let engine = total as f64 / t.elapsed().as_secs_f64();
    let theirs = rt.block_on(peer.totals())?;
    println!(
        "(d) ClickHouse {} Kafka engine + MV:  {engine:>10.0} msg/s   c/d = {:.2}",
        rt.block_on(peer.version())?,
        aggregate / engine
    );
    println!("    d/a = {:.2} (same broker and topic as (a)-(c))", engine / raw);
    println!("    totals: {theirs} {}", theirs.verdict(&truth));
    // The same, with the server SIGKILLed a moment into the topic and started again.
    rt.block_on(peer.create(&kafka.bootstrap, topic, &format!("{topic}-ch-engine-restart")))?;
    // Kill it 4 s in: it has read much of the topic. On a topic of a million CDRs its first
    // flush (stream_flush_interval_ms, 7.5 s) has not landed yet; on a bigger one its first
    // full block (2^20 rows) may have, and the verdict shows whether the engine counts that
    // block again (it commits its offsets after the insert: at least once).
    std::thread::sleep(Duration::from_secs(4));
    let before = rt.block_on(peer.totals())?.offered;
    clickhouse_sh("kill")?;
    clickhouse_sh("start")?;
    let after = peer.settle(&rt, total as u64)?;
    println!("    after a SIGKILL at {before} rows and a restart: {after} {}", after.verdict(&truth));
    rt.block_on(peer.drop())?;

    // (e) Parquet writing on the same rows: cdrflow's encoder, then pyarrow.
    let lines = cdrflow_schemas::LineRegistry::builtin();
    let (mut rows, mut encode, mut arrow_only, mut size) = (0usize, Duration::ZERO, Duration::ZERO, 0usize);
    for f in archive.data_files()? {
        let cdrs = cdrflow_archive::read::read_file(archive.get(&f)?.into(), &lines)?;
        let refs: Vec<_> = cdrs.iter().collect();
        let t = Instant::now();
        let batch = cdrflow_archive::encode::record_batch(&refs, &lines)?;
        arrow_only += t.elapsed();
        size += cdrflow_archive::encode::parquet_bytes(&batch, &[])?.len();
        encode += t.elapsed();
        rows += cdrs.len();
    }
    println!(
        "(e) Parquet, same rows ({rows} in {} files): cdrflow Arrow append + zstd Parquet {:>10.0} rows/s ({:.0} rows/s Parquet alone, {} MiB)",
        archive.data_files()?.len(),
        rows as f64 / encode.as_secs_f64(),
        rows as f64 / (encode - arrow_only).as_secs_f64(),
        size >> 20
    );
    let py = python(a, "pyarrow_write.py", &out, &[])?;
    println!("    {py}");

    // (f) rebuilding the counters from the archive: cdrflow backfill, then DuckDB, on one
    // thread and on two.
    for threads in ["1", "2"] {
        let bf = run(
            &a.cdrflow,
            &[
                "backfill",
                "--from",
                &out_s,
                "--topic",
                topic,
                "--clickhouse",
                &a.clickhouse,
                "--database",
                DB,
                "--threads",
                threads,
            ],
        )?;
        println!("(f) rebuild from the archive: cdrflow backfill {}", String::from_utf8_lossy(&bf.stdout).trim());
        let rebuilt = rt.block_on(Totals::of_dashboards(&a.clickhouse, DB))?;
        println!("    totals after the rebuild: {rebuilt} {}", rebuilt.verdict(&truth));
        println!("    {}", python(a, "duckdb_counters.py", &out, &[threads])?);
    }
    Ok(())
}

/// (g) Freshness at one steady rate (see the module doc and `cdrflow_benches::freshness`).
fn freshness(a: &Args, kafka: &mut Kafka, rate: u64) -> Result<()> {
    use cdrflow_benches::freshness::{Sample, Summary, latencies};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    if rate == 0 || a.freshness_seconds == 0 {
        bail!("--freshness-rates and --freshness-seconds must be above 0");
    }
    const WARM_UP_S: u64 = 3;
    let topic = kafka.fresh_topic("bench-freshness", a.partitions)?;
    let topic = topic.as_str();
    let (warm, n) = ((rate * WARM_UP_S) as usize, (rate * (WARM_UP_S + a.freshness_seconds)) as usize);
    // The feed, made before the clock starts so that only producing is paced: every CDR
    // valid and counted once.
    let opts = cdrflow_feed::FeedOptions {
        cdrs: n as u64,
        seed: 11,
        bad_share: 0.0,
        resent_share: 0.0,
        ..cdrflow_feed::FeedOptions::default()
    };
    let mut feed = Vec::with_capacity(n);
    let mut g = cdrflow_feed::Generator::new(opts);
    while g.emit_next(&mut |m| {
        feed.push((m.key.to_vec(), m.payload.to_vec()));
        Ok(())
    })? {}

    // One aggregator with its defaults, except the flush interval if asked.
    let (_, rt) = fresh_counters(a)?;
    let mut args = aggregate_args(a, &kafka.bootstrap, topic, &format!("{topic}-aggregate"));
    if let Some(ms) = a.freshness_flush_ms {
        args.extend(["--flush-interval-ms".into(), ms.to_string()]);
    }
    // The effective flush interval, as the worker reports it.
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let dry = run(&a.cdrflow, &dry.iter().map(String::as_str).collect::<Vec<_>>())?;
    let flush_ms: u64 = String::from_utf8_lossy(&dry.stdout)
        .split("\"flush_interval_ms\":")
        .nth(1)
        .and_then(|t| t.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .context("`aggregate --dry-run` did not print flush_interval_ms")?;
    let mut w = spawn(&a.cdrflow, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[], None)?;
    let t = Instant::now();
    while !cdrflow_benches::ready(AGGREGATE_METRICS) {
        if t.elapsed() > Duration::from_secs(60) || w.try_wait()?.is_some() {
            stop(&mut w);
            bail!("the aggregator was not ready in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The Kafka engine on the same topic, given a moment to join its group.
    let peer = Peer::new(&a.clickhouse)?;
    rt.block_on(peer.create(&kafka.bootstrap, topic, &format!("{topic}-ch-engine")))?;
    std::thread::sleep(Duration::from_secs(3));

    // Each store sampled on its own thread every 100 ms (a fixed tick, whatever a query
    // takes) until it shows every call, or a minute after the feed ends.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = |store: Store| {
        let (url, done) = (a.clickhouse.clone(), done.clone());
        std::thread::spawn(move || -> Result<Vec<Sample>> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let peer = Peer::new(&url)?;
            let mut samples = Vec::new();
            let (mut tick, period) = (Instant::now(), Duration::from_millis(100));
            let mut finished_at = None;
            loop {
                let calls = match store {
                    Store::Ours => rt.block_on(Totals::of_dashboards(&url, DB))?.offered,
                    Store::KafkaEngine => rt.block_on(peer.totals())?.offered,
                };
                samples.push(Sample { at: Instant::now(), calls });
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    let end = *finished_at.get_or_insert_with(Instant::now);
                    if calls >= n as u64 || end.elapsed() > Duration::from_secs(60) {
                        return Ok(samples);
                    }
                }
                tick += period;
                std::thread::sleep(tick.saturating_duration_since(Instant::now()));
            }
        })
    };
    let samplers = [sampler(Store::Ours), sampler(Store::KafkaEngine)];

    // The feed at a steady rate; each CDR's produce time is when it is handed to the producer.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let pacer = cdrflow_feed::Pacer::new(Some(rate as f64));
    let mut produced = Vec::with_capacity(n);
    for (i, (key, payload)) in feed.iter().enumerate() {
        produced.push(Instant::now());
        let mut record = BaseRecord::to(topic).key(key.as_slice()).payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => bail!("producing the freshness feed: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
        pacer.after(i as u64 + 1);
    }
    let produce_s = produced[0].elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(30))?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let [ours, theirs] = samplers.map(|s| s.join().map_err(|_| anyhow::anyhow!("a sampler panicked")));
    let (ours, theirs) = (ours??, theirs??);
    let flushes: u64 = rt.block_on(async {
        clickhouse::Client::default()
            .with_url(&a.clickhouse)
            .with_validation(false)
            .query(&format!("SELECT toUInt64(uniqExact(flushed_at)) FROM {DB}.counters_log"))
            .fetch_one::<u64>()
            .await
    })?;
    stop(&mut w);
    rt.block_on(peer.drop())?;

    println!(
        "(g) freshness at {rate} CDRs/s ({n} CDRs in {produce_s:.1} s, the first {WARM_UP_S} s not counted; {} partitions; stores sampled every 100 ms)",
        a.partitions
    );
    let report = |name: &str, samples: &[Sample]| -> Option<Summary> {
        match latencies(&produced, samples, warm) {
            Some(l) => {
                let s = Summary::of(l);
                println!("    {name}: {s}");
                Some(s)
            }
            None => {
                println!(
                    "    {name}: showed {} of {n} calls a minute after the feed ended",
                    samples.last().map_or(0, |s| s.calls)
                );
                None
            }
        }
    };
    let ours = report("cdrflow aggregator, counters_current", &ours);
    let theirs = report("ClickHouse Kafka engine + MV       ", &theirs);
    println!(
        "    aggregator flush interval {flush_ms} ms: {flushes} inserts in {:.0} s = {:.2} inserts/s",
        produce_s,
        flushes as f64 / produce_s
    );
    if let Some(o) = ours {
        let goal = flush_ms as f64 / 1000.0 + 1.0;
        let vs = theirs.map_or("the engine never showed every call".to_owned(), |t| {
            format!("p99 {} the engine's ({:.2} s)", if o.p99 <= t.p99 { "≤" } else { "> (NOT MET)" }, t.p99)
        });
        println!(
            "    goal p99 ≤ flush interval + 1 s = {goal:.1} s: {}; {vs}",
            if o.p99 <= goal { "met" } else { "NOT MET" }
        );
    }
    Ok(())
}

/// The bench's counters database, dropped and migrated afresh, and a runtime to query it.
fn fresh_counters(a: &Args) -> Result<(ClickHouse, tokio::runtime::Runtime)> {
    let ch = ClickHouse::new(ClickHouseConfig::from_env(&a.clickhouse, DB)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        ch.drop_database().await?;
        ch.migrate().await
    })?;
    Ok((ch, rt))
}

/// A worker's reading rate, against the raw consume's over the same span (`raw_reading`:
/// first message to last), and its sink's last flush, which the two rates above include:
/// on a short topic that flush is much of the run.
fn print_reading(c: &cdrflow_benches::CatchUp, total: i64, raw_reading: f64, ratio: &str) {
    let reading = c.reading_rate(total);
    println!(
        "    reading (first consumed to last read): {reading:>10.0} msg/s   {ratio} = {:.2} (raw, the same span); then {:.2} s to its last flush",
        reading / raw_reading,
        c.last_flush().as_secs_f64()
    );
}

/// Where a worker's CPU went, per message and thread over its whole run, and how busy the
/// machine was once it consumed: a worker below the raw rate on a machine near 100 % is
/// bound by its CPU per message (the broker and ClickHouse share the cores here); one well
/// below 100 % waits on something.
fn print_cpu(threads: &std::collections::BTreeMap<String, f64>, total: i64, machine_busy: Option<f64>) {
    println!("    CPU by thread: {}", cpu_per_message(threads, total as u64));
    if let Some(b) = machine_busy {
        println!("    machine busy once consuming: {:.0} % of {} cores (every process)", b * 100.0, cores());
    }
}

/// `cdrflow aggregate` on `topic` as `group` into the bench's database, serving `/metrics`
/// and `/readyz` at [`AGGREGATE_METRICS`]; its flush interval is the caller's to add.
fn aggregate_args(a: &Args, brokers: &str, topic: &str, group: &str) -> Vec<String> {
    [
        "aggregate",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--group",
        group,
        "--clickhouse",
        &a.clickhouse,
        "--database",
        DB,
        "--metrics-addr",
        AGGREGATE_METRICS,
    ]
    .map(String::from)
    .to_vec()
}

/// Which store a freshness sampler looks at.
#[derive(Clone, Copy)]
enum Store {
    /// The aggregator's counters, as the dashboards read them.
    Ours,
    /// The Kafka engine peer's table.
    KafkaEngine,
}

/// ClickHouse's Kafka engine, set up from `benches/sql/kafka_engine_peer.sql`.
struct Peer {
    client: clickhouse::Client,
}

const PEER_DB: &str = "cdrflow_peer";

impl Peer {
    fn new(url: &str) -> Result<Peer> {
        Ok(Peer { client: clickhouse::Client::default().with_url(url).with_validation(false) })
    }

    async fn create(&self, brokers: &str, topic: &str, group: &str) -> Result<()> {
        self.drop().await?;
        for stmt in include_str!("../../sql/kafka_engine_peer.sql").split(';') {
            let sql: String = stmt.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
            if sql.trim().is_empty() {
                continue;
            }
            let sql = sql
                .replace("{db}", PEER_DB)
                .replace("{brokers}", brokers)
                .replace("{topic}", topic)
                .replace("{group}", group);
            self.client.query(&sql).execute().await.with_context(|| format!("peer DDL: {sql}"))?;
        }
        Ok(())
    }

    async fn drop(&self) -> Result<()> {
        self.client.query(&format!("DROP DATABASE IF EXISTS {PEER_DB}")).execute().await?;
        Ok(())
    }

    async fn version(&self) -> Result<String> {
        Ok(self.client.query("SELECT version()").fetch_one::<String>().await?)
    }

    async fn totals(&self) -> Result<Totals> {
        let sql = format!(
            "SELECT toUInt64(sum(offered)) AS offered, toUInt64(sum(answered)) AS answered, toUInt64(sum(abandoned)) AS abandoned FROM {PEER_DB}.hourly"
        );
        Ok(self.client.query(&sql).fetch_one::<Totals>().await?)
    }

    /// Totals once they reach `total` calls and then stay put for 15 s (or stop moving
    /// for 120 s short of it: the killed consumer holds its partitions until its session
    /// times out, 45 s by librdkafka's default).
    fn settle(&self, rt: &tokio::runtime::Runtime, total: u64) -> Result<Totals> {
        let (mut last, mut since) = (Totals::default(), Instant::now());
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let Ok(now) = rt.block_on(self.totals()) else { continue };
            if now != last {
                (last, since) = (now, Instant::now());
            } else if (last.offered >= total && since.elapsed() > Duration::from_secs(15))
                || since.elapsed() > Duration::from_secs(120)
                || started.elapsed() > Duration::from_secs(600)
            {
                return Ok(last);
            }
        }
    }
}

fn clickhouse_sh(action: &str) -> Result<()> {
    let s = std::process::Command::new("deploy/local/clickhouse.sh").arg(action).status()?;
    if !s.success() {
        bail!("deploy/local/clickhouse.sh {action} failed");
    }
    Ok(())
}

fn python(a: &Args, script: &str, archive: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(&a.python)
        .arg(format!("benches/scripts/peers/{script}"))
        .arg(archive)
        .args(args)
        .output()
        .with_context(|| format!("running {} (install pyarrow and duckdb: benches/scripts/peers.sh does)", a.python))?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
