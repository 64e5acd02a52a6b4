//! The CDR contract, tested with real bytes: what each wire format accepts, what it turns
//! into, and one test per rejection reason in each format.

use cdrflow_schemas::{
    AgeBand, Cdr, Channel, Clock, CsvFeed, Decoder, Disposition, LineRegistry, Pseudonymiser, Reason, RegionCode,
    Rejection,
};
use serde_json::{Value, json};

/// 2026-01-01: "now" for the tests, so `in_future` does not depend on the day they run.
const NOW_MS: i64 = 1_767_225_600_000;

fn decoder() -> Decoder {
    let mut d = Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"test key of enough bytes").unwrap());
    d.clock = Clock::Fixed(NOW_MS);
    d
}

fn base_json() -> Value {
    json!({
        "call_id": "38-000000001", "region": 38, "dialled": "122", "caller": "+7 912 345-67-89",
        "start": "2022-02-14T09:00:00Z", "answer": "2022-02-14T09:00:12Z", "end": "2022-02-14T09:03:12Z",
        "queue_wait_s": 12, "talk_s": 180, "disposition": "answered", "topic": "covid",
        "age_band": "30_40", "channel": "voice", "operator_id": "op0042", "queue_id": "q122"
    })
}

fn json_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut v = base_json();
    edit(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

fn reject_json(bytes: &[u8]) -> Rejection {
    decoder().decode_json(bytes).expect_err("must be rejected")
}

#[test]
fn json_accepts_the_documented_record() {
    let cdr = decoder().decode_json(&json_with(|_| {})).unwrap();
    let caller = Pseudonymiser::new(b"test key of enough bytes").unwrap().hash("89123456789");
    let lines = LineRegistry::builtin();
    assert_eq!(
        cdr,
        Cdr {
            call_id: "38-000000001".into(),
            linked_id: None,
            region: RegionCode(38),
            line: lines.by_id("122").unwrap(),
            dialled: "122".into(),
            caller,
            start_ms: 1_644_829_200_000,
            answer_ms: Some(1_644_829_212_000),
            end_ms: 1_644_829_392_000,
            queue_wait_ms: 12_000,
            talk_ms: 180_000,
            disposition: Disposition::Answered,
            transfer_to: None,
            topic: Some("covid".into()),
            age_band: Some(AgeBand::From30To40),
            channel: Channel::Voice,
            operator_id: Some("op0042".into()),
            queue_id: Some("q122".into()),
        }
    );
}

#[test]
fn json_defaults_offsets_nulls_and_unknown_fields() {
    let bytes = json_with(|m| {
        m.remove("queue_wait_s");
        m.remove("talk_s");
        m.remove("channel");
        m.insert("caller".into(), Value::Null);
        m.insert("start".into(), json!("2022-02-14T12:00:00+03:00"));
        m.insert("future_field".into(), json!({"nested": [1, 2]}));
    });
    let cdr = decoder().decode_json(&bytes).unwrap();
    assert_eq!(cdr.start_ms, 1_644_829_200_000, "+03:00 offset read");
    assert_eq!(cdr.queue_wait_ms, 12_000, "queue wait derived from answer-start");
    assert_eq!(cdr.talk_ms, 180_000, "talk derived from end-answer");
    assert_eq!(cdr.channel, Channel::Voice);
    assert_eq!(cdr.caller, None, "null caller is withheld");
    // An abandoned call waits until it ends.
    let ab = decoder()
        .decode_json(&json_with(|m| {
            m.remove("answer");
            m.remove("queue_wait_s");
            m.remove("talk_s");
            m.insert("disposition".into(), json!("abandoned"));
        }))
        .unwrap();
    assert_eq!(ab.queue_wait_ms, 192_000);
    assert_eq!(ab.talk_ms, 0);
}

#[test]
fn json_every_reason_with_its_field() {
    use Reason::*;
    let cases: Vec<(Reason, Option<&str>, Vec<u8>)> = vec![
        (
            Oversized,
            None,
            json_with(|m| {
                m.insert("note".into(), json!("n".repeat(70_000)));
            }),
        ),
        (NotUtf8, None, {
            let mut b = json_with(|_| {});
            let at = b.len() - 10;
            b.insert(at, 0xC3); // a lone lead byte
            b
        }),
        (Malformed, None, b"{\"call_id\": \"x\", ".to_vec()),
        (Malformed, None, b"[1, 2, 3]".to_vec()),
        (Malformed, None, format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes()),
        (Malformed, None, br#"{"call_id":"a","call_id":"b"}"#.to_vec()),
        (Malformed, None, br#"{"region": NaN}"#.to_vec()),
        (
            MissingField,
            Some("call_id"),
            json_with(|m| {
                m.remove("call_id");
            }),
        ),
        (
            MissingField,
            Some("region"),
            json_with(|m| {
                m.remove("region");
            }),
        ),
        (
            MissingField,
            Some("dialled"),
            json_with(|m| {
                m.insert("dialled".into(), json!(""));
            }),
        ),
        (
            MissingField,
            Some("start"),
            json_with(|m| {
                m.remove("start");
            }),
        ),
        (
            MissingField,
            Some("end"),
            json_with(|m| {
                m.insert("end".into(), Value::Null);
            }),
        ),
        (
            MissingField,
            Some("disposition"),
            json_with(|m| {
                m.remove("disposition");
            }),
        ),
        (
            WrongType,
            Some("region"),
            json_with(|m| {
                m.insert("region".into(), json!("38"));
            }),
        ),
        (
            WrongType,
            Some("region"),
            json_with(|m| {
                m.insert("region".into(), json!(38.5));
            }),
        ),
        (
            WrongType,
            Some("call_id"),
            json_with(|m| {
                m.insert("call_id".into(), json!(12345));
            }),
        ),
        (
            WrongType,
            Some("queue_wait_s"),
            json_with(|m| {
                m.insert("queue_wait_s".into(), json!("12"));
            }),
        ),
        (
            WrongType,
            Some("topic"),
            json_with(|m| {
                m.insert("topic".into(), json!(["covid"]));
            }),
        ),
        (
            InvalidValue,
            Some("disposition"),
            json_with(|m| {
                m.insert("disposition".into(), json!("ANSWERED"));
            }),
        ),
        (
            InvalidValue,
            Some("channel"),
            json_with(|m| {
                m.insert("channel".into(), json!("fax"));
            }),
        ),
        (
            InvalidValue,
            Some("age_band"),
            json_with(|m| {
                m.insert("age_band".into(), json!("30-40"));
            }),
        ),
        (
            InvalidValue,
            Some("topic"),
            json_with(|m| {
                m.insert("topic".into(), json!("Covid 19"));
            }),
        ),
        (
            InvalidValue,
            Some("caller"),
            json_with(|m| {
                m.insert("caller".into(), json!("anonymous"));
            }),
        ),
        (
            InvalidValue,
            Some("dialled"),
            json_with(|m| {
                m.insert("dialled".into(), json!("1-2-2?"));
            }),
        ),
        (
            InvalidValue,
            Some("call_id"),
            json_with(|m| {
                m.insert("call_id".into(), json!("a\u{7}b"));
            }),
        ),
        (
            BadTimestamp,
            Some("start"),
            json_with(|m| {
                m.insert("start".into(), json!("14.02.2022 09:00"));
            }),
        ),
        (
            BadTimestamp,
            Some("answer"),
            json_with(|m| {
                m.insert("answer".into(), json!("2022-02-14T09:00:12"));
            }),
        ),
        (
            UnknownRegion,
            Some("region"),
            json_with(|m| {
                m.insert("region".into(), json!(84));
            }),
        ),
        (
            UnknownRegion,
            Some("region"),
            json_with(|m| {
                m.insert("region".into(), json!(100000));
            }),
        ),
        (
            UnknownRegion,
            Some("region"),
            json_with(|m| {
                m.insert("region".into(), json!(-1));
            }),
        ),
        (
            UnknownLine,
            Some("dialled"),
            json_with(|m| {
                m.insert("dialled".into(), json!("555"));
            }),
        ),
        (
            EndBeforeStart,
            Some("end"),
            json_with(|m| {
                m.remove("answer");
                m.remove("queue_wait_s");
                m.remove("talk_s");
                m.insert("disposition".into(), json!("no_answer"));
                m.insert("end".into(), json!("2022-02-14T08:59:00Z"));
            }),
        ),
        (
            AnswerOutsideCall,
            Some("answer"),
            json_with(|m| {
                m.insert("answer".into(), json!("2022-02-14T08:59:59Z"));
            }),
        ),
        (
            TooOld,
            Some("start"),
            json_with(|m| {
                m.insert("start".into(), json!("1999-12-31T23:59:59Z"));
            }),
        ),
        (
            InFuture,
            Some("end"),
            json_with(|m| {
                m.insert("end".into(), json!("2026-01-03T00:00:00Z"));
            }),
        ),
        (
            NegativeDuration,
            Some("queue_wait_s"),
            json_with(|m| {
                m.insert("queue_wait_s".into(), json!(-1));
            }),
        ),
        (
            NegativeDuration,
            Some("talk_s"),
            json_with(|m| {
                m.insert("talk_s".into(), json!(-0.5));
            }),
        ),
        (
            AbsurdDuration,
            Some("end"),
            json_with(|m| {
                m.insert("end".into(), json!("2022-02-16T09:00:00Z"));
            }),
        ),
        (
            AbsurdDuration,
            Some("talk_s"),
            json_with(|m| {
                m.insert("talk_s".into(), json!(1e300));
            }),
        ),
        (
            AbsurdDuration,
            Some("queue_wait_s"),
            json_with(|m| {
                m.insert("queue_wait_s".into(), json!(u64::MAX));
            }),
        ),
        (
            InconsistentDurations,
            Some("talk_s"),
            json_with(|m| {
                m.insert("talk_s".into(), json!(600));
            }),
        ),
        (
            InconsistentDurations,
            Some("queue_wait_s"),
            json_with(|m| {
                m.insert("queue_wait_s".into(), json!(60));
            }),
        ),
        (
            InconsistentDisposition,
            Some("answer"),
            json_with(|m| {
                m.remove("answer");
            }),
        ),
        (
            InconsistentDisposition,
            Some("answer"),
            json_with(|m| {
                m.insert("disposition".into(), json!("abandoned"));
            }),
        ),
        (
            FieldTooLong,
            Some("call_id"),
            json_with(|m| {
                m.insert("call_id".into(), json!("x".repeat(129)));
            }),
        ),
        (
            FieldTooLong,
            Some("operator_id"),
            json_with(|m| {
                m.insert("operator_id".into(), json!("o".repeat(65)));
            }),
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (reason, field, bytes) in cases {
        let r = reject_json(&bytes);
        assert_eq!(
            (r.reason, r.field),
            (reason, field),
            "{}: {r}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        assert!(!r.detail.is_empty());
        assert!(!r.to_string().contains("9123456789"), "a rejection never echoes the caller: {r}");
        seen.insert(reason);
    }
    assert_eq!(seen.len(), Reason::possible_in(cdrflow_schemas::Format::Json).len(), "every reason is tested");
}

fn base_csv() -> Vec<String> {
    // accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start,
    // answer, end, duration, billsec, disposition, amaflags, uniqueid, userfield
    [
        "",
        "+79123456789",
        "122",
        "hotline",
        "\"Citizen\" <+79123456789>",
        "SIP/trunk-00000001",
        "SIP/op0042-0000002a",
        "Queue",
        "q122,t,,,300",
        "2022-02-14 17:00:00",
        "2022-02-14 17:00:12",
        "2022-02-14 17:03:12",
        "192",
        "180",
        "ANSWERED",
        "DOCUMENTATION",
        "1644829200.42",
        "topic=covid;age=30_40;channel=voice",
    ]
    .map(String::from)
    .to_vec()
}

/// Writes fields the way Asterisk does: quoted, `""` for a quote, numbers bare.
fn csv_line(fields: &[String]) -> Vec<u8> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| if i == 12 || i == 13 { f.clone() } else { format!("\"{}\"", f.replace('"', "\"\"")) })
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

fn csv_with(edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
    let mut f = base_csv();
    edit(&mut f);
    csv_line(&f)
}

const IRKUTSK: CsvFeed = CsvFeed::Region(RegionCode(38));

#[test]
fn csv_accepts_asterisk_lines_in_the_regions_zone() {
    let cdr = decoder().decode_asterisk_csv(&csv_with(|_| {}), &IRKUTSK).unwrap();
    let from_json = decoder()
        .decode_json(&json_with(|m| {
            m.insert("call_id".into(), json!("1644829200.42"));
        }))
        .unwrap();
    // Irkutsk is UTC+8: 17:00 local is 09:00Z, the same call as the JSON one.
    assert_eq!(cdr, from_json);
    // Bare numbers, CRLF, no userfield, no uniqueid: the id is derived from the line.
    let mut f = base_csv();
    f.truncate(16);
    let mut bare = String::from_utf8(csv_line(&f)).unwrap().replace("\"+79123456789\"", "+79123456789");
    bare.push_str("\r\n");
    let a = decoder().decode_asterisk_csv(bare.as_bytes(), &IRKUTSK).unwrap();
    let b = decoder().decode_asterisk_csv(bare.as_bytes(), &IRKUTSK).unwrap();
    assert!(a.call_id.starts_with("csv-") && a.call_id.len() == 28, "{}", a.call_id);
    assert_eq!(a.call_id, b.call_id, "a re-sent line keeps its id");
    assert_eq!(a.caller, cdr.caller);
    assert_eq!(a.topic, None);
    // NO ANSWER in a queue is an abandon; elsewhere a plain no-answer.
    let abandoned = csv_with(|f| {
        f[10].clear();
        f[13] = "0".into();
        f[14] = "NO ANSWER".into();
    });
    assert_eq!(decoder().decode_asterisk_csv(&abandoned, &IRKUTSK).unwrap().disposition, Disposition::Abandoned);
    let recorder = csv_with(|f| {
        f[7] = "VoiceMail".into();
        f[10].clear();
        f[13] = "0".into();
        f[14] = "NO ANSWER".into();
    });
    let r = decoder().decode_asterisk_csv(&recorder, &IRKUTSK).unwrap();
    assert_eq!((r.disposition, r.queue_id), (Disposition::NoAnswer, None));
    // A national feed takes the region from accountcode.
    let national = csv_with(|f| f[0] = "38".into());
    assert_eq!(decoder().decode_asterisk_csv(&national, &CsvFeed::FromAccountcode).unwrap(), cdr);
}

#[test]
fn csv_every_reason_with_its_field() {
    use Reason::*;
    let cases: Vec<(Reason, Option<&str>, Vec<u8>, CsvFeed)> = vec![
        (Oversized, None, csv_with(|f| f[17] = format!("topic=x;note={}", "n".repeat(70_000))), IRKUTSK),
        (
            NotUtf8,
            None,
            {
                let mut b = csv_with(|_| {});
                b.insert(20, 0xFF);
                b
            },
            IRKUTSK,
        ),
        (Malformed, None, b"\"\",\"+79123456789\",\"122\"".to_vec(), IRKUTSK),
        (Malformed, None, csv_with(|f| f.push("extra".into())), IRKUTSK),
        (
            Malformed,
            None,
            {
                let mut b = csv_with(|_| {});
                b.truncate(200);
                b
            },
            IRKUTSK,
        ),
        (
            Malformed,
            None,
            String::from_utf8(csv_with(|_| {})).unwrap().replacen("\"122\"", "\"122\"x", 1).into_bytes(),
            IRKUTSK,
        ),
        (Malformed, Some("userfield"), csv_with(|f| f[17] = "topic".into()), IRKUTSK),
        (MissingField, Some("start"), csv_with(|f| f[9].clear()), IRKUTSK),
        (MissingField, Some("end"), csv_with(|f| f[11].clear()), IRKUTSK),
        (MissingField, Some("duration"), csv_with(|f| f[12].clear()), IRKUTSK),
        (MissingField, Some("disposition"), csv_with(|f| f[14].clear()), IRKUTSK),
        (MissingField, Some("dialled"), csv_with(|f| f[2].clear()), IRKUTSK),
        (MissingField, Some("accountcode"), csv_with(|_| {}), CsvFeed::FromAccountcode),
        (WrongType, Some("duration"), csv_with(|f| f[12] = "19x".into()), IRKUTSK),
        (WrongType, Some("billsec"), csv_with(|f| f[13] = "1.5".into()), IRKUTSK),
        (InvalidValue, Some("disposition"), csv_with(|f| f[14] = "answered".into()), IRKUTSK),
        (InvalidValue, Some("userfield"), csv_with(|f| f[17] = "age=old".into()), IRKUTSK),
        (InvalidValue, Some("caller"), csv_with(|f| f[1] = "Unknown".into()), IRKUTSK),
        (BadTimestamp, Some("start"), csv_with(|f| f[9] = "2022-02-14T17:00:00".into()), IRKUTSK),
        (BadTimestamp, Some("answer"), csv_with(|f| f[10] = "2022-02-30 17:00:12".into()), IRKUTSK),
        (UnknownRegion, Some("accountcode"), csv_with(|f| f[0] = "84".into()), CsvFeed::FromAccountcode),
        (UnknownRegion, Some("accountcode"), csv_with(|f| f[0] = "Irkutsk".into()), CsvFeed::FromAccountcode),
        (UnknownLine, Some("dialled"), csv_with(|f| f[2] = "88001234567".into()), IRKUTSK),
        (EndBeforeStart, Some("end"), csv_with(|f| f[11] = "2022-02-14 16:59:00".into()), IRKUTSK),
        (
            AnswerOutsideCall,
            Some("answer"),
            csv_with(|f| {
                f[10] = "2022-02-14 17:04:00".into();
                f[13] = "0".into();
            }),
            IRKUTSK,
        ),
        (
            TooOld,
            Some("start"),
            csv_with(|f| {
                f[9] = "1999-02-14 17:00:00".into();
                f[10] = "1999-02-14 17:00:12".into();
                f[11] = "1999-02-14 17:03:12".into();
            }),
            IRKUTSK,
        ),
        (
            InFuture,
            Some("start"),
            csv_with(|f| {
                f[9] = "2091-02-14 17:00:00".into();
                f[10] = "2091-02-14 17:00:12".into();
                f[11] = "2091-02-14 17:03:12".into();
            }),
            IRKUTSK,
        ),
        (NegativeDuration, Some("billsec"), csv_with(|f| f[13] = "-180".into()), IRKUTSK),
        (
            AbsurdDuration,
            Some("end"),
            csv_with(|f| {
                f[11] = "2022-02-17 17:03:12".into();
                f[12] = (192 + 3 * 86_400).to_string();
            }),
            IRKUTSK,
        ),
        (InconsistentDurations, Some("duration"), csv_with(|f| f[12] = "500".into()), IRKUTSK),
        (InconsistentDurations, Some("billsec"), csv_with(|f| f[13] = "193".into()), IRKUTSK),
        (InconsistentDurations, Some("talk_s"), csv_with(|f| f[13] = "190".into()), IRKUTSK),
        (
            InconsistentDisposition,
            Some("answer"),
            csv_with(|f| {
                f[10].clear();
                f[13] = "0".into();
            }),
            IRKUTSK,
        ),
        (InconsistentDisposition, Some("answer"), csv_with(|f| f[14] = "BUSY".into()), IRKUTSK),
        (FieldTooLong, Some("call_id"), csv_with(|f| f[16] = "9".repeat(200)), IRKUTSK),
        (FieldTooLong, Some("topic"), csv_with(|f| f[17] = format!("topic={}", "t".repeat(65))), IRKUTSK),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (reason, field, bytes, feed) in cases {
        let r = decoder().decode_asterisk_csv(&bytes, &feed).expect_err(&format!(
            "must be rejected as {reason}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        ));
        assert_eq!(
            (r.reason, r.field),
            (reason, field),
            "{}: {r}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        assert!(!r.to_string().contains("9123456789"), "a rejection never echoes the caller: {r}");
        seen.insert(reason);
    }
    assert_eq!(seen.len(), Reason::possible_in(cdrflow_schemas::Format::AsteriskCsv).len(), "every reason is tested");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, .. ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let d = decoder();
            let _ = d.decode_json(&bytes);
            let _ = d.decode_asterisk_csv(&bytes, &IRKUTSK);
            let _ = d.decode_asterisk_csv(&bytes, &CsvFeed::FromAccountcode);
        }

        #[test]
        fn on_mutated_valid_records(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let d = decoder();
            for base in [json_with(|_| {}), csv_with(|_| {})] {
                let mut b = base.clone();
                for (at, byte, op) in &edits {
                    let i = at.index(b.len().max(1));
                    match op {
                        0 if i < b.len() => b[i] = *byte,
                        1 => b.insert(i.min(b.len()), *byte),
                        _ if i < b.len() => { b.remove(i); }
                        _ => {}
                    }
                }
                let _ = d.decode_json(&b);
                let _ = d.decode_asterisk_csv(&b, &IRKUTSK);
                b.truncate(cut.index(b.len().max(1)));
                let _ = d.decode_json(&b);
                let _ = d.decode_asterisk_csv(&b, &CsvFeed::FromAccountcode);
            }
        }

        #[test]
        fn on_arbitrary_json_field_values(field in prop::sample::select(vec![
                "call_id", "linked_id", "region", "dialled", "caller", "start", "answer", "end", "queue_wait_s",
                "talk_s", "disposition", "transfer_to", "topic", "age_band", "channel", "operator_id", "queue_id"]),
            value in prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                ".{0,80}".prop_map(Value::from),
                Just(Value::Null),
                Just(json!([[[]]])),
                Just(json!({"a": {"b": 1}})),
            ]) {
            let bytes = json_with(|m| { m.insert(field.into(), value); });
            let _ = decoder().decode_json(&bytes);
        }
    }
}
