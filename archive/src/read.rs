//! Parquet files of the archive → CDRs again: the inverse of [`crate::encode`], for
//! `cdrflow backfill` and `cdrflow reconcile`, which recompute counters from the archive.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Int32Type, Int64Type, Schema, TimestampMillisecondType, UInt32Type,
};
use cdrflow_schemas::{AgeBand, CallerHash, Cdr, Channel, CompactString, Disposition, LineRegistry, RegionCode};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

use crate::encode::{ArchivedCdr, CATEGORIES};

/// Rows in a Parquet file, from its footer alone.
pub fn row_count(bytes: bytes::Bytes) -> Result<u64> {
    let b = ParquetRecordBatchReaderBuilder::try_new(bytes).context("not a whole Parquet file")?;
    Ok(b.metadata().file_metadata().num_rows() as u64)
}

/// Every CDR of one archive file.
pub fn read_file(bytes: bytes::Bytes, lines: &LineRegistry) -> Result<Vec<ArchivedCdr>> {
    read(bytes, lines, false)
}

/// Columns the counters and the versions rule do not use: [`read_for_counters`] skips them.
pub const NOT_FOR_COUNTERS: [&str; 6] = ["linked_id", "dialled", "caller_hash", "answer", "operator_id", "queue_id"];

/// The rows of one archive file with only what the counters ([`cdrflow_schemas::Counters`],
/// the hour key) and the versions rule read: the other columns are not decoded, and their
/// fields are left empty (`dialled` "", `linked_id`, `caller`, `answer_ms`, `operator_id`,
/// `queue_id` `None`). For `backfill` and `reconcile`; never write such rows back.
pub fn read_for_counters(bytes: bytes::Bytes, lines: &LineRegistry) -> Result<Vec<ArchivedCdr>> {
    read(bytes, lines, true)
}

/// Reads the category columns ([`CATEGORIES`]) as the dictionaries they are written as,
/// so that each distinct value is copied and converted once a file rather than once a row
/// ([`Category`]). A column of a type cdrflow does not write is read as it is, and then
/// refused with its type named.
fn read(bytes: bytes::Bytes, lines: &LineRegistry, for_counters: bool) -> Result<Vec<ArchivedCdr>> {
    let meta = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).context("not a whole Parquet file")?;
    let file_schema = meta.schema();
    let fields: Vec<Arc<Field>> = file_schema
        .fields()
        .iter()
        .map(|f| match CATEGORIES.contains(&f.name().as_str()) && is_text(f.data_type()) {
            true => Arc::new(
                Field::new_dictionary(f.name(), DataType::Int32, DataType::Utf8, f.is_nullable())
                    .with_metadata(f.metadata().clone()),
            ),
            false => f.clone(),
        })
        .collect();
    let as_dictionaries = Arc::new(Schema::new_with_metadata(fields, file_schema.metadata().clone()));
    let meta =
        ArrowReaderMetadata::try_new(meta.metadata().clone(), ArrowReaderOptions::new().with_schema(as_dictionaries))
            .context("reading the file's category columns as dictionaries")?;
    let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, meta).with_batch_size(64 * 1024);
    if for_counters {
        let wanted: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !NOT_FOR_COUNTERS.contains(&n.as_str()))
            .collect();
        let mask = ProjectionMask::columns(builder.parquet_schema(), wanted.iter().map(String::as_str));
        builder = builder.with_projection(mask);
    }
    let mut out = Vec::new();
    for batch in builder.build()? {
        read_batch(&batch?, lines, for_counters, &mut out)?;
    }
    Ok(out)
}

/// Whether a column holds text, as itself or in a dictionary (of any width of keys).
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 => true,
        DataType::Dictionary(_, values) => values.as_ref() == &DataType::Utf8,
        _ => false,
    }
}

/// A column of a small vocabulary read as a dictionary: its distinct values converted once
/// (`None`: a value cdrflow does not write, an error only for a row that holds it).
struct Category<T> {
    /// What the column holds, for errors.
    what: &'static str,
    /// Each row's place in `words` (null: no value).
    keys: PrimitiveArray<Int32Type>,
    /// The distinct values as written.
    words: StringArray,
    /// The same, converted.
    values: Vec<Option<T>>,
}

/// The column `name` of a batch.
fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name).ok_or_else(|| anyhow!("the file has no column {name}"))
}

