//! Hardening on real parts (the local Apache Kafka): a consumer group of three that members
//! join and leave while the feed streams, and hostile messages. In each, both sinks must end
//! exactly right: every valid record archived once, the counters equal to the ground truth,
//! every rejected message in the dead-letter topic with its reason.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The aggregator of these tests: [`aggregate_args`] flushing every 300 ms.
fn aggregate(bootstrap: &str, topic: &str, url: &str, db: &str, group: &str, extra: &[&str]) -> Vec<String> {
    let mut a = aggregate_args(bootstrap, topic, url, db, group, &["--flush-interval-ms", "300"]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Waits for both sinks to hold every partition of `topic` up to the broker's end, then
/// checks them against the ground truth.
fn assert_both_sinks_exact(
    kafka: &Kafka,
    topic: &str,
    partitions: u32,
    out: &std::path::Path,
    ch: &cdrflow_aggregate::clickhouse::ClickHouse,
    group: &str,
    truth: &std::path::Path,
) {
    let marks = kafka.watermarks(topic, partitions);
    let rt = runtime();
    wait_until(Duration::from_secs(180), "the archive to catch up", || {
        archive_positions(out, topic, partitions as i32) == marks
    });
    wait_until(Duration::from_secs(180), "the counters to catch up", || {
        rt.block_on(ch.positions(group, topic)).unwrap_or_default() == marks
    });
    let s = feed_summary(truth);
    let archived = read_archive(out);
    assert_eq!(archived.rows, s.valid_messages, "every valid record archived once");
    assert_eq!(archived.call_ids.len() as u64, s.distinct_calls);
    assert!(!files_under(out).iter().any(|p| p.to_string_lossy().ends_with(".tmp")), "no temporary file visible");
    assert_same_counters(&stored_as_truth(&rt, ch, Some(group)), &read_truth(truth));
}

#[test]
fn a_group_of_three_rebalances_under_load_and_both_sinks_stay_exact() {
    let dir = TestDir::new();
    let d = dir.path();
    let out = d.join("archive");
    let kafka = Kafka::shared();
    let topic = kafka.topic("rebalance", 9);
    let server = Server::shared();
    let ch = server.fresh_database("rebalance");
    let truth = d.join("truth.jsonl");
    let mut feed = stream_feed(&kafka.bootstrap, &topic, 45_000, 61, 2500, 0.01, &truth, &d.join("generate.log"));
    let ingest_args = ingest_args(&kafka.bootstrap, &topic, &out, "rebalance-ingest", &[]);
    let agg_args = aggregate(&kafka.bootstrap, &topic, &server.url(), "t_rebalance", "rebalance-agg", &[]);
    let mut n = 0;
    let mut start = |kind: &str| {
        n += 1;
        let log = d.join(format!("{kind}-{n}.log"));
        let child = if kind == "ingest" { spawn_ingest(&ingest_args, &log) } else { spawn(&agg_args, &log) };
        (child, log)
    };
    let mut ingests: Vec<_> = (0..3).map(|_| start("ingest")).collect();
    let mut aggs: Vec<_> = (0..3).map(|_| start("aggregate")).collect();
    // Members leave (SIGTERM, and once SIGKILL) and join while the feed streams (~18 s).
    let steps: [(u64, &str); 6] = [(3, "leave"), (5, "join"), (8, "kill"), (10, "join"), (12, "leave"), (14, "join")];
    let t0 = Instant::now();
    for (at, what) in steps {
        std::thread::sleep(Duration::from_secs(at).saturating_sub(t0.elapsed()));
        match what {
            "leave" => {
                let ((mut i, _), (mut a, _)) = (ingests.remove(0), aggs.remove(0));
                assert!(sigterm(&mut i) && sigterm(&mut a), "a leaving member drains and exits 0");
            }
            "kill" => {
                sigkill(&mut ingests.remove(0).0);
                sigkill(&mut aggs.remove(0).0);
            }
            _ => {
                ingests.push(start("ingest"));
                aggs.push(start("aggregate"));
            }
        }
    }
    assert!(feed.wait().unwrap().success());
    assert_eq!((ingests.len(), aggs.len()), (3, 3), "three members of each at the end");
    assert_both_sinks_exact(&kafka, &topic, 9, &out, &ch, "rebalance-agg", &truth);
    // Every member at the end, the three that joined last among them, took part in a
    // rebalance and holds partitions (9 partitions among 3 members of each kind).
    for (w, log) in ingests.iter_mut().chain(aggs.iter_mut()) {
        wait_until(Duration::from_secs(30), &format!("{} to hold partitions", log.display()), || holds_partitions(log));
        assert!(sigterm(w), "{} drains and exits 0", log.display());
    }
}

/// The aggregator inserts on a thread of its own while it reads on (aggregate/src/writing.rs).
/// A member joining while an insert is under way must not get partitions until that insert
/// has ended, so that it reads positions the insert has moved: with every ClickHouse request
/// slowed to seconds (a relay delaying each chunk), an insert is under way at almost any
/// moment, and the first member's log shows the revoke waiting for it. The counters end
/// equal to the ground truth.
#[test]
fn a_revoke_waits_for_the_insert_under_way_and_nothing_is_counted_twice() {
    let dir = TestDir::new();
    let d = dir.path();
    let kafka = Kafka::shared();
    let topic = kafka.topic("revoke-while-inserting", 4);
    let server = Server::shared();
    let ch = server.fresh_database("revoke_inserting");
    let relay = Relay::start(server.http_port);
    let url = format!("http://127.0.0.1:{}", relay.port);
    let truth = d.join("truth.jsonl");
    let mut feed = stream_feed(&kafka.bootstrap, &topic, 24_000, 67, 2000, 0.01, &truth, &d.join("generate.log"));
    let args = aggregate(&kafka.bootstrap, &topic, &url, "t_revoke_inserting", "revoke-inserting", &[]);
    let (first_log, second_log) = (d.join("aggregate-1.log"), d.join("aggregate-2.log"));
    let first_args = [&args[..], &["--metrics-addr".into(), "127.0.0.1:19477".into()]].concat();
    let mut first = spawn(&first_args, &first_log);
    // Counting already, so that it has a flush to insert when the second member joins.
    let consumed =
        || metric(&http_get(19477, "/metrics").map(|(_, b)| b).unwrap_or_default(), "cdrflow_records_consumed_total");
    wait_until_logged(Duration::from_secs(60), "the first member to consume", &first_log, || consumed() > 1000);
    // Every chunk either way waits 400 ms: an insert (request and answer) takes a second or
    // more, against flushes due every 300 ms.
    relay.slow(400);
    std::thread::sleep(Duration::from_secs(3));
    let mut second = spawn(&args, &second_log);
    wait_for_a_revoke_that_waited(&first_log, &second_log, "counters insert");
    relay.slow(0);
    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 4);
    let rt = runtime();
    wait_until(Duration::from_secs(120), "the counters to catch up", || {
        rt.block_on(ch.positions("revoke-inserting", &topic)).unwrap_or_default() == marks
    });
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("revoke-inserting")), &read_truth(&truth));
    assert!(sigterm(&mut first) && sigterm(&mut second), "both members drain and exit 0");
    // Had the revoke not waited, the second member would have read positions the first
    // one's insert then moved, and one of them would have found that unit over its own.
    for log in [&first_log, &second_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.contains("another writer's unit landed"),
            "no insert landed behind a reader's back ({})",
            log.display()
        );
    }
}

