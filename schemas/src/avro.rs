//! The Avro wire format: Confluent's framing (a zero byte, the writer schema's id as 4
//! bytes big-endian, then the Avro binary body) over the contract's reader schema
//! (`schemas/avro/cdr_v1.avsc`), field for field the JSON contract.
//!
//! Writer schemas come from a Confluent-compatible schema registry by id (the registry
//! client is `cdrflow_kafka::registry`; this module never does I/O): [`WriterSchemas`] holds
//! those fetched, and [`Decoder::decode_avro_confluent`] resolves a body from its writer
//! schema to the reader schema by Avro's rules — fields the writer added are skipped,
//! optional fields it left out take their defaults, `int` is promoted to `long` and
//! `double` — then validates the record with the code every format shares.
//!
//! What the reader schema chose: instants are `timestamp-millis` (UTC); durations are
//! seconds as `double` (a writer's `int`/`long`/`float` is promoted); the vocabularies
//! (`disposition`, `age_band`, `channel`) are strings, so a value outside them is the same
//! `invalid_value` rejection, naming the field, as in JSON, and a feed may add a symbol
//! without breaking schema resolution.
//!
//! Rejections of this format: a message shorter than the frame or with another magic byte,
//! a body that does not decode or leaves bytes over (`malformed`); a writer schema that
//! cannot be resolved to the reader schema (`schema_mismatch`, with Avro's reason); an id
//! the registry does not know (`unknown_schema`, only once the worker gave up waiting).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

pub use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{RecordSchema, UnionSchema};
pub use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::cdr::{AgeBand, Cdr, Channel, Disposition};
use crate::reject::{Reason, Rejection};
use crate::validate::{Decoder, Draft};

/// The reader schema's text (`schemas/avro/cdr_v1.avsc`).
pub const CDR_V1_AVSC: &str = include_str!("../avro/cdr_v1.avsc");

/// The magic byte that opens a Confluent-framed message.
pub const MAGIC: u8 = 0;

/// Largest allocation a body may ask the Avro decoder for (a string or array length read
/// off the wire): far above any valid record, far below what would hurt the worker.
const MAX_ALLOCATION_BYTES: usize = 16 << 20;

/// The reader schema, parsed once.
pub fn reader_schema() -> &'static Schema {
    static READER: OnceLock<Schema> = OnceLock::new();
    READER.get_or_init(|| {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        Schema::parse_str(CDR_V1_AVSC).expect("schemas/avro/cdr_v1.avsc is a valid Avro schema (tested)")
    })
}

/// Splits a Confluent-framed message into its writer schema id and Avro body.
pub fn frame(msg: &[u8]) -> Result<(u32, &[u8]), Rejection> {
    match msg {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [MAGIC, ..] => Err(Rejection::new(
            Reason::Malformed,
            None,
            format!("{} bytes: shorter than the Confluent frame (a zero byte and a 4-byte schema id)", msg.len()),
        )),
        [other, ..] => Err(Rejection::new(
            Reason::Malformed,
            None,
            format!("magic byte 0x{other:02x}, expected 0x00: not Confluent-framed Avro"),
        )),
        [] => Err(Rejection::new(Reason::Malformed, None, "empty message")),
    }
}

/// One writer schema, as the registry gave it.
#[derive(Debug)]
pub struct WriterSchema {
    /// Its id in the registry.
    pub id: u32,
    /// The parsed schema (`None` if the registry's text does not parse).
    pub schema: Option<Schema>,
    /// Why records of this schema cannot be read as the contract, if they cannot.
    pub mismatch: Option<String>,
}

impl WriterSchema {
    /// Parses a schema's text and checks it resolves to the reader schema.
    pub fn parse(id: u32, text: &str) -> WriterSchema {
        let schema = match Schema::parse_str(text) {
            Ok(s) => s,
            Err(e) => {
                return WriterSchema { id, schema: None, mismatch: Some(format!("does not parse as Avro: {e}")) };
            }
        };
        let mismatch = match apache_avro::schema_compatibility::SchemaCompatibility::can_read(&schema, reader_schema())
        {
            Ok(_) => None,
            Err(e) => Some(format!("cannot be resolved to the contract's reader schema (cdr_v1.avsc): {e}")),
        };
        WriterSchema { id, schema: Some(schema), mismatch }
    }
}

/// The writer schemas known so far, by id; shared by a worker's decoders (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct WriterSchemas {
    by_id: Arc<RwLock<HashMap<u32, Arc<WriterSchema>>>>,
}

