//! The aggregator against a failing ClickHouse, on a private server behind a TCP relay:
//! the server stopped for 60 s, responses slowed to seconds, inserts refused with "too many
//! parts". Each time consumption pauses (memory stays bounded, nothing is buffered without
//! limit), the logs say what is wrong and how to fix it, and once ClickHouse is back the
//! counters end equal to the ground truth: nothing lost, nothing counted twice.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn clickhouse_down_for_a_minute_slow_and_refusing_inserts_loses_and_doubles_nothing() {
    let dir = TestDir::new();
    let d = dir.path();
    let server = Server::private_with_parts_limit(&d.join("ch"), 18125, 19002, 10);
    let ch = server.fresh_database("clickhouse_faults");
    let relay = Relay::start(server.http_port);
    let kafka = Kafka::shared();
    let topic = kafka.topic("clickhouse-faults", 4);
    let truth = d.join("truth.jsonl");
    // ~140 s of feed at 500 CDRs/s, streaming through every fault below.
    let mut feed = stream_feed(&kafka.bootstrap, &topic, 70_000, 91, 500, 0.01, &truth, &d.join("generate.log"));
    let url = format!("http://127.0.0.1:{}", relay.port);
    let extra = ["--flush-interval-ms", "250", "--metrics-addr", "127.0.0.1:19481"];
    let args = aggregate_args(&kafka.bootstrap, &topic, &url, "t_clickhouse_faults", "ch-faults", &extra);
    let log = d.join("aggregate.log");
    let mut worker = spawn(&args, &log);
    let scrape = || http_get(19481, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let consumed = || metric(&scrape(), "cdrflow_records_consumed_total");
    let errors = || metric(&scrape(), "cdrflow_sink_errors_total");
    wait_until_logged(Duration::from_secs(60), "the aggregator consuming", &log, || consumed() > 2000);

    // 1. Merges stopped: parts pile up until the server refuses inserts ("too many parts").
    let before = errors();
    server.query("SYSTEM STOP MERGES t_clickhouse_faults.counters_log");
    wait_until_logged(Duration::from_secs(90), "inserts refused for too many parts", &log, || {
        std::fs::read_to_string(&log).unwrap().contains("Too many parts") && errors() > before
    });
    std::thread::sleep(Duration::from_secs(3));
    server.query("SYSTEM START MERGES t_clickhouse_faults.counters_log");
    server.query("OPTIMIZE TABLE t_clickhouse_faults.counters_log FINAL");

    // 2. Responses slowed to 1.5 s a chunk for 12 s.
    relay.slow(1500);
    std::thread::sleep(Duration::from_secs(12));
    relay.slow(0);

    // 3. The server is stopped for 60 s (the feed goes on meanwhile).
    let failed_before = errors();
    assert!(server.script("stop"));
    let stopped = Instant::now();
    wait_until_logged(Duration::from_secs(30), "a failed flush", &log, || errors() > failed_before);
    std::thread::sleep(Duration::from_secs(5));
    let paused_at = consumed();
    let mut most = 0;
    while stopped.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(5));
        most = most.max(peak_rss_mib(worker.id()));
        assert!(worker.try_wait().unwrap().is_none(), "the aggregator lives through the outage");
    }
    let during = consumed() - paused_at;
    assert!(during < 2000, "consumption paused while ClickHouse was down ({during} consumed in ~50 s at 500/s)");
    assert!(most < 300, "memory bounded during the outage: {most} MiB");
    // Retried with backoff capped at 5 s, each attempt counted (the position check that
    // precedes a retry included), so operators see the outage in the metric as it goes on.
    let failed = errors() - failed_before;
    assert!(failed >= 5, "every failed attempt during the outage is a counted sink error: {failed} in ~60 s");
    assert!(server.script("start"));
    let back = consumed();
    wait_until_logged(Duration::from_secs(60), "consumption to resume", &log, || consumed() > back + 1000);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains(&format!("ClickHouse at http://127.0.0.1:{} did not answer", relay.port))
            && logs.contains("is it running?"),
        "the log names ClickHouse and the fix"
    );

    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 4);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(120), "the aggregator to catch up", &log, || {
        rt.block_on(ch.positions("ch-faults", &topic)).unwrap_or_default() == marks
    });
    assert!(sigterm(&mut worker), "drains and exits 0");
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("ch-faults")), &read_truth(&truth));
}

