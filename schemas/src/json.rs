//! The JSON wire format (v1): one object per Kafka message (one per line in files).
//!
//! | field          | JSON type            | unit / form                          | required |
//! |----------------|----------------------|--------------------------------------|----------|
//! | `call_id`      | string ≤ 128 bytes   | unique within the feed               | yes      |
//! | `linked_id`    | string ≤ 128 bytes   | joins the legs of one contact        | no       |
//! | `region`       | integer              | federal subject code, e.g. 38        | yes      |
//! | `dialled`      | string               | phone number; `+`, spaces, `-`, `()` allowed | yes |
//! | `caller`       | string               | phone number; absent/empty = withheld; hashed on arrival | no |
//! | `start`        | string               | RFC 3339 instant with offset (`Z` or `±hh:mm`) | yes |
//! | `answer`       | string or null       | RFC 3339; absent/null if not answered | if answered |
//! | `end`          | string               | RFC 3339                              | yes      |
//! | `queue_wait_s` | number ≥ 0           | seconds in the queue; default: answer−start (answered) or end−start | no |
//! | `talk_s`       | number ≥ 0           | seconds talking; default: end−answer  | no       |
//! | `disposition`  | string               | `answered`, `no_answer`, `busy`, `failed`, `congestion`, `abandoned` (hung up in queue) | yes |
//! | `transfer_to`  | string ≤ 64          | line id or number the call was transferred to | no |
//! | `topic`        | string ≤ 64, slug    | `[a-z0-9_-]+`, e.g. `covid`, `mobilisation` | no |
//! | `age_band`     | string               | `under_20`, `20_30`, `30_40`, `40_60`, `60_plus` | no |
//! | `channel`      | string               | `voice` (default), `sms`, `social`, `portal` | no |
//! | `operator_id`  | string ≤ 64          |                                       | no       |
//! | `queue_id`     | string ≤ 64          |                                       | no       |
//!
//! `null` means the same as an absent field. Unknown fields are ignored, so producers may
//! add fields before consumers know them; a field given twice is `malformed`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cdr::{AgeBand, Cdr, Channel, Disposition};
use crate::reject::{Reason, Rejection};
use crate::time::{parse_rfc3339_ms, write_rfc3339_secs};
use crate::validate::{Decoder, Draft};

/// Any JSON value, kept just well enough to say what type it was.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// An integer.
    Int(i64),
    /// A number with a fraction or beyond i64.
    Float(f64),
    /// `true`/`false`.
    Bool(bool),
    /// An array or an object (its contents are skipped).
    Compound,
}

impl<'a> Scalar<'a> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "string",
            Scalar::Int(_) | Scalar::Float(_) => "number",
            Scalar::Bool(_) => "boolean",
            Scalar::Compound => "array or object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Serialize for Scalar<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Str(v) => s.serialize_str(v),
            Scalar::Int(v) => s.serialize_i64(*v),
            Scalar::Float(v) => s.serialize_f64(*v),
            Scalar::Bool(v) => s.serialize_bool(*v),
            Scalar::Compound => Err(serde::ser::Error::custom("cannot write a skipped compound value")),
        }
    }
}

/// The JSON object on the wire: every field as loosely typed as JSON itself, so that the
/// decoder can say exactly which field is missing or of the wrong type. The generator
/// writes through the same struct, so the field names exist once.
#[derive(Debug, Default, Deserialize, Serialize)]
#[allow(missing_docs)]
pub struct WireJson<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub linked_id: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub dialled: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_s: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub talk_s: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub transfer_to: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub age_band: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<Scalar<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<Scalar<'a>>,
}

fn string<'a>(v: Option<Scalar<'a>>, field: &'static str) -> Result<Option<Cow<'a, str>>, Rejection> {
    match v {
        None => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s)),
        Some(other) => {
            Err(Rejection::field(Reason::WrongType, field, format!("expected a string, found {}", other.type_name())))
        }
    }
}

