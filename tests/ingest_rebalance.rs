//! The ingest worker encodes and writes its units on the encoders' pool while it reads on
//! (ingest/src/worker.rs, `Encoding`). A member joining while a batch is being written must
//! not get partitions until that write has ended, so that it reads positions the write has
//! moved. The archive is in object storage (moto's S3 server, PyPI) behind a relay that
//! delays every chunk, so that a write takes seconds and is under way at almost any moment;
//! the first member's log shows the revoke waiting for it, and the archive ends holding every
//! valid record once, in contiguous units. (A test binary of its own: it points the process's
//! AWS_* environment at its server to read the archive back.)

mod common;

use std::time::Duration;

use cdrflow_archive::Archive;
use common::*;

const BUCKET: &str = "rebalance-archive";

#[test]
fn a_revoke_waits_for_the_archive_write_under_way_and_nothing_is_archived_twice() {
    let dir = TestDir::new();
    let d = dir.path();
    let s3 = S3Server::start(&d.join("moto.log"), BUCKET);
    let relay = Relay::start(s3.port);
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-revoke-while-writing", 4);
    let truth = d.join("truth.jsonl");
    let mut feed = stream_feed(&kafka.bootstrap, &topic, 24_000, 53, 2_000, 0.0, &truth, &d.join("generate.log"));
    let out = format!("s3://{BUCKET}/archive");
    let env = S3Server::worker_env(relay.port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = |port: u16| {
        ingest_args(
            &kafka.bootstrap,
            &topic,
            std::path::Path::new(&out),
            "ingest-revoke-while-writing",
            &["--metrics-addr", &format!("127.0.0.1:{port}")],
        )
    };
    let (first_log, second_log) = (d.join("ingest-1.log"), d.join("ingest-2.log"));
    let first_port = free_port();
    let mut first = spawn_with_env(&args(first_port), &first_log, &env);
    // Writing already, so that a batch is under way when the second member joins.
    let files = || {
        http_get(first_port, "/metrics")
            .map(|(_, b)| metric(&b, "cdrflow_files_written_total{worker=\"ingest\"}"))
            .unwrap_or(0)
    };
    wait_until_logged(Duration::from_secs(60), "the first member's first files", &first_log, || files() > 0);
    // Every chunk either way waits 400 ms: a batch's write (intents, data, commits, each a
    // PUT and its answer) takes seconds.
    relay.slow(400);
    std::thread::sleep(Duration::from_secs(2));
    let mut second = spawn_with_env(&args(free_port()), &second_log, &env);
    wait_for_a_revoke_that_waited(&first_log, &second_log, "archive write");
    relay.slow(0);
    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 4);
    for (k, v) in S3Server::env(s3.port) {
        // SAFETY: this test is alone in its binary's process, and nothing else in it reads
        // the environment meanwhile.
        unsafe { std::env::set_var(k, v) };
    }
    let archive = Archive::open(&out).unwrap();
    wait_until(Duration::from_secs(120), "the archive to catch up", || {
        archive.committed_positions(&topic, &[0, 1, 2, 3]).unwrap() == marks
    });
    assert!(sigterm(&mut first) && sigterm(&mut second), "both members drain and exit 0");
    assert_archive_exact(&archive, &topic, 4, &feed_summary(&truth));
}
