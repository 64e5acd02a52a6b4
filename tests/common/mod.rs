//! Test harness: real processes on real parts — the real Apache Kafka broker started by
//! `deploy/local/kafka.sh` (one shared node; a private three-node cluster for broker-loss
//! tests), Debian's ClickHouse started by `deploy/local/clickhouse.sh`, and `cdrflow`
//! workers that tests kill with SIGKILL. librdkafka's mock cluster (`cdrflow broker`) is
//! tested on its own (`tests/broker.rs`) and by the demo's `--embedded-broker`, nowhere else.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use cdrflow_feed::TruthRow;
use cdrflow_schemas::{HourKey, LineRegistry, RegionCode};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub const BIN: &str = env!("CARGO_BIN_EXE_cdrflow");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The local Apache Kafka: the shared one-node cluster the test command starts
/// (`deploy/local/kafka.sh start`), or a private cluster of its own (stopped on drop).
pub struct Kafka {
    pub bootstrap: String,
    /// For a private cluster: its instance name and directory, and its first client port.
    private: Option<(String, PathBuf, u16)>,
}

impl Kafka {
    /// The shared broker; every test makes topics of its own on it ([`Kafka::topic`]).
    pub fn shared() -> Kafka {
        let out = Command::new("bash")
            .arg(repo().join("deploy/local/kafka.sh"))
            .arg("bootstrap")
            .stderr(Stdio::inherit())
            .output()
            .expect("bash deploy/local/kafka.sh");
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let k = Kafka { bootstrap, private: None };
        assert!(
            out.status.success() && k.script(&["status"]),
            "the local Kafka is not running: run the tests with deploy/local/test.sh (or deploy/local/kafka.sh start)"
        );
        k
    }

