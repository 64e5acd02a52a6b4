//! What the pipeline benches share: the Kafka broker and the bench's own topics, worker
//! processes and their peak memory, waiting for a sink to catch up.

/// The allocator the `cdrflow` binary runs with (`src/main.rs` says why), for every bench
/// binary: the hot-path benches then measure the code as it runs, and `pipeline`'s raw
/// consume, the peer the workers are held to, frees librdkafka's messages as they do.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod freshness;
pub mod hot_path_inputs;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_kafka::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The real Kafka broker a bench runs on (`--brokers`; `deploy/local/kafka.sh start` runs one
/// locally) and the topics this run made for itself: each run writes to fresh topics, so a
/// rerun never reads an earlier run's data. The topics are deleted on drop unless kept.
pub struct Kafka {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Topics created by this run, to delete at the end.
    own: Vec<String>,
    /// Leave the topics on the broker at the end (`--keep-topics`).
    pub keep: bool,
}

impl Kafka {
    /// The broker at `bootstrap`; fails if it does not answer.
    pub fn connect(bootstrap: &str) -> Result<Kafka> {
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
        probe.fetch_metadata(None, Duration::from_secs(10)).with_context(|| {
            format!("Kafka at {bootstrap} does not answer: start it with deploy/local/kafka.sh start")
        })?;
        Ok(Kafka { bootstrap: bootstrap.to_owned(), own: Vec::new(), keep: false })
    }

    fn settings(&self) -> KafkaSettings {
        KafkaSettings { brokers: self.bootstrap.clone(), extra: Vec::new() }
    }

    /// Creates a topic of `partitions` partitions named `PREFIX-PID-UNIXMS`, unique to this
    /// run, and its dead-letter topic (`TOPIC.dlq`, 4 partitions); returns the topic's name.
    pub fn fresh_topic(&mut self, prefix: &str, partitions: u32) -> Result<String> {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let topic = format!("{prefix}-{}-{ms}", std::process::id());
        for (name, n) in [(topic.clone(), partitions as i32), (format!("{topic}.dlq"), 4)] {
            self.own.push(name.clone());
            cdrflow_kafka::admin::ensure_topic(&self.settings(), &name, n)?;
        }
        Ok(topic)
    }

    /// Per partition that holds data, its high watermark; and how many messages the topic
    /// holds in all.
    pub fn watermarks(&self, topic: &str, partitions: u32) -> Result<(HashMap<i32, i64>, i64)> {
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create()?;
        let (mut high_of, mut total) = (HashMap::new(), 0);
        for p in 0..partitions as i32 {
            let (low, high) = probe.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            total += high - low;
            if high > low {
                high_of.insert(p, high);
            }
        }
        Ok((high_of, total))
    }

    /// Deletes this run's topics now (unless kept).
    pub fn delete_own_topics(&mut self) -> Result<()> {
        if self.keep || self.own.is_empty() {
            return Ok(());
        }
        let topics = std::mem::take(&mut self.own);
        cdrflow_kafka::admin::delete_topics(&self.settings(), &topics)?;
        eprintln!("deleted the run's topics: {}", topics.join(", "));
        Ok(())
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if self.keep && !self.own.is_empty() {
            eprintln!("kept the run's topics on {}: {}", self.bootstrap, self.own.join(", "));
        } else if let Err(e) = self.delete_own_topics() {
            eprintln!("could not delete the run's topics {}: {e:#}", self.own.join(", "));
        }
    }
}

/// Bytes on disk (allocated blocks, as `du` counts them) of a topic's partition directories
/// (`TOPIC-N`) under a broker's `log.dirs`; `None` if none is there (a remote broker).
pub fn topic_disk_bytes(data_dir: &Path, topic: &str, partitions: u32) -> Option<u64> {
    let dirs: Vec<_> = (0..partitions).map(|p| data_dir.join(format!("{topic}-{p}"))).filter(|d| d.is_dir()).collect();
    (!dirs.is_empty()).then(|| dirs.iter().map(|d| disk_usage(d)).sum())
}

/// Allocated bytes of the files under `dir`, as `du` counts them (sparse and pre-allocated
/// files count what they really take).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    sum_files(dir, |m| m.blocks() * 512)
}

