//! An archive write that outlives its worker's place in the group must not commit.
//!
//! The archive's store stalls (a relay holds every chunk from the first member's next
//! intent on) while the first member writes. Its thread, waiting for that write, stops
//! polling. A second member joins, whose path to the store is fine; the group waits
//! `max.poll.interval.ms` (7 s here) for the first member to rejoin, goes on without it, and
//! the second member recovers the partitions (nothing of the stalled batch is visible yet)
//! and archives past every offset of that batch. When the store answers again, the first
//! member's write must stop before its next step: a commit would put a second unit over
//! offsets the second member archived (it cuts units at another size). The archive must end
//! holding every valid record once, in contiguous units. (A test binary of its own: it points
//! the process's AWS_* environment at its server to read the archive.)

mod common;

use std::time::Duration;

use cdrflow_archive::Archive;
use common::*;

const BUCKET: &str = "outlived-archive";

#[test]
fn a_write_that_outlives_the_members_place_in_the_group_does_not_commit() {
    let dir = TestDir::new();
    let d = dir.path();
    let s3 = S3Server::start(&d.join("moto.log"), BUCKET);
    let relay = Relay::start(s3.port);
    let kafka = Kafka::shared();
    let topic = kafka.topic("ingest-outlived", 2);
    let truth = d.join("truth.jsonl");
    let mut feed = stream_feed(&kafka.bootstrap, &topic, 40_000, 59, 2_000, 0.0, &truth, &d.join("generate.log"));
    let out = format!("s3://{BUCKET}/archive");
    for (k, v) in S3Server::env(s3.port) {
        // SAFETY: this test is alone in its binary's process, and nothing else in it reads
        // the environment meanwhile.
        unsafe { std::env::set_var(k, v) };
    }
    let archive = Archive::open(&out).unwrap();
    let args = |port: u16, rows: &str| {
        let mut a = ingest_args(
            &kafka.bootstrap,
            &topic,
            std::path::Path::new(&out),
            "ingest-outlived",
            // The group gives up on a member after 7 s without a poll.
            &["--kafka-option", "max.poll.interval.ms=7000", "--metrics-addr", &format!("127.0.0.1:{port}")],
        );
        // Units that fall full in a fraction of a second keep the reading thread waiting for
        // the stalled write. The members cut units at different sizes, as members configured
        // apart would, so that a late commit could not coincide with the other's units.
        let at = a.iter().position(|x| x == "--max-rows").unwrap() + 1;
        a[at] = rows.into();
        a
    };
    let (first_log, second_log) = (d.join("ingest-1.log"), d.join("ingest-2.log"));
    let first_port = free_port();
    let first_env = S3Server::worker_env(relay.port);
    let first_env: Vec<(&str, &str)> = first_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = spawn_with_env(&args(first_port, "500"), &first_log, &first_env);
    let files = || {
        http_get(first_port, "/metrics")
            .map(|(_, b)| metric(&b, "cdrflow_files_written_total{worker=\"ingest\"}"))
            .unwrap_or(0)
    };
    wait_until_logged(Duration::from_secs(60), "the first member's first files", &first_log, || files() > 0);
    // The store stalls from the first member's next intent on: that batch is under way and
    // nothing of it is visible yet.
    relay.hold_from(b"/_cdrflow/pending/");
    wait_until_logged(Duration::from_secs(60), "the first member's next write to stall", &first_log, || {
        relay.holding()
    });
    let stalled_below = kafka.watermarks(&topic, 2);
    let second_env = S3Server::worker_env(s3.port);
    let second_env: Vec<(&str, &str)> = second_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut second = spawn_with_env(&args(free_port(), "700"), &second_log, &second_env);
    // The second member archives past every offset of the stalled batch, then the store
    // answers the first one again.
    wait_until_logged(
        Duration::from_secs(60),
        "the second member to archive past the stalled write",
        &second_log,
        || {
            let now = archive.committed_positions(&topic, &[0, 1]).unwrap();
            stalled_below.iter().all(|(p, high)| now.get(p).is_some_and(|o| o >= high))
        },
    );
    relay.release();
    wait_until_logged(Duration::from_secs(60), "the first member's write to stop uncommitted", &first_log, || {
        std::fs::read_to_string(&first_log).unwrap_or_default().contains("has not polled Kafka for")
    });
    assert!(feed.wait().unwrap().success());
    let marks = kafka.watermarks(&topic, 2);
    wait_until(Duration::from_secs(120), "the archive to catch up", || {
        archive.committed_positions(&topic, &[0, 1]).unwrap() == marks
    });
    assert!(sigterm(&mut first) && sigterm(&mut second), "both members drain and exit 0");
    assert_archive_exact(&archive, &topic, 2, &feed_summary(&truth));
}
