//! An evolving Avro feed through both workers, on the real schema registry (Apicurio
//! Registry, `deploy/local/registry.sh`, its Confluent-compatible API) and the real broker:
//! two writer schemas on one topic (v2 adds a field and drops an optional one), their
//! records interleaved, the workers SIGKILLed and restarted, and the registry stopped for
//! 30 s while freshly restarted workers still had to fetch both schemas. The archive and
//! the counters must hold every valid record exactly once, the bad ones must be in the
//! dead-letter topic with their reasons, nothing dead-lettered for the registry's outage,
//! and `validate --format avro-confluent` must give the workers' own summary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdrflow_feed::{FeedSummary, TruthRow, ValidationReport};
use common::*;

/// v2 of the feed's schema: `site` added (with a default), `operator_id` dropped; BACKWARD
/// compatible with v1, as the registry requires by default.
const V2: &str = r#"{"type":"record","name":"Cdr","namespace":"ru.hotlines.cdr.v1","fields":[
 {"name":"call_id","type":"string"},{"name":"linked_id","type":["null","string"],"default":null},
 {"name":"region","type":"int"},{"name":"dialled","type":"string"},
 {"name":"caller","type":["null","string"],"default":null},
 {"name":"start","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"answer","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
 {"name":"end","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"queue_wait_s","type":["null","double"],"default":null},{"name":"talk_s","type":["null","double"],"default":null},
 {"name":"disposition","type":"string"},{"name":"transfer_to","type":["null","string"],"default":null},
 {"name":"topic","type":["null","string"],"default":null},{"name":"age_band","type":["null","string"],"default":null},
 {"name":"channel","type":["null","string"],"default":null},{"name":"queue_id","type":["null","string"],"default":null},
 {"name":"site","type":"string","default":"msk-1"}]}"#;

/// A private Apicurio Registry (its own port and directory), stopped on drop.
struct Registry {
    dir: PathBuf,
    port: u16,
    url: String,
}

impl Registry {
    fn command(&self, action: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(repo().join("deploy/local/registry.sh"))
            .arg(action)
            .env("CDRFLOW_REGISTRY_DIR", &self.dir)
            .env("CDRFLOW_REGISTRY_PORT", self.port.to_string())
            .stderr(Stdio::inherit());
        c
    }

    fn start(dir: &Path, port: u16) -> Registry {
        let mut r = Registry { dir: dir.to_owned(), port, url: String::new() };
        r.start_again();
        r
    }

    fn start_again(&mut self) {
        let out = self.command("start").output().unwrap();
        assert!(out.status.success(), "the schema registry starts (deploy/local/registry.sh)");
        self.url = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
        assert!(self.url.ends_with("/apis/ccompat/v7"), "{}", self.url);
    }

    fn stop(&self) {
        assert!(self.command("stop").status().unwrap().success());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.command("stop").status();
    }
}

/// Registers `schema` (by `cdrflow generate --cdrs 0`) and returns the id it logged.
fn register(url: &str, brokers: &str, topic: &str, schema: &Path, log: &Path) -> u32 {
    let out = Command::new(BIN)
        .args(["generate", "--cdrs", "0", "--format", "avro-confluent", "--schema-registry", url])
        .args(["--brokers", brokers, "--topic", topic, "--avro-schema"])
        .arg(schema)
        .env("CDRFLOW_LOG", "info")
        .output()
        .unwrap();
    std::fs::write(log, &out.stderr).unwrap();
    assert!(out.status.success(), "registering {}: {}", schema.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| l.contains("writer schema registered")).expect("the registration is logged");
    line.split("id=").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).unwrap().parse().unwrap()
}

fn sum_truths(a: &Path, b: &Path) -> BTreeMap<(u8, String, String), TruthRow> {
    let mut out = read_truth(a);
    for (k, r) in read_truth(b) {
        match out.get_mut(&k) {
            None => {
                out.insert(k, r);
            }
            Some(t) => t.add(&r),
        }
    }
    out
}

