//! `cdrflow demo`: the whole pipeline on this machine, from nothing.
//!
//! Uses the local Apache Kafka (`deploy/local/kafka.sh`, started if installed and not
//! running; a topic of its own, deleted at the end) or, on a machine without Java or with
//! `--embedded-broker`, librdkafka's mock cluster (`cdrflow broker`); and the local
//! ClickHouse (`deploy/local/clickhouse.sh`, which installs Debian's package if missing)
//! or the one `--clickhouse` names. It generates a
//! national feed, runs one ingest worker and one aggregator as real processes, waits until
//! both have caught up, prints a national summary and a per-region table from ClickHouse,
//! checks them against the feed's ground truth, says where the Parquet archive is, and
//! stops everything it started.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::{ClickHouse, ClickHouseConfig};
use cdrflow_dashboards::summary::NationalSummary;
use cdrflow_schemas::sql::Param;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// CDRs in the generated feed.
    pub cdrs: u64,
    /// Seed of the feed.
    pub seed: u64,
    /// Where the feed, the archive and the logs go.
    pub workdir: PathBuf,
    /// Kafka partitions.
    pub partitions: u32,
    /// A ClickHouse to use instead of the local one.
    pub clickhouse: Option<String>,
    /// The database to create (it must not exist).
    pub database: String,
    /// Keep the database at the end.
    pub keep_database: bool,
    /// Use librdkafka's mock cluster even when the local Kafka is installed.
    pub embedded_broker: bool,
}

const TOPIC: &str = "cdrs";

/// Processes the demo started; killed when dropped, whatever happened.
struct Started {
    children: Vec<(String, Child)>,
    clickhouse_script: Option<PathBuf>,
    /// The local Kafka's script, if the demo started it (it stops it at the end).
    kafka_script: Option<PathBuf>,
    /// The topics this run created on the local Kafka (deleted at the end).
    topics: Option<(cdrflow_kafka::KafkaSettings, Vec<String>)>,
    /// The database this run created, dropped at the end (unless kept).
    created_database: Option<ClickHouseConfig>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            // SIGTERM first: workers drain; the broker just goes.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
            tracing::debug!(name, "stopped");
        }
        if let Some(cfg) = self.created_database.take() {
            // A client of its own: pooled connections belong to the runtime that opened them.
            let ch = ClickHouse::new(cfg);
            let dropped = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(ch.drop_database()));
            match dropped {
                Ok(()) => eprintln!(
                    "demo: dropped the database {} it had created (keep it with --keep-database)",
                    ch.config().database
                ),
                Err(e) => eprintln!("demo: could not drop the database {} it had created: {e:#}", ch.config().database),
            }
        }
        if let Some((settings, topics)) = self.topics.take() {
            match cdrflow_kafka::admin::delete_topics(&settings, &topics) {
                Ok(()) => eprintln!("demo: deleted the topics it had created ({})", topics.join(", ")),
                Err(e) => eprintln!("demo: could not delete its topics {}: {e:#}", topics.join(", ")),
            }
        }
        if let Some(script) = &self.kafka_script {
            let _ = Command::new("bash").arg(script).arg("stop").stdout(Stdio::null()).stderr(Stdio::null()).status();
            eprintln!("demo: stopped the local Kafka it had started");
        }
        if let Some(script) = &self.clickhouse_script {
            let _ = Command::new("bash").arg(script).arg("stop").stdout(Stdio::null()).status();
            eprintln!("demo: stopped the local ClickHouse it had started");
        }
    }
}

fn clickhouse_script() -> Result<PathBuf> {
    repo_script("deploy/local/clickhouse.sh")
}

/// A script of the repository this binary was built from.
fn repo_script(rel: &str) -> Result<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if !p.exists() {
        bail!("{} is missing: run the demo from a checkout of the cdrflow repository", p.display());
    }
    Ok(p)
}

