//! Parquet files of the archive → CDRs again: the inverse of [`crate::encode`], for
//! `cdrflow backfill` and `cdrflow reconcile`, which recompute counters from the archive.

use anyhow::{Context, Result, anyhow};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt32Type};
use cdrflow_schemas::{AgeBand, CallerHash, Cdr, Channel, CompactString, Disposition, LineRegistry, RegionCode};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::encode::ArchivedCdr;

/// Rows in a Parquet file, from its footer alone.
pub fn row_count(bytes: bytes::Bytes) -> Result<u64> {
    let b = ParquetRecordBatchReaderBuilder::try_new(bytes).context("not a whole Parquet file")?;
    Ok(b.metadata().file_metadata().num_rows() as u64)
}

/// Every CDR of one archive file.
pub fn read_file(bytes: bytes::Bytes, lines: &LineRegistry) -> Result<Vec<ArchivedCdr>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .context("not a whole Parquet file")?
        .with_batch_size(64 * 1024)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        read_batch(&batch?, lines, &mut out)?;
    }
    Ok(out)
}

fn read_batch(b: &RecordBatch, lines: &LineRegistry, out: &mut Vec<ArchivedCdr>) -> Result<()> {
    let col = |name: &str| b.column_by_name(name).ok_or_else(|| anyhow!("the file has no column {name}"));
    let text = |name: &str| -> Result<_> { Ok(col(name)?.as_string::<i32>().clone()) };
    let (call_id, linked_id, line, dialled) = (text("call_id")?, text("linked_id")?, text("line")?, text("dialled")?);
    let (disposition, transfer_to, topic) = (text("disposition")?, text("transfer_to")?, text("topic")?);
    let (age_band, channel, operator_id, queue_id) =
        (text("age_band")?, text("channel")?, text("operator_id")?, text("queue_id")?);
    let region = col("region")?.as_primitive::<Int32Type>().clone();
    let caller = col("caller_hash")?.as_fixed_size_binary().clone();
    let ts = |name: &str| -> Result<_> { Ok(col(name)?.as_primitive::<TimestampMillisecondType>().clone()) };
    let (start, answer, end) = (ts("start")?, ts("answer")?, ts("end")?);
    let wait = col("queue_wait_ms")?.as_primitive::<UInt32Type>().clone();
    let talk = col("talk_ms")?.as_primitive::<UInt32Type>().clone();
    let partition = col("kafka_partition")?.as_primitive::<Int32Type>().clone();
    let offset = col("kafka_offset")?.as_primitive::<Int64Type>().clone();
    let opt = |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| CompactString::new(a.value(i)));
    out.reserve(b.num_rows());
    for i in 0..b.num_rows() {
        let bad = |what: &str, v: &str| anyhow!("row {i}: {what} {v:?} is not one cdrflow writes");
        let cdr = Cdr {
            call_id: CompactString::new(call_id.value(i)),
            linked_id: opt(&linked_id, i),
            region: RegionCode(u8::try_from(region.value(i)).map_err(|_| bad("region", &region.value(i).to_string()))?),
            line: lines.by_id(line.value(i)).ok_or_else(|| bad("line", line.value(i)))?,
            dialled: CompactString::new(dialled.value(i)),
            caller: caller.is_valid(i).then(|| CallerHash(caller.value(i).try_into().expect("16 bytes"))),
            start_ms: start.value(i),
            answer_ms: answer.is_valid(i).then(|| answer.value(i)),
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
            operator_id: opt(&operator_id, i),
            queue_id: opt(&queue_id, i),
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
    }
}