#[test]
fn hostile_messages_go_to_dead_letters_and_memory_stays_bounded() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = TestDir::new();
    let d = dir.path();
    let out = d.join("archive");
    let kafka = Kafka::shared();
    let topic = kafka.topic("hostile", 3);
    let server = Server::shared();
    let ch = server.fresh_database("hostile");
    let truth = d.join("truth.jsonl");
    generate(&[
        "--cdrs",
        "6000",
        "--seed",
        "71",
        "--resent-share",
        "0",
        "--bad-share",
        "0",
        "--brokers",
        &kafka.bootstrap,
        "--topic",
        &topic,
        "--truth",
        truth.to_str().unwrap(),
    ]);

    let good = r#"{"call_id":"38-hostile-1","region":38,"dialled":"122","caller":"+79001234567","start":"2022-02-01T10:00:00Z","answer":"2022-02-01T10:00:05Z","end":"2022-02-01T10:01:00Z","queue_wait_s":5,"talk_s":50,"disposition":"answered","topic":"covid","age_band":"30_40","channel":"voice"}"#;
    let many_mib = {
        let mut s = good.replacen("\"topic\":\"covid\"", &format!("\"topic\":\"{}\"", "x".repeat(4 << 20)), 1);
        s.shrink_to_fit();
        s.into_bytes()
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("oversized", many_mib),
        ("oversized", format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
        // 30 000 levels of nesting in a required field: skipped without recursion, then refused.
        (
            "wrong_type",
            good.replace("\"38-hostile-1\"", &format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000))).into_bytes(),
        ),
        // Nesting under an unknown key is skipped without recursion; the record lacks every field.
        ("missing_field", format!("{{\"a\":{}}}", "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000)).into_bytes()),
        ("malformed", good.replace("\"queue_wait_s\":5", "\"queue_wait_s\":1e400").into_bytes()),
        ("malformed", good.replace("\"queue_wait_s\":5", "\"queue_wait_s\":NaN").into_bytes()),
        ("wrong_type", good.replace("\"region\":38", "\"region\":18446744073709551616").into_bytes()),
        (
            "not_utf8",
            good.replace("covid", "co\u{0}vid")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0 { 0xff } else { b })
                .collect(),
        ),
        ("invalid_value", good.replace("covid", "co\\u0007vid\\u001b[31m").into_bytes()),
        ("malformed", b"region,start\n38,\"2022-02-01\nT10:00\",\"\"\"".to_vec()),
        ("malformed", vec![]),
        ("malformed", b"\xef\xbb\xbf".to_vec()),
        // With a key of 2 MiB (below): its dead letter must still fit a producer's 1 MB.
        ("malformed", b"{\"call_id\":".to_vec()),
    ];
    let big_key = hostile.len() - 1;
    let key_of = |i: usize| match i == big_key {
        true => format!("h{i}-{}", "k".repeat(2 << 20)).into_bytes(),
        false => format!("h{i}").into_bytes(),
    };
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        // The 4 MiB message is over the producer's 1 MB default; the local broker takes up to 16 MiB.
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for (i, (_, bytes)) in hostile.iter().enumerate() {
        p.send(BaseRecord::to(&topic).key(&key_of(i)).payload(bytes)).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();

    let mut ing = spawn_ingest(
        &ingest_args(&kafka.bootstrap, &topic, &out, "hostile-ingest", &["--metrics-addr", "127.0.0.1:19473"]),
        &d.join("ingest.log"),
    );
    let mut agg = spawn(
        &aggregate(
            &kafka.bootstrap,
            &topic,
            &server.url(),
            "t_hostile",
            "hostile-agg",
            &["--metrics-addr", "127.0.0.1:19474"],
        ),
        &d.join("aggregate.log"),
    );
    assert_both_sinks_exact(&kafka, &topic, 3, &out, &ch, "hostile-agg", &truth);
    let (ingest_mib, agg_mib) = (peak_rss_mib(ing.id()), peak_rss_mib(agg.id()));
    let scrapes = [http_get(19473, "/metrics").unwrap().1, http_get(19474, "/metrics").unwrap().1];
    assert!(sigterm(&mut ing) && sigterm(&mut agg), "neither worker panicked: both drain and exit 0");
    assert!(
        ingest_mib < 400 && agg_mib < 400,
        "memory stays bounded: ingest {ingest_mib} MiB, aggregate {agg_mib} MiB"
    );

    // Each hostile message is in the dead-letter topic once, with a reason (the oversized
    // one cut to its first 256 KiB, its size in a header; the long key to its first 64 KiB);
    // none reached a sink.
    let dead = read_topic(&kafka.bootstrap, &format!("{topic}.dlq"));
    assert_eq!(dead.len(), hostile.len(), "one dead letter per hostile message");
    for (i, (want, _)) in hostile.iter().enumerate() {
        let key = key_of(i);
        let l = dead
            .iter()
            .find(|l| l.key == key[..key.len().min(64 * 1024)])
            .unwrap_or_else(|| panic!("hostile message {i} not dead-lettered"));
        assert_eq!(&l.headers["cdrflow-reason"], want, "hostile message {i}: {}", l.headers["cdrflow-detail"]);
    }
    let big = dead.iter().find(|l| l.key == b"h0").unwrap();
    assert_eq!(big.payload.len(), 256 * 1024);
    assert_eq!(big.headers["cdrflow-truncated-from"], hostile[0].1.len().to_string());
    let long_key = dead.iter().find(|l| l.key.len() == 64 * 1024).unwrap();
    assert_eq!(long_key.headers["cdrflow-key-truncated-from"], key_of(big_key).len().to_string());
    assert_eq!(long_key.payload, hostile[big_key].1, "the payload whole");
    assert!(dead.iter().all(|l| !l.headers["cdrflow-detail"].is_empty()), "a human explanation each");
    assert_eq!(metric(&scrapes[0], "cdrflow_records_rejected_total{worker=\"ingest\""), hostile.len() as u64);

    // Nobody gets data they should not: no raw caller number and no key in logs, metrics or
    // archive files.
    let logs = std::fs::read(d.join("ingest.log"))
        .unwrap()
        .into_iter()
        .chain(std::fs::read(d.join("aggregate.log")).unwrap())
        .collect::<Vec<u8>>();
    let callers = generated_callers(&["--cdrs", "6000", "--seed", "71", "--resent-share", "0", "--bad-share", "0"]);
    let files: Vec<Vec<u8>> = files_under(&out).iter().map(|f| std::fs::read(f).unwrap()).collect();
    for (what, hay) in [
        ("logs", vec![logs.clone()]),
        ("metrics", scrapes.iter().map(|s| s.clone().into_bytes()).collect()),
        ("archive files", files.clone()),
    ] {
        assert_no_callers(&callers, &hay, what);
        assert!(
            !hay.iter().any(|h| h.windows(CALLER_KEY.len()).any(|w| w == CALLER_KEY.as_bytes())),
            "the caller key is not in {what}"
        );
        assert!(
            !hay.iter().any(|h| h.windows(12).any(|w| w == b"+79001234567")),
            "a hostile record's caller is not in {what}"
        );
    }
}