    /// A private cluster of `nodes` nodes (replication 3 and min.insync.replicas 2 with three),
    /// its data under `dir`, clients on `port`, `port + 2`, …; stopped on drop.
    pub fn private(dir: &Path, port: u16, nodes: u32) -> Kafka {
        let mut k = Kafka { bootstrap: String::new(), private: Some(("test".into(), dir.to_owned(), port)) };
        let out = k.command(&["start", "--nodes", &nodes.to_string()]).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "a private Kafka cluster of {nodes} nodes starts");
        k.bootstrap = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
        k
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("deploy/local/kafka.sh")).args(args);
        if let Some((instance, dir, port)) = &self.private {
            cmd.env("CDRFLOW_KAFKA_INSTANCE", instance)
                .env("CDRFLOW_KAFKA_DIR", dir)
                .env("CDRFLOW_KAFKA_PORT", port.to_string());
        }
        cmd
    }

    /// Runs `deploy/local/kafka.sh ARGS` on this cluster; whether it succeeded.
    pub fn script(&self, args: &[&str]) -> bool {
        self.command(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    }

    /// SIGKILLs node `n` of a private cluster.
    pub fn kill(&self, n: u32) {
        assert!(self.script(&["kill", &n.to_string()]), "kafka.sh kill {n}");
    }

    /// Brings node `n` back on its data and waits until it has caught up.
    pub fn restart(&self, n: u32) {
        let ok =
            self.command(&["restart", &n.to_string()]).stdout(Stdio::null()).stderr(Stdio::inherit()).status().unwrap();
        assert!(ok.success(), "kafka.sh restart {n}");
    }

    /// Starts every node of a private cluster that is down (after all were killed: one node
    /// alone has no controller quorum, so they come back together).
    pub fn start_again(&self) {
        let ok = self.command(&["start"]).stdout(Stdio::null()).stderr(Stdio::inherit()).status().unwrap();
        assert!(ok.success(), "kafka.sh start");
    }

    /// Stops every node (SIGTERM).
    pub fn stop(&self) {
        assert!(self.script(&["stop"]), "kafka.sh stop");
    }

    /// The directory of node `n`'s log segments of one partition (a private cluster's).
    pub fn partition_dir(&self, n: u32, topic: &str, partition: i32) -> PathBuf {
        let (_, dir, _) = self.private.as_ref().expect("a private cluster");
        dir.join(format!("node-{n}/data/{topic}-{partition}"))
    }

    /// Produces every line of `file` as a message with the Java producer from the broker's
    /// own jars (not librdkafka), batches compressed with `codec`.
    pub fn produce_with_java(&self, topic: &str, codec: &str, file: &Path) {
        let out = self.command(&["produce", "--topic", topic, "--compression", codec]).arg(file).output().unwrap();
        assert!(out.status.success(), "the Java producer ({codec}): {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The node that leads `partition` of `topic`.
    pub fn leader(&self, topic: &str, partition: i32) -> u32 {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        md.topics()[0].partitions().iter().find(|p| p.id() == partition).unwrap().leader() as u32
    }

    /// A new topic of `partitions` partitions, named after `what` and unique to this run.
    pub fn topic(&self, what: &str, partitions: i32) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("{what}-{}-{}", std::process::id(), nanos % 1_000_000_000_000);
        let settings = cdrflow_kafka::KafkaSettings { brokers: self.bootstrap.clone(), extra: Vec::new() };
        cdrflow_kafka::admin::ensure_topic(&settings, &name, partitions).unwrap();
        name
    }

    /// Deletes `topic` and makes it again, empty, with `partitions` partitions (what an
    /// operator does to change a topic's partitions or to clear it).
    pub fn recreate_topic(&self, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in runtime().block_on(admin.delete_topics(&[topic], &opts)).unwrap() {
            r.unwrap_or_else(|(t, e)| panic!("deleting {t}: {e}"));
        }
        // The broker removes a deleted topic's partitions asynchronously; until it has, the
        // name cannot be created again.
        let settings = cdrflow_kafka::KafkaSettings { brokers: self.bootstrap.clone(), extra: Vec::new() };
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        wait_until(Duration::from_secs(60), "the topic to be made again", || {
            cdrflow_kafka::admin::ensure_topic(&settings, topic, partitions).is_ok()
                && (0..partitions)
                    .all(|p| c.fetch_watermarks(topic, p, Duration::from_secs(5)).is_ok_and(|w| w == (0, 0)))
        });
    }

    /// Deletes the records of `partition` before `offset` (what retention does to records
    /// older than it).
    pub fn delete_records_before(&self, topic: &str, partition: i32, offset: i64) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset)).unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let done = runtime().block_on(admin.delete_records(&tpl, &opts)).unwrap();
        for e in done.elements() {
            assert!(e.error().is_ok(), "deleting records of {topic}/{partition}: {:?}", e.error());
        }
    }

    /// High watermark per partition.
    pub fn watermarks(&self, topic: &str, partitions: u32) -> HashMap<i32, i64> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        (0..partitions as i32).map(|p| (p, c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)).collect()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if self.private.is_some() {
            self.script(&["stop"]);
        }
    }
}

/// A ClickHouse server for a test. The shared one (127.0.0.1:8123, started by the test
/// command) unless a test needs one of its own to restart.
pub struct Server {
    pub http_port: u16,
    pub tcp_port: u16,
    /// Set for a private server: its directory (stopped on drop).
    own_dir: Option<PathBuf>,
    /// For a private server: the most parts a partition may have before inserts fail.
    parts_limit: Option<u32>,
    /// For a private server: the longest an insert into a partition of many parts is held
    /// back (seconds; ClickHouse's `max_delay_to_insert`).
    insert_delay_s: Option<u32>,
}

impl Server {
    pub fn shared() -> Server {
        let s = Server { http_port: 8123, tcp_port: 9000, own_dir: None, parts_limit: None, insert_delay_s: None };
        assert!(
            s.script("status"),
            "ClickHouse is not running on 127.0.0.1:8123: run the tests with deploy/local/test.sh (or deploy/local/clickhouse.sh start)"
        );
        s
    }

    /// A private server on its own ports and data directory, for tests that restart it.
    pub fn private(dir: &Path, http_port: u16, tcp_port: u16) -> Server {
        Server::start_private(dir, http_port, tcp_port, None, None)
    }