impl WriterSchemas {
    /// The schema of this id, if known.
    pub fn get(&self, id: u32) -> Option<Arc<WriterSchema>> {
        self.by_id.read().expect("not poisoned").get(&id).cloned()
    }

    /// Adds (or replaces) a schema.
    pub fn insert(&self, w: WriterSchema) -> Arc<WriterSchema> {
        let w = Arc::new(w);
        self.by_id.write().expect("not poisoned").insert(w.id, w.clone());
        w
    }

    /// How many are known.
    pub fn len(&self) -> usize {
        self.by_id.read().expect("not poisoned").len()
    }

    /// True when none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The body as the Avro decoder reads it, noting any read past its end: apache-avro reads
/// a union's branch index at the end of input as `null` (and so a truncated body could
/// decode as a shorter record), so running out is checked here instead.
struct Strict<'a> {
    /// What is left to read.
    rest: &'a [u8],
    /// A read asked for more than was left.
    ran_out: bool,
}

impl std::io::Read for Strict<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.ran_out = true;
        }
        let n = buf.len().min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

fn field_value<'v>(fields: &'v [(String, Value)], name: &str) -> Option<&'v Value> {
    let v = fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)?;
    match v {
        Value::Union(_, inner) => match inner.as_ref() {
            Value::Null => None,
            other => Some(other),
        },
        Value::Null => None,
        other => Some(other),
    }
}

fn text<'v>(fields: &'v [(String, Value)], name: &'static str) -> Result<Option<&'v str>, Rejection> {
    match field_value(fields, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Rejection::field(Reason::WrongType, name, format!("expected a string, found {other:?}"))),
    }
}

fn required_text<'v>(fields: &'v [(String, Value)], name: &'static str) -> Result<&'v str, Rejection> {
    match text(fields, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Rejection::field(Reason::MissingField, name, "absent or empty")),
    }
}

fn instant(fields: &[(String, Value)], name: &'static str) -> Result<Option<i64>, Rejection> {
    match field_value(fields, name) {
        None => Ok(None),
        Some(Value::TimestampMillis(ms) | Value::Long(ms) | Value::LocalTimestampMillis(ms)) => Ok(Some(*ms)),
        Some(Value::Int(ms)) => Ok(Some(*ms as i64)),
        Some(Value::TimestampMicros(us)) => Ok(Some(us.div_euclid(1000))),
        Some(other) => {
            Err(Rejection::field(Reason::WrongType, name, format!("expected timestamp-millis, found {other:?}")))
        }
    }
}

fn seconds(fields: &[(String, Value)], name: &'static str) -> Result<Option<i64>, Rejection> {
    match field_value(fields, name) {
        None => Ok(None),
        Some(Value::Double(s)) if s.is_finite() => Ok(Some((s * 1000.0).round().clamp(-1e15, 1e15) as i64)),
        Some(Value::Float(s)) if s.is_finite() => Ok(Some((*s as f64 * 1000.0).round().clamp(-1e15, 1e15) as i64)),
        Some(Value::Double(_) | Value::Float(_)) => {
            Err(Rejection::field(Reason::InvalidValue, name, "not a finite number"))
        }
        Some(Value::Int(s)) => Ok(Some(*s as i64 * 1000)),
        Some(Value::Long(s)) => Ok(Some(s.saturating_mul(1000))),
        Some(other) => Err(Rejection::field(Reason::WrongType, name, format!("expected seconds, found {other:?}"))),
    }
}

