//! The JSON decoder's fast scanner against serde's path, which it must agree with exactly:
//! the same accept or reject, the same reason, field and detail, the same CDR — on the
//! fuzzers' corpora and regressions, on hand-made hostile and borderline objects, and on
//! property-based inputs (valid records re-spelled, mutated, and objects of arbitrary
//! fields). `Decoder::decode_json` takes the scanner where it can; `decode_json_reference`
//! is serde alone.

use std::path::Path;
use std::sync::LazyLock;

use cdrflow_schemas::{Decoder, LineRegistry, Pseudonymiser};
use proptest::prelude::*;

static DECODER: LazyLock<Decoder> = LazyLock::new(|| {
    let mut d = Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"differential key, 32 bytes long.").unwrap());
    d.clock = cdrflow_schemas::validate::Clock::Fixed(1_700_000_000_000);
    d
});

const SEED: &str = r#"{"call_id":"61-000000017","region":61,"dialled":"112","caller":"89007816053","start":"2022-02-01T00:00:04Z","answer":"2022-02-01T00:00:05Z","end":"2022-02-01T00:00:17Z","queue_wait_s":1,"talk_s":12,"disposition":"answered","topic":"medical_emergency","age_band":"40_60","channel":"voice","operator_id":"op0124","queue_id":"q112"}"#;

fn same(msg: &[u8]) {
    let fast = DECODER.decode_json(msg);
    let reference = DECODER.decode_json_reference(msg);
    assert_eq!(fast, reference, "the fast path and serde disagree on {:?}", String::from_utf8_lossy(msg));
}

#[test]
fn the_corpora_decode_the_same_both_ways() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        for f in std::fs::read_dir(root.join(kind).join("decode_json")).unwrap() {
            let p = f.unwrap().path();
            if p.file_name().unwrap() != ".keep" {
                same(&std::fs::read(&p).unwrap());
                n += 1;
            }
        }
    }
    assert!(n > 100, "the corpus is there ({n} inputs)");
}

#[test]
fn borderline_objects_decode_the_same_both_ways() {
    let with = |from: &str, to: &str| SEED.replacen(from, to, 1);
    let cases: Vec<String> = vec![
        SEED.to_owned(),
        format!("  {SEED}  \n"),
        format!("{SEED}x"),
        format!("{SEED},"),
        format!("[{SEED}]"),
        "{}".into(),
        " { } ".into(),
        "{".into(),
        "{\"call_id\":}".into(),
        "{\"call_id\":\"a\",}".into(),
        "{,}".into(),
        with("\"region\":61", "\"region\":61,\"region\":62"),
        with("\"region\":61", "\"region\":61.0"),
        with("\"region\":61", "\"region\":6.1e1"),
        with("\"region\":61", "\"region\":061"),
        with("\"region\":61", "\"region\":-0"),
        with("\"region\":61", "\"region\":-61"),
        with("\"region\":61", "\"region\":9223372036854775807"),
        with("\"region\":61", "\"region\":9223372036854775808"),
        with("\"region\":61", "\"region\":-9223372036854775809"),
        with("\"region\":61", "\"region\":99999999999999999999999"),
        with("\"region\":61", "\"region\":\"61\""),
        with("\"region\":61", "\"region\":true"),
        with("\"region\":61", "\"region\":null"),
        with("\"region\":61", "\"region\":[61]"),
        with("\"region\":61", "\"region\":{\"code\":61}"),
        with("\"region\":61", "\"region\" : 61 "),
        with("\"region\":61", "\"region\"\t:\n61"),
        with("\"call_id\":\"61-000000017\"", "\"call_id\":\"61-\\u0030000017\""),
        with("\"call_id\":\"61-000000017\"", "\"call\\u005fid\":\"61-000000017\""),
        with("\"call_id\":\"61-000000017\"", "\"call_id\":\"61-\u{1}000017\""),
        with("\"call_id\":\"61-000000017\"", "\"call_id\":\"Вызов-17\""),
        with("\"call_id\":\"61-000000017\"", "\"call_id\":\"\""),
        with("\"call_id\":\"61-000000017\"", "\"call_id\":null"),
        with("\"topic\":\"medical_emergency\"", "\"topic\":\"a\\\"b\""),
        with("\"answer\":\"2022-02-01T00:00:05Z\"", "\"answer\":null"),
        with("\"queue_wait_s\":1", "\"queue_wait_s\":1.5"),
        with("\"queue_wait_s\":1", "\"queue_wait_s\":-1"),
        with("\"talk_s\":12", "\"talk_s\":1e2"),
        with("\"disposition\":\"answered\"", "\"disposition\":\"ANSWERED\""),
        with("\"channel\":\"voice\"", "\"channel\":\"voice\",\"extra\":{\"a\":[1,2,{\"b\":null}]}"),
        with("\"channel\":\"voice\"", "\"channel\":\"voice\",\"extra\":\"x\",\"extra\":\"y\""),
        with("\"channel\":\"voice\"", "\"channel\":\"voice\",\"\":1"),
        with("\"start\":\"2022-02-01T00:00:04Z\"", "\"start\":\"2022-02-01T03:00:04+03:00\""),
        with("\"end\":\"2022-02-01T00:00:17Z\"", "\"end\":\"2099-02-01T00:00:17Z\""),
        format!("\u{feff}{SEED}"),
        SEED.replace(',', " ,\r\n "),
    ];
    for c in &cases {
        same(c.as_bytes());
    }
}

/// A JSON value of the kinds a field may hold, written as a feed might write it.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_:+\\- ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        "\\\\[nt\"\\\\]".prop_map(|s| format!("\"a{s}b\"")),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u8..=100).prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("[1,2]".to_owned()),
        Just("\"2022-02-01T00:00:04Z\"".to_owned()),
        Just("\"answered\"".to_owned()),
        Just("\"112\"".to_owned()),
    ]
}

const FIELDS: [&str; 19] = [
    "call_id",
    "linked_id",
    "region",
    "dialled",
    "caller",
    "start",
    "answer",
    "end",
    "queue_wait_s",
    "talk_s",
    "disposition",
    "transfer_to",
    "topic",
    "age_band",
    "channel",
    "operator_id",
    "queue_id",
    "other",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_objects_decode_the_same_both_ways(
        fields in proptest::collection::vec((0..FIELDS.len(), value(), "[ \t\n]{0,2}"), 0..20)
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v, ws)| format!("{ws}\"{}\"{ws}:{ws}{v}{ws}", FIELDS[*k])).collect();
        same(format!("{{{}}}", body.join(",")).as_bytes());
    }

    #[test]
    fn the_seed_mutated_decodes_the_same_both_ways(pos in 0..SEED.len(), len in 0usize..6, with in proptest::collection::vec(any::<u8>(), 0..6)) {
        let mut b = SEED.as_bytes().to_vec();
        let end = (pos + len).min(b.len());
        b.splice(pos..end, with);
        same(&b);
    }

    #[test]
    fn the_seed_with_any_field_replaced_decodes_the_same_both_ways(k in 0..FIELDS.len() - 2, v in value()) {
        let key = format!("\"{}\":", FIELDS[k]);
        let msg = match SEED.find(&key) {
            Some(i) => {
                let start = i + key.len();
                let rest = &SEED[start..];
                let end = start + rest.find([',', '}']).unwrap_or(rest.len());
                format!("{}{v}{}", &SEED[..start], &SEED[end..])
            }
            None => SEED.replacen('}', &format!(",{key}{v}}}"), 1),
        };
        same(msg.as_bytes());
    }
}