/// The column `name` of a batch, which must hold numbers of type `T`.
fn numbers<T: ArrowPrimitiveType>(b: &RecordBatch, name: &str) -> Result<PrimitiveArray<T>> {
    let c = column(b, name)?;
    let numbers = c.as_primitive_opt::<T>();
    Ok(numbers.ok_or_else(|| anyhow!("column {name} is {}, not {}", c.data_type(), T::DATA_TYPE))?.clone())
}

impl<T: Clone> Category<T> {
    fn of(b: &RecordBatch, name: &str, what: &'static str, convert: impl Fn(&str) -> Option<T>) -> Result<Self> {
        let column = column(b, name)?;
        let dictionary = column
            .as_dictionary_opt::<Int32Type>()
            .ok_or_else(|| anyhow!("column {name} is {}, not text in a dictionary", column.data_type()))?;
        let words = dictionary
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| anyhow!("column {name}'s dictionary holds {}, not text", dictionary.values().data_type()))?
            .clone();
        let values = words.iter().map(|w| w.and_then(&convert)).collect();
        Ok(Category { what, keys: dictionary.keys().clone(), words, values })
    }

    /// Row `i`'s value, `None` if it has none.
    #[inline]
    fn optional(&self, i: usize) -> Result<Option<T>> {
        if self.keys.is_null(i) {
            return Ok(None);
        }
        let k = self.keys.value(i) as usize;
        match self.values.get(k) {
            Some(Some(v)) => Ok(Some(v.clone())),
            _ => {
                let word = match k < self.words.len() && self.words.is_valid(k) {
                    true => self.words.value(k),
                    false => "",
                };
                Err(anyhow!("row {i}: {} {word:?} is not one cdrflow writes", self.what))
            }
        }
    }

    /// Row `i`'s value, which it must have.
    #[inline]
    fn required(&self, i: usize) -> Result<T> {
        self.optional(i)?.ok_or_else(|| anyhow!("row {i}: no {}", self.what))
    }
}

