//! Audit and replay on real parts: a feed with re-sent CDRs through `cdrflow ingest` and
//! `cdrflow aggregate`; then `cdrflow reconcile` must find the three stores in agreement,
//! `cdrflow backfill` must rebuild exactly the streaming counters (and the ground truth)
//! from the archive, and reconcile must name a deleted Parquet file, a gap in the archive's
//! offsets and a ClickHouse insert stored twice.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cdrflow_feed::FeedSummary;
use common::*;

const KEY: &str = "test-caller-key-0123456789";
const DB: &str = "t_audit";
/// The workers' consumer groups: the test's own, not the defaults (which other runs, such
/// as the demo's, may use on the shared broker at the same time).
const INGEST_GROUP: &str = "audit-ingest";
const AGGREGATE_GROUP: &str = "audit-aggregate";

fn reconcile(bootstrap: &str, topic: &str, archive: &std::path::Path, server: &Server) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdrflow"))
        .args(["reconcile", "--json", "--brokers", bootstrap, "--topic", topic, "--archive", archive.to_str().unwrap()])
        .args(["--ingest-group", INGEST_GROUP, "--aggregate-group", AGGREGATE_GROUP])
        .args(["--clickhouse", &server.url(), "--database", DB])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("reconcile --json prints JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), report)
}

