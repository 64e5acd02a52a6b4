//! `cdrflow demo`, the README's first command, runs end to end on this machine: on the local
//! Apache Kafka when it is installed (as here), and on librdkafka's embedded mock broker with
//! `--embedded-broker` (a machine without Java). Either way it leaves nothing behind.

mod common;

use std::process::Command;

use common::*;

fn demo(extra: &[&str]) -> (String, String) {
    let dir = TestDir::new();
    let out = Command::new(BIN)
        .args(["demo", "--cdrs", "30000", "--partitions", "4", "--workdir"])
        .arg(dir.path().join("demo"))
        .args(extra)
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "demo {extra:?} failed: {stdout}\n{stderr}");
    assert!(stdout.contains("National summary"));
    assert!(stdout.contains("Moscow"));
    assert!(stdout.contains("every national total matches"));
    assert!(stdout.contains("every valid record of the feed, once"));
    assert!(stderr.contains("dropped the database cdrflow_demo it had created"), "{stderr}");
    (stdout, stderr)
}

#[test]
fn demo_runs_the_pipeline_on_the_local_kafka_and_on_the_embedded_broker() {
    let server = Server::shared();
    let kafka = Kafka::shared();
    let (_, stderr) = demo(&[]);
    assert!(stderr.contains(&format!("Apache Kafka at {}", kafka.bootstrap)), "the demo says which broker: {stderr}");
    assert!(stderr.contains("deleted the topics it had created"), "{stderr}");
    let (_, stderr) = demo(&["--database", "cdrflow_demo", "--embedded-broker"]);
    assert!(stderr.contains("embedded mock Kafka"), "{stderr}");
    assert!(server.script("status"), "the demo leaves a ClickHouse it did not start running");
    assert!(kafka.script(&["status"]), "the demo leaves a Kafka it did not start running");
    assert_eq!(server.query("SELECT count() FROM system.databases WHERE name = 'cdrflow_demo'").trim(), "0");
}