fn read_batch(b: &RecordBatch, lines: &LineRegistry, for_counters: bool, out: &mut Vec<ArchivedCdr>) -> Result<()> {
    // A column the counters do not need: absent when read for them.
    let skipped = |name: &str| for_counters && NOT_FOR_COUNTERS.contains(&name);
    let text = |name: &str| -> Result<StringArray> {
        let c = column(b, name)?;
        Ok(c.as_string_opt::<i32>().ok_or_else(|| anyhow!("column {name} is {}, not text", c.data_type()))?.clone())
    };
    let compact = |s: &str| Some(CompactString::new(s));
    let category = |name: &str, what: &'static str| Category::of(b, name, what, compact);
    let maybe_category = |name: &'static str| (!skipped(name)).then(|| category(name, name)).transpose();
    let call_id = text("call_id")?;
    let linked_id = (!skipped("linked_id")).then(|| text("linked_id")).transpose()?;
    let line = Category::of(b, "line", "line", |id| lines.by_id(id))?;
    let disposition = Category::of(b, "disposition", "disposition", Disposition::from_code)?;
    let age_band = Category::of(b, "age_band", "age band", AgeBand::from_code)?;
    let channel = Category::of(b, "channel", "channel", Channel::from_code)?;
    let (transfer_to, topic) = (category("transfer_to", "transfer_to")?, category("topic", "topic")?);
    let (dialled, operator_id, queue_id) =
        (maybe_category("dialled")?, maybe_category("operator_id")?, maybe_category("queue_id")?);
    let region = numbers::<Int32Type>(b, "region")?;
    let caller: Option<FixedSizeBinaryArray> = (!skipped("caller_hash"))
        .then(|| -> Result<_> {
            let c = column(b, "caller_hash")?;
            let hashes = c.as_fixed_size_binary_opt();
            Ok(hashes.ok_or_else(|| anyhow!("column caller_hash is {}, not 16 bytes", c.data_type()))?.clone())
        })
        .transpose()?;
    if let Some(c) = caller.as_ref().filter(|c| c.value_length() != 16) {
        anyhow::bail!("column caller_hash holds {} bytes a value, not 16", c.value_length());
    }
    let (start, end) =
        (numbers::<TimestampMillisecondType>(b, "start")?, numbers::<TimestampMillisecondType>(b, "end")?);
    let answer = (!skipped("answer")).then(|| numbers::<TimestampMillisecondType>(b, "answer")).transpose()?;
    let wait = numbers::<UInt32Type>(b, "queue_wait_ms")?;
    let talk = numbers::<UInt32Type>(b, "talk_ms")?;
    let partition = numbers::<Int32Type>(b, "kafka_partition")?;
    let offset = numbers::<Int64Type>(b, "kafka_offset")?;
    let maybe = |c: &Option<Category<CompactString>>, i: usize| -> Result<Option<CompactString>> {
        c.as_ref().map_or(Ok(None), |c| c.optional(i))
    };
    out.reserve(b.num_rows());
    for i in 0..b.num_rows() {
        let cdr = Cdr {
            call_id: CompactString::new(call_id.value(i)),
            linked_id: linked_id.as_ref().and_then(|a| a.is_valid(i).then(|| CompactString::new(a.value(i)))),
            region: RegionCode(
                u8::try_from(region.value(i))
                    .map_err(|_| anyhow!("row {i}: region {} is not one cdrflow writes", region.value(i)))?,
            ),
            line: line.required(i)?,
            dialled: maybe(&dialled, i)?.unwrap_or_default(),
            caller: caller
                .as_ref()
                .and_then(|c| c.is_valid(i).then(|| CallerHash(c.value(i).try_into().expect("16 bytes, checked")))),
            start_ms: start.value(i),
            answer_ms: answer.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i))),
            end_ms: end.value(i),
            queue_wait_ms: wait.value(i),
            talk_ms: talk.value(i),
            disposition: disposition.required(i)?,
            transfer_to: transfer_to.optional(i)?,
            topic: topic.optional(i)?,
            age_band: age_band.optional(i)?,
            channel: channel.required(i)?,
            operator_id: maybe(&operator_id, i)?,
            queue_id: maybe(&queue_id, i)?,
        };
        out.push(ArchivedCdr { partition: partition.value(i), offset: offset.value(i), cdr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{parquet_bytes, record_batch};

    #[test]
    fn what_is_written_reads_back_the_same() {
        let lines = LineRegistry::builtin();
        let decoder = cdrflow_schemas::Decoder::new(lines.clone(), cdrflow_schemas::Pseudonymiser::ephemeral());
        let csv = cdrflow_schemas::CsvFeed::FromAccountcode;
        let json = br#"{"call_id":"c-1","linked_id":"l-1","region":38,"dialled":"122","caller":"+7 914 000-00-01","start":"2022-02-14T06:00:00Z","answer":"2022-02-14T06:00:12Z","end":"2022-02-14T06:03:12Z","queue_wait_ms":12000,"talk_ms":180000,"disposition":"answered","topic":"covid","age_band":"30_40","channel":"voice","transfer_to":"112","operator_id":"op-7"}"#;
        let cdr = decoder.decode(cdrflow_schemas::Format::Json, &csv, json).expect("valid");
        let rows = [ArchivedCdr { partition: 3, offset: 41, cdr: cdr.clone() }];
        let batch = record_batch(&rows.iter().collect::<Vec<_>>(), &lines).unwrap();
        let bytes = bytes::Bytes::from(parquet_bytes(&batch, &[]).unwrap());
        assert_eq!(row_count(bytes.clone()).unwrap(), 1);
        let back = read_file(bytes, &lines).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].partition, back[0].offset), (3, 41));
        assert_eq!(format!("{:?}", back[0].cdr), format!("{cdr:?}"));

        // Read for the counters: what they and the versions rule use is the same, the
        // rest is left empty.
        let lean = read_for_counters(bytes::Bytes::from(parquet_bytes(&batch, &[]).unwrap()), &lines).unwrap();
        let (l, c) = (&lean[0].cdr, &cdr);
        assert_eq!((lean[0].partition, lean[0].offset), (3, 41));
        assert_eq!(
            (&l.call_id, l.region, l.line, l.start_ms, l.end_ms),
            (&c.call_id, c.region, c.line, c.start_ms, c.end_ms)
        );
        assert_eq!((l.queue_wait_ms, l.talk_ms, l.disposition), (c.queue_wait_ms, c.talk_ms, c.disposition));
        assert_eq!(
            (&l.transfer_to, &l.topic, l.age_band, l.channel),
            (&c.transfer_to, &c.topic, c.age_band, c.channel)
        );
        assert!(l.dialled.is_empty() && l.linked_id.is_none() && l.caller.is_none() && l.answer_ms.is_none());
        assert!(l.operator_id.is_none() && l.queue_id.is_none());
        let counted = |cdr: &Cdr| {
            let mut k = cdrflow_schemas::Counters::default();
            let (_, ooh) = cdrflow_schemas::classify(cdr, &lines);
            k.record(cdr, lines.line(cdr.line), ooh);
            (cdrflow_schemas::classify(cdr, &lines), k)
        };
        assert_eq!(counted(l), counted(c), "the same cell and counters");
    }

    #[test]
    fn instants_and_offsets_delta_encoded_read_back_and_stats_and_zstd_only_where_they_help() {
        // Instants and offsets are written as differences: rising, falling, equal, far
        // apart, before 1970 and missing must all come back as they went in.
        let lines = LineRegistry::builtin();
        let decoder = cdrflow_schemas::Decoder::new(lines.clone(), cdrflow_schemas::Pseudonymiser::ephemeral());
        let json = br#"{"call_id":"c-1","region":38,"dialled":"122","start":"2022-02-14T06:00:00Z","answer":"2022-02-14T06:00:12Z","end":"2022-02-14T06:03:12Z","disposition":"answered","channel":"voice"}"#;
        let cdr =
            decoder.decode(cdrflow_schemas::Format::Json, &cdrflow_schemas::CsvFeed::FromAccountcode, json).unwrap();
        let mut x = 7u64;
        let rows: Vec<ArchivedCdr> = (0..5_000i64)
            .map(|i| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let jump = match i % 7 {
                    0 => -((x >> 20) as i64),
                    1 => 0,
                    2 => i64::from(u32::MAX) * 1_000,
                    3 => -1_700_000_000_000 - i,
                    _ => (x >> 44) as i64,
                };
                let mut c = cdr.clone();
                c.start_ms += jump;
                c.end_ms = c.start_ms + (x >> 50) as i64;
                c.answer_ms = (i % 3 != 0).then_some(c.start_ms + 12_000);
                let offset = if i % 5 == 0 { i64::MAX - i } else { i * 3 };
                ArchivedCdr { partition: 1, offset, cdr: c }
            })
            .collect();
        let batch = record_batch(&rows.iter().collect::<Vec<_>>(), &lines).unwrap();
        let file = bytes::Bytes::from(parquet_bytes(&batch, &[]).unwrap());
        let meta = parquet::file::reader::FileReader::metadata(
            &parquet::file::serialized_reader::SerializedFileReader::new(file.clone()).unwrap(),
        )
        .clone();
        for column in meta.row_group(0).columns() {
            let delta = column.encodings().any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED);
            let name = column.column_path().string();
            assert_eq!(delta, ["start", "answer", "end", "kafka_offset"].contains(&name.as_str()), "{name}");
            // Statistics on every column but the keyed caller hashes and the categories,
            // which they cannot prune.
            let unprunable = name == "caller_hash" || crate::encode::CATEGORIES.contains(&name.as_str());
            assert_eq!(column.statistics().is_some(), !unprunable, "{name}");
            // zstd on every column but those it does not shrink.
            let plain = ["region", "caller_hash", "kafka_partition", "kafka_offset"].contains(&name.as_str());
            let codec = column.compression();
            let zstd = matches!(codec, parquet::basic::Compression::ZSTD(_));
            assert_eq!((zstd, codec == parquet::basic::Compression::UNCOMPRESSED), (!plain, plain), "{name}");
        }
        let back = read_file(file, &lines).unwrap();
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(
                (a.offset, a.cdr.start_ms, a.cdr.answer_ms, a.cdr.end_ms),
                (b.offset, b.cdr.start_ms, b.cdr.answer_ms, b.cdr.end_ms)
            );
        }
    }

    /// Rows with every line, disposition, channel and age band, and texts of a small
    /// vocabulary present and missing, as a feed's corrections leave them.
    fn varied_rows(lines: &std::sync::Arc<LineRegistry>) -> Vec<ArchivedCdr> {
        let decoder = cdrflow_schemas::Decoder::new(lines.clone(), cdrflow_schemas::Pseudonymiser::ephemeral());
        let json = br#"{"call_id":"c-1","region":38,"dialled":"122","caller":"+7 914 000-00-01","start":"2022-02-14T06:00:00Z","answer":"2022-02-14T06:00:12Z","end":"2022-02-14T06:03:12Z","disposition":"answered","channel":"voice"}"#;
        let cdr =
            decoder.decode(cdrflow_schemas::Format::Json, &cdrflow_schemas::CsvFeed::FromAccountcode, json).unwrap();
        let some = |on: bool, s: String| on.then(|| CompactString::new(s));
        (0..3_000usize)
            .map(|i| {
                let mut c = cdr.clone();
                c.call_id = CompactString::new(format!("c-{i}"));
                c.line = cdrflow_schemas::LineIdx((i % lines.lines().len()) as u16);
                c.dialled = CompactString::new(["122", "112", "88001234567"][i % 3]);
                c.disposition = Disposition::ALL[i % Disposition::ALL.len()];
                c.channel = Channel::ALL[i / 7 % Channel::ALL.len()];
                c.age_band = (i % 6 != 0).then(|| AgeBand::ALL[i / 11 % AgeBand::ALL.len()]);
                c.topic = some(i % 5 != 0, format!("topic-{}", i % 9));
                c.transfer_to = some(i % 13 == 0, "112".into());
                c.operator_id = some(i % 4 != 0, format!("op-{}", i % 40));
                c.queue_id = some(i % 2 == 0, format!("q-{}", i % 3));
                ArchivedCdr { partition: 2, offset: i as i64, cdr: c }
            })
            .collect()
    }

    /// `batch` as a Parquet file of parquet-rs's writer with `props` (its defaults if none),
    /// not cdrflow's settings.
    fn written_by_another(batch: &RecordBatch, props: Option<parquet::file::properties::WriterProperties>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), props).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        out
    }

    #[test]
    fn categories_read_as_dictionaries_come_back_the_same_from_other_writers() {
        let lines = LineRegistry::builtin();
        let rows = varied_rows(&lines);
        let batch = record_batch(&rows.iter().collect::<Vec<_>>(), &lines).unwrap();
        // As cdrflow writes them (dictionary pages), and as a writer that writes plain
        // text (no dictionary) leaves them.
        let plain = written_by_another(
            &batch,
            Some(parquet::file::properties::WriterProperties::builder().set_dictionary_enabled(false).build()),
        );
        // And as a writer given Arrow dictionaries with one-byte keys leaves them (their
        // type goes into the file's Arrow schema).
        let narrow = {
            let schema = batch.schema();
            let mut fields = Vec::new();
            let mut columns = Vec::new();
            for (f, c) in schema.fields().iter().zip(batch.columns()) {
                let (f, c) = match crate::encode::CATEGORIES.contains(&f.name().as_str()) {
                    true => {
                        let t = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
                        (Field::new(f.name(), t.clone(), f.is_nullable()), arrow::compute::cast(c, &t).unwrap())
                    }
                    false => (f.as_ref().clone(), c.clone()),
                };
                fields.push(f);
                columns.push(c);
            }
            written_by_another(&RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(), None)
        };
        let files = [("cdrflow", parquet_bytes(&batch, &[]).unwrap()), ("plain", plain), ("narrow keys", narrow)];
        for (writer, file) in files {
            let back = read_file(bytes::Bytes::from(file.clone()), &lines).unwrap();
            assert_eq!(back.len(), rows.len(), "{writer}");
            for (a, b) in rows.iter().zip(&back) {
                assert_eq!(format!("{:?}", a.cdr), format!("{:?}", b.cdr), "{writer}");
            }
            let lean = read_for_counters(bytes::Bytes::from(file), &lines).unwrap();
            for (a, b) in rows.iter().zip(&lean) {
                let (a, b) = (&a.cdr, &b.cdr);
                assert_eq!(
                    (a.line, a.disposition, a.channel, a.age_band),
                    (b.line, b.disposition, b.channel, b.age_band)
                );
                assert_eq!((&a.topic, &a.transfer_to), (&b.topic, &b.transfer_to), "{writer}");
            }
        }
    }

    #[test]
    fn a_value_or_a_column_type_cdrflow_does_not_write_is_an_error_naming_it() {
        let lines = LineRegistry::builtin();
        let rows = varied_rows(&lines);
        let batch = record_batch(&rows.iter().collect::<Vec<_>>(), &lines).unwrap();
        let with = |name: &str, column: arrow::array::ArrayRef| {
            let at = batch.schema().index_of(name).unwrap();
            let mut columns = batch.columns().to_vec();
            columns[at] = column.clone();
            let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[at] = Field::new(name, column.data_type().clone(), true);
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
            bytes::Bytes::from(parquet_bytes(&batch, &[]).unwrap())
        };
        let mut lines_written: Vec<&str> = vec!["122"; rows.len()];
        lines_written[1_234] = "no-such-line";
        let file = with("line", Arc::new(StringArray::from(lines_written)));
        for read in [read_file, read_for_counters] {
            let e = format!("{:#}", read(file.clone(), &lines).unwrap_err());
            assert!(e.contains(r#"row 1234: line "no-such-line" is not one cdrflow writes"#), "{e}");
        }
        let file = with("region", Arc::new(StringArray::from(vec!["38"; rows.len()])));
        let e = format!("{:#}", read_for_counters(file, &lines).unwrap_err());
        assert!(e.contains("column region is Utf8, not Int32"), "{e}");
    }
}
