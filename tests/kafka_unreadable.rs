//! A batch a worker truly cannot read must not stall it silently, nor be skipped.
//!
//! A private one-node Kafka holds three zstd batches; with the broker stopped, the middle
//! batch's compressed bytes are overwritten on disk (a corrupt segment). librdkafka then
//! fails to decompress it on every fetch. The worker must archive the batch before it,
//! never move past the bad one (nothing skipped, nothing lost), count the failures in
//! `cdrflow_consume_errors_total`, name the partition and offset in its log with the fix,
//! and turn `/readyz` unready.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn an_unreadable_batch_is_named_counted_and_never_skipped() {
    let dir = TestDir::new();
    let kafka = Kafka::private(&dir.path().join("kafka"), 29_292, 1);
    let topic = kafka.topic("unreadable", 1);
    for b in 0..3 {
        let lines: Vec<String> =
            (0..10).map(|i| format!("{{\"batch\":{b},\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(150 + i))).collect();
        let f = dir.path().join(format!("batch{b}.jsonl"));
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        kafka.produce_with_java(&topic, "zstd", &f);
    }
    kafka.stop();
    // The second batch (offsets 10–19) starts where the first ends; its records section
    // (zstd-compressed) begins 61 bytes into it.
    let segment = kafka.partition_dir(1, &topic, 0).join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    for b in &mut bytes[first_len + 61 + 20..first_len + 61 + 60] {
        *b = 0;
    }
    std::fs::write(&segment, bytes).unwrap();
    kafka.start_again();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let archive = dir.path().join("archive");
    let log = dir.path().join("ingest.log");
    let args = ingest_args(
        &kafka.bootstrap,
        &topic,
        &archive,
        "unreadable",
        &["--metrics-addr", &format!("127.0.0.1:{port}")],
    );
    let mut w = spawn_ingest(&args, &log);
    wait_until_logged(Duration::from_secs(60), "the partition to be named as unreadable", &log, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("partition 0 at offset 10")
    });
    let (_, scrape) = http_get(port, "/metrics").unwrap();
    assert!(
        metric(&scrape, "cdrflow_consume_errors_total{worker=\"ingest\",kind=\"bad_compression\"}") > 0,
        "{scrape}"
    );
    assert!(scrape.contains("cdrflow_partition_stalled{worker=\"ingest\",partition=\"0\"} 10"), "{scrape}");
    let (status, body) = http_get(port, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot be read"), "{body}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("compression.type") && text.contains("kafka-dump-log"), "the fix is named:\n{text}");
    assert!(sigterm(&mut w));
    // The batch before it is archived; nothing at or after the bad batch was skipped past.
    assert_eq!(archive_positions(&archive, &topic, 1).get(&0).copied(), Some(10));
    assert_eq!(read_archive(&archive).rows, 0, "these are not CDRs: all ten are dead letters");
}
