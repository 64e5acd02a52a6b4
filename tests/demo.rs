//! `cdrflow demo`, the README's first command, runs end to end on this machine.

mod common;

use std::process::Command;

use common::*;

#[test]
fn demo_runs_the_pipeline_and_matches_its_ground_truth() {
    let _server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--cdrs", "30000", "--partitions", "4", "--workdir"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("National summary"));
    assert!(stdout.contains("Moscow"));
    assert!(stdout.contains("every national total matches"));
    assert!(stdout.contains("every valid record of the feed, once"));
    assert!(Server::shared().script("status"), "the demo leaves a ClickHouse it did not start running");
}