#[test]
fn hostile_csv_lines_go_to_dead_letters_with_a_reason() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = TestDir::new();
    let d = dir.path();
    let out = d.join("archive");
    let kafka = Kafka::shared();
    let topic = kafka.topic("hostile-csv", 2);
    let truth = d.join("truth.jsonl");
    generate(&[
        "--cdrs",
        "2000",
        "--seed",
        "81",
        "--format",
        "asterisk-csv",
        "--resent-share",
        "0",
        "--bad-share",
        "0",
        "--brokers",
        &kafka.bootstrap,
        "--topic",
        &topic,
        "--truth",
        truth.to_str().unwrap(),
    ]);
    let good = r#""27","+79005503705","122","hotline","""Citizen"" <+79005503705>","SIP/trunk-00000001","SIP/op0124-0000002a","Queue","q122,t,,,300","2022-02-01 10:00:11","2022-02-01 10:00:15","2022-02-01 10:01:12",61,57,"ANSWERED","DOCUMENTATION","27-hostile-1","topic=transport;age=30_40;channel=social""#;
    let hostile: Vec<(&str, String)> = vec![
        // Two records in one message.
        ("malformed", format!("{good}\n{}", good.replace("27-hostile-1", "27-hostile-2"))),
        // An embedded newline inside the quoted call id.
        ("invalid_value", good.replace("27-hostile-1", "27-host\nile-1")),
        // A quote left open; a quote inside an unquoted field is read as a character (as
        // RFC 4180 readers do), which makes the caller number no number.
        ("malformed", good.replacen("\"27\",", "\"27,", 1)),
        ("invalid_value", good.replacen("\"27\",\"+79005503705\"", "27,+7900\"5503705", 1)),
        // Ten thousand fields.
        ("malformed", format!("{good}{}", ",\"\"".repeat(10_000))),
        // Control characters and an escape sequence in the topic.
        ("invalid_value", good.replace("topic=transport", "topic=trans\u{7}port\u{1b}[31m")),
    ];
    let p: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    for (i, (_, line)) in hostile.iter().enumerate() {
        p.send(BaseRecord::to(&topic).key(&format!("h{i}")).payload(line.as_bytes())).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let mut args = ingest_args(&kafka.bootstrap, &topic, &out, "hostile-csv", &["--format", "asterisk-csv"]);
    args.retain(|a| !a.is_empty());
    let mut ing = spawn_ingest(&args, &d.join("ingest.log"));
    let marks = kafka.watermarks(&topic, 2);
    wait_until(Duration::from_secs(120), "the archive to catch up", || archive_positions(&out, &topic, 2) == marks);
    assert!(sigterm(&mut ing));
    assert_eq!(read_archive(&out).rows, feed_summary(&truth).valid_messages, "the good lines archived, once");
    let dead = read_topic(&kafka.bootstrap, &format!("{topic}.dlq"));
    assert_eq!(dead.len(), hostile.len());
    for (i, (want, line)) in hostile.iter().enumerate() {
        let l = dead.iter().find(|l| l.key == format!("h{i}").as_bytes()).unwrap();
        assert_eq!(&l.headers["cdrflow-reason"], want, "hostile line {i}: {}", l.headers["cdrflow-detail"]);
        assert_eq!(l.payload, line.as_bytes(), "the original bytes");
    }
}
