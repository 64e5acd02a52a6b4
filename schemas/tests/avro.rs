//! The Avro wire format: Confluent framing, resolution from writer schemas to the
//! contract's reader schema (`schemas/avro/cdr_v1.avsc`), and the same CDR as the JSON
//! decoder gives for the same call.

use apache_avro::Schema;
use apache_avro::types::Value;
use cdrflow_schemas::avro::{self, WriterSchema, cdr_fields, write_confluent};
use cdrflow_schemas::{Clock, Decoder, LineRegistry, Pseudonymiser, Reason};
use proptest::prelude::*;

const NOW_MS: i64 = 1_767_225_600_000;

fn decoder() -> Decoder {
    let mut d = Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"test key of enough bytes").unwrap());
    d.clock = Clock::Fixed(NOW_MS);
    d
}

const JSON: &str = r#"{"call_id":"38-000000001","region":38,"dialled":"122","caller":"+7 912 345-67-89",
    "start":"2022-02-14T09:00:00Z","answer":"2022-02-14T09:00:12Z","end":"2022-02-14T09:03:12Z",
    "queue_wait_s":12,"talk_s":180,"disposition":"answered","topic":"covid","age_band":"30_40",
    "channel":"voice","operator_id":"op0042","queue_id":"q122"}"#;

/// v2 of a feed's schema: adds `site`, drops the optional `operator_id`, sends `region` as
/// an int and durations as longs (promoted to the reader's double).
const V2: &str = r#"{"type":"record","name":"Cdr","namespace":"ru.hotlines.cdr.v1","fields":[
    {"name":"call_id","type":"string"},{"name":"region","type":"int"},{"name":"dialled","type":"string"},
    {"name":"caller","type":["null","string"],"default":null},
    {"name":"start","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"answer","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
    {"name":"end","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"queue_wait_s","type":["null","long"],"default":null},{"name":"talk_s","type":["null","long"],"default":null},
    {"name":"disposition","type":"string"},{"name":"topic","type":["null","string"],"default":null},
    {"name":"age_band","type":["null","string"],"default":null},{"name":"channel","type":["null","string"],"default":null},
    {"name":"queue_id","type":["null","string"],"default":null},{"name":"site","type":"string","default":"msk-1"}]}"#;

fn reference() -> cdrflow_schemas::Cdr {
    decoder().decode_json(JSON.as_bytes()).expect("the documented record")
}