/// The apparent size (bytes) of the files under `dir`.
pub fn apparent_size(dir: &Path) -> u64 {
    sum_files(dir, |m| m.len())
}

/// `size` summed over the files under `dir`, recursively.
fn sum_files(dir: &Path, size: fn(&std::fs::Metadata) -> u64) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => sum_files(&e.path(), size),
            _ => e.metadata().map(|m| size(&m)).unwrap_or(0),
        })
        .sum()
}

/// True when every partition in `high` is read up to its high watermark.
pub fn caught_up(high: &HashMap<i32, i64>, positions: &HashMap<i32, i64>) -> bool {
    high.iter().all(|(p, end)| positions.get(p).is_some_and(|n| n >= end))
}

/// Spawns `cdrflow ARGS` with its output discarded (or its stderr to `log`).
pub fn spawn(cdrflow: &str, args: &[&str], envs: &[(&str, &str)], log: Option<&std::path::Path>) -> Result<Child> {
    let mut cmd = Command::new(cdrflow);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(log) = log {
        cmd.stderr(std::fs::File::create(log)?);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Ok(cmd.spawn()?)
}

/// Runs `cdrflow ARGS` to completion; fails naming the command if it fails.
pub fn run(cdrflow: &str, args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(cdrflow).args(args).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("cdrflow {} failed: {}", args.join(" "), out.status);
    }
    Ok(out)
}

/// Polls `done` every 50 ms until it holds; fails if the worker exits or `limit` passes.
pub fn wait(w: &mut Child, limit: Duration, done: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_every(w, limit, Duration::from_millis(50), done)
}

/// [`wait`], polling every `every`.
pub fn wait_every(
    w: &mut Child,
    limit: Duration,
    every: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let t = Instant::now();
    while !done()? {
        if let Some(s) = w.try_wait()? {
            bail!("the worker exited early: {s}");
        }
        if t.elapsed() > limit {
            bail!("the worker did not catch up in {limit:?}");
        }
        std::thread::sleep(every);
    }
    Ok(())
}

/// How a worker caught up with a topic of `total` messages: over its whole run (process
/// start, group join, position loading and final flush included), and from the moment its
/// `/metrics` first showed it consuming (the steady rate, comparable with a raw consume that
/// starts at its first fetch).
pub struct CatchUp {
    /// From spawn to caught up.
    pub whole: Duration,
    /// When it was first seen consuming (since spawn) and how many it had consumed then.
    pub first_seen: Option<(Duration, u64)>,
    /// When it was first seen to have read every message (since spawn; at the latest, when
    /// caught up): what follows is its sink's last flush (the flush interval or unit age,
    /// then the last write), not reading.
    pub all_read: Duration,
    /// The share of the machine's cores busy (every process's work) from then to caught up.
    pub machine_busy: Option<f64>,
}

impl CatchUp {
    /// Messages per second over the whole run.
    pub fn rate(&self, total: i64) -> f64 {
        total as f64 / self.whole.as_secs_f64()
    }