fn vocabulary<T>(
    fields: &[(String, Value)],
    name: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, Rejection> {
    match text(fields, name)? {
        None | Some("") => Ok(None),
        Some(s) => {
            parse(s).map(Some).ok_or_else(|| Rejection::field(Reason::InvalidValue, name, "not in the vocabulary"))
        }
    }
}

impl Decoder {
    /// Decodes and validates one Confluent-framed Avro message whose writer schema is in
    /// `self.avro` (the worker fetches it from the registry first).
    pub fn decode_avro_confluent(&self, msg: &[u8]) -> Result<Cdr, Rejection> {
        if msg.len() > self.limits.max_message_bytes {
            return Err(Rejection::new(
                Reason::Oversized,
                None,
                format!("{} bytes, limit {}", msg.len(), self.limits.max_message_bytes),
            ));
        }
        let (id, body) = frame(msg)?;
        let writer = self.avro.get(id).ok_or_else(|| {
            Rejection::new(
                Reason::UnknownSchema,
                None,
                format!("writer schema {id} is not known to the schema registry"),
            )
        })?;
        let schema = match (&writer.schema, &writer.mismatch) {
            (Some(s), None) => s,
            (_, why) => {
                return Err(Rejection::new(
                    Reason::SchemaMismatch,
                    None,
                    format!("writer schema {id} {}", why.as_deref().unwrap_or("is unusable")),
                ));
            }
        };
        // Read with the writer schema alone: the fields are then taken by name, which is
        // what resolution to the reader schema does (the compatibility check when the
        // schema was fetched guarantees it resolves), without building a second record.
        let reader = GenericDatumReader::builder(schema)
            .build()
            .map_err(|e| Rejection::new(Reason::SchemaMismatch, None, format!("writer schema {id}: {e}")))?;
        let mut input = Strict { rest: body, ran_out: false };
        let value = reader
            .read_value(&mut input)
            .map_err(|e| Rejection::new(Reason::Malformed, None, format!("Avro body (writer schema {id}): {e}")))?;
        if input.ran_out {
            return Err(Rejection::new(
                Reason::Malformed,
                None,
                format!("Avro body (writer schema {id}) ends inside the record: truncated"),
            ));
        }
        if !input.rest.is_empty() {
            return Err(Rejection::new(
                Reason::Malformed,
                None,
                format!("{} bytes left after the record (writer schema {id})", input.rest.len()),
            ));
        }
        let Value::Record(fields) = value else {
            return Err(Rejection::new(Reason::SchemaMismatch, None, format!("writer schema {id} is not a record")));
        };
        self.decode_avro_fields(&fields)
    }

    fn decode_avro_fields(&self, f: &[(String, Value)]) -> Result<Cdr, Rejection> {
        let region = match field_value(f, "region") {
            Some(Value::Int(r)) => u8::try_from(*r).map_err(|_| {
                Rejection::field(Reason::UnknownRegion, "region", format!("{r} is not a federal subject code"))
            })?,
            Some(Value::Long(r)) => u8::try_from(*r).map_err(|_| {
                Rejection::field(Reason::UnknownRegion, "region", format!("{r} is not a federal subject code"))
            })?,
            None => return Err(Rejection::field(Reason::MissingField, "region", "absent")),
            Some(other) => {
                return Err(Rejection::field(Reason::WrongType, "region", format!("expected an int, found {other:?}")));
            }
        };
        let draft = Draft {
            call_id: required_text(f, "call_id")?.into(),
            linked_id: text(f, "linked_id")?.map(Into::into),
            region,
            dialled: required_text(f, "dialled")?.into(),
            caller: text(f, "caller")?.map(Into::into),
            start_ms: instant(f, "start")?.ok_or_else(|| Rejection::field(Reason::MissingField, "start", "absent"))?,
            answer_ms: instant(f, "answer")?,
            end_ms: instant(f, "end")?.ok_or_else(|| Rejection::field(Reason::MissingField, "end", "absent"))?,
            queue_wait_ms: seconds(f, "queue_wait_s")?,
            talk_ms: seconds(f, "talk_s")?,
            disposition: Some(
                vocabulary(f, "disposition", Disposition::from_code)?
                    .ok_or_else(|| Rejection::field(Reason::MissingField, "disposition", "absent"))?,
            ),
            transfer_to: text(f, "transfer_to")?.map(Into::into),
            topic: text(f, "topic")?.map(Into::into),
            age_band: vocabulary(f, "age_band", AgeBand::from_code)?,
            channel: vocabulary(f, "channel", Channel::from_code)?,
            operator_id: text(f, "operator_id")?.map(Into::into),
            queue_id: text(f, "queue_id")?.map(Into::into),
        };
        self.finish(draft)
    }
}

/// A CDR's fields as Avro values, by the contract's names (`None`: absent), with `caller`
/// as given: what a feed, or the synthetic one, sends. Durations are whole seconds, as the
/// JSON encoder writes them.
pub fn cdr_fields(cdr: &Cdr, caller: Option<&str>) -> Vec<(&'static str, Option<Value>)> {
    let s = |v: &str| Some(Value::String(v.to_owned()));
    let opt = |v: Option<&str>| v.map(|v| Value::String(v.to_owned()));
    vec![
        ("call_id", s(&cdr.call_id)),
        ("linked_id", opt(cdr.linked_id.as_deref())),
        ("region", Some(Value::Int(cdr.region.0 as i32))),
        ("dialled", s(&cdr.dialled)),
        ("caller", opt(caller)),
        ("start", Some(Value::TimestampMillis(cdr.start_ms))),
        ("answer", cdr.answer_ms.map(Value::TimestampMillis)),
        ("end", Some(Value::TimestampMillis(cdr.end_ms))),
        ("queue_wait_s", Some(Value::Double((cdr.queue_wait_ms / 1000) as f64))),
        ("talk_s", Some(Value::Double((cdr.talk_ms / 1000) as f64))),
        ("disposition", s(cdr.disposition.code())),
        ("transfer_to", opt(cdr.transfer_to.as_deref())),
        ("topic", opt(cdr.topic.as_deref())),
        ("age_band", cdr.age_band.map(|b| Value::String(b.code().to_owned()))),
        ("channel", s(cdr.channel.code())),
        ("operator_id", opt(cdr.operator_id.as_deref())),
        ("queue_id", opt(cdr.queue_id.as_deref())),
    ]
}

/// A value of `schema` from one of ours (`None`: absent), or the field's `default`.
fn conform(schema: &Schema, v: Option<Value>, default: Option<&serde_json::Value>) -> Result<Value, String> {
    match (schema, v) {
        (Schema::Union(u), v) => conform_union(u, v, default),
        (_, Some(v)) => Ok(match (schema, v) {
            (Schema::Long, Value::Int(i)) => Value::Long(i as i64),
            (Schema::Long, Value::TimestampMillis(ms)) => Value::Long(ms),
            (Schema::String, Value::TimestampMillis(ms)) => {
                Value::String(jiff::Timestamp::from_millisecond(ms).map_err(|e| e.to_string())?.to_string())
            }
            (Schema::Float, Value::Double(d)) => Value::Float(d as f32),
            (Schema::Long, Value::Double(d)) => Value::Long(d as i64),
            (Schema::Int, Value::Double(d)) => Value::Int(d as i32),
            (_, v) => v,
        }),
        (_, None) => match default {
            Some(d) => default_value(schema, d),
            None => Err(format!("no value and no default for a field of type {schema:?}")),
        },
    }
}

fn conform_union(u: &UnionSchema, v: Option<Value>, default: Option<&serde_json::Value>) -> Result<Value, String> {
    let variants = u.variants();
    match v {
        None | Some(Value::Null) => match variants.iter().position(|s| matches!(s, Schema::Null)) {
            Some(i) => Ok(Value::Union(i as u32, Box::new(Value::Null))),
            None => match (default, variants.first()) {
                (Some(d), Some(first)) => Ok(Value::Union(0, Box::new(default_value(first, d)?))),
                _ => Err("a required union without a default".into()),
            },
        },
        Some(v) => {
            let i = variants
                .iter()
                .position(|s| !matches!(s, Schema::Null))
                .ok_or_else(|| "a union of null only".to_owned())?;
            Ok(Value::Union(i as u32, Box::new(conform(&variants[i], Some(v), None)?)))
        }
    }
}

fn default_value(schema: &Schema, d: &serde_json::Value) -> Result<Value, String> {
    Ok(match (schema, d) {
        (Schema::Null, _) => Value::Null,
        (Schema::String, serde_json::Value::String(s)) => Value::String(s.clone()),
        (Schema::Int, serde_json::Value::Number(n)) => Value::Int(n.as_i64().unwrap_or(0) as i32),
        (Schema::Long, serde_json::Value::Number(n)) => Value::Long(n.as_i64().unwrap_or(0)),
        (Schema::Double, serde_json::Value::Number(n)) => Value::Double(n.as_f64().unwrap_or(0.0)),
        (Schema::Boolean, serde_json::Value::Bool(b)) => Value::Boolean(*b),
        (s, d) => return Err(format!("default {d} for {s:?} is not supported by the feed generator")),
    })
}

/// Writes a record of a writer schema, Confluent-framed with `id`: each field of `writer`
/// takes the value of the same name in `fields` (converted to the writer's type), or its
/// default. A feed's evolving writer schemas (fields added, optional ones dropped) are how
/// the generator and the tests make one.
pub fn write_confluent(
    id: u32,
    writer: &Schema,
    fields: Vec<(&'static str, Option<Value>)>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let Schema::Record(RecordSchema { fields: wfields, .. }) = writer else {
        return Err("the writer schema is not a record".into());
    };
    let mut ours: HashMap<&str, Option<Value>> = fields.into_iter().collect();
    let mut record = Vec::with_capacity(wfields.len());
    for wf in wfields {
        let v = ours.remove(wf.name.as_str()).flatten();
        let v = conform(&wf.schema, v, wf.default.as_ref()).map_err(|e| format!("field {}: {e}", wf.name))?;
        record.push((wf.name.clone(), v));
    }
    out.clear();
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    GenericDatumWriter::builder(writer)
        .build()
        .and_then(|w| w.write_value(out, Value::Record(record)))
        .map_err(|e| format!("encoding Avro: {e}"))?;
    Ok(())
}