fn required_string<'a>(v: Option<Scalar<'a>>, field: &'static str) -> Result<Cow<'a, str>, Rejection> {
    match string(v, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Rejection::field(Reason::MissingField, field, "absent or empty")),
    }
}

fn instant(v: Option<Scalar<'_>>, field: &'static str) -> Result<Option<i64>, Rejection> {
    match string(v, field)? {
        None => Ok(None),
        Some(s) => parse_rfc3339_ms(&s).map(Some).ok_or_else(|| {
            Rejection::field(
                Reason::BadTimestamp,
                field,
                "expected an RFC 3339 instant with an offset, e.g. 2022-02-14T09:31:07Z",
            )
        }),
    }
}

fn seconds(v: Option<Scalar<'_>>, field: &'static str) -> Result<Option<i64>, Rejection> {
    match v {
        None => Ok(None),
        Some(Scalar::Int(s)) => Ok(Some(s.saturating_mul(1000))),
        // Finite by JSON's grammar; clamp far beyond any limit so the check names it absurd.
        Some(Scalar::Float(s)) => Ok(Some((s * 1000.0).round().clamp(-1e15, 1e15) as i64)),
        Some(other) => Err(Rejection::field(
            Reason::WrongType,
            field,
            format!("expected a number of seconds, found {}", other.type_name()),
        )),
    }
}

fn vocabulary<T>(
    v: Option<Scalar<'_>>,
    field: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, Rejection> {
    match string(v, field)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            parse(&s).map(Some).ok_or_else(|| Rejection::field(Reason::InvalidValue, field, "not in the vocabulary"))
        }
    }
}

impl Decoder {
    /// Decodes and validates one JSON message: the common flat object by a scanner made
    /// for it (`json_fast`), which fills the draft serde's path would, anything
    /// else by serde; validation, pseudonymisation and the CDR are one code path.
    pub fn decode_json(&self, msg: &[u8]) -> Result<Cdr, Rejection> {
        let text = self.check_bytes(msg)?;
        match crate::json_fast::draft(text) {
            Some(d) => self.finish(d),
            None => self.decode_json_with_serde(text),
        }
    }

    /// [`Self::decode_json`] through serde alone: the reference the fast scanner is checked
    /// against (`tests/json_fast_differential.rs`).
    #[doc(hidden)]
    pub fn decode_json_reference(&self, msg: &[u8]) -> Result<Cdr, Rejection> {
        let text = self.check_bytes(msg)?;
        self.decode_json_with_serde(text)
    }

    fn decode_json_with_serde(&self, text: &str) -> Result<Cdr, Rejection> {
        // serde would also read a struct from an array; the contract is an object.
        if !text.trim_start().starts_with('{') {
            return Err(Rejection::new(Reason::Malformed, None, "not a JSON object"));
        }
        let w: WireJson<'_> = serde_json::from_str(text).map_err(|e| {
            Rejection::new(Reason::Malformed, None, format!("not a JSON object of the v1 contract: {e}"))
        })?;
        self.decode_wire_json(w)
    }

    fn decode_wire_json(&self, w: WireJson<'_>) -> Result<Cdr, Rejection> {
        let region = match w.region {
            None => return Err(Rejection::field(Reason::MissingField, "region", "absent")),
            Some(Scalar::Int(r)) => u8::try_from(r).map_err(|_| {
                Rejection::field(Reason::UnknownRegion, "region", format!("{r} is not a federal subject code"))
            })?,
            Some(other) => {
                return Err(Rejection::field(
                    Reason::WrongType,
                    "region",
                    format!("expected an integer, found {}", other.type_name()),
                ));
            }
        };
        let draft = Draft {
            call_id: required_string(w.call_id, "call_id")?,
            linked_id: string(w.linked_id, "linked_id")?,
            region,
            dialled: required_string(w.dialled, "dialled")?,
            caller: string(w.caller, "caller")?,
            start_ms: instant(w.start, "start")?
                .ok_or_else(|| Rejection::field(Reason::MissingField, "start", "absent"))?,
            answer_ms: instant(w.answer, "answer")?,
            end_ms: instant(w.end, "end")?.ok_or_else(|| Rejection::field(Reason::MissingField, "end", "absent"))?,
            queue_wait_ms: seconds(w.queue_wait_s, "queue_wait_s")?,
            talk_ms: seconds(w.talk_s, "talk_s")?,
            disposition: Some(
                vocabulary(w.disposition, "disposition", Disposition::from_code)?
                    .ok_or_else(|| Rejection::field(Reason::MissingField, "disposition", "absent"))?,
            ),
            transfer_to: string(w.transfer_to, "transfer_to")?,
            topic: string(w.topic, "topic")?,
            age_band: vocabulary(w.age_band, "age_band", AgeBand::from_code)?,
            channel: vocabulary(w.channel, "channel", Channel::from_code)?,
            operator_id: string(w.operator_id, "operator_id")?,
            queue_id: string(w.queue_id, "queue_id")?,
        };
        self.finish(draft)
    }
}

