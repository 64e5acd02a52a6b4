//! Broker loss on a real three-node Kafka cluster (replication 3, `min.insync.replicas` 2),
//! while the feed streams through an idempotent `acks=all` producer and both workers
//! consume: the node leading the busiest partition is SIGKILLed and brought back, then all
//! three are SIGKILLed and brought back. The archive must hold every valid record exactly
//! once with nothing left in a temporary file, the counters must equal the feed's truth, and
//! while no broker answers each worker must say so in a few clear lines, not a flood.

mod common;

use std::time::Duration;

use cdrflow_feed::FeedSummary;
use common::*;

#[test]
fn both_sinks_stay_exact_when_brokers_die_and_come_back() {
    let dir = TestDir::new();
    let kafka = Kafka::private(&dir.path().join("kafka"), 19_092, 3);
    let server = Server::shared();
    let ch = server.fresh_database("broker_loss");
    let topic = kafka.topic("loss", 6);
    let truth_path = dir.path().join("truth.jsonl");
    let mut feed =
        stream_feed(&kafka.bootstrap, &topic, 45_000, 61, 900, 0.01, &truth_path, &dir.path().join("feed.log"));
    let archive = dir.path().join("archive");
    let (ilog, alog) = (dir.path().join("ingest.log"), dir.path().join("aggregate.log"));
    let aport = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut i = spawn_ingest(&ingest_args(&kafka.bootstrap, &topic, &archive, "loss-ingest", &[]), &ilog);
    let metrics = format!("127.0.0.1:{aport}");
    let extra = ["--flush-interval-ms", "400", "--metrics-addr", &metrics];
    let aggregate = aggregate_args(&kafka.bootstrap, &topic, &server.url(), "t_broker_loss", "loss-aggregate", &extra);
    let mut a = spawn(&aggregate, &alog);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(60), "both workers to write something", &alog, || {
        !archive_positions(&archive, &topic, 6).is_empty()
            && !rt.block_on(ch.positions("loss-aggregate", &topic)).unwrap_or_default().is_empty()
    });

    // The node leading the busiest partition dies and comes back.
    let marks = kafka.watermarks(&topic, 6);
    let busiest = marks.iter().max_by_key(|(_, end)| **end).map(|(p, _)| *p).unwrap();
    let leader = kafka.leader(&topic, busiest);
    kafka.kill(leader);
    std::thread::sleep(Duration::from_secs(8));
    kafka.restart(leader);
    std::thread::sleep(Duration::from_secs(4));

    // Every node dies at once, stays down, and comes back.
    for n in 1..=3 {
        kafka.kill(n);
    }
    wait_until_logged(Duration::from_secs(40), "the aggregator to report Kafka unreachable", &alog, || {
        http_get(aport, "/readyz")
            .is_some_and(|(status, body)| status == 503 && body.contains("Kafka cannot be reached"))
    });
    std::thread::sleep(Duration::from_secs(10));
    kafka.start_again();

    assert!(feed.wait().unwrap().success(), "the feed's idempotent producer delivered everything");
    let summary: FeedSummary = feed_summary(&dir.path().join("truth.jsonl"));
    let marks = kafka.watermarks(&topic, 6);
    assert_eq!(marks.values().sum::<i64>(), summary.messages as i64, "the topic holds the feed, no more, no less");
    wait_until_logged(Duration::from_secs(180), "both sinks to catch up", &alog, || {
        archive_positions(&archive, &topic, 6) == marks
            && rt.block_on(ch.positions("loss-aggregate", &topic)).unwrap_or_default() == marks
    });
    wait_until(Duration::from_secs(30), "/readyz to recover", || {
        http_get(aport, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    assert!(sigterm(&mut i) && sigterm(&mut a));

    let got = read_archive(&archive);
    assert_eq!(got.rows, summary.valid_messages, "every valid record archived");
    assert_eq!(got.call_ids.values().filter(|n| **n > 1).count() as u64, summary.resent, "only re-sends twice");
    let tmp: Vec<_> = files_under(&archive)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp")))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    assert_same_counters(&stored_as_truth(&rt, &ch, None), &read_truth(&truth_path));

    // While no broker answered, each worker said so clearly and briefly.
    for log in [&ilog, &alog] {
        let text = std::fs::read_to_string(log).unwrap();
        let said = text.lines().filter(|l| l.contains("cannot be reached")).count();
        assert!((1..=4).contains(&said), "{}: `cannot be reached` said {said} times", log.display());
        let noisy = text.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).count();
        assert!(noisy <= 30, "{}: {noisy} ERROR/WARN lines during the outage", log.display());
    }
}
