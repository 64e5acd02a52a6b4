//! The archive in object storage and on a full disk, on real parts: an S3 server (moto's
//! `moto_server`, PyPI, installed by the test command) reached through a relay the test
//! cuts for a while, and a tmpfs that fills up and is then grown. In both cases the worker
//! must stop consuming, retry, never leave a partial file visible, and end with every valid
//! record archived exactly once.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use cdrflow_archive::Archive;
use common::*;

const BUCKET: &str = "hotline-archive";

/// `cdrflow ingest` of `topic` into `out` as `group` (each test its own: they may run at once).
fn ingest_args(bootstrap: &str, topic: &str, group: &str, out: &str, metrics_port: u16) -> Vec<String> {
    [
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
        "500",
        "--max-rows",
        "3000",
        "--out",
        out,
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .map(String::from)
    .to_vec()
}

fn scrape(port: u16, name: &str) -> u64 {
    http_get(port, "/metrics").map(|(_, body)| metric(&body, name)).unwrap_or(0)
}

/// Waits for the worker to archive the whole feed, stops it, and checks the archive.
fn finish(
    archive: &Archive,
    topic: &str,
    marks: &std::collections::HashMap<i32, i64>,
    worker: &mut Child,
    dir: &std::path::Path,
) {
    wait_until(Duration::from_secs(120), "the worker to catch up", || {
        archive.committed_positions(topic, &[0, 1, 2, 3]).unwrap() == *marks
    });
    assert!(sigterm(worker), "SIGTERM: drain and exit 0");
    assert_archive_exact(archive, topic, 4, &feed_summary(&dir.join("truth.jsonl")));
}

#[test]
fn an_s3_archive_survives_the_store_going_away() {
    let dir = TestDir::new();
    let s3 = S3Server::start(&dir.path().join("moto.log"), BUCKET);
    let relay = Relay::start(s3.port);
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-s3", 4);
    let truth = dir.path().join("truth.jsonl");
    let mut feed =
        stream_feed(&kafka.bootstrap, &topic, 24_000, 51, 2_000, 0.0, &truth, &dir.path().join("generate.log"));

    let out = format!("s3://{BUCKET}/hotlines/archive");
    let metrics_port = free_port();
    let env = S3Server::worker_env(relay.port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = dir.path().join("ingest.log");
    let mut worker =
        spawn_with_env(&ingest_args(&kafka.bootstrap, &topic, "ingest-stores-s3", &out, metrics_port), &log, &env);
    let files_written = "cdrflow_files_written_total{worker=\"ingest\"}";
    wait_until(Duration::from_secs(60), "the first files in S3", || scrape(metrics_port, files_written) > 0);

    // The store vanishes from the network for 8 s while the feed streams.
    relay.down();
    wait_until(Duration::from_secs(30), "a failed write", || {
        scrape(metrics_port, "cdrflow_sink_errors_total{worker=\"ingest\"") > 0
    });
    let consumed = scrape(metrics_port, "cdrflow_records_consumed_total{worker=\"ingest\"}");
    std::thread::sleep(Duration::from_secs(8));
    let consumed_later = scrape(metrics_port, "cdrflow_records_consumed_total{worker=\"ingest\"}");
    // The worker is inside its retry loop, paused: nothing is read until the store is back.
    assert_eq!(consumed_later, consumed, "consumption pauses while the store is away");
    relay.up();

    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 4);
    // Read the archive directly from the server, not through the relay.
    let direct = S3Server::env(s3.port);
    for (k, v) in &direct {
        // SAFETY: nextest runs every test in its own process, and no other thread of this
        // one reads the environment meanwhile.
        unsafe { std::env::set_var(k, v) };
    }
    let archive = Archive::open(&out).unwrap();
    finish(&archive, &topic, &marks, &mut worker, dir.path());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("consumption paused, nothing is lost"), "the outage is logged");
    assert!(logs.contains(&out), "the log names the store");
    assert!(!logs.contains("cdrflow-test-secret"), "no secret in the logs");
}

