//! The decoders on hostile input, in the default test run: the fuzzers' seed corpora and any
//! regression they found (`fuzz/corpus`, `fuzz/regressions`) replayed, and property tests
//! over arbitrary bytes and over valid records with bytes flipped, cut and spliced. Each
//! input gives a CDR that keeps the contract's invariants or a rejection with a reason;
//! nothing panics. (`cargo fuzz` explores further: fuzz/README.md.)

use std::path::Path;
use std::sync::LazyLock;

use cdrflow_schemas::{Cdr, CsvFeed, Decoder, LineRegistry, Pseudonymiser, Rejection};
use proptest::prelude::*;

static DECODER: LazyLock<Decoder> = LazyLock::new(|| {
    let d = Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"fuzzing key, 32 bytes long......").unwrap());
    // The Avro fuzzer's writer schemas (fuzz/fuzz_targets/decode_avro_confluent.rs).
    d.avro.insert(cdrflow_schemas::avro::WriterSchema::parse(1, cdrflow_schemas::avro::CDR_V1_AVSC));
    d.avro.insert(cdrflow_schemas::avro::WriterSchema::parse(2, include_str!("../../fuzz/avro_v2.avsc")));
    d
});

const JSON: &str = r#"{"call_id":"61-000000017","region":61,"dialled":"112","caller":"89007816053","start":"2022-02-01T00:00:04Z","answer":"2022-02-01T00:00:05Z","end":"2022-02-01T00:00:17Z","queue_wait_s":1,"talk_s":12,"disposition":"answered","topic":"medical_emergency","age_band":"40_60","channel":"voice","operator_id":"op0124","queue_id":"q112"}"#;
const CSV: &str = r#""61","89007816053","112","hotline","""Citizen"" <89007816053>","SIP/trunk-00000001","SIP/op0124-0000002a","Queue","q112,t,,,300","2022-02-01 03:00:04","2022-02-01 03:00:05","2022-02-01 03:00:17",13,12,"ANSWERED","DOCUMENTATION","61-000000017","topic=medical_emergency;age=40_60;channel=voice""#;

fn check(r: Result<Cdr, Rejection>) {
    match r {
        Ok(cdr) => {
            assert!(cdr.end_ms >= cdr.start_ms, "an accepted call ends after it starts");
            assert!(!cdr.call_id.is_empty());
        }
        Err(e) => assert!(!e.reason.code().is_empty() && !e.detail.is_empty(), "a rejection says why"),
    }
}

fn json(b: &[u8]) {
    check(DECODER.decode_json(b));
}

fn avro(b: &[u8]) {
    check(DECODER.decode_avro_confluent(b));
}

fn csv(b: &[u8]) {
    check(DECODER.decode_asterisk_csv(b, &CsvFeed::FromAccountcode));
}

#[test]
fn the_seed_records_are_what_the_mutations_start_from() {
    assert!(DECODER.decode_json(JSON.as_bytes()).is_ok());
    assert!(DECODER.decode_asterisk_csv(CSV.as_bytes(), &CsvFeed::FromAccountcode).is_ok());
}

#[test]
fn the_fuzz_corpora_and_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for (dir, decode) in [
        ("decode_json", json as fn(&[u8])),
        ("decode_asterisk_csv", csv as fn(&[u8])),
        ("decode_avro_confluent", avro as fn(&[u8])),
    ] {
        for kind in ["corpus", "regressions"] {
            for f in std::fs::read_dir(root.join(kind).join(dir)).unwrap() {
                let p = f.unwrap().path();
                if p.file_name().unwrap() != ".keep" {
                    decode(&std::fs::read(&p).unwrap());
                    n += 1;
                }
            }
        }
    }
    assert!(n > 200, "the corpora are there ({n} inputs)");
}

/// A valid record with some bytes flipped, some cut and some spliced in.
fn mutated(seed: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..8),
        prop_oneof![Just(len), 0..=len],
        proptest::collection::vec(any::<u8>(), 0..16),
        0..=len,
    )
        .prop_map(move |(flips, keep, splice, at)| {
            let mut b = seed.as_bytes().to_vec();
            for (i, v) in flips {
                b[i] = v;
            }
            b.truncate(keep);
            let at = at.min(b.len());
            b.splice(at..at, splice);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        json(&b);
        csv(&b);
    }

    #[test]
    fn mutated_json_records_never_panic(b in mutated(JSON)) {
        json(&b);
    }

    #[test]
    fn mutated_csv_records_never_panic(b in mutated(CSV)) {
        csv(&b);
    }

    #[test]
    fn json_with_any_value_in_any_field_never_panics(
        field in prop::sample::select(vec!["call_id", "region", "dialled", "caller", "start", "answer", "end", "queue_wait_s", "talk_s", "disposition", "topic", "age_band", "channel"]),
        value in prop_oneof![
            Just("null".to_owned()), Just("1e400".to_owned()), Just("-0".to_owned()), Just("18446744073709551616".to_owned()),
            Just("[[[[[[[[[[1]]]]]]]]]]".to_owned()), Just("{\"a\":{}}".to_owned()), Just("\"\\u0000\"".to_owned()),
            Just("\"\\ud800\"".to_owned()), any::<i64>().prop_map(|v| v.to_string()), any::<f64>().prop_map(|v| format!("{v:?}")),
            ".{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ],
    ) {
        let text = JSON;
        let at = text.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
        let end = at + text[at..].find([',', '}']).unwrap();
        let b = format!("{}{}{}", &text[..at], value, &text[end..]);
        json(b.as_bytes());
    }
}
