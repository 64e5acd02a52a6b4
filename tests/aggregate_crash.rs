//! The aggregator's exactly-once promise, judged by killing it: SIGKILL at random moments
//! (at least 10 times) while the feed streams, a restart after each kill, and ClickHouse
//! itself restarted once mid-run; the counters must still equal the ground truth exactly,
//! with 1 % of the CDRs re-sent (each call counted once across kills).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigkilled_aggregator_and_a_clickhouse_restart_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A private server, so that restarting it does not disturb other tests.
    let server = Server::private(&dir.path().join("ch"), 18123, 19000);
    let ch = server.fresh_database("aggregate_crash");
    let broker = Broker::start(6, &["cdrs"]);
    let truth = dir.path().join("truth.jsonl");
    // The feed streams for ~80 s while the aggregator is killed again and again.
    let mut feed = stream_feed(&broker.bootstrap, 64000, 31, 800, 0.01, &truth, &dir.path().join("generate.log"));
    let worker_args: Vec<String> = [
        "aggregate",
        "--brokers",
        &broker.bootstrap,
        "--topic",
        "cdrs",
        "--group",
        "agg-crash",
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
    let marks = broker.watermarks("cdrs", 6);
    let rt = runtime();
    wait_until(Duration::from_secs(120), "the last aggregator to catch up", || {
        rt.block_on(ch.positions("agg-crash", "cdrs")).unwrap_or_default() == marks
    });
    // SIGTERM only once it is up (the earlier workers may have counted everything already).
    wait_until(Duration::from_secs(60), "the last aggregator to join", || {
        std::fs::read_to_string(&final_log).unwrap_or_default().contains("partitions assigned")
    });
    assert!(sigterm(&mut worker));
    let logs: String =
        (0..kills).map(|i| std::fs::read_to_string(dir.path().join(format!("aggregate-{i}.log"))).unwrap()).collect();
    assert!(
        logs.contains("writing counters to ClickHouse failed") || logs.contains("cannot read partition positions"),
        "the ClickHouse restart was felt by a live worker"
    );
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("agg-crash")), &read_truth(&truth));
}
