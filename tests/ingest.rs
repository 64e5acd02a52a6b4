//! The ingest workers end to end on real parts: the local Apache Kafka → two `cdrflow ingest`
//! workers in one group → the Parquet archive, read back with the parquet crate.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use cdrflow_feed::FeedSummary;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[test]
fn two_workers_archive_every_valid_record_once_and_dead_letter_the_rest() {
    let dir = TestDir::new();
    let out = dir.path().join("archive");
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-e2e", 4);
    let dlq = format!("{topic}.dlq");
    let truth = dir.path().join("truth.jsonl");
    let feed = ["--cdrs", "40000", "--seed", "41", "--resent-share", "0", "--bad-share", "0.01"];
    let mut args: Vec<&str> = feed.to_vec();
    args.extend(["--brokers", &kafka.bootstrap, "--topic", &topic, "--truth", truth.to_str().unwrap()]);
    generate(&args);
    let summary: FeedSummary = feed_summary(&dir.path().join("truth.jsonl"));

    let mut with_metrics = ingest_args(&kafka.bootstrap, &topic, &out, "ingest-e2e", &[]);
    with_metrics.extend(["--metrics-addr".to_owned(), "127.0.0.1:19465".to_owned()]);
    let mut a = spawn_ingest(&with_metrics, &dir.path().join("a.log"));
    let mut with_metrics_b = ingest_args(&kafka.bootstrap, &topic, &out, "ingest-e2e", &[]);
    with_metrics_b.extend(["--metrics-addr".to_owned(), "127.0.0.1:19466".to_owned()]);
    let mut b = spawn_ingest(&with_metrics_b, &dir.path().join("b.log"));
    let marks = kafka.watermarks(&topic, 4);
    wait_until(Duration::from_secs(120), "both workers to archive the feed", || {
        archive_positions(&out, &topic, 4) == marks
    });
    // Between them, the workers' /metrics count every message read and files written (one
    // worker may have read it all before the other was given partitions).
    let scrapes: Vec<String> =
        [19465, 19466].map(|port| http_get(port, "/metrics").expect("each worker serves /metrics").1).to_vec();
    let total = |name: &str| scrapes.iter().map(|s| metric(s, name)).sum::<u64>();
    let messages: i64 = marks.values().sum();
    assert!(
        total("cdrflow_records_consumed_total{worker=\"ingest\"}") >= messages as u64,
        "fewer consumed than the topic's {messages} messages: {scrapes:?}"
    );
    assert!(total("cdrflow_files_written_total{worker=\"ingest\"}") > 0, "{scrapes:?}");
    assert!(sigterm(&mut a) && sigterm(&mut b), "SIGTERM: drain and exit 0");
    let logs = std::fs::read_to_string(dir.path().join("a.log")).unwrap()
        + &std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    for w in ["a.log", "b.log"] {
        assert!(holds_partitions(&dir.path().join(w)), "both workers took part in the group: {w} held partitions");
    }

    // Every valid record exactly once.
    let archived = read_archive(&out);
    assert_eq!(archived.rows, summary.valid_messages);
    assert_eq!(archived.call_ids.len() as u64, summary.distinct_calls);
    assert_eq!(summary.valid_messages, summary.distinct_calls, "no re-sends in this feed");
    assert!(archived.parquet_files > 89, "files per dt/region");
    assert!(!files_under(&out).iter().any(|p| p.to_string_lossy().ends_with(".tmp")), "no temporary file left");

    // Any Parquet reader reads it: pyarrow (PyPI, installed by the test command), with the
    // Hive partitions as columns.
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys, pyarrow.dataset as ds; t = ds.dataset(sys.argv[1], format='parquet', partitioning='hive').to_table(); \
              print(t.num_rows, len(set(t.column('call_id').to_pylist())), t.column('region').type, t.column('dt').type)")
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(py.status.success(), "pyarrow reads the archive: {}", String::from_utf8_lossy(&py.stderr));
    let seen = String::from_utf8_lossy(&py.stdout).trim().to_owned();
    assert_eq!(seen, format!("{} {} int32 string", summary.valid_messages, summary.valid_messages), "pyarrow's view");

    // And a modern ClickHouse (chdb-core, ClickHouse 26 in-process, also installed by the test
    // command) sees the same rows, instants and offsets (delta-encoded in the files) as pyarrow.
    let both = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, chdb, pyarrow.compute as pc, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
ms = lambda c: pc.sum(pc.cast(t.column(c), "int64")).as_py()
print(t.num_rows, ms("start"), ms("answer"), ms("end"), pc.sum(t.column("kafka_offset")).as_py())
q = ("SELECT count(), sum(toUnixTimestamp64Milli(start)), sum(toUnixTimestamp64Milli(answer)),"
     " sum(toUnixTimestamp64Milli(`end`)), sum(kafka_offset) FROM file('" + sys.argv[1] + "/**/*.parquet', Parquet)")
print(" ".join(str(chdb.query(q, "TSV")).split()))
"#,
        )
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(both.status.success(), "chdb reads the archive: {}", String::from_utf8_lossy(&both.stderr));
    let views = String::from_utf8_lossy(&both.stdout).trim().to_owned();
    let (pyarrow_view, clickhouse_view) = views.split_once('\n').expect("two lines");
    assert_eq!(clickhouse_view, pyarrow_view, "ClickHouse 26 and pyarrow read the same archive");
    assert!(pyarrow_view.starts_with(&format!("{} ", summary.valid_messages)), "{pyarrow_view}");

    // Every bad record in the dead-letter topic, with its original bytes' reason.
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).set("group.id", "dlq-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let dlq_parts = c.fetch_metadata(Some(&dlq), Duration::from_secs(5)).unwrap().topics()[0].partitions().len() as i32;
    assert!(dlq_parts > 0, "the dead-letter topic {dlq} exists");
    for p in 0..dlq_parts {
        tpl.add_partition_offset(&dlq, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut seen = HashSet::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut idle = 0;
    while idle < 10 {
        match c.poll(Duration::from_millis(300)) {
            Some(Ok(m)) => {
                idle = 0;
                let h = m.headers().expect("dead letters carry headers");
                let get = |k: &str| {
                    h.iter().find(|x| x.key == k).and_then(|x| x.value).map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let source = (get("cdrflow-source-partition").unwrap(), get("cdrflow-source-offset").unwrap());
                assert!(!m.payload().unwrap_or_default().is_empty(), "original bytes kept");
                if seen.insert(source) {
                    *reasons.entry(get("cdrflow-reason").unwrap()).or_default() += 1;
                }
            }
            _ => idle += 1,
        }
    }
    assert_eq!(seen.len() as u64, summary.bad);
    assert_eq!(reasons, summary.bad_by_reason);

    // No raw caller number at rest: not in any archived value, any file's bytes, or the logs.
    let callers = generated_callers(&feed);
    assert!(callers.len() > 10_000);
    assert_no_callers(&callers, &archived.texts, "an archived value");
    let all_bytes: Vec<Vec<u8>> = files_under(&out).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_no_callers(&callers, &all_bytes, "an archive file");
    assert_no_callers(&callers, &[logs.into_bytes()], "the workers' logs");
}

#[test]
fn sigkilled_ingest_workers_lose_and_duplicate_nothing_classic_protocol() {
    sigkilled_ingest_workers_lose_and_duplicate_nothing(GroupProtocol::Classic);
}

#[test]
fn sigkilled_ingest_workers_lose_and_duplicate_nothing_consumer_protocol() {
    sigkilled_ingest_workers_lose_and_duplicate_nothing(GroupProtocol::Consumer);
}

/// Eleven workers SIGKILLed one after another while the feed streams, then one that catches
/// up; every worker joins the group with `protocol`.
fn sigkilled_ingest_workers_lose_and_duplicate_nothing(protocol: GroupProtocol) {
    let dir = TestDir::new();
    let out = dir.path().join("archive");
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-crash", 4);
    let truth = dir.path().join("truth.jsonl");
    let mut feed = stream_feed(&kafka.bootstrap, &topic, 50000, 43, 700, 0.0, &truth, &dir.path().join("generate.log"));
    let group = format!("ingest-crash-{}", protocol.name());
    let args = ingest_args(&kafka.bootstrap, &topic, &out, &group, protocol.args());
    let mut jitter = Jitter(0x2545_f491_4f6c_dd1d);
    let start_worker = |i: usize| {
        let log = dir.path().join(format!("ingest-{i}.log"));
        (spawn_ingest(&args, &log), log)
    };
    kill_while_working(11, &mut jitter, 100, start_worker, |_| {});
    assert!(feed.wait().unwrap().success());
    let mut w = spawn_ingest(&args, &dir.path().join("ingest-final.log"));
    let marks = kafka.watermarks(&topic, 4);
    wait_until(Duration::from_secs(120), "the last worker to catch up", || archive_positions(&out, &topic, 4) == marks);
    let final_log = dir.path().join("ingest-final.log");
    // The earlier workers may have archived everything already: SIGTERM only once this one
    // is up (before its handler is installed, SIGTERM would just kill it).
    wait_until_logged(Duration::from_secs(60), "the last worker to join", &final_log, || holds_partitions(&final_log));
    assert!(sigterm(&mut w), "SIGTERM: drain and exit 0; its log:\n{}", std::fs::read_to_string(&final_log).unwrap());

    let archive = cdrflow_archive::Archive::open_dir(&out).unwrap();
    assert_archive_exact(&archive, &topic, 4, &feed_summary(&truth));
}
