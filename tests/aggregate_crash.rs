//! The aggregator's exactly-once promise, judged by killing it: SIGKILL at random moments
//! (at least 10 times) while the feed streams, a restart after each kill, and ClickHouse
//! itself restarted once mid-run; the counters must still equal the ground truth exactly,
//! with 1 % of the CDRs re-sent (each call counted once across kills). Run with each of
//! Kafka's group protocols: the classic one and KIP-848's consumer protocol.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigkilled_aggregator_and_a_clickhouse_restart_lose_and_double_nothing_classic_protocol() {
    sigkilled_aggregator_and_a_clickhouse_restart_lose_and_double_nothing(GroupProtocol::Classic, 18123, 19000);
}

#[test]
fn sigkilled_aggregator_and_a_clickhouse_restart_lose_and_double_nothing_consumer_protocol() {
    sigkilled_aggregator_and_a_clickhouse_restart_lose_and_double_nothing(GroupProtocol::Consumer, 18126, 19003);
}

/// The aggregator killed 12 times, every one of its runs in the group with `protocol`, and
/// a private ClickHouse on `http_port`/`tcp_port` (its own per variant: they may run at once).
fn sigkilled_aggregator_and_a_clickhouse_restart_lose_and_double_nothing(
    protocol: GroupProtocol,
    http_port: u16,
    tcp_port: u16,
) {
    let dir = TestDir::new();
    // A private server, so that restarting it does not disturb other tests.
    let server = Server::private(&dir.path().join("ch"), http_port, tcp_port);
    let ch = server.fresh_database("aggregate_crash");
    let kafka = Kafka::shared();
    let topic = kafka.topic("aggregate-crash", 6);
    let truth = dir.path().join("truth.jsonl");
    // The feed streams for ~80 s while the aggregator is killed again and again.
    let mut feed =
        stream_feed(&kafka.bootstrap, &topic, 64000, 31, 800, 0.01, &truth, &dir.path().join("generate.log"));
    let group = format!("agg-crash-{}", protocol.name());
    let mut worker_args: Vec<String> = [
        "aggregate",
        "--brokers",
        &kafka.bootstrap,
        "--topic",
        &topic,
        "--group",
        &group,
        "--session-timeout-ms",
        "6000",
        "--flush-interval-ms",
        "300",
        "--clickhouse",
        &server.url(),
        "--database",
        "t_aggregate_crash",
    ]
    .map(String::from)
    .to_vec();
    worker_args.extend(protocol.args().iter().map(|s| s.to_string()));
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15);
    let kills = 12;
    let start = Instant::now();
    let start_worker = |i: usize| {
        let log = dir.path().join(format!("aggregate-{i}.log"));
        (spawn(&worker_args, &log), log)
    };
    kill_while_working(kills, &mut jitter, 200, start_worker, |i| {
        if i == 5 {
            // ClickHouse goes away under a live aggregator, then comes back.
            std::thread::sleep(Duration::from_millis(500));
            assert!(server.script("stop"));
            std::thread::sleep(Duration::from_secs(3));
            assert!(server.script("start"));
        }
    });
    assert!(feed.wait().unwrap().success(), "the feed was fully produced");
    eprintln!("{kills} kills in {:?}", start.elapsed());

    let final_log = dir.path().join("aggregate-final.log");
    let mut worker = spawn(&worker_args, &final_log);
    let marks = kafka.watermarks(&topic, 6);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(120), "the last aggregator to catch up", &final_log, || {
        rt.block_on(ch.positions(&group, &topic)).unwrap_or_default() == marks
    });
    // SIGTERM only once it is up (the earlier workers may have counted everything already).
    wait_until_logged(Duration::from_secs(60), "the last aggregator to join", &final_log, || {
        holds_partitions(&final_log)
    });
    assert!(sigterm(&mut worker));
    let logs: String =
        (0..kills).map(|i| std::fs::read_to_string(dir.path().join(format!("aggregate-{i}.log"))).unwrap()).collect();
    assert!(
        logs.contains("writing counters to ClickHouse failed") || logs.contains("cannot read partition positions"),
        "the ClickHouse restart was felt by a live worker"
    );
    assert_same_counters(&stored_as_truth(&rt, &ch, Some(&group)), &read_truth(&truth));
}
