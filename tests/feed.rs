//! The synthetic feed: exact agreement with the validator, determinism, its ground truth
//! against independently decoded records, and the shape the field reports describe.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};

use cdrflow_feed::ValidationReport;
use cdrflow_feed::{FeedOptions, FeedSummary, Generator, Message};
use cdrflow_schemas::{Counters, CsvFeed, Decoder, Format, HourKey, LineRegistry, Pseudonymiser, classify};

const BIN: &str = env!("CARGO_BIN_EXE_cdrflow");

/// Runs a shell pipeline; returns its stdout bytes (a feed holds invalid UTF-8 on purpose).
fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("sh").arg("-c").arg(script).stderr(Stdio::null()).output().expect("sh runs");
    assert!(out.status.success(), "`{script}` failed: {:?}", out.status);
    out.stdout
}

/// `cdrflow generate … | cdrflow validate …` accepts exactly the good records and rejects
/// exactly the bad ones, each with the reason the generator put in.
fn generated_feed_validates_exactly(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.jsonl");
    let report = sh(&format!(
        "{BIN} generate --cdrs 100000 --seed 1 --format {format} --truth {} | {BIN} validate --format {format} --rejects {}",
        truth.display(),
        dir.path().join("rejects.txt").display()
    ));
    let report: ValidationReport = serde_json::from_slice(&report).expect("validate prints one JSON object");
    let summary: FeedSummary =
        serde_json::from_slice(&std::fs::read(dir.path().join("truth.jsonl.summary.json")).unwrap()).unwrap();
    assert_eq!(summary.messages, 100_000);
    assert!(summary.bad > 300 && summary.resent > 100 && summary.late > 200, "{summary:?}");
    assert_eq!(report.accepted, summary.valid_messages);
    assert_eq!(report.rejected, summary.bad);
    assert_eq!(report.reasons, summary.bad_by_reason);
    assert_eq!(
        summary.bad_by_reason.len(),
        cdrflow_schemas::Reason::possible_in(cdrflow_schemas::Format::Json).len(),
        "every kind of bad record appears"
    );
    // The rejects file holds each bad line with its reason.
    let rejects = std::fs::read(dir.path().join("rejects.txt")).unwrap();
    let lines = rejects.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    assert_eq!(lines, summary.bad);
}

#[test]
fn json_feed_validates_exactly() {
    generated_feed_validates_exactly("json");
}

#[test]
fn asterisk_csv_feed_validates_exactly() {
    generated_feed_validates_exactly("asterisk-csv");
}

#[test]
fn one_regions_csv_feed_validates_with_its_region() {
    let report = sh(&format!(
        "{BIN} generate --cdrs 5000 --seed 9 --region 38 --format asterisk-csv --bad-share 0.05 | {BIN} validate --format asterisk-csv --region 38"
    ));
    let report: ValidationReport = serde_json::from_slice(&report).unwrap();
    assert_eq!(report.accepted + report.rejected, 5000);
    assert!(report.rejected > 150, "{report:?}");
    assert!(!report.reasons.contains_key("unknown_region"), "a one-region feed cannot name another region");
}

#[test]
fn generation_is_deterministic() {
    let a = sh(&format!("{BIN} generate --cdrs 20000 --seed 7 --format json"));
    let b = sh(&format!("{BIN} generate --cdrs 20000 --seed 7 --format json"));
    let c = sh(&format!("{BIN} generate --cdrs 20000 --seed 8 --format json"));
    assert_eq!(a.len(), b.len());
    assert!(a == b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, another feed");
    let x = sh(&format!("{BIN} generate --cdrs 20000 --seed 7 --format asterisk-csv"));
    let y = sh(&format!("{BIN} generate --cdrs 20000 --seed 7 --format asterisk-csv"));
    assert!(x == y);
}

fn collect(format: Format, opts: FeedOptions) -> (Vec<Vec<u8>>, Generator) {
    let mut feed = Generator::new(FeedOptions { format, ..opts });
    let mut msgs = Vec::new();
    while feed
        .emit_next(&mut |m: Message<'_>| {
            msgs.push(m.payload.to_vec());
            Ok(())
        })
        .unwrap()
    {}
    (msgs, feed)
}

