//! Parquet files of the archive → CDRs again: the inverse of [`crate::encode`], for
//! `cdrflow backfill` and `cdrflow reconcile`, which recompute counters from the archive.

use anyhow::{Context, Result, anyhow};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt32Type};
use cdrflow_schemas::{AgeBand, CallerHash, Cdr, Channel, CompactString, Disposition, LineRegistry, RegionCode};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::encode::ArchivedCdr;

/// Rows in a Parquet file, from its footer alone.
pub fn row_count(bytes: bytes::Bytes) -> Result<u64> {
    let b = ParquetRecordBatchReaderBuilder::try_new(bytes).context("not a whole Parquet file")?;
    Ok(b.metadata().file_metadata().num_rows() as u64)
}

/// Every CDR of one archive file.
pub fn read_file(bytes: bytes::Bytes, lines: &LineRegistry) -> Result<Vec<ArchivedCdr>> {
    read(bytes, lines, false)
}

/// Columns the counters and the versions rule do not use.
const NOT_FOR_COUNTERS: [&str; 6] = ["linked_id", "dialled", "caller_hash", "answer", "operator_id", "queue_id"];

/// The rows of one archive file with only what the counters ([`cdrflow_schemas::Counters`],
/// the hour key) and the versions rule read: the other columns are not decoded, and their
/// fields are left empty (`dialled` "", `linked_id`, `caller`, `answer_ms`, `operator_id`,
/// `queue_id` `None`). For `backfill` and `reconcile`; never write such rows back.
pub fn read_for_counters(bytes: bytes::Bytes, lines: &LineRegistry) -> Result<Vec<ArchivedCdr>> {
    read(bytes, lines, true)
}

fn read(bytes: bytes::Bytes, lines: &LineRegistry, for_counters: bool) -> Result<Vec<ArchivedCdr>> {
    let mut builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).context("not a whole Parquet file")?.with_batch_size(64 * 1024);
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

fn read_batch(b: &RecordBatch, lines: &LineRegistry, for_counters: bool, out: &mut Vec<ArchivedCdr>) -> Result<()> {
    let col = |name: &str| b.column_by_name(name).ok_or_else(|| anyhow!("the file has no column {name}"));
    // A column the counters do not need: absent when read for them.
    let skipped = |name: &str| for_counters && NOT_FOR_COUNTERS.contains(&name);
    let text = |name: &str| -> Result<_> { Ok(col(name)?.as_string::<i32>().clone()) };
    let maybe_text =
        |name: &str| -> Result<Option<arrow::array::StringArray>> { (!skipped(name)).then(|| text(name)).transpose() };
    let (call_id, line, disposition) = (text("call_id")?, text("line")?, text("disposition")?);
    let (linked_id, dialled) = (maybe_text("linked_id")?, maybe_text("dialled")?);
    let (transfer_to, topic, age_band, channel) =
        (text("transfer_to")?, text("topic")?, text("age_band")?, text("channel")?);
    let (operator_id, queue_id) = (maybe_text("operator_id")?, maybe_text("queue_id")?);
    let region = col("region")?.as_primitive::<Int32Type>().clone();
    let caller =
        (!skipped("caller_hash")).then(|| col("caller_hash").map(|c| c.as_fixed_size_binary().clone())).transpose()?;
    let ts = |name: &str| -> Result<_> { Ok(col(name)?.as_primitive::<TimestampMillisecondType>().clone()) };
    let (start, end) = (ts("start")?, ts("end")?);
    let answer = (!skipped("answer")).then(|| ts("answer")).transpose()?;
    let wait = col("queue_wait_ms")?.as_primitive::<UInt32Type>().clone();
    let talk = col("talk_ms")?.as_primitive::<UInt32Type>().clone();
    let partition = col("kafka_partition")?.as_primitive::<Int32Type>().clone();
    let offset = col("kafka_offset")?.as_primitive::<Int64Type>().clone();
    let opt = |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| CompactString::new(a.value(i)));
    let maybe = |a: &Option<arrow::array::StringArray>, i: usize| a.as_ref().and_then(|a| opt(a, i));
    out.reserve(b.num_rows());
    for i in 0..b.num_rows() {
        let bad = |what: &str, v: &str| anyhow!("row {i}: {what} {v:?} is not one cdrflow writes");
        let cdr = Cdr {
            call_id: CompactString::new(call_id.value(i)),
            linked_id: maybe(&linked_id, i),
            region: RegionCode(u8::try_from(region.value(i)).map_err(|_| bad("region", &region.value(i).to_string()))?),
            line: lines.by_id(line.value(i)).ok_or_else(|| bad("line", line.value(i)))?,
            dialled: dialled.as_ref().map_or_else(CompactString::default, |d| CompactString::new(d.value(i))),
            caller: caller
                .as_ref()
                .and_then(|c| c.is_valid(i).then(|| CallerHash(c.value(i).try_into().expect("16 bytes")))),
            start_ms: start.value(i),
            answer_ms: answer.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i))),
            end_ms: end.value(i),
            queue_wait_ms: wait.value(i),
            talk_ms: talk.value(i),
            disposition: Disposition::from_code(disposition.value(i))
                .ok_or_else(|| bad("disposition", disposition.value(i)))?,
            transfer_to: opt(&transfer_to, i),
            topic: opt(&topic, i),
            age_band: match age_band.is_valid(i) {
                true => Some(AgeBand::from_code(age_band.value(i)).ok_or_else(|| bad("age band", age_band.value(i)))?),
                false => None,
            },
            channel: Channel::from_code(channel.value(i)).ok_or_else(|| bad("channel", channel.value(i)))?,
            operator_id: maybe(&operator_id, i),
            queue_id: maybe(&queue_id, i),
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
}