/// The mismatches' (kind, what), at most one of each kind (there may be hundreds).
fn kinds(report: &serde_json::Value) -> Vec<(String, String)> {
    report["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap().to_owned(), m["what"].as_str().unwrap().to_owned()))
        .fold(Vec::new(), |mut out: Vec<(String, String)>, (k, w)| {
            if k == "archive_gap" || k == "missing_file" || !out.iter().any(|(seen, _)| *seen == k) {
                out.push((k, w));
            }
            out
        })
}

/// Runs SQL on the shared server over HTTP.
fn clickhouse(sql: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", 8123)).unwrap();
    write!(s, "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}", sql.len()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{sql}: {reply}");
}

#[test]
fn reconcile_and_backfill_agree_with_the_stream_and_name_each_fault() {
    let dir = TestDir::new();
    let server = Server::shared();
    let ch = server.fresh_database("audit");
    let kafka = Kafka::shared();
    let topic = kafka.topic("audit", 4);
    let truth_path = dir.path().join("truth.jsonl");
    generate(&[
        "--cdrs",
        "30000",
        "--seed",
        "81",
        "--resent-share",
        "0.01",
        "--brokers",
        &kafka.bootstrap,
        "--topic",
        &topic,
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    let summary: FeedSummary = feed_summary(&dir.path().join("truth.jsonl"));
    assert!(summary.resent > 200, "the feed re-sends calls: {summary:?}");
    let archive = dir.path().join("archive");
    let common = ["--brokers", &kafka.bootstrap, "--topic", &topic, "--session-timeout-ms", "6000"];
    let ingest: Vec<String> = ["ingest", "--group", INGEST_GROUP, "--out", archive.to_str().unwrap()]
        .into_iter()
        .chain(common)
        .chain(["--max-rows", "2000", "--max-age-ms", "500"])
        .map(String::from)
        .collect();
    let aggregate: Vec<String> = ["aggregate", "--group", AGGREGATE_GROUP, "--clickhouse", &server.url()]
        .into_iter()
        .chain(["--database", DB, "--flush-interval-ms", "300", "--flush-max-messages", "5000"])
        .chain(common)
        .map(String::from)
        .collect();
    let mut i = spawn_with_env(&ingest, &dir.path().join("ingest.log"), &[("CDRFLOW_CALLER_KEY", KEY)]);
    let mut a = spawn(&aggregate, &dir.path().join("aggregate.log"));
    let marks = kafka.watermarks(&topic, 4);
    let rt = runtime();
    let parts = [0, 1, 2, 3];
    let store = cdrflow_archive::Archive::open_dir(&archive).unwrap();
    wait_until(Duration::from_secs(120), "both sinks to catch up", || {
        store.committed_positions(&topic, &parts).unwrap() == marks
            && rt.block_on(ch.positions(AGGREGATE_GROUP, &topic)).unwrap_or_default() == marks
    });
    assert!(sigterm(&mut i) && sigterm(&mut a));
    let truth = read_truth(&truth_path);

    // The stream counted each call once.
    assert_same_counters(&stored_as_truth(&rt, &ch, None), &truth);

    // The three stores agree.
    let (ok, report) = reconcile(&kafka.bootstrap, &topic, &archive, &server);
    assert!(ok, "a clean run reconciles: {:?}", kinds(&report));
    assert_eq!(report["partitions"].as_array().unwrap().len(), 4);
    for p in report["partitions"].as_array().unwrap() {
        assert_eq!(p["archive_next"], p["kafka_high"]);
        assert_eq!(p["clickhouse_next"], p["kafka_high"]);
    }
    assert_eq!(report["archive_rows_read"].as_u64().unwrap(), summary.valid_messages);
    assert!(report["cells_compared"].as_u64().unwrap() > 1000);

    // Backfill from the archive reproduces the same counters, read once per call.
    let backfill = |threads: &str| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_cdrflow"))
            .args(["backfill", "--from", archive.to_str().unwrap(), "--topic", &topic, "--threads", threads])
            .args(["--clickhouse", &server.url(), "--database", DB])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "backfill --threads {threads}: {}", String::from_utf8_lossy(&out.stdout));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let done = backfill("1");
    assert_eq!(done["rows"].as_u64().unwrap(), summary.valid_messages);
    assert_eq!(done["superseded_versions"].as_u64().unwrap(), summary.resent);
    assert_eq!(done["emptied_cells"].as_u64().unwrap(), 0);
    // What dashboards read now comes from the rebuild: still the truth, and still the stream's.
    assert_same_counters(&stored_as_truth(&rt, &ch, None), &truth);
    assert_same_counters(&stored_as_truth(&rt, &ch, Some(AGGREGATE_GROUP)), &truth);
    let rebuilt: u64 = rt.block_on(ch.rebuilt_cells()).unwrap();
    assert_eq!(rebuilt as usize, truth.len(), "every cell was rebuilt");
    assert!(reconcile(&kafka.bootstrap, &topic, &archive, &server).0, "still reconciles after the rebuild");
    // The same rebuild reading two dates at a time: the same rows, versions and counters.
    let twice = backfill("2");
    for k in ["files", "rows", "superseded_versions", "cells"] {
        assert_eq!(twice[k], done[k], "{k} with two threads");
    }
    assert_same_counters(&stored_as_truth(&rt, &ch, None), &truth);
    assert!(reconcile(&kafka.bootstrap, &topic, &archive, &server).0, "reconciles after the two-thread rebuild");

    // Fault 1: a Parquet file deleted.
    let victim = store.committed(&topic, 1).unwrap()[1].files[0].path.clone();
    let aside = dir.path().join("aside.parquet");
    std::fs::rename(archive.join(&victim), &aside).unwrap();
    let (ok, report) = reconcile(&kafka.bootstrap, &topic, &archive, &server);
    let found = kinds(&report);
    assert!(!ok);
    assert!(found.iter().any(|(k, w)| k == "missing_file" && w.contains(&victim)), "{found:?}");
    assert!(found.iter().any(|(k, _)| k == "counters_differ"), "the counters lose its rows: {found:?}");
    // A rebuild from the damaged archive is refused, naming the file, on any number of threads.
    for threads in ["1", "2"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cdrflow"))
            .args(["backfill", "--from", archive.to_str().unwrap(), "--topic", &topic, "--threads", threads])
            .args(["--clickhouse", &server.url(), "--database", DB])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "backfill from a damaged archive must fail");
        assert!(err.contains(&victim) && err.contains("listed by its unit's commit"), "{err}");
    }
    assert_same_counters(&stored_as_truth(&rt, &ch, None), &truth);
    std::fs::rename(&aside, archive.join(&victim)).unwrap();

    // Fault 2: a gap in the archive's offsets (a unit's commit gone).
    let units = store.committed(&topic, 2).unwrap();
    assert!(units.len() >= 3, "a unit in the middle");
    let gone = &units[1];
    let marker =
        archive.join(format!("_cdrflow/commits/{topic}/p002/{:012}-{:012}.json", gone.first_offset, gone.last_offset));
    std::fs::rename(&marker, dir.path().join("aside.json")).unwrap();
    let (ok, report) = reconcile(&kafka.bootstrap, &topic, &archive, &server);
    let found = kinds(&report);
    assert!(!ok);
    let gap = format!("offsets {}–{} of partition 2 are in no archive unit", gone.first_offset, gone.last_offset);
    assert!(found.iter().any(|(k, w)| k == "archive_gap" && w == &gap), "{found:?}");
    assert!(found.iter().any(|(k, _)| k == "uncommitted_file"), "its files are named too: {found:?}");
    std::fs::rename(dir.path().join("aside.json"), &marker).unwrap();
    assert!(reconcile(&kafka.bootstrap, &topic, &archive, &server).0, "clean again once restored");
    // The last unit's commit gone: the ingest group's committed offset shows the tail is missing.
    let tail = units.last().unwrap();
    let tail_marker =
        archive.join(format!("_cdrflow/commits/{topic}/p002/{:012}-{:012}.json", tail.first_offset, tail.last_offset));
    std::fs::rename(&tail_marker, dir.path().join("tail.json")).unwrap();
    let found = kinds(&reconcile(&kafka.bootstrap, &topic, &archive, &server).1);
    let gap = format!(
        "offsets {}–{} of partition 2 are in no archive unit (the ingest group committed them)",
        tail.first_offset, tail.last_offset
    );
    assert!(found.iter().any(|(k, w)| k == "archive_gap" && w == &gap), "{found:?}");
    std::fs::rename(dir.path().join("tail.json"), &tail_marker).unwrap();

    // Fault 3: one ClickHouse flush inserted twice.
    clickhouse(&format!(
        "INSERT INTO {DB}.counters_log SELECT * FROM {DB}.counters_log
         WHERE consumer_group = '{AGGREGATE_GROUP}' AND kafka_partition = 3
           AND last_offset = (SELECT max(last_offset) FROM {DB}.counters_log WHERE kafka_partition = 3)"
    ));
    let (ok, report) = reconcile(&kafka.bootstrap, &topic, &archive, &server);
    let found = kinds(&report);
    assert!(!ok);
    let last = marks[&3] - 1;
    assert!(
        found.iter().any(|(k, w)| k == "clickhouse_doubled" && w.contains(&format!("–{last} of partition 3"))),
        "{found:?}"
    );
}