/// Says which rejected records of `topic` (those not archived: `archived`, each row's source
/// partition and offset) have no dead letter at `seen` (source partition, offset), whether
/// ingest counted them, and what the ingest workers logged about their partitions'
/// assignments and waits: what a failed run needs to be understood from its output alone.
fn explain_missing_dead_letters(
    bootstrap: &str,
    topic: &str,
    archived: &[(i32, i64)],
    seen: &std::collections::HashSet<(String, String)>,
    d: &Path,
) {
    let archived: std::collections::HashSet<(i32, i64)> = archived.iter().copied().collect();
    let bad: Vec<(i32, i64)> = read_topic(bootstrap, topic)
        .into_iter()
        .map(|m| (m.partition, m.offset))
        .filter(|at| !archived.contains(at))
        .collect();
    let missing: Vec<(i32, i64)> =
        bad.iter().copied().filter(|(p, o)| !seen.contains(&(p.to_string(), o.to_string()))).collect();
    eprintln!("{} source messages not archived (rejected)", bad.len());
    eprintln!("bad records with no dead letter (partition, offset): {missing:?}");
    // Whether ingest counted each as rejected (then its dead letter was lost on the way) or
    // never handled it (then its unit's span has a hole the archive's row count cannot see).
    let archive = cdrflow_archive::Archive::open_dir(&d.join("archive")).unwrap();
    for (p, o) in &missing {
        let units = archive.committed(topic, *p).unwrap();
        let covering: Vec<String> = units
            .iter()
            .filter(|u| u.first_offset <= *o && *o <= u.last_offset)
            .map(|u| format!("[{}, {}]: {} rows, {} rejected", u.first_offset, u.last_offset, u.rows, u.rejected))
            .collect();
        let rejected: u64 = units.iter().map(|u| u.rejected).sum();
        let in_topic = bad.iter().filter(|(bp, _)| bp == p).count();
        eprintln!(
            "partition {p} offset {o}: committed units covering it {covering:?}; the partition's units record {rejected} rejected of its {in_topic} bad records"
        );
    }
    for i in 0..5 {
        let Ok(log) = std::fs::read_to_string(d.join(format!("ingest-{i}.log"))) else { continue };
        eprintln!("--- ingest-{i}.log: assignments, revokes, waits, failures");
        for l in log.lines().filter(|l| {
            ["assigned", "revoked", "schema", "failed", "abandoned", "moved", "stopping"].iter().any(|w| l.contains(w))
        }) {
            eprintln!("{l}");
        }
    }
}