    /// Messages per second once consuming; `NaN` if it was never seen mid-run.
    pub fn steady_rate(&self, total: i64) -> f64 {
        match self.first_seen {
            Some((at, n)) if self.whole > at => (total as f64 - n as f64) / (self.whole - at).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// Messages per second from its first seen consuming to its last message read: the span
    /// a raw consume times (first fetch to last message), without the sink's last flush;
    /// `NaN` if not seen mid-run.
    pub fn reading_rate(&self, total: i64) -> f64 {
        match self.first_seen {
            Some((at, n)) if self.all_read > at => (total as f64 - n as f64) / (self.all_read - at).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// From its last message read to caught up: the sink's last flush.
    pub fn last_flush(&self) -> Duration {
        self.whole.saturating_sub(self.all_read)
    }
}

/// [`wait`], also watching the worker's `cdrflow_records_consumed_total` at `metrics`
/// (`host:port`) for the moment it starts consuming. `started` is when it was spawned.
pub fn wait_catch_up(
    w: &mut Child,
    started: Instant,
    metrics: &str,
    total: u64,
    limit: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<CatchUp> {
    let mut first_seen = None;
    let mut all_read = None;
    let mut machine = None;
    wait(w, limit, || {
        if all_read.is_none()
            && let Some(n) = consumed(metrics).filter(|&n| n > 0)
        {
            if first_seen.is_none() {
                first_seen = Some((started.elapsed(), n));
                machine = MachineTime::now();
            }
            if n >= total {
                all_read = Some(started.elapsed());
            }
        }
        done()
    })?;
    let machine_busy = machine.and_then(|m| m.busy_since());
    let whole = started.elapsed();
    Ok(CatchUp { whole, first_seen, all_read: all_read.unwrap_or(whole), machine_busy })
}

/// The machine's CPU time so far, busy and in all, from `/proc/stat` (every process's).
#[derive(Clone, Copy, Debug)]
pub struct MachineTime {
    busy: u64,
    all: u64,
}

impl MachineTime {
    /// Now; `None` where there is no `/proc/stat`.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
        let all: u64 = ticks.iter().sum();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        Some(MachineTime { busy: all - ticks.get(3)? - ticks.get(4)?, all })
    }

    /// The share of every core busy since this reading, 0 to 1.
    pub fn busy_since(&self) -> Option<f64> {
        let now = Self::now()?;
        let all = now.all.checked_sub(self.all).filter(|&t| t > 0)?;
        Some(now.busy.saturating_sub(self.busy) as f64 / all as f64)
    }
}

/// CPU seconds used so far by a process's threads, by role: a thread's name without its
/// number (`decode-0` and `decode-1` are `decode`, librdkafka's `rdk:broker1` is
/// `rdk:broker`), and `main` for the process's first thread (the worker's reading loop).
pub fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((comm, seconds)) = stat_cpu(&stat) else { continue };
        let name = if task.file_name().to_str() == Some(&pid.to_string()) {
            "main".to_owned()
        } else {
            comm.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-').to_owned()
        };
        *out.entry(name).or_default() += seconds;
    }
    out
}

/// The name and user + system CPU seconds in a `/proc/…/stat` line (a process's or a
/// thread's).
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (head, after) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((comm, ticks / hz))
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `cpu_by_thread` as microseconds per message, largest first, leaving out threads that
/// used less than 1 % of the total: `main 1.03, decode 1.30, … (total 4.62) µs/msg`.
pub fn cpu_per_message(threads: &BTreeMap<String, f64>, messages: u64) -> String {
    let total: f64 = threads.values().sum();
    let mut by_use: Vec<(&String, &f64)> = threads.iter().filter(|(_, s)| **s >= total / 100.0).collect();
    by_use.sort_by(|a, b| b.1.total_cmp(a.1));
    let us = |s: f64| s * 1e6 / messages.max(1) as f64;
    let parts: Vec<String> = by_use.iter().map(|(name, s)| format!("{name} {:.2}", us(**s))).collect();
    format!("{} (total {:.2}) µs/msg", parts.join(", "), us(total))
}

/// The response (status line, headers and body) to `GET path` from a worker's HTTP
/// endpoint at `addr`; `None` until it answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Whether a worker's `/readyz` at `addr` answers 200 (it holds partitions, its sink answers).
pub fn ready(addr: &str) -> bool {
    http_get(addr, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
}

/// `cdrflow_records_consumed_total` from a worker's `/metrics`; `None` until it answers.
pub fn consumed(metrics: &str) -> Option<u64> {
    http_get(metrics, "/metrics")?
        .lines()
        .filter(|l| l.starts_with("cdrflow_records_consumed_total"))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// User + system CPU seconds of a live process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu(&stat).map(|(_, seconds)| seconds)
}

/// The process's peak resident memory so far (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// SIGTERM (the worker drains and exits), then waits.
pub fn stop(w: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let _ = w.wait();
}

/// Calls offered, answered and abandoned (short ones included) over a whole feed: what the
/// benches compare between the ground truth, cdrflow's counters and a peer's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clickhouse::Row)]
pub struct Totals {
    /// Calls offered.
    pub offered: u64,
    /// Calls answered.
    pub answered: u64,
    /// Calls abandoned, short abandons included.
    pub abandoned: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offered {} answered {} abandoned {}", self.offered, self.answered, self.abandoned)
    }
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.abandoned += o.abandoned;
    }
}

impl Totals {
    /// From the generator's ground truth (`generate --truth`: JSON lines per region, line, hour).
    pub fn of_truth(path: &Path) -> Result<Totals> {
        use std::io::BufRead;
        let mut t = Totals::default();
        for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            t += Totals {
                offered: n("offered"),
                answered: n("answered"),
                abandoned: n("abandoned") + n("short_abandoned"),
            };
        }
        Ok(t)
    }

