//! Feeds as they come from the wild: written by a producer that is not librdkafka (the Java
//! producer from the broker's own jars, `deploy/local/kafka.sh produce`) with every codec
//! Kafka has — none, gzip, snappy, lz4 and zstd — into one topic. Both workers read all of
//! it and both sinks are exact; the log segments show each codec really was used.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cdrflow_feed::FeedSummary;
use common::*;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// The codecs of every record batch of `topic` on the shared broker's disk.
fn codecs_on_disk(topic: &str, partitions: i32) -> std::collections::BTreeSet<String> {
    let data = repo().join("target/cdrflow-local/kafka/default/node-1/data");
    let mut found = std::collections::BTreeSet::new();
    for p in 0..partitions {
        let dir = data.join(format!("{topic}-{p}"));
        for seg in files_under(&dir).into_iter().filter(|f| f.extension().is_some_and(|x| x == "log")) {
            let out = Command::new("bash")
                .arg(repo().join("deploy/local/kafka.sh"))
                .args(["run", "kafka.tools.DumpLogSegments", "--files"])
                .arg(&seg)
                .output()
                .unwrap();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(rest) = line.split("compresscodec: ").nth(1) {
                    found.insert(rest.split_whitespace().next().unwrap_or_default().to_ascii_lowercase());
                }
            }
        }
    }
    found
}

fn produce_with_java(topic: &str, codec: &str, lines: &Path) {
    let out = Command::new("bash")
        .arg(repo().join("deploy/local/kafka.sh"))
        .args(["produce", "--topic", topic, "--compression", codec])
        .arg(lines)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "the Java producer ({codec}): {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_codec_from_the_java_producer_is_read_by_both_workers_exactly() {
    let dir = TestDir::new();
    let kafka = Kafka::shared();
    let server = Server::shared();
    let ch = server.fresh_database("codecs");
    let topic = kafka.topic("codecs", 4);
    let (feed, truth_path) = (dir.path().join("feed.jsonl"), dir.path().join("truth.jsonl"));
    generate(&[
        "--cdrs",
        "10000",
        "--seed",
        "55",
        "--resent-share",
        "0",
        // The Java console producer reads text lines: no deliberately broken bytes (the
        // dead-letter path is shown elsewhere), every record survives it as it was.
        "--bad-share",
        "0",
        "--out",
        feed.to_str().unwrap(),
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    let summary: FeedSummary = feed_summary(&dir.path().join("truth.jsonl"));
    // A fifth of the feed per codec, in order, each by the Java producer.
    let lines: Vec<String> = std::fs::read_to_string(&feed).unwrap().lines().map(str::to_owned).collect();
    let per = lines.len().div_ceil(CODECS.len());
    for (codec, chunk) in CODECS.iter().zip(lines.chunks(per)) {
        let part = dir.path().join(format!("{codec}.jsonl"));
        std::fs::write(&part, chunk.join("\n") + "\n").unwrap();
        produce_with_java(&topic, codec, &part);
    }
    let marks = kafka.watermarks(&topic, 4);
    assert_eq!(marks.values().sum::<i64>(), summary.messages as i64, "the topic holds the whole feed");
    let on_disk = codecs_on_disk(&topic, 4);
    for codec in CODECS {
        assert!(on_disk.contains(codec), "no {codec} batch on disk (found {on_disk:?})");
    }

    let archive = dir.path().join("archive");
    let (iport, aport) = (free_port(), free_port());
    let mut i = spawn_ingest(
        &ingest_args(
            &kafka.bootstrap,
            &topic,
            &archive,
            "codecs-ingest",
            &["--metrics-addr", &format!("127.0.0.1:{iport}")],
        ),
        &dir.path().join("ingest.log"),
    );
    let metrics = format!("127.0.0.1:{aport}");
    let extra = ["--flush-interval-ms", "300", "--metrics-addr", &metrics];
    let aggregate = aggregate_args(&kafka.bootstrap, &topic, &server.url(), "t_codecs", "codecs-aggregate", &extra);
    let mut a = spawn(&aggregate, &dir.path().join("aggregate.log"));
    let rt = runtime();
    wait_until_logged(Duration::from_secs(120), "both sinks to catch up", &dir.path().join("aggregate.log"), || {
        archive_positions(&archive, &topic, 4) == marks
            && rt.block_on(ch.positions("codecs-aggregate", &topic)).unwrap_or_default() == marks
    });
    for port in [iport, aport] {
        let (_, scrape) = http_get(port, "/metrics").unwrap();
        assert_eq!(metric(&scrape, "cdrflow_consume_errors_total"), 0, "{scrape}");
        assert_eq!(metric(&scrape, "cdrflow_records_consumed_total"), summary.messages, "{scrape}");
    }
    assert!(sigterm(&mut i) && sigterm(&mut a));
    let got = read_archive(&archive);
    assert_eq!(got.rows, summary.valid_messages, "every valid record archived");
    assert_eq!(got.call_ids.len() as u64, summary.valid_messages, "each once");
    assert_same_counters(&stored_as_truth(&rt, &ch, None), &read_truth(&truth_path));
}