#[test]
fn an_evolving_avro_feed_is_archived_and_counted_exactly_through_kills_and_a_registry_outage() {
    let dir = TestDir::new();
    let d = dir.path();
    let mut registry = Registry::start(&d.join("registry"), 18091);
    let kafka = Kafka::shared();
    let server = Server::shared();
    let ch = server.fresh_database("avro");
    let topic = kafka.topic("avro", 6);
    let (v1, v2) = (d.join("cdr_v1.avsc"), d.join("cdr_v2.avsc"));
    std::fs::write(&v1, cdrflow_schemas::avro::CDR_V1_AVSC).unwrap();
    std::fs::write(&v2, V2).unwrap();
    let (id1, id2) = (
        register(&registry.url, &kafka.bootstrap, &topic, &v1, &d.join("reg1.log")),
        register(&registry.url, &kafka.bootstrap, &topic, &v2, &d.join("reg2.log")),
    );
    assert_ne!(id1, id2, "two versions, two ids");

    // Two producers on one topic, one per writer schema, interleaved for ~45 s: distinct
    // call ids (disjoint sequence ranges), 1 % bad, 0.5 % re-sent.
    let feed = |n: &str, schema: &Path, seed: &str, first_seq: &str| {
        let args: Vec<String> = [
            "generate",
            "--cdrs",
            "18000",
            "--seed",
            seed,
            "--first-seq",
            first_seq,
            "--rate",
            "400",
            "--bad-share",
            "0.01",
            "--resent-share",
            "0.005",
            "--format",
            "avro-confluent",
            "--schema-registry",
            &registry.url,
            "--avro-schema",
            schema.to_str().unwrap(),
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            &topic,
            "--truth",
            d.join(format!("truth-{n}.jsonl")).to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        spawn(&args, &d.join(format!("generate-{n}.log")))
    };
    let mut feeds = [feed("v1", &v1, "41", "0"), feed("v2", &v2, "42", "100000000")];

    let avro = ["--format", "avro-confluent", "--schema-registry", &registry.url, "--schema-wait-s", "600"];
    let archive = d.join("archive");
    let ingest_args = ingest_args(&kafka.bootstrap, &topic, &archive, "avro-ingest", &avro);
    let aggregate_args = aggregate_args(
        &kafka.bootstrap,
        &topic,
        &server.url(),
        "t_avro",
        "avro-aggregate",
        &[&avro[..], &["--flush-interval-ms", "300", "--metrics-addr", "127.0.0.1:19631"]].concat(),
    );
    let start = |i: usize| {
        let (il, al) = (d.join(format!("ingest-{i}.log")), d.join(format!("aggregate-{i}.log")));
        (spawn_ingest(&ingest_args, &il), spawn(&aggregate_args, &al), il, al)
    };
    let mut jitter = Jitter(0x2545_f491_4f6c_dd1d);
    // Three SIGKILLs of both workers while the feed streams.
    for i in 0..3 {
        let (mut ingest, mut aggregate, il, al) = start(i);
        wait_until_logged(Duration::from_secs(60), "an assignment", &il, || holds_partitions(&il));
        wait_until_logged(Duration::from_secs(60), "an assignment", &al, || holds_partitions(&al));
        std::thread::sleep(Duration::from_millis(2000 + jitter.below(3000)));
        sigkill(&mut ingest);
        sigkill(&mut aggregate);
    }
    // The registry goes away; workers started now know no schema and must wait for it.
    registry.stop();
    let outage = Instant::now();
    let (mut ingest, mut aggregate, _, al) = start(3);
    wait_until_logged(Duration::from_secs(60), "an assignment", &al, || holds_partitions(&al));
    wait_until_logged(Duration::from_secs(25), "the registry's outage to be felt", &al, || {
        http_get(19631, "/metrics")
            .is_some_and(|(_, m)| metric(&m, "cdrflow_schema_registry_failures_total{worker=\"aggregate\"") > 0)
    });
    let (ready, _) = http_get(19631, "/readyz").unwrap();
    assert_ne!(ready, 200, "not ready while it cannot read the feed");
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    sigkill(&mut ingest); // and once more, mid-outage
    let ingest_log = d.join("ingest-4.log");
    let mut ingest = spawn_ingest(&ingest_args, &ingest_log);
    // Back, empty (in-memory storage): the feed's owner registers the same schemas again,
    // in the same order, and gets the same ids.
    registry.start_again();
    assert_eq!(register(&registry.url, &kafka.bootstrap, &topic, &v1, &d.join("reg3.log")), id1);
    assert_eq!(register(&registry.url, &kafka.bootstrap, &topic, &v2, &d.join("reg4.log")), id2);
    eprintln!("registry down for {:?}", outage.elapsed());
    for f in feeds.iter_mut() {
        assert!(f.wait().unwrap().success(), "the feed was fully produced");
    }

    let marks = kafka.watermarks(&topic, 6);
    let rt = runtime();
    wait_until_logged(Duration::from_secs(180), "the aggregator to catch up", &al, || {
        rt.block_on(ch.positions("avro-aggregate", &topic)).unwrap_or_default() == marks
    });
    wait_until_logged(Duration::from_secs(180), "ingest to catch up", &ingest_log, || {
        archive_positions(&archive, &topic, 6) == marks
    });
    assert!(sigterm(&mut ingest) && sigterm(&mut aggregate));
    let log = std::fs::read_to_string(&al).unwrap();
    assert!(log.contains("fetching Avro writer schema"), "the aggregator waited for the registry");

    let summaries: Vec<FeedSummary> = ["v1", "v2"].map(|n| feed_summary(&d.join(format!("truth-{n}.jsonl")))).to_vec();
    let valid: u64 = summaries.iter().map(|s| s.valid_messages).sum();
    let distinct: u64 = summaries.iter().map(|s| s.distinct_calls).sum();
    let mut bad_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for s in &summaries {
        assert!(s.bad > 50 && s.resent > 30, "{s:?}");
        for (r, n) in &s.bad_by_reason {
            *bad_by_reason.entry(r.clone()).or_default() += n;
        }
    }
    // The archive: every valid record once (a re-send is a record of its own).
    let archived = read_archive(&archive);
    assert_eq!(archived.rows, valid);
    assert_eq!(archived.call_ids.len() as u64, distinct);
    // The counters: both feeds' ground truth, each call once.
    assert_same_counters(
        &stored_as_truth(&rt, &ch, Some("avro-aggregate")),
        &sum_truths(&d.join("truth-v1.jsonl"), &d.join("truth-v2.jsonl")),
    );
    // The dead letters: the bad records with their reasons, nothing for the outage (the
    // same message may be dead-lettered again by a worker killed before its unit was done).
    let mut dead: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for l in read_topic(&kafka.bootstrap, &format!("{topic}.dlq")) {
        let at = (l.headers["cdrflow-source-partition"].clone(), l.headers["cdrflow-source-offset"].clone());
        if seen.insert(at) {
            *dead.entry(l.headers["cdrflow-reason"].clone()).or_default() += 1;
        }
    }
    assert!(!dead.contains_key("unknown_schema") && !dead.contains_key("schema_mismatch"), "{dead:?}");
    if dead != bad_by_reason {
        explain_missing_dead_letters(&kafka.bootstrap, &topic, &archived.sources, &seen, d);
    }
    assert_eq!(dead, bad_by_reason);

    // Onboarding sees what the workers saw.
    let out = Command::new(BIN)
        .args(["validate", "--format", "avro-confluent", "--schema-registry", &registry.url])
        .args(["--brokers", &kafka.bootstrap, "--topic", &topic])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: ValidationReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report.accepted, &report.reasons), (valid, &bad_by_reason));
}
