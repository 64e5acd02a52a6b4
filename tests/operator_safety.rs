//! No operator mistake destroys data, and no audit passes vacuously.
//!
//! One small pipeline (a feed through `cdrflow ingest` and `cdrflow aggregate`), then every
//! way an operator can get `backfill` or `reconcile` wrong: a mistyped archive path, a
//! mistyped topic, a reversed or empty date range, an archive that lost units, mistyped
//! consumer groups. Each must fail with the fix named, and the counters the dashboards read
//! must be exactly as they were. Then a `--dry-run` that must touch nothing, and `/readyz`
//! on a quiet topic.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const DB: &str = "t_operator_safety";

fn cdrflow(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("CDRFLOW_LOG", "info").stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts the command failed and said `want`.
fn refused(o: &Output, want: &str) {
    assert!(!o.status.success(), "expected a refusal naming `{want}`, got success:\n{}", text(o));
    assert!(text(o).contains(want), "expected `{want}` in:\n{}", text(o));
}

#[test]
fn destructive_commands_refuse_what_they_cannot_justify_and_audits_never_pass_vacuously() {
    let dir = TestDir::new();
    let server = Server::shared();
    let ch = server.fresh_database("operator_safety");
    let kafka = Kafka::shared();
    let topic = kafka.topic("operator-safety", 4);
    let truth_path = dir.path().join("truth.jsonl");
    generate(&[
        "--cdrs",
        "12000",
        "--seed",
        "13",
        "--brokers",
        &kafka.bootstrap,
        "--topic",
        &topic,
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    let archive = dir.path().join("archive");
    let mut ingest = ingest_args(&kafka.bootstrap, &topic, &archive, "ops-ingest", &[]);
    // Units of at most 1 000 rows: each partition's 3 000 in several, for the lagging archive.
    let rows = ingest.iter().position(|a| a == "--max-rows").unwrap() + 1;
    ingest[rows] = "1000".into();
    let aggregate =
        aggregate_args(&kafka.bootstrap, &topic, &server.url(), DB, "ops-aggregate", &["--flush-interval-ms", "300"]);
    let (ilog, alog) = (dir.path().join("ingest.log"), dir.path().join("aggregate.log"));
    let mut i = spawn_ingest(&ingest, &ilog);
    let mut a = spawn(&aggregate, &alog);
    let marks = kafka.watermarks(&topic, 4);
    let rt = runtime();
    wait_until(Duration::from_secs(120), "both sinks to catch up", || {
        archive_positions(&archive, &topic, 4) == marks
            && rt.block_on(ch.positions("ops-aggregate", &topic)).unwrap_or_default() == marks
    });
    assert!(sigterm(&mut i) && sigterm(&mut a));
    // A clean stop writes everything: nothing is abandoned.
    for log in [&ilog, &alog] {
        let l = std::fs::read_to_string(log).unwrap();
        assert!(!l.contains("abandoned"), "a clean SIGTERM abandons nothing: {}", log.display());
    }
    let truth = read_truth(&truth_path);
    let untouched = |after: &str| {
        assert_same_counters(&stored_as_truth(&rt, &ch, None), &truth);
        assert_eq!(rt.block_on(ch.rebuilt_cells()).unwrap(), 0, "{after}: nothing was rebuilt");
    };
    untouched("the stream");

    // A mistyped aggregator group: it has counted nothing of a topic another group has, so
    // it would read the topic from its start and the dashboards would count it twice.
    let typo_log = dir.path().join("aggregate-typo.log");
    let typo_args =
        aggregate_args(&kafka.bootstrap, &topic, &server.url(), DB, "ops-agregate", &["--flush-interval-ms", "300"]);
    let mut typo = spawn(&typo_args, &typo_log);
    wait_until(Duration::from_secs(60), "the mistyped group's aggregator to exit", || {
        typo.try_wait().unwrap().is_some()
    });
    assert!(!typo.wait().unwrap().success());
    let said = std::fs::read_to_string(&typo_log).unwrap();
    assert!(said.contains("the aggregator group ops-agregate has counted nothing of topic"), "{said}");
    assert!(said.contains("while group ops-aggregate has:"), "{said}");
    assert!(said.contains("--new-group"), "{said}");
    untouched("a mistyped aggregator group");

    let url = server.url();
    let ar = archive.to_str().unwrap();
    let typo = format!("{topic}-typo");
    // Every backfill and reconcile names the test's topic (or, once, a mistyped one).
    let backfill_topic = |topic: &str, extra: &[&str]| -> Output {
        let mut args = vec!["backfill", "--topic", topic, "--clickhouse", &url, "--database", DB];
        args.extend_from_slice(extra);
        cdrflow(&args)
    };
    let backfill = |extra: &[&str]| backfill_topic(&topic, extra);

    // A mistyped archive path.
    refused(
        &backfill(&["--from", "/nonexistent/archive", "--from-date", "2022-02-01", "--to-date", "2022-02-01"]),
        "no archive at /nonexistent/archive",
    );
    untouched("a missing archive");
    // A mistyped topic.
    refused(
        &backfill_topic(&typo, &["--from", ar, "--region", "38"]),
        &format!("holds no committed unit of topic {typo} (it holds {topic})"),
    );
    untouched("a mistyped topic");
    // A reversed range.
    refused(&backfill(&["--from", ar, "--from-date", "2022-02-02", "--to-date", "2022-02-01"]), "swap them");
    untouched("a reversed range");
    // A range the archive and the dashboards hold nothing of.
    refused(&backfill(&["--from", ar, "--from-date", "2030-01-01", "--to-date", "2030-01-02"]), "nothing to rebuild");
    untouched("an empty range");
    // An absurd thread count (a typo for 10): refused before anything is read.
    refused(&backfill(&["--from", ar, "--threads", "100000"]), "more than 4 per core");
    untouched("an absurd thread count");

    // An archive that lost a partition's units (a copy without partition 0's commits): the
    // dashboards count calls the archive cannot vouch for, so emptying them is refused.
    let damaged = dir.path().join("damaged");
    copy_dir(&archive, &damaged);
    std::fs::remove_dir_all(damaged.join(format!("_cdrflow/commits/{topic}/p000"))).unwrap();
    let dm = damaged.to_str().unwrap();
    let o = backfill(&["--from", dm]);
    refused(&o, "no committed archive unit covers");
    refused(&o, "--allow-empty");
    untouched("a damaged archive");
    // --dry-run shows the same plan and writes nothing.
    let o = backfill(&["--from", dm, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(plan["emptied_cells"].as_u64().unwrap() > 0, "{plan}");
    assert_eq!(plan["lowered_cells"], plan["unjustified_cells"], "{plan}");
    assert!(plan["offered_now"].as_u64().unwrap() > plan["offered_after"].as_u64().unwrap());
    untouched("a dry run");

    // An archive that lags the stream (each partition's newest unit not committed yet): the
    // cells that unit's calls share with earlier units would only be lowered, not emptied,
    // and the archive cannot vouch for those calls either.
    let lagging = dir.path().join("lagging");
    copy_dir(&archive, &lagging);
    for p in 0..4 {
        let commits = lagging.join(format!("_cdrflow/commits/{topic}/p{p:03}"));
        let units: Vec<_> = std::fs::read_dir(&commits).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(units.len() > 1, "partition {p} was archived in several units: {units:?}");
        std::fs::remove_file(units.iter().max().unwrap()).unwrap();
    }
    let lg = lagging.to_str().unwrap();
    let o = backfill(&["--from", lg, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (lowered, emptied) = (plan["lowered_cells"].as_u64().unwrap(), plan["emptied_cells"].as_u64().unwrap());
    assert!(lowered > emptied, "cells lowered without being emptied: {plan}");
    assert_eq!(plan["unjustified_cells"].as_u64(), Some(lowered), "{plan}");
    assert_eq!(
        plan["offered_now"].as_u64().unwrap() - plan["offered_after"].as_u64().unwrap(),
        plan["offered_lowered"].as_u64().unwrap(),
        "every call the rebuild would take off is in a lowered cell: {plan}"
    );
    // Listed among the reasons: a cell that keeps some of its calls.
    let kept_some = |why: &serde_json::Value| {
        let why = why.as_str().unwrap();
        why.split_once(" calls now, ").and_then(|(_, rest)| rest.split_once(' ')).is_some_and(|(n, _)| n != "0")
    };
    assert!(plan["unjustified"].as_array().unwrap().iter().any(kept_some), "{plan}");
    let o = backfill(&["--from", lg]);
    refused(&o, "calls now, ");
    refused(&o, "no committed archive unit covers");
    untouched("a lagging archive");

    // Audits: a missing archive, a reversed range, an empty range, mistyped groups.
    let reconcile_topic = |topic: &str, extra: &[&str]| -> Output {
        let mut args = vec!["reconcile", "--json", "--brokers", &kafka.bootstrap, "--topic", topic];
        args.extend_from_slice(&["--clickhouse", &url, "--database", DB]);
        args.extend_from_slice(extra);
        cdrflow(&args)
    };
    let reconcile = |extra: &[&str]| reconcile_topic(&topic, extra);
    let groups = ["--ingest-group", "ops-ingest", "--aggregate-group", "ops-aggregate"];
    let clean = reconcile(&[&["--archive", ar][..], &groups].concat());
    assert!(clean.status.success(), "the right groups reconcile: {}", text(&clean));
    // Without --brokers, Kafka's side is not claimed as checked.
    let o = cdrflow(
        &[&["reconcile", "--topic", &topic, "--archive", ar, "--clickhouse", &url, "--database", DB][..], &groups]
            .concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Kafka was not asked"), "{}", text(&o));
    // An archive that lost a whole partition: named as that partition's gap against the
    // offsets the ingest group committed, not only as counters that differ.
    let o = reconcile(&[&["--archive", dm][..], &groups].concat());
    assert!(!o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gap =
        report["mismatches"].as_array().unwrap().iter().any(|m| m["kind"] == "archive_gap" && m["partition"] == 0);
    assert!(gap, "partition 0's missing units are named: {report}");
    refused(
        &reconcile(&[&["--archive", "/nonexistent/archive"][..], &groups].concat()),
        "no archive at /nonexistent/archive",
    );
    refused(
        &reconcile(&[&["--archive", ar, "--from-date", "2022-02-02", "--to-date", "2022-02-01"][..], &groups].concat()),
        "swap them",
    );
    let o =
        reconcile(&[&["--archive", ar, "--from-date", "2030-01-01", "--to-date", "2030-01-02"][..], &groups].concat());
    refused(&o, "nothing_checked");
    refused(&o, &format!("the archive holds {topic} from 2022-02-01"));
    // The default group names, while the workers used others: nothing was checked.
    let o = reconcile(&["--archive", ar]);
    refused(&o, &format!("the ingest group cdrflow-ingest holds no committed offset of {topic}"));
    refused(&o, "groups with committed offsets on the topic: ");
    refused(&o, "ops-ingest");
    refused(&o, "no flush of the aggregator group cdrflow-aggregate");
    refused(&o, "groups with flushes of the topic: ops-aggregate");
    // An archive with no unit of the topic.
    let o = reconcile_topic(&typo, &[&["--archive", ar][..], &groups].concat());
    assert!(!o.status.success(), "{}", text(&o));

    // Last, with the operator's explicit consent, the damaged archive's rebuild is written.
    let o = backfill(&["--from", dm, "--allow-empty"]);
    assert!(o.status.success(), "--allow-empty writes: {}", text(&o));
    assert!(rt.block_on(ch.rebuilt_cells()).unwrap() > 0);
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files_under(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// `--dry-run` creates nothing, resolves nothing and connects to nothing, and shows the
/// consumer properties the worker would really use.
#[test]
fn a_dry_run_touches_nothing_and_shows_the_effective_properties() {
    let dir = TestDir::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    let out = ro.join("archive");
    let brokers = format!("127.0.0.1:{port}");
    let o = Command::new(BIN)
        .args(["ingest", "--dry-run", "--brokers", &brokers, "--out", out.to_str().unwrap()])
        .args(["--kafka-option", "enable.auto.commit=true", "--kafka-option", "fetch.wait.max.ms=250"])
        .env("CDRFLOW_CALLER_KEY", CALLER_KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o2 = Command::new(BIN)
        .args(["aggregate", "--dry-run", "--brokers", &brokers, "--clickhouse", &format!("http://{brokers}")])
        .output()
        .unwrap();
    assert!(o2.status.success(), "{}", text(&o2));
    std::thread::sleep(Duration::from_millis(500));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("a dry run connected to the listening port (from {peer})"),
        Err(e) => panic!("{e}"),
    }
    assert!(!out.exists(), "a dry run created the archive directory");
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0, "a dry run wrote into the out directory's parent");

    let dry: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let props = &dry["kafka"]["consumer_properties"];
    assert_eq!(props["enable.auto.commit"]["value"], "false", "{props}");
    assert_eq!(props["enable.auto.commit"]["from"], "protocol");
    assert!(props["enable.auto.commit"]["overridden"].as_str().unwrap().contains("true"), "{props}");
    assert_eq!(props["fetch.wait.max.ms"]["value"], "250", "the operator overrides the tuning");
    assert_eq!(props["fetch.wait.max.ms"]["from"], "operator");
    assert_eq!(props["group.id"]["value"], "cdrflow-ingest");
    assert!(dry["out"].as_str().unwrap().contains("created when the worker starts"), "{dry}");
    let tuned =
        serde_json::from_slice::<serde_json::Value>(&o2.stdout).unwrap()["kafka"]["consumer_properties"].clone();
    assert!(
        tuned.as_object().unwrap().values().any(|p| p["from"] == "tuning"),
        "the workers' tuning is shown: {tuned}"
    );
}

/// On a quiet topic a worker that holds partitions is ready, and reports a lag sample per
/// held partition.
#[test]
fn a_worker_on_a_quiet_topic_is_ready_and_reports_lag_per_partition() {
    let dir = TestDir::new();
    let server = Server::shared();
    server.fresh_database("quiet");
    let kafka = Kafka::shared();
    let topic = kafka.topic("quiet", 3);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let args = aggregate_args(
        &kafka.bootstrap,
        &topic,
        &server.url(),
        "t_quiet",
        "quiet-aggregate",
        &["--metrics-addr", &metrics],
    );
    let log = dir.path().join("aggregate.log");
    let mut w = spawn(&args, &log);
    wait_until_logged(Duration::from_secs(60), "/readyz to answer 200 on a quiet topic", &log, || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    wait_until_logged(Duration::from_secs(20), "a lag sample for each held partition", &log, || {
        let Some((_, scrape)) = http_get(port, "/metrics") else { return false };
        (0..3).all(|p| scrape.contains(&format!("cdrflow_consumer_lag{{worker=\"aggregate\",partition=\"{p}\"}} 0")))
    });
    assert_eq!(metric(&http_get(port, "/metrics").unwrap().1, "cdrflow_records_consumed_total"), 0);
    assert!(sigterm(&mut w));
}

/// A migration killed between any two statements finishes when run again, and a migration
/// never drops a table that holds data.
#[test]
fn migrations_resume_after_a_kill_and_never_drop_data() {
    let server = Server::shared();
    let url = server.url();
    let migrate = |db: &str, crash_after: Option<usize>| {
        let mut c = Command::new(BIN);
        c.args(["migrate", "--clickhouse", &url, "--database", db]);
        if let Some(n) = crash_after {
            c.env("CDRFLOW_MIGRATE_CRASH_AFTER", n.to_string());
        }
        c.output().unwrap()
    };
    let printed = Command::new(BIN).args(["migrate", "--print"]).output().unwrap();
    let statements = String::from_utf8_lossy(&printed.stdout).matches(";\n").count();
    assert!(statements > 10, "{statements}");
    for n in 1..statements {
        server.query("DROP DATABASE IF EXISTS t_resume_single");
        let o = migrate("t_resume_single", Some(n));
        assert!(!o.status.success(), "killed after statement {n}");
        let o = migrate("t_resume_single", None);
        assert!(o.status.success(), "resumed after statement {n}: {}", text(&o));
        assert_eq!(
            server.query("SELECT count() FROM system.columns WHERE database = 't_resume_single' AND table = 'counters_log' AND name = 'call_ids'").trim(),
            "1"
        );
    }
    // A table of the operator's that a migration would drop as a view.
    server.query("DROP DATABASE IF EXISTS t_no_drop");
    server.query("CREATE DATABASE t_no_drop");
    server.query("CREATE TABLE t_no_drop.hourly (x UInt8) ENGINE = MergeTree ORDER BY x");
    server.query("INSERT INTO t_no_drop.hourly VALUES (1)");
    let o = migrate("t_no_drop", None);
    refused(&o, "refusing to drop t_no_drop.hourly");
    assert_eq!(server.query("SELECT count() FROM t_no_drop.hourly").trim(), "1", "the table is untouched");
    server.query("DROP DATABASE t_no_drop");
}

/// A partition whose position (held by the sink) the topic's log no longer holds is not
/// read, and the worker says what happened and what to do. Read from the log's start
/// instead (librdkafka's `earliest`, the setting before), a topic deleted and made again
/// would be archived and counted again under the old positions, and a gap left by retention
/// would pass in silence. An operator who accepts the gap says so, and the worker goes on.
#[test]
fn a_position_the_topic_no_longer_holds_is_named_and_nothing_is_read_from_it() {
    let dir = TestDir::new();
    let d = dir.path();
    let kafka = Kafka::shared();
    let server = Server::shared();
    let ch = server.fresh_database("out_of_range");
    let rt = runtime();
    let feed = |topic: &str, cdrs: &str, seed: &str| {
        let truth = d.join(format!("truth-{seed}.jsonl"));
        let args = ["--cdrs", cdrs, "--seed", seed, "--resent-share", "0", "--bad-share", "0", "--brokers"];
        generate(&[&args[..], &[&kafka.bootstrap, "--topic", topic, "--truth", truth.to_str().unwrap()]].concat());
    };
    let named = |log: &Path, what: &str| {
        wait_until_logged(Duration::from_secs(60), "the partition to be named", log, || {
            std::fs::read_to_string(log).unwrap_or_default().contains(what)
        });
        std::fs::read_to_string(log).unwrap()
    };
    let unready = |port: u16, position: i64| {
        let (status, why) = http_get(port, "/readyz").unwrap();
        assert_eq!(status, 503, "{why}");
        assert!(why.contains("outside the topic's log"), "{why}");
        let scrape = http_get(port, "/metrics").unwrap().1;
        assert_eq!(metric(&scrape, "cdrflow_partition_out_of_range{"), position as u64, "{scrape}");
    };

    // A topic made again: both sinks stand at the old topic's end; the new one holds less.
    let topic = kafka.topic("made-again", 1);
    feed(&topic, "400", "5");
    let archive = d.join("archive");
    let (ip, ap) = (free_port(), free_port());
    let ingest =
        ingest_args(&kafka.bootstrap, &topic, &archive, "oor-ingest", &["--metrics-addr", &format!("127.0.0.1:{ip}")]);
    let aggregate = aggregate_args(
        &kafka.bootstrap,
        &topic,
        &server.url(),
        "t_out_of_range",
        "oor-aggregate",
        &["--flush-interval-ms", "300", "--metrics-addr", &format!("127.0.0.1:{ap}")],
    );
    let logs = |n: u32| (d.join(format!("ingest-{n}.log")), d.join(format!("aggregate-{n}.log")));
    let (il, al) = logs(1);
    let (mut i, mut a) = (spawn_ingest(&ingest, &il), spawn(&aggregate, &al));
    let old = kafka.watermarks(&topic, 1);
    let stands = || {
        (archive_positions(&archive, &topic, 1), rt.block_on(ch.positions("oor-aggregate", &topic)).unwrap_or_default())
    };
    wait_until(Duration::from_secs(120), "both sinks to read the topic", || stands() == (old.clone(), old.clone()));
    assert!(sigterm(&mut i) && sigterm(&mut a));
    let rows = read_archive(&archive).rows;
    let counted = server.query("SELECT sum(offered) FROM t_out_of_range.counters_log");
    kafka.recreate_topic(&topic, 1);
    feed(&topic, "100", "6");
    let new = kafka.watermarks(&topic, 1);
    assert!(new[&0] > 0 && new[&0] < old[&0], "{new:?} {old:?}");
    let (il, al) = logs(2);
    let (mut i, mut a) = (spawn_ingest(&ingest, &il), spawn(&aggregate, &al));
    for (log, port) in [(&il, ip), (&al, ap)] {
        let text = named(log, "is past the topic's end");
        assert!(
            text.contains(&format!("the position the sink holds ({}) is past the topic's end ({})", old[&0], new[&0]))
                && text.contains("run the workers under a new --group"),
            "{text}"
        );
        unready(port, old[&0]);
    }
    // Nothing of the new topic was archived or counted under the old topic's positions.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stands(), (old.clone(), old.clone()));
    assert_eq!(read_archive(&archive).rows, rows);
    assert_eq!(server.query("SELECT sum(offered) FROM t_out_of_range.counters_log"), counted);
    assert!(sigterm(&mut i) && sigterm(&mut a), "a worker with a partition it cannot read still stops cleanly");

    // A gap left by retention: the archive stands at `before`; the records from there to
    // `first` are deleted unread.
    let topic = kafka.topic("retention-gap", 1);
    let archive = d.join("archive-gap");
    let ingest = |extra: &[&str]| {
        let metrics = format!("127.0.0.1:{ip}");
        ingest_args(
            &kafka.bootstrap,
            &topic,
            &archive,
            "gap-ingest",
            &[&["--metrics-addr", &metrics][..], extra].concat(),
        )
    };
    feed(&topic, "300", "7");
    let before = kafka.watermarks(&topic, 1);
    let mut i = spawn_ingest(&ingest(&[]), &d.join("ingest-3.log"));
    wait_until(Duration::from_secs(120), "the archive to read the topic", || {
        archive_positions(&archive, &topic, 1) == before
    });
    assert!(sigterm(&mut i));
    feed(&topic, "300", "8");
    let end = kafka.watermarks(&topic, 1);
    let first = before[&0] + (end[&0] - before[&0]) / 2;
    kafka.delete_records_before(&topic, 0, first);
    let log = d.join("ingest-4.log");
    let mut i = spawn_ingest(&ingest(&[]), &log);
    let text = named(&log, "is before the topic's first offset");
    assert!(
        text.contains(&format!(
            "the position the sink holds ({}) is before the topic's first offset ({first}): offsets {} to {} were deleted",
            before[&0],
            before[&0],
            first - 1
        )) && text.contains("--kafka-option auto.offset.reset=earliest"),
        "{text}"
    );
    unready(ip, before[&0]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(archive_positions(&archive, &topic, 1), before, "nothing after the gap is read");
    assert!(sigterm(&mut i));
    // The operator accepts the gap: the archive goes on from the log's first offset.
    let mut i = spawn_ingest(&ingest(&["--kafka-option", "auto.offset.reset=earliest"]), &d.join("ingest-5.log"));
    wait_until(Duration::from_secs(120), "the archive to go on after the gap", || {
        archive_positions(&archive, &topic, 1) == end
    });
    assert!(sigterm(&mut i));
}