/// A tmpfs mounted for the test and unmounted when it ends.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "cdrflow-test", at.to_str().unwrap()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs at {} (the test needs root, as in CI)", at.display());
        Tmpfs(at.to_owned())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), self.0.to_str().unwrap()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "growing the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_pauses_the_worker_and_loses_nothing() {
    let dir = TestDir::new();
    let out = dir.path().join("archive");
    let disk = Tmpfs::mount(&out, "400k");
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-full-disk", 4);
    let truth = dir.path().join("truth.jsonl");
    let mut feed =
        stream_feed(&kafka.bootstrap, &topic, 24_000, 52, 4_000, 0.0, &truth, &dir.path().join("generate.log"));

    let metrics_port = free_port();
    let log = dir.path().join("ingest.log");
    let args = ingest_args(&kafka.bootstrap, &topic, "ingest-stores-disk", out.to_str().unwrap(), metrics_port);
    let mut worker = spawn_ingest(&args, &log);
    wait_until(Duration::from_secs(60), "the disk to fill up", || {
        scrape(metrics_port, "cdrflow_sink_errors_total{worker=\"ingest\"") > 0
    });
    // While the disk is full: consumption pauses, and every visible file is whole (read_archive
    // panics on a partial Parquet file); temporary files are hidden and cleaned up.
    let consumed = scrape(metrics_port, "cdrflow_records_consumed_total{worker=\"ingest\"}");
    std::thread::sleep(Duration::from_secs(3));
    let consumed_later = scrape(metrics_port, "cdrflow_records_consumed_total{worker=\"ingest\"}");
    // (a retry may squeeze one small unit in as temporary files are cleaned up)
    assert!(consumed_later <= consumed + 3_000, "consumption pauses ({consumed} → {consumed_later})");
    let while_full = read_archive(&out);
    assert!(while_full.rows < 24_000);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("No space left on device") || logs.contains("disk full"), "the log says why");

    disk.resize("256m");
    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 4);
    let archive = Archive::open_dir(&out).unwrap();
    finish(&archive, &topic, &marks, &mut worker, dir.path());
    assert!(!files_under(&out).iter().any(|p| p.to_string_lossy().ends_with(".tmp")), "no temporary file left");
}

/// A partition the worker paused while its disk was full, lost in a rebalance and then given
/// back to it must be read again. librdkafka keeps an application's pause across an
/// unassignment; before the worker resumed what it is assigned, such a partition was never
/// fetched again, and the archive never caught up.
#[test]
fn a_partition_paused_lost_and_assigned_back_is_read_again() {
    let dir = TestDir::new();
    let out = dir.path().join("archive");
    let disk = Tmpfs::mount(&out, "400k");
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-assigned-back", 4);
    let truth = dir.path().join("truth.jsonl");
    let mut feed =
        stream_feed(&kafka.bootstrap, &topic, 24_000, 54, 4_000, 0.0, &truth, &dir.path().join("generate.log"));
    let group = "ingest-stores-assigned-back";
    let (first_port, first_log) = (free_port(), dir.path().join("ingest-1.log"));
    let args = |port| ingest_args(&kafka.bootstrap, &topic, group, out.to_str().unwrap(), port);
    let mut first = spawn_ingest(&args(first_port), &first_log);
    wait_until_logged(Duration::from_secs(60), "the disk to fill up", &first_log, || {
        scrape(first_port, "cdrflow_sink_errors_total{worker=\"ingest\"") > 0
    });
    // A second member joins while the first retries with its partitions paused: the first
    // gives every partition up, and gets some of them back.
    let second_log = dir.path().join("ingest-2.log");
    let mut second = spawn_ingest(&args(free_port()), &second_log);
    let assignments = |log: &std::path::Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines().filter(|l| l.contains("partitions assigned") && !l.contains("partitions=[]")).count()
    };
    wait_until_logged(Duration::from_secs(60), "the first member to get partitions back", &first_log, || {
        assignments(&first_log) >= 2
    });
    wait_until_logged(Duration::from_secs(60), "the second member to hold partitions", &second_log, || {
        holds_partitions(&second_log)
    });
    disk.resize("256m");
    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 4);
    let archive = Archive::open_dir(&out).unwrap();
    wait_until_logged(Duration::from_secs(120), "both members to catch up", &first_log, || {
        archive.committed_positions(&topic, &[0, 1, 2, 3]).unwrap() == marks
    });
    assert!(sigterm(&mut first) && sigterm(&mut second), "both members drain and exit 0");
    assert_archive_exact(&archive, &topic, 4, &feed_summary(&truth));
}