/// An insert ClickHouse finishes after the aggregator gave up on it (its rows received, the
/// answer late) lands all the same. A retry that read the positions while ClickHouse still
/// ran it would find the unit missing and send it again: counted twice. Here the server
/// holds each insert back for 6 s (`counters_log`'s partition of this month has 9 parts,
/// merges stopped: ClickHouse's `max_delay_to_insert` rule) and the aggregator waits 1 s.
#[test]
fn an_insert_given_up_while_clickhouse_still_runs_it_is_not_sent_again() {
    let dir = TestDir::new();
    let d = dir.path();
    let (server, ch, kafka, topic, truth) = slow_inserts_and_a_feed(d, "late_insert", (18127, 19004), 1, "3000", "17");
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let extra = ["--flush-interval-ms", "1000", "--insert-timeout-s", "1", "--metrics-addr", &metrics];
    let args = aggregate_args(&kafka.bootstrap, &topic, &server.url(), "t_late_insert", "late-insert", &extra);
    let log = d.join("aggregate.log");
    let mut worker = spawn(&args, &log);
    let marks = kafka.watermarks(&topic, 1);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(120), "the aggregator to catch up", &log, || {
        rt.block_on(ch.positions("late-insert", &topic)).unwrap_or_default() == marks
    });
    let scrape = http_get(port, "/metrics").unwrap().1;
    assert!(sigterm(&mut worker), "drains and exits 0");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("timeout expired"), "the aggregator gave up on the first insert: {text}");
    assert!(text.contains("still runs the flush's earlier insert"), "and found it still running: {text}");
    assert!(metric(&scrape, "cdrflow_sink_errors_total{worker=\"aggregate\",reason=\"earlier_insert_running\"") > 0);
    assert!(text.contains("the unit had landed after all"), "the late insert landed, and was not sent again");
    let units = rt.block_on(ch.log_units("late-insert", &topic)).unwrap();
    assert!(units.iter().all(|u| u.rows == u.cells), "no unit stored twice: {units:?}");
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("late-insert")), &read_truth(&truth));
}

/// A private ClickHouse at `ports` (HTTP, native) that holds each insert into database
/// `t_{name}` back for 6 s (9 parts in `counters_log`'s partition of this month, merges
/// stopped), and a topic of `partitions` named after `name` holding `cdrs` CDRs of `seed`,
/// with its ground truth.
fn slow_inserts_and_a_feed(
    d: &std::path::Path,
    name: &str,
    ports: (u16, u16),
    partitions: i32,
    cdrs: &str,
    seed: &str,
) -> (Server, cdrflow_aggregate::clickhouse::ClickHouse, Kafka, String, std::path::PathBuf) {
    let server = Server::private_with_slow_inserts(&d.join("ch"), ports.0, ports.1, 6);
    let ch = server.fresh_database(name);
    server.query(&format!("SYSTEM STOP MERGES t_{name}.counters_log"));
    for _ in 0..9 {
        server.query(&format!(
            "INSERT INTO t_{name}.counters_log (consumer_group, topic, flushed_at) VALUES ('other', 'other', now())"
        ));
    }
    let kafka = Kafka::shared();
    let topic = kafka.topic(&name.replace('_', "-"), partitions);
    let truth = d.join("truth.jsonl");
    let feed = ["--cdrs", cdrs, "--seed", seed, "--resent-share", "0", "--bad-share", "0", "--brokers"];
    generate(&[&feed[..], &[&kafka.bootstrap, "--topic", &topic, "--truth", truth.to_str().unwrap()]].concat());
    (server, ch, kafka, topic, truth)
}