    /// A private server that refuses inserts into a partition of more than `parts` parts.
    pub fn private_with_parts_limit(dir: &Path, http_port: u16, tcp_port: u16, parts: u32) -> Server {
        Server::start_private(dir, http_port, tcp_port, Some(parts), None)
    }

    /// A private server that refuses inserts into a partition of 10 parts, and holds back
    /// an insert into one of 9 for `delay_s` seconds (between 7 and 9 parts the delay grows
    /// as ClickHouse's `max_delay_to_insert` rule says: `(delay_s * 1000) ^ ((parts - 6) / 3)` ms).
    pub fn private_with_slow_inserts(dir: &Path, http_port: u16, tcp_port: u16, delay_s: u32) -> Server {
        Server::start_private(dir, http_port, tcp_port, Some(10), Some(delay_s))
    }

    fn start_private(
        dir: &Path,
        http_port: u16,
        tcp_port: u16,
        parts_limit: Option<u32>,
        insert_delay_s: Option<u32>,
    ) -> Server {
        let s = Server { http_port, tcp_port, own_dir: Some(dir.to_owned()), parts_limit, insert_delay_s };
        assert!(s.script("start"), "private ClickHouse starts");
        s
    }

    /// Runs one statement with clickhouse-client.
    pub fn query(&self, sql: &str) -> String {
        let o = Command::new("clickhouse-client")
            .args(["--port", &self.tcp_port.to_string(), "--query", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{sql}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn script(&self, action: &str) -> bool {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("deploy/local/clickhouse.sh")).arg(action);
        cmd.env("CDRFLOW_CH_HTTP_PORT", self.http_port.to_string())
            .env("CDRFLOW_CH_TCP_PORT", self.tcp_port.to_string());
        if let Some(d) = &self.own_dir {
            cmd.env("CDRFLOW_LOCAL_DIR", d);
        }
        if let Some(s) = self.insert_delay_s {
            cmd.env("CDRFLOW_CH_MAX_DELAY_TO_INSERT", s.to_string());
        }
        if let Some(p) = self.parts_limit {
            cmd.env("CDRFLOW_CH_PARTS_TO_THROW_INSERT", p.to_string());
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A fresh database (dropped first) with cdrflow's schema, migrated by `cdrflow migrate`.
    pub fn fresh_database(&self, name: &str) -> ClickHouse {
        let db = format!("t_{name}");
        let ch = ClickHouse::new(ClickHouseConfig {
            url: self.url(),
            user: "default".into(),
            password: None,
            database: db.clone(),
            insert_quorum: 0,
            insert_timeout: cdrflow_aggregate::clickhouse::config::INSERT_TIMEOUT,
        });
        let out = Command::new("clickhouse-client")
            .args(["--port", &self.tcp_port.to_string(), "--query", &format!("DROP DATABASE IF EXISTS {db}")])
            .status()
            .unwrap();
        assert!(out.success());
        let status = Command::new(BIN)
            .args(["migrate", "--clickhouse", &self.url(), "--database", &db])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "cdrflow migrate");
        ch
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.own_dir.is_some() {
            self.script("stop");
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The ground truth written by `cdrflow generate --truth`.
pub fn read_truth(path: &Path) -> BTreeMap<(u8, String, String), TruthRow> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let r: TruthRow = serde_json::from_str(l).unwrap();
            ((r.region, r.line.clone(), r.hour.clone()), r)
        })
        .collect()
}

/// What ClickHouse holds, in the truth file's shape. `rt` must be the runtime the client
/// was first used on: its pooled connections belong to that runtime.
pub fn stored_as_truth(
    rt: &tokio::runtime::Runtime,
    ch: &ClickHouse,
    group: Option<&str>,
) -> BTreeMap<(u8, String, String), TruthRow> {
    let lines = LineRegistry::builtin();
    rt.block_on(ch.stored_counters(group))
        .unwrap()
        .into_iter()
        .map(|(region, line, hour, c)| {
            let key = HourKey { region: RegionCode(region), line: lines.by_id(&line).expect("known line"), hour };
            let r = TruthRow::new(&key, &c, &lines);
            ((r.region, r.line.clone(), r.hour.clone()), r)
        })
        .collect()
}

/// Asserts two counter sets are equal, naming the first differing row.
pub fn assert_same_counters(
    got: &BTreeMap<(u8, String, String), TruthRow>,
    want: &BTreeMap<(u8, String, String), TruthRow>,
) {
    for (k, w) in want {
        match got.get(k) {
            None => panic!("row {k:?} is missing (want offered={})", w.offered),
            Some(g) => assert_eq!(g, w, "row {k:?} differs"),
        }
    }
    for k in got.keys() {
        assert!(want.contains_key(k), "row {k:?} is not in the truth");
    }
}

/// Runs `cdrflow generate` to completion.
pub fn generate(args: &[&str]) {
    let status = Command::new(BIN).arg("generate").args(args).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "cdrflow generate {args:?}");
}

/// Spawns a `cdrflow` subcommand with its logs in `log`.
/// A `cdrflow` process started by a test. Dropping it kills it, so a test that fails
/// midway leaves no worker or feed running into the tests after it.
pub struct Worker(pub Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn(args: &[String], log: &Path) -> Worker {
    spawn_with_env(args, log, &[])
}

/// [`spawn`] with extra environment variables (secrets such as the caller key).
pub fn spawn_with_env(args: &[String], log: &Path, envs: &[(&str, &str)]) -> Worker {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("CDRFLOW_LOG", "info").stdout(Stdio::null()).stderr(f);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Worker(cmd.spawn().unwrap())
}

/// Starts `cdrflow generate` streaming `cdrs` messages at `rate` per second to `topic`, a
/// `resent_share` of them re-sent, with its ground truth at `truth`.
#[allow(clippy::too_many_arguments)]
pub fn stream_feed(
    bootstrap: &str,
    topic: &str,
    cdrs: u64,
    seed: u64,
    rate: u64,
    resent_share: f64,
    truth: &Path,
    log: &Path,
) -> Worker {
    let args: Vec<String> = [
        "generate",
        "--cdrs",
        &cdrs.to_string(),
        "--seed",
        &seed.to_string(),
        "--resent-share",
        &resent_share.to_string(),
        "--rate",
        &rate.to_string(),
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--truth",
        truth.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    spawn(&args, log)
}

/// Starts a worker `kills` times and SIGKILLs it each time while it works: after its log
/// shows an assignment, `min_ms` + a random 0–2.5 s later. `start(i)` spawns worker `i` and
/// returns it with its log; `during(i)` runs between the assignment and the kill.
pub fn kill_while_working(
    kills: usize,
    jitter: &mut Jitter,
    min_ms: u64,
    mut start: impl FnMut(usize) -> (Worker, PathBuf),
    mut during: impl FnMut(usize),
) {
    for i in 0..kills {
        let (mut worker, log) = start(i);
        wait_until_logged(Duration::from_secs(60), "an assignment", &log, || holds_partitions(&log));
        during(i);
        std::thread::sleep(Duration::from_millis(min_ms + jitter.below(2500)));
        sigkill(&mut worker);
    }
}

/// Whether a worker's log shows it was assigned at least one partition. (An assignment can
/// be empty: under KIP-848's consumer protocol librdkafka reports one after every revoke.)
pub fn holds_partitions(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("partitions assigned") && !l.contains("partitions=[]"))
}

pub fn sigkill(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

/// SIGTERM, then waits; returns whether it exited 0.
pub fn sigterm(child: &mut Child) -> bool {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap().success()
}

/// Waits until `done` holds, polling; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// [`wait_until`], but a timeout also shows the last lines of the worker's `log`, so a CI
/// failure says what the worker was doing.
pub fn wait_until_logged(limit: Duration, what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("timed out after {limit:?} waiting for {what}; the last lines of {}:\n{tail}", log.display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The summary `cdrflow generate` wrote beside its ground truth at `truth`.
pub fn feed_summary(truth: &Path) -> cdrflow_feed::FeedSummary {
    let path = format!("{}.summary.json", truth.display());
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))).unwrap()
}

/// Asserts that the archive holds every valid record of `topic`'s feed once: each of its
/// `partitions` in contiguous units, exactly the files the commit markers list and no
/// other, their rows the manifests' rows, and no call id twice.
pub fn assert_archive_exact(
    archive: &cdrflow_archive::Archive,
    topic: &str,
    partitions: i32,
    summary: &cdrflow_feed::FeedSummary,
) {
    let (mut listed, mut manifest_rows) = (Vec::new(), 0);
    for p in 0..partitions {
        let units = archive.committed(topic, p).unwrap();
        let ranges: Vec<(i64, i64)> = units.iter().map(|u| (u.first_offset, u.last_offset)).collect();
        for w in ranges.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0, "units of partition {p} are contiguous: {ranges:?}");
        }
        for u in units {
            manifest_rows += u.rows;
            listed.extend(u.files.into_iter().map(|f| f.path));
        }
    }
    listed.sort();
    let files = archive.data_files().unwrap();
    assert_eq!(files, listed, "exactly the committed files are in {}", archive.describe());
    assert_eq!(manifest_rows, summary.valid_messages, "the commit markers count every valid record once");
    let contents = read_parquet_files(files.iter().map(|f| archive.get(f).unwrap()));
    let doubled: Vec<_> = contents.call_ids.iter().filter(|(_, n)| **n > 1).take(3).collect();
    assert!(doubled.is_empty(), "call ids archived twice: {doubled:?}");
    assert_eq!(contents.rows, summary.valid_messages, "every valid record, once");
}

/// A tiny deterministic random source for kill timings (no extra dependency).
pub struct Jitter(pub u64);
impl Jitter {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What an archive holds, read back with the parquet crate.
pub struct ArchiveContents {
    pub rows: u64,
    pub call_ids: std::collections::HashMap<String, u32>,
    /// Every text and binary value of every row, for scanning.
    pub texts: Vec<Vec<u8>>,
    pub parquet_files: usize,
    /// Each row's source message: (Kafka partition, offset).
    pub sources: Vec<(i32, i64)>,
}

/// Every Parquet file under a local archive directory, read back.
pub fn read_archive(dir: &Path) -> ArchiveContents {
    read_parquet_files(
        files_under(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .map(|f| std::fs::read(f).unwrap()),
    )
}

/// These Parquet files' contents, read back (panics on a file that is not whole).
pub fn read_parquet_files(files: impl IntoIterator<Item = Vec<u8>>) -> ArchiveContents {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Int32Type, Int64Type};
    let mut out = ArchiveContents {
        rows: 0,
        call_ids: Default::default(),
        texts: Vec::new(),
        parquet_files: 0,
        sources: Vec::new(),
    };
    for f in files {
        out.parquet_files += 1;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(f))
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            out.rows += batch.num_rows() as u64;
            let ids = batch.column_by_name("call_id").unwrap().as_string::<i32>();
            for i in 0..ids.len() {
                *out.call_ids.entry(ids.value(i).to_owned()).or_default() += 1;
            }
            let partitions = batch.column_by_name("kafka_partition").unwrap().as_primitive::<Int32Type>();
            let offsets = batch.column_by_name("kafka_offset").unwrap().as_primitive::<Int64Type>();
            out.sources.extend(partitions.values().iter().copied().zip(offsets.values().iter().copied()));
            for col in batch.columns() {
                match col.data_type() {
                    DataType::Utf8 => {
                        let a = col.as_string::<i32>();
                        out.texts
                            .extend((0..a.len()).filter(|&i| a.is_valid(i)).map(|i| a.value(i).as_bytes().to_vec()));
                    }
                    DataType::FixedSizeBinary(_) => {
                        let a = col.as_fixed_size_binary();
                        out.texts.extend((0..a.len()).filter(|&i| a.is_valid(i)).map(|i| a.value(i).to_vec()));
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// Caller numbers (digits only, last ten) of a generated feed, regenerated from its seed.
pub fn generated_callers(args: &[&str]) -> std::collections::HashSet<String> {
    let out = Command::new(BIN).arg("generate").args(args).stderr(Stdio::null()).output().unwrap();
    let mut callers = std::collections::HashSet::new();
    for line in out.stdout.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if let Some(c) = v["caller"].as_str() {
            let digits: String = c.chars().filter(char::is_ascii_digit).collect();
            if digits.len() >= 10 {
                callers.insert(digits[digits.len() - 10..].to_owned());
            }
        }
    }
    callers
}

/// Asserts that no caller number appears in any of these byte strings.
pub fn assert_no_callers(callers: &std::collections::HashSet<String>, haystacks: &[Vec<u8>], what: &str) {
    for h in haystacks {
        let text = String::from_utf8_lossy(h);
        // Every run of ten digits in the text, checked against the callers.
        let digits: Vec<char> = text.chars().collect();
        for w in digits.windows(10) {
            if w.iter().all(char::is_ascii_digit) {
                let s: String = w.iter().collect();
                assert!(!callers.contains(&s), "a raw caller number ({s}) appears in {what}");
            }
        }
    }
}

/// GET `path` from 127.0.0.1:`port`; `None` until something answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// The value of one Prometheus series in a scrape (sums every matching line).
pub fn metric(scrape: &str, name_and_labels_prefix: &str) -> u64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name_and_labels_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A TCP relay to `upstream` that can be cut: while down it drops every connection, open or
/// new, so the client sees its store vanish from the network and come back.
pub struct Relay {
    pub port: u16,
    /// Milliseconds each chunk waits before it is passed on (a slow network or server).
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A stall: armed with a pattern, it holds every chunk from the first one that holds
    /// the pattern on ([`Relay::hold_from`]).
    hold: std::sync::Arc<std::sync::Mutex<Hold>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn start(upstream: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hold = std::sync::Arc::new(std::sync::Mutex::new(Hold::Off));
        let (d, o, slow, held) = (down.clone(), open.clone(), delay_ms.clone(), hold.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                o.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let (slow, held) = (slow.clone(), held.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            loop {
                                let mut h = held.lock().unwrap();
                                if let Hold::Armed(p) = &*h
                                    && buf[..n].windows(p.len()).any(|w| w == p.as_slice())
                                {
                                    *h = Hold::Holding;
                                }
                                if !matches!(*h, Hold::Holding) {
                                    break;
                                }
                                drop(h);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            let ms = slow.load(Ordering::SeqCst);
                            if ms > 0 {
                                std::thread::sleep(Duration::from_millis(ms));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, delay_ms, hold, down, open }
    }

    /// Stalls the store from the first chunk that holds `pattern` (say, the path of an
    /// archive's intent markers): that chunk and every later one, either way, on every
    /// connection, wait until [`Relay::release`].
    pub fn hold_from(&self, pattern: &[u8]) {
        *self.hold.lock().unwrap() = Hold::Armed(pattern.to_vec());
    }

    /// Whether a chunk has met the pattern and the store is stalled.
    pub fn holding(&self) -> bool {
        matches!(*self.hold.lock().unwrap(), Hold::Holding)
    }

    /// Ends the stall: the held chunks go on.
    pub fn release(&self) {
        *self.hold.lock().unwrap() = Hold::Off;
    }

    /// Cuts every open connection and refuses new ones until [`Relay::up`].
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delays every chunk in both directions by `ms` (0: no delay).
    pub fn slow(&self, ms: u64) {
        self.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A [`Relay`]'s stall.
enum Hold {
    Off,
    /// Holding from the first chunk that holds these bytes.
    Armed(Vec<u8>),
    Holding,
}

/// One message of a topic: where it is, its headers, key and payload.
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub headers: HashMap<String, String>,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Every message of `topic`: each partition read from its start up to its high watermark as
/// it stood when called, however slowly the broker answers (a reader that stopped at the
/// first quiet spell could miss the last messages on a loaded machine and blame the
/// worker). Panics, naming the partitions, if they are not all read within 120 s.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Record> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "topic-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "10485760")
        .create()
        .unwrap();
    let parts = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap().topics()[0].partitions().len() as i32;
    let mut tpl = rdkafka::TopicPartitionList::new();
    // The next offset each partition must reach.
    let mut left: HashMap<i32, i64> = HashMap::new();
    for p in 0..parts {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        if high > low {
            left.insert(p, high);
        }
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "messages of {topic} not all read in 120 s: partitions (next offset to reach) {left:?}"
        );
        let Some(Ok(m)) = c.poll(Duration::from_millis(300)) else { continue };
        if left.get(&m.partition()).is_some_and(|&high| m.offset() + 1 >= high) {
            left.remove(&m.partition());
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_owned(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            headers,
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    out
}

/// Peak resident memory of a live process, in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024
}

/// The caller-hashing key tests give ingest workers (scanned for in every output).
pub const CALLER_KEY: &str = "test-caller-key-0123456789";

/// `cdrflow ingest` of `topic` into `out` as `group`: 6 s sessions and small, quick units
/// (700 ms, 5 000 rows), then `extra`. Its dead letters go to `<topic>.dlq`.
pub fn ingest_args(bootstrap: &str, topic: &str, out: &Path, group: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "ingest",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--session-timeout-ms",
        "6000",
        "--max-age-ms",
        "700",
        "--max-rows",
        "5000",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `cdrflow aggregate` of `topic` as `group` into database `db` of the ClickHouse at `url`,
/// with 6 s sessions, then `extra`.
pub fn aggregate_args(bootstrap: &str, topic: &str, url: &str, db: &str, group: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "aggregate",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--session-timeout-ms",
        "6000",
        "--clickhouse",
        url,
        "--database",
        db,
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// An ingest worker with the test caller key.
pub fn spawn_ingest(args: &[String], log: &Path) -> Worker {
    spawn_with_env(args, log, &[("CDRFLOW_CALLER_KEY", CALLER_KEY)])
}

/// The archive's committed positions per partition of `topic` (next offset), from its commit
/// markers.
pub fn archive_positions(out: &Path, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let a = cdrflow_archive::Archive::open_dir(out).unwrap();
    a.committed_positions(topic, &(0..partitions).collect::<Vec<_>>()).unwrap()
}

/// The Kafka group protocol a worker joins its group with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The classic protocol (librdkafka's default): the client owns the session timeout.
    Classic,
    /// KIP-848's (`group.protocol=consumer`): the broker owns the session (6 s on the local
    /// broker, like the tests' `--session-timeout-ms 6000`) and assigns incrementally.
    Consumer,
}

impl GroupProtocol {
    /// Its name, for a test's consumer group: a group is the broker's, across topics, so
    /// tests that may run at once each join their own.
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }

    /// The worker arguments that select it (none for the classic protocol).
    pub fn args(self) -> &'static [&'static str] {
        match self {
            GroupProtocol::Classic => &[],
            GroupProtocol::Consumer => &["--kafka-option", "group.protocol=consumer"],
        }
    }
}

/// A ClickHouse cluster of its own: ZooKeeper and 2 shards × 2 replicas of Debian's 18.16
/// (`deploy/local/clickhouse-cluster.sh`), its data under a test's directory; stopped on drop.
pub struct Cluster {
    dir: PathBuf,
    /// HTTP URLs: shard 1 replica 1, shard 1 replica 2, shard 2 replica 1, shard 2 replica 2.
    pub urls: Vec<String>,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        let mut c = Cluster { dir: dir.to_owned(), urls: Vec::new() };
        let out = c.command(&["start"]).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "the ClickHouse cluster starts");
        let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
        c.urls = last.trim().split(',').map(str::to_owned).collect();
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("deploy/local/clickhouse-cluster.sh")).args(args).env("CDRFLOW_LOCAL_DIR", &self.dir);
        cmd
    }

    /// SIGKILLs server `n` (1–4, in the order of [`Cluster::urls`]).
    pub fn kill(&self, n: u32) {
        assert!(self.command(&["kill", &n.to_string()]).status().unwrap().success(), "kill {n}");
    }

    /// Starts server `n` again on its data.
    pub fn restart(&self, n: u32) {
        assert!(self.command(&["restart", &n.to_string()]).status().unwrap().success(), "restart {n}");
    }

    /// The native port of server `n`.
    pub fn tcp_port(&self, n: u32) -> u16 {
        let http: u16 = self.urls[n as usize - 1].rsplit(':').next().unwrap().parse().unwrap();
        http - 8131 + 9131
    }

    /// Runs one statement on server `n` with clickhouse-client.
    pub fn query(&self, n: u32, sql: &str) -> String {
        let o = Command::new("clickhouse-client")
            .args(["--port", &self.tcp_port(n).to_string(), "--query", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "server {n}: {sql}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A client of server `n` for `database`, with quorum writes and consistent reads.
    pub fn client(&self, n: u32, database: &str) -> ClickHouse {
        ClickHouse::new(ClickHouseConfig {
            url: self.urls[n as usize - 1].clone(),
            user: "default".into(),
            password: None,
            database: database.to_owned(),
            insert_quorum: 2,
            insert_timeout: cdrflow_aggregate::clickhouse::config::INSERT_TIMEOUT,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// A test's temporary directory, kept (and named on stderr) when the test fails, with the
/// last lines of each log in it (`*.log`, one level of folders deep) printed: what a CI run,
/// whose machine is gone afterwards, leaves to read. `CDRFLOW_KEEP_TEST_DIRS=1` keeps it
/// when the test passes too (to read what a passing run logged).
pub struct TestDir(Option<tempfile::TempDir>);

/// Lines of each log a failed test prints.
const LOG_TAIL: usize = 40;

impl TestDir {
    pub fn new() -> TestDir {
        TestDir(Some(tempfile::tempdir().unwrap()))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if !failed && std::env::var_os("CDRFLOW_KEEP_TEST_DIRS").is_none() {
            return;
        }
        let Some(d) = self.0.take() else { return };
        let kept = d.keep();
        if !failed {
            eprintln!("the test's files are kept in {}", kept.display());
            return;
        }
        eprintln!("the failed test's files are kept in {}", kept.display());
        // One level deep: a private Kafka's segment files (`*.log` too) lie deeper.
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&kept)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .flat_map(|p| match p.is_dir() {
                true => std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()).collect(),
                false => vec![p],
            })
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- the last {} lines of {} ---", LOG_TAIL.min(lines.len()), log.display());
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An S3 server in its own process (moto's `moto_server`, PyPI: state in memory, gone when
/// it stops), with one bucket.
pub struct S3Server {
    pub port: u16,
    child: Child,
}

impl S3Server {
    pub fn start(log: &Path, bucket: &str) -> S3Server {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("moto_server runs (deploy/local/test.sh installs it: pip install 'moto[server]')");
        wait_until(Duration::from_secs(30), "moto_server to listen", || http_get(port, "/").is_some());
        // Create the bucket: an S3 CreateBucket is a PUT on /BUCKET.
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "CreateBucket: {reply}");
        S3Server { port, child }
    }

    /// An ingest worker's environment: its archive's store at `endpoint_port` (the server,
    /// or a relay to it) and the caller key.
    pub fn worker_env(endpoint_port: u16) -> Vec<(&'static str, String)> {
        let mut env = Self::env(endpoint_port);
        env.push(("CDRFLOW_CALLER_KEY", CALLER_KEY.into()));
        env
    }

    /// The environment of a client of the server at `endpoint_port` (it, or a relay to it).
    pub fn env(endpoint_port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{endpoint_port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "cdrflow-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "cdrflow-test-secret".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        sigkill(&mut self.child);
    }
}

/// A second member joined while the first member's sink was writing beside its reading
/// thread: waits until the first member's log shows its revoke waiting for the `what`
/// (`PositionStore::revoking`), then until the second member holds partitions.
pub fn wait_for_a_revoke_that_waited(first_log: &Path, second_log: &Path, what: &str) {
    let waited = format!("waited for the {what} under way before giving partitions up");
    wait_until_logged(
        Duration::from_secs(90),
        &format!("the first member's revoke to wait for its {what}"),
        first_log,
        || std::fs::read_to_string(first_log).unwrap_or_default().contains(&waited),
    );
    wait_until_logged(Duration::from_secs(90), "the second member to hold partitions", second_log, || {
        holds_partitions(second_log)
    });
}