fn spawn_self(args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Result<Child> {
    let exe = std::env::current_exe().context("finding the cdrflow binary")?;
    let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdout(Stdio::null()).stderr(f);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().with_context(|| format!("starting cdrflow {}", args[0]))
}

/// The file that marks a directory as a demo's workdir: the only kind of directory with
/// files in it that the demo clears.
const WORKDIR_MARK: &str = ".cdrflow-demo";
const WORKDIR_MARK_TEXT: &str = "made by `cdrflow demo`, which clears this directory when it runs in it again\n";

/// Clears `work` for a new run: a directory the demo made before (it holds
/// [`WORKDIR_MARK`]), or an empty one. Anything else is refused untouched: `--workdir .` or
/// a mistyped path must not delete what is there.
fn clear_workdir(work: &Path) -> Result<()> {
    let meta = match std::fs::metadata(work) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading --workdir {}", work.display())),
    };
    if !meta.is_dir() {
        bail!(
            "--workdir {} exists and is not a directory: the demo needs a directory of its own; choose a new path (nothing was changed)",
            work.display()
        );
    }
    let mut entries = std::fs::read_dir(work).with_context(|| format!("reading --workdir {}", work.display()))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if !work.join(WORKDIR_MARK).is_file() {
        bail!(
            "--workdir {} holds files and is not a directory the demo made (it has no {WORKDIR_MARK}): the demo clears its workdir, so it refuses this one; choose a new or empty directory (nothing was changed)",
            work.display()
        );
    }
    std::fs::remove_dir_all(work).with_context(|| format!("clearing the demo's earlier workdir {}", work.display()))
}