fn encode(
    d: &Decoder,
    id: u32,
    schema_text: &str,
    edit: impl FnOnce(&mut Vec<(&'static str, Option<Value>)>),
) -> Vec<u8> {
    let w = d.avro.insert(WriterSchema::parse(id, schema_text));
    let mut fields = cdr_fields(&reference(), Some("+7 912 345-67-89"));
    edit(&mut fields);
    let mut out = Vec::new();
    write_confluent(id, w.schema.as_ref().expect("parses"), fields, &mut out).expect("encodes");
    out
}

fn set(fields: &mut [(&'static str, Option<Value>)], name: &str, v: Option<Value>) {
    fields.iter_mut().find(|(n, _)| *n == name).expect("a contract field").1 = v;
}

#[test]
fn the_reader_schema_is_the_json_contract_field_for_field() {
    let Schema::Record(r) = avro::reader_schema() else { panic!("a record") };
    let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(JSON).unwrap();
    for k in json.keys() {
        assert!(names.contains(&k.as_str()), "{k} is in cdr_v1.avsc");
    }
    assert!(names.contains(&"linked_id") && names.contains(&"transfer_to"), "{names:?}");
}

#[test]
fn v1_and_v2_writers_give_the_json_decoders_cdr() {
    let d = decoder();
    let v1 = encode(&d, 1, avro::CDR_V1_AVSC, |_| {});
    assert_eq!(&v1[..5], &[0, 0, 0, 0, 1], "the Confluent frame");
    assert_eq!(d.decode_avro_confluent(&v1).unwrap(), reference());
    let v2 = encode(&d, 7, V2, |_| {});
    let got = d.decode_avro_confluent(&v2).unwrap();
    let mut want = reference();
    want.operator_id = None; // v2 dropped it: the reader's default
    assert_eq!(got, want);
}

#[test]
fn rejections_name_the_reason() {
    let d = decoder();
    let ok = encode(&d, 1, avro::CDR_V1_AVSC, |_| {});
    let reason = |bytes: &[u8]| d.decode_avro_confluent(bytes).unwrap_err();
    assert_eq!(reason(&ok[..3]).reason, Reason::Malformed);
    let mut wrong_magic = ok.clone();
    wrong_magic[0] = b'{';
    let r = reason(&wrong_magic);
    assert!(r.reason == Reason::Malformed && r.detail.contains("magic byte 0x7b"), "{r}");
    assert_eq!(reason(&ok[..ok.len() - 3]).reason, Reason::Malformed, "truncated body");
    let mut longer = ok.clone();
    longer.push(0);
    assert!(reason(&longer).detail.contains("1 bytes left"), "trailing bytes");
    let mut unknown = ok.clone();
    unknown[4] = 99;
    assert_eq!(reason(&unknown).reason, Reason::UnknownSchema);
    // A writer whose start is a string cannot resolve to timestamp-millis.
    let strings = avro::CDR_V1_AVSC.replacen(
        r#"{"name": "start", "type": {"type": "long", "logicalType": "timestamp-millis"}}"#,
        r#"{"name": "start", "type": "string"}"#,
        1,
    );
    assert_ne!(strings, avro::CDR_V1_AVSC);
    let bad_writer = encode(&d, 3, &strings, |_| {});
    let r = reason(&bad_writer);
    assert_eq!(r.reason, Reason::SchemaMismatch, "{r}");
    assert!(r.detail.contains("writer schema 3"), "{r}");
    let maybe = encode(&d, 1, avro::CDR_V1_AVSC, |f| set(f, "disposition", Some(Value::String("maybe".into()))));
    let r = reason(&maybe);
    assert_eq!((r.reason, r.field), (Reason::InvalidValue, Some("disposition")));
    let no_dialled = encode(&d, 1, avro::CDR_V1_AVSC, |f| set(f, "dialled", Some(Value::String(String::new()))));
    assert_eq!(reason(&no_dialled).reason, Reason::MissingField);
    let negative = encode(&d, 1, avro::CDR_V1_AVSC, |f| set(f, "queue_wait_s", Some(Value::Double(-5.0))));
    assert_eq!(reason(&negative).reason, Reason::NegativeDuration);
    let region = encode(&d, 1, avro::CDR_V1_AVSC, |f| set(f, "region", Some(Value::Int(99))));
    assert_eq!(reason(&region).reason, Reason::UnknownRegion);
    let oversized = encode(&d, 1, avro::CDR_V1_AVSC, |f| set(f, "queue_id", Some(Value::String("q".repeat(70_000)))));
    assert_eq!(reason(&oversized).reason, Reason::Oversized);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// Any bytes after a known id: a CDR or a rejection, never a panic; flipped bytes of a
    /// valid record too.
    #[test]
    fn any_body_is_a_cdr_or_a_rejection(body in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..200, to in any::<u8>()) {
        let d = decoder();
        let ok = encode(&d, 1, avro::CDR_V1_AVSC, |_| {});
        let mut msg = vec![0, 0, 0, 0, 1];
        msg.extend_from_slice(&body);
        let _ = d.decode_avro_confluent(&msg);
        let mut flipped = ok.clone();
        let at = 5 + flip % (ok.len() - 5);
        flipped[at] = to;
        let _ = d.decode_avro_confluent(&flipped);
    }
}
#[test]
fn every_truncation_of_a_record_is_malformed() {
    // (apache-avro alone reads a union index at the end of input as null: a record cut
    // after `operator_id` decoded as a shorter, valid one.)
    let d = decoder();
    let ok = encode(&d, 1, avro::CDR_V1_AVSC, |_| {});
    for len in 5..ok.len() {
        let r = d.decode_avro_confluent(&ok[..len]).expect_err("truncated");
        assert_eq!(r.reason, Reason::Malformed, "cut to {len} bytes: {r}");
    }
}

#[test]
fn the_fuzz_seeds_are_valid_records_of_v1_and_v2() {
    let d = decoder();
    d.avro.insert(WriterSchema::parse(1, avro::CDR_V1_AVSC));
    d.avro.insert(WriterSchema::parse(2, V2));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_avro_confluent");
    let mut n = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        d.decode_avro_confluent(&bytes).expect("a seed is a valid record");
        n += 1;
    }
    assert!(n >= 3);
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/avro_v2.avsc"))
            .unwrap()
            .trim(),
        V2.trim(),
        "the fuzzers' v2 is this one"
    );
}