/// An insert the aggregator gave up on and ClickHouse still runs when its partitions are
/// revoked (a second member joins): the revoke waits until ClickHouse no longer runs it, so
/// the partitions' next owner reads positions the late insert has already moved, and no
/// call counts twice.
#[test]
fn a_revoke_waits_for_an_insert_clickhouse_still_runs() {
    let dir = TestDir::new();
    let d = dir.path();
    let (server, ch, kafka, topic, truth) = slow_inserts_and_a_feed(d, "revoke_late", (18128, 19005), 4, "4000", "19");
    let extra = ["--flush-interval-ms", "1000", "--insert-timeout-s", "1"];
    let args = aggregate_args(&kafka.bootstrap, &topic, &server.url(), "t_revoke_late", "revoke-late", &extra);
    let (first_log, second_log) = (d.join("first.log"), d.join("second.log"));
    let mut first = spawn(&args, &first_log);
    wait_until_logged(Duration::from_secs(120), "the first member to give up on an insert", &first_log, || {
        std::fs::read_to_string(&first_log).unwrap_or_default().contains("timeout expired")
    });
    // Joins while ClickHouse still runs the insert the first member gave up on.
    let mut second = spawn(&args, &second_log);
    let marks = kafka.watermarks(&topic, 4);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(240), "both members to catch up", &second_log, || {
        rt.block_on(ch.positions("revoke-late", &topic)).unwrap_or_default() == marks
    });
    assert!(sigterm(&mut second) && sigterm(&mut first), "both drain and exit 0");
    let mut units = rt.block_on(ch.log_units("revoke-late", &topic)).unwrap();
    assert!(units.iter().all(|u| u.rows == u.cells), "no unit stored twice: {units:?}");
    units.sort_by_key(|u| (u.kafka_partition, u.first_offset));
    for w in units.windows(2) {
        let same = w[0].kafka_partition == w[1].kafka_partition;
        assert!(!same || w[1].first_offset > w[0].last_offset, "units overlap: {:?} and {:?}", w[0], w[1]);
    }
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("revoke-late")), &read_truth(&truth));
    let said = std::fs::read_to_string(&first_log).unwrap();
    assert!(said.contains("waited for an insert ClickHouse still ran"), "the revoke waited for it: {said}");
}

/// ClickHouse stops answering a read without closing the connection (a server or link gone
/// silent): the aggregator's wait for its positions is bounded, says so, and is retried, and
/// once ClickHouse answers again the counters are exact.
#[test]
fn a_read_clickhouse_never_answers_times_out_and_is_retried() {
    let dir = TestDir::new();
    let d = dir.path();
    let server = Server::shared();
    let ch = server.fresh_database("silent_read");
    let relay = Relay::start(server.http_port);
    let kafka = Kafka::shared();
    let topic = kafka.topic("silent-read", 2);
    let truth = d.join("truth.jsonl");
    let feed = ["--cdrs", "3000", "--seed", "23", "--resent-share", "0", "--bad-share", "0", "--brokers"];
    generate(&[&feed[..], &[&kafka.bootstrap, "--topic", &topic, "--truth", truth.to_str().unwrap()]].concat());
    // The first read of positions, on assignment, and everything after it: held.
    relay.hold_from(b"max(last_offset)");
    let url = format!("http://127.0.0.1:{}", relay.port);
    let extra = ["--flush-interval-ms", "500", "--insert-timeout-s", "3"];
    let args = aggregate_args(&kafka.bootstrap, &topic, &url, "t_silent_read", "silent-read", &extra);
    let log = d.join("aggregate.log");
    let mut worker = spawn(&args, &log);
    wait_until_logged(Duration::from_secs(60), "the held read to time out", &log, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("did not answer within 3 s while reading partition positions")
    });
    assert!(relay.holding(), "the read timed out while ClickHouse was still silent");
    relay.release();
    let marks = kafka.watermarks(&topic, 2);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(120), "the aggregator to catch up", &log, || {
        rt.block_on(ch.positions("silent-read", &topic)).unwrap_or_default() == marks
    });
    assert!(sigterm(&mut worker), "drains and exits 0");
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("silent-read")), &read_truth(&truth));
}