/// Runs the demo.
pub fn run(opts: DemoOptions) -> Result<()> {
    let t0 = Instant::now();
    let work = &opts.workdir;
    clear_workdir(work)?;
    std::fs::create_dir_all(work.join("logs")).with_context(|| format!("creating {}", work.display()))?;
    std::fs::write(work.join(WORKDIR_MARK), WORKDIR_MARK_TEXT)
        .with_context(|| format!("marking {}", work.display()))?;
    let work = std::fs::canonicalize(work)?;
    let mut started = Started {
        children: Vec::new(),
        clickhouse_script: None,
        kafka_script: None,
        topics: None,
        created_database: None,
    };

    // ClickHouse: the one named by --clickhouse / CDRFLOW_CLICKHOUSE_URL, else the local one
    // (deploy/local/clickhouse.sh, on its CDRFLOW_CH_HTTP_PORT), started if it is not running.
    let url = match &opts.clickhouse {
        Some(url) => url.clone(),
        None => {
            let port = std::env::var("CDRFLOW_CH_HTTP_PORT").unwrap_or_else(|_| "8123".to_owned());
            let script = clickhouse_script()?;
            let running = Command::new("bash")
                .arg(&script)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if !running {
                eprintln!("demo: starting the local ClickHouse (installing Debian's clickhouse-server if missing)…");
                let ok = Command::new("bash").arg(&script).arg("start").status()?.success();
                if !ok {
                    bail!("could not start the local ClickHouse; see the messages above and {}", script.display());
                }
                started.clickhouse_script = Some(script);
            }
            format!("http://127.0.0.1:{port}")
        }
    };
    let ch = ClickHouse::new(ClickHouseConfig::from_env(&url, &opts.database)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(ch.ping())?;
    // The demo never drops a database it did not create in this run.
    if rt.block_on(ch.database_exists())? {
        bail!(
            "ClickHouse at {url} already has a database {0}; the demo only uses a database it creates itself: drop it (DROP DATABASE {0}) or choose another with --database",
            opts.database
        );
    }
    rt.block_on(ch.migrate())?;
    if !opts.keep_database {
        started.created_database = Some(ch.config().clone());
    }
    eprintln!("demo: counters in database {} of ClickHouse at {url}", opts.database);

    // Kafka: the local Apache Kafka (deploy/local/kafka.sh) when it is installed, else (or
    // with --embedded-broker) librdkafka's mock cluster in a process of its own.
    let exe = std::env::current_exe()?;
    let kafka_script = repo_script("deploy/local/kafka.sh")?;
    let quiet = |action: &str| {
        Command::new("bash").arg(&kafka_script).arg(action).stdout(Stdio::null()).stderr(Stdio::null()).status()
    };
    let local_kafka = !opts.embedded_broker
        && (quiet("status")?.success()
            || {
                let installed = quiet("installed")?.success();
                if !installed {
                    eprintln!(
                        "demo: the local Kafka is not installed (bash deploy/local/kafka.sh install needs Java 17+ and Maven); using librdkafka's embedded mock broker"
                    );
                }
                installed
            });
    let (bootstrap, topic) = if local_kafka {
        let running = quiet("status")?.success();
        if !running {
            eprintln!("demo: starting the local Kafka (deploy/local/kafka.sh start)…");
            let out = Command::new("bash").arg(&kafka_script).arg("start").stderr(Stdio::inherit()).output()?;
            if !out.status.success() {
                bail!(
                    "could not start the local Kafka; see the messages above, or run the demo with --embedded-broker"
                );
            }
            started.kafka_script = Some(kafka_script.clone());
        }
        let out = Command::new("bash").arg(&kafka_script).arg("bootstrap").output()?;
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // A topic of this run's own: the local Kafka keeps what earlier runs produced.
        let topic = format!("demo-cdrs-{}", jiff::Timestamp::now().as_second());
        let settings = cdrflow_kafka::KafkaSettings { brokers: bootstrap.clone(), extra: Vec::new() };
        cdrflow_kafka::admin::ensure_topic(&settings, &topic, opts.partitions as i32)?;
        started.topics = Some((settings, vec![topic.clone(), format!("{topic}.dlq")]));
        eprintln!(
            "demo: Apache Kafka at {bootstrap} (deploy/local/kafka.sh{}), topic {topic} ({} partitions)",
            if running { ", already running" } else { "" },
            opts.partitions
        );
        (bootstrap, topic)
    } else {
        let mut broker = Command::new(&exe)
            .args(["broker", "--brokers", "3", "--partitions", &opts.partitions.to_string()])
            .args(["--topic", TOPIC, "--topic", "cdrs.dlq"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work.join("logs/broker.log"))?)
            .spawn()
            .context("starting the embedded Kafka")?;
        let mut bootstrap = String::new();
        BufReader::new(broker.stdout.take().expect("piped")).read_line(&mut bootstrap)?;
        let bootstrap = bootstrap.trim().to_owned();
        started.children.push(("broker".into(), broker));
        eprintln!(
            "demo: librdkafka's embedded mock Kafka at {bootstrap} ({} partitions; in memory, for a machine without Java)",
            opts.partitions
        );
        (bootstrap, TOPIC.to_owned())
    };
    let topic = topic.as_str();

    // A throw-away caller-hashing key for the demo archive.
    let key_file = work.join("caller.key");
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))?;
    std::fs::write(&key_file, key.iter().map(|b| format!("{b:02x}")).collect::<String>())?;
    let key_env = key_file.to_string_lossy().into_owned();

    // Workers first, so that they read while the feed is produced.
    let archive = work.join("archive");
    let archive_s = archive.to_string_lossy().into_owned();
    let common = ["--brokers", &bootstrap, "--topic", topic, "--session-timeout-ms", "6000"];
    let mut ingest: Vec<&str> = vec!["ingest"];
    ingest.extend(common);
    ingest.extend(["--out", &archive_s, "--max-age-ms", "2000"]);
    started.children.push((
        "ingest".into(),
        spawn_self(&ingest, &work.join("logs/ingest.log"), &[("CDRFLOW_CALLER_KEY_FILE", &key_env)])?,
    ));
    let mut aggregate: Vec<&str> = vec!["aggregate"];
    aggregate.extend(common);
    aggregate.extend(["--clickhouse", &url, "--database", &opts.database, "--flush-interval-ms", "1000"]);
    started.children.push(("aggregate".into(), spawn_self(&aggregate, &work.join("logs/aggregate.log"), &[])?));

    let truth = work.join("truth.jsonl");
    let (cdrs, seed) = (opts.cdrs.to_string(), opts.seed.to_string());
    eprintln!("demo: generating {} CDRs of the national feed (seed {})…", opts.cdrs, opts.seed);
    let status = Command::new(&exe)
        .args([
            "generate",
            "--cdrs",
            &cdrs,
            "--seed",
            &seed,
            "--resent-share",
            "0",
            "--brokers",
            &bootstrap,
            "--topic",
            topic,
            "--truth",
        ])
        .arg(&truth)
        .stderr(std::fs::File::create(work.join("logs/generate.log"))?)
        .status()?;
    if !status.success() {
        bail!("the feed generator failed; see {}", work.join("logs/generate.log").display());
    }

    // Wait until the archive and ClickHouse hold every partition up to its end.
    let watermarks = cdrflow_kafka::admin::watermarks(&bootstrap, topic, opts.partitions)?;
    let total: i64 = watermarks.values().sum();
    let bar = indicatif::ProgressBar::new(total as u64 * 2).with_style(
        indicatif::ProgressStyle::with_template("{spinner} catching up: {msg} {wide_bar} {percent}%")
            .expect("template"),
    );
    let ingest_archive = cdrflow_archive::Archive::open_dir(&archive)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ch_pos = rt.block_on(ch.positions("cdrflow-aggregate", topic)).unwrap_or_default();
        let ar_pos = ingest_archive.committed_positions(topic, &watermarks.keys().copied().collect::<Vec<_>>())?;
        let done = |pos: &std::collections::HashMap<i32, i64>| {
            watermarks.iter().map(|(p, w)| pos.get(p).copied().unwrap_or(0).min(*w)).sum::<i64>()
        };
        let (a, c) = (done(&ar_pos), done(&ch_pos));
        bar.set_position((a + c) as u64);
        bar.set_message(format!("archive {a}/{total}, ClickHouse {c}/{total}"));
        if a == total && c == total {
            break;
        }
        for (name, child) in started.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited early ({status}); see {}", work.join(format!("logs/{name}.log")).display());
            }
        }
        if Instant::now() > deadline {
            bail!("the workers did not catch up within 10 minutes; see the logs in {}", work.join("logs").display());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bar.finish_and_clear();

    // What the dashboards show.
    let params = [("from", Param::DateTime(0)), ("to", Param::DateTime(4_102_444_800)), ("limit", Param::UInt(15))];
    let regions = rt.block_on(ch.dashboard("region_quality", &params))?;
    let topics = rt.block_on(ch.dashboard("topic_shares", &params))?;
    let stored = rt.block_on(ch.stored_counters(Some("cdrflow-aggregate")))?;
    let mut national = cdrflow_schemas::Counters::default();
    for (_, _, _, c) in &stored {
        national.merge(c);
    }
    let truth_total = cdrflow_feed::truth_totals(&truth)?;
    let summary: cdrflow_feed::FeedSummary =
        serde_json::from_slice(&std::fs::read(work.join("truth.jsonl.summary.json"))?)?;

    let mut out = std::io::stdout().lock();
    let seconds = t0.elapsed().as_secs_f64();
    NationalSummary { national: &national, regions: &regions, topics: &topics, seconds }.write(&mut out)?;
    let matches = national.offered == truth_total.offered
        && national.answered == truth_total.answered
        && national.abandoned == truth_total.abandoned;
    writeln!(
        out,
        "\nClickHouse ({} at {url}) against the feed's ground truth: {}",
        opts.database,
        if matches { "every national total matches" } else { "MISMATCH" }
    )?;
    let parquet = ingest_archive.data_files()?.len();
    let mut archived = 0;
    for p in watermarks.keys() {
        archived += ingest_archive.committed(topic, *p)?.iter().map(|u| u.rows).sum::<u64>();
    }
    let archive_ok = archived == summary.valid_messages;
    writeln!(
        out,
        "Parquet archive: {} ({} files, {} CDRs: {}; {} rejected records went to the dead-letter topic)",
        archive.display(),
        parquet,
        archived,
        if archive_ok { "every valid record of the feed, once" } else { "MISMATCH with the feed" },
        summary.bad
    )?;
    writeln!(out, "Logs: {}", work.join("logs").display())?;
    out.flush()?;
    drop(started);
    if !matches || !archive_ok {
        bail!("the results do not match the feed's ground truth");
    }
    Ok(())
}