/// The ground truth equals counters recomputed from the records as any consumer decodes
/// them (re-sends counted once): the truth describes the bytes, not the generator's intent.
#[test]
fn truth_matches_the_decoded_feed() {
    use cdrflow_schemas::avro;
    for format in [Format::Json, Format::AsteriskCsv, Format::AvroConfluent] {
        // (Avro: the writer schema under id 5, as a registry would have handed it out.)
        let writer = cdrflow_feed::AvroWriter { id: 5, schema: avro::Schema::parse_str(avro::CDR_V1_AVSC).unwrap() };
        let opts = FeedOptions { cdrs: 60_000, seed: 5, avro: Some(writer), ..FeedOptions::default() };
        let (msgs, feed) = collect(format, opts);
        let lines = LineRegistry::builtin();
        let decoder = Decoder::new(lines.clone(), Pseudonymiser::ephemeral());
        decoder.avro.insert(avro::WriterSchema::parse(5, avro::CDR_V1_AVSC));
        let mut seen = HashSet::new();
        let mut counters: rustc_hash::FxHashMap<HourKey, Counters> = Default::default();
        let (mut resent, mut bad) = (0, 0);
        let mut reasons = std::collections::BTreeMap::<String, u64>::new();
        for m in &msgs {
            let cdr = match format {
                Format::Json => decoder.decode_json(m),
                Format::AsteriskCsv => decoder.decode_asterisk_csv(m, &CsvFeed::FromAccountcode),
                Format::AvroConfluent => decoder.decode_avro_confluent(m),
            };
            let cdr = match cdr {
                Ok(cdr) => cdr,
                Err(why) => {
                    bad += 1;
                    *reasons.entry(why.reason.code().to_owned()).or_default() += 1;
                    continue;
                }
            };
            if !seen.insert(cdr.call_id.clone()) {
                resent += 1;
                continue;
            }
            let (k, ooh) = classify(&cdr, &lines);
            counters.entry(k).or_default().record(&cdr, lines.line(cdr.line), ooh);
        }
        assert_eq!(bad, feed.summary().bad);
        assert_eq!(reasons, feed.summary().bad_by_reason, "{format:?}: each bad record for the reason it was made for");
        assert_eq!(resent, feed.summary().resent);
        assert_eq!(&counters, feed.truth(), "{format:?}");
    }
}

/// The feed has the shape of the field reports.
#[test]
fn feed_has_the_shape_of_the_seeds() {
    let (_, feed) =
        collect(Format::Json, FeedOptions { cdrs: 200_000, seed: 11, bad_share: 0.0, ..FeedOptions::default() });
    let lines = LineRegistry::builtin();
    let mut total = Counters::default();
    let mut by_region: BTreeMap<u8, u64> = BTreeMap::new();
    let mut by_line: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_local_hour = [0u64; 24];
    for (k, c) in feed.truth() {
        total.merge(c);
        *by_region.entry(k.region.0).or_default() += c.offered;
        *by_line.entry(lines.line(k.line).id.clone()).or_default() += c.offered;
        if k.region.0 == 77 {
            by_local_hour[((k.hour / 3600 + 3) % 24) as usize] += c.offered;
        }
    }
    let share = |n: u64| n as f64 / total.offered as f64;
    // Every region calls; Moscow far more than the Nenets okrug (population).
    assert_eq!(by_region.len(), 89);
    assert!(by_region[&77] > 50 * by_region[&83], "{} vs {}", by_region[&77], by_region[&83]);
    // All five lines, 122 the largest.
    assert_eq!(by_line.len(), 5);
    assert!((0.5..0.62).contains(&share(by_line["122"])), "{by_line:?}");
    // Moscow's day: the late-morning peak dwarfs the night.
    assert!(by_local_hour[10] > 8 * by_local_hour[3], "{by_local_hour:?}");
    // Age bands as Irkutsk reported them (of those recorded).
    let recorded: u64 = total.by_age_band[..5].iter().sum();
    let band = |i: usize| total.by_age_band[i] as f64 / recorded as f64;
    assert!((0.43..0.47).contains(&band(2)), "30–40 ≈ 45 %");
    assert!((0.33..0.37).contains(&band(3)), "40–60 ≈ 35 %");
    assert!((0.16..0.20).contains(&band(4)), "60+ ≈ 18 %");
    // Dispositions and queue behaviour look like a hotline's.
    assert!((0.7..0.93).contains(&share(total.answered)), "answered {}", share(total.answered));
    assert!(total.abandoned > 0 && total.short_abandoned > 0 && total.transferred_out > 0 && total.out_of_hours > 0);
    let sl = total.service_level().unwrap();
    assert!((0.6..0.98).contains(&sl), "service level {sl}");
    assert!(total.by_topic["covid"] > total.by_topic["housing"], "February 2022: COVID dominates");
}