/// Writes a CDR as one JSON object (no trailing newline), with `caller` as given: this is
/// how a feed, or the synthetic one, sends it. Instants are written as whole seconds.
///
/// Hand-written rather than through serde (the field names are [`WireJson`]'s; the round
/// trip is tested): it is the generator's hot path, and most strings need no escaping.
pub fn encode_json(cdr: &Cdr, caller: Option<&str>, out: &mut Vec<u8>) {
    // `,"name":` literals; the first field opens the object.
    macro_rules! k {
        ($name:literal) => {
            concat!(",\"", $name, "\":").as_bytes()
        };
    }
    let mut w = ObjectWriter { out };
    let mut ts = [0u8; 20];
    w.str(b"{\"call_id\":", &cdr.call_id);
    w.opt(k!("linked_id"), cdr.linked_id.as_deref());
    w.int(k!("region"), cdr.region.0 as u64);
    w.str(k!("dialled"), &cdr.dialled);
    w.opt(k!("caller"), caller);
    w.raw_str(k!("start"), write_rfc3339_secs(cdr.start_ms, &mut ts));
    if let Some(a) = cdr.answer_ms {
        w.raw_str(k!("answer"), write_rfc3339_secs(a, &mut ts));
    }
    w.raw_str(k!("end"), write_rfc3339_secs(cdr.end_ms, &mut ts));
    w.int(k!("queue_wait_s"), cdr.queue_wait_ms as u64 / 1000);
    w.int(k!("talk_s"), cdr.talk_ms as u64 / 1000);
    w.raw_str(k!("disposition"), cdr.disposition.code().as_bytes());
    w.opt(k!("transfer_to"), cdr.transfer_to.as_deref());
    w.opt(k!("topic"), cdr.topic.as_deref());
    if let Some(b) = cdr.age_band {
        w.raw_str(k!("age_band"), b.code().as_bytes());
    }
    w.raw_str(k!("channel"), cdr.channel.code().as_bytes());
    w.opt(k!("operator_id"), cdr.operator_id.as_deref());
    w.opt(k!("queue_id"), cdr.queue_id.as_deref());
    w.out.push(b'}');
}

struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl ObjectWriter<'_> {
    /// A value known to need no escaping (codes, timestamps).
    #[inline]
    fn raw_str(&mut self, key: &[u8], v: &[u8]) {
        self.out.extend_from_slice(key);
        self.out.push(b'"');
        self.out.extend_from_slice(v);
        self.out.push(b'"');
    }
    #[inline]
    fn str(&mut self, key: &[u8], v: &str) {
        // No short-circuit, so that the scan vectorises.
        let needs_escape = v.bytes().fold(false, |acc, b| acc | (b < 0x20) | (b == b'"') | (b == b'\\'));
        if needs_escape {
            self.out.extend_from_slice(key);
            serde_json::to_writer(&mut *self.out, v).expect("writing to a Vec cannot fail");
        } else {
            self.raw_str(key, v.as_bytes());
        }
    }
    #[inline]
    fn opt(&mut self, key: &[u8], v: Option<&str>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }
    #[inline]
    fn int(&mut self, key: &[u8], v: u64) {
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}