    /// What the dashboards of `database` see over all time (`counters_current`), summed in
    /// ClickHouse: a national archive has millions of cells.
    pub async fn of_dashboards(url: &str, database: &str) -> Result<Totals> {
        let client = clickhouse::Client::default().with_url(url).with_validation(false);
        let sql = format!(
            "SELECT toUInt64(sum(offered)) AS offered, toUInt64(sum(answered)) AS answered, \
             toUInt64(sum(abandoned) + sum(short_abandoned)) AS abandoned FROM {database}.counters_current"
        );
        Ok(client.query(&sql).fetch_one::<Totals>().await?)
    }

    /// `= ground truth` or `≠ GROUND TRUTH`, for a bench's output.
    pub fn verdict(&self, truth: &Totals) -> &'static str {
        if self == truth { "= ground truth" } else { "≠ GROUND TRUTH" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU time the calling thread has had.
    fn thread_cpu() -> Duration {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec, which `t` is, and reads nothing else.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "the thread's CPU clock is read");
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[test]
    fn cpu_is_told_by_thread_role_and_per_message() {
        // Two numbered threads of one role burn CPU; the main thread waits for them. Each
        // burns until it has had 100 ms of a core, however long that takes: by the wall
        // clock, on a machine other tests keep busy, it may get less than a third of it.
        let burn = |i: u32| {
            std::thread::Builder::new()
                .name(format!("burn-{i}"))
                .spawn(|| {
                    let mut x = 1u64;
                    while thread_cpu() < Duration::from_millis(100) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                        }
                    }
                    // Read while the thread is alive: an ended thread leaves /proc/PID/task.
                    cpu_by_thread(std::process::id())
                })
                .unwrap()
        };
        let (a, b) = (burn(0), burn(1));
        let (seen_by_a, _) = (a.join().unwrap(), b.join().unwrap());
        let burnt = seen_by_a.get("burn").copied().unwrap_or(0.0);
        assert!(burnt >= 0.05, "the burning threads are one role, `burn`: {seen_by_a:?}");
        assert!(!seen_by_a.keys().any(|k| k.starts_with("burn-")), "numbers are dropped: {seen_by_a:?}");
        assert!(seen_by_a.contains_key("main"), "the process's first thread is `main`: {seen_by_a:?}");
        let whole = cpu_seconds(std::process::id()).expect("this process's stat is read");
        assert!(whole >= burnt, "the process counts its threads' time: {whole} < {burnt}");
        let line = cpu_per_message(
            &BTreeMap::from([("main".into(), 1.0), ("decode".into(), 2.0), ("idle".into(), 0.001)]),
            1_000_000,
        );
        assert_eq!(line, "decode 2.00, main 1.00 (total 3.00) µs/msg", "largest first, under 1 % left out");
    }

    #[test]
    fn the_machine_is_seen_busy_while_a_thread_burns() {
        let start = MachineTime::now().expect("/proc/stat is read");
        let t = Instant::now();
        let mut x = 1u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let busy = start.busy_since().expect("ticks passed");
        let cores = cores() as f64;
        assert!(busy >= 0.5 / cores && busy <= 1.0, "one burning thread keeps at least half a core busy: {busy}");
    }
}
