//! CDRs → Arrow record batches → Parquet bytes, in the archive's schema
//! ([`cdrflow_schemas::archive::arrow_schema`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder,
};
use arrow::record_batch::RecordBatch;
use cdrflow_schemas::archive::{META_SCHEMA_VERSION, arrow_schema};
use cdrflow_schemas::{Cdr, LineRegistry, SCHEMA_VERSION};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// A valid CDR with its lineage.
#[derive(Debug, Clone)]
pub struct ArchivedCdr {
    /// Kafka partition it was read from.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// The record (caller already pseudonymised).
    pub cdr: Cdr,
}

/// Builds one record batch from rows (in the order given).
pub fn record_batch(rows: &[&ArchivedCdr], lines: &LineRegistry) -> Result<RecordBatch> {
    let n = rows.len();
    let mut call_id = StringBuilder::with_capacity(n, n * 16);
    let mut linked_id = StringBuilder::with_capacity(n, n * 4);
    let mut region = Int32Builder::with_capacity(n);
    let mut line = StringBuilder::with_capacity(n, n * 4);
    let mut dialled = StringBuilder::with_capacity(n, n * 6);
    let mut caller = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut answer = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut wait = UInt32Builder::with_capacity(n);
    let mut talk = UInt32Builder::with_capacity(n);
    let mut disposition = StringBuilder::with_capacity(n, n * 8);
    let mut transfer_to = StringBuilder::with_capacity(n, n);
    let mut topic = StringBuilder::with_capacity(n, n * 8);
    let mut age_band = StringBuilder::with_capacity(n, n * 5);
    let mut channel = StringBuilder::with_capacity(n, n * 5);
    let mut operator_id = StringBuilder::with_capacity(n, n * 6);
    let mut queue_id = StringBuilder::with_capacity(n, n * 4);
    let mut kafka_partition = Int32Builder::with_capacity(n);
    let mut kafka_offset = Int64Builder::with_capacity(n);
    for (i, r) in rows.iter().enumerate() {
        if let Some(ahead) = rows.get(i + PREFETCH_AHEAD) {
            prefetch(ahead);
        }
        let c = &r.cdr;
        call_id.append_value(&c.call_id);
        linked_id.append_option(c.linked_id.as_deref());
        region.append_value(c.region.0 as i32);
        line.append_value(&lines.line(c.line).id);
        dialled.append_value(&c.dialled);
        match &c.caller {
            Some(h) => caller.append_value(h.0).context("16-byte caller hash")?,
            None => caller.append_null(),
        }
        start.append_value(c.start_ms);
        answer.append_option(c.answer_ms);
        end.append_value(c.end_ms);
        wait.append_value(c.queue_wait_ms);
        talk.append_value(c.talk_ms);
        disposition.append_value(c.disposition.code());
        transfer_to.append_option(c.transfer_to.as_deref());
        topic.append_option(c.topic.as_deref());
        age_band.append_option(c.age_band.map(|b| b.code()));
        channel.append_value(c.channel.code());
        operator_id.append_option(c.operator_id.as_deref());
        queue_id.append_option(c.queue_id.as_deref());
        kafka_partition.append_value(r.partition);
        kafka_offset.append_value(r.offset);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(call_id.finish()),
        Arc::new(linked_id.finish()),
        Arc::new(region.finish()),
        Arc::new(line.finish()),
        Arc::new(dialled.finish()),
        Arc::new(caller.finish()),
        Arc::new(start.finish()),
        Arc::new(answer.finish()),
        Arc::new(end.finish()),
        Arc::new(wait.finish()),
        Arc::new(talk.finish()),
        Arc::new(disposition.finish()),
        Arc::new(transfer_to.finish()),
        Arc::new(topic.finish()),
        Arc::new(age_band.finish()),
        Arc::new(channel.finish()),
        Arc::new(operator_id.finish()),
        Arc::new(queue_id.finish()),
        Arc::new(kafka_partition.finish()),
        Arc::new(kafka_offset.finish()),
    ];
    RecordBatch::try_new(arrow_schema(), columns).context("building the archive's record batch")
}

/// How many rows ahead of the one it appends [`record_batch`] asks for a row's memory
/// ([`prefetch`]); the rebuild's count of the rows that won their call's versions does the same.
///
/// An ingest worker encodes a unit's rows half a second or more after it decoded them, on
/// another core, and each file takes the rows of one date and region, which the partition's
/// other dates and regions interleave at irregular gaps: by then the rows are out of the
/// cache, at strides no hardware prefetcher follows, and each row (248 bytes, four or five
/// cache lines) missed it at every line. Asked for ahead, the misses overlap: criterion's
/// `archive/arrow_append_rows_out_of_cache` went from ~2.9 to ~5 M rows/s, alike for 4, 8
/// and 16 rows ahead (`benches/RESULTS.md` §21).
pub const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to bring every cache line of `row` near: a hint, without effect on what the
/// program computes.
#[inline(always)]
pub fn prefetch(row: &ArchivedCdr) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        const SIZE: usize = std::mem::size_of::<ArchivedCdr>();
        let start = (row as *const ArchivedCdr).cast::<i8>();
        // Every 64 bytes from its first, and its last byte: each line it spans, however
        // it is aligned.
        for offset in (0..SIZE).step_by(64).chain([SIZE - 1]) {
            // SAFETY: prefetching is a hint that never faults, whatever the address; this one
            // lies within `row`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Writer settings: zstd level 1, instants and offsets delta-encoded, page statistics (but
/// for the caller hashes and the categories, `CATEGORIES`), 128k-row groups, the schema
/// version and the unit's lineage in key-value metadata.
///
/// Level 1, not 3: most of an archive's bytes are ids and keyed hashes that no level
/// compresses, so level 3 made the archive of a 1 M-CDR feed no smaller (35.27 MB against
/// 35.22 MB at level 1) while the encoder ran 7–14 % slower (`benches/RESULTS.md` §10).
pub fn writer_properties(metadata: &[(&str, String)]) -> WriterProperties {
    let mut kv = vec![KeyValue::new(META_SCHEMA_VERSION.to_owned(), SCHEMA_VERSION.to_string())];
    kv.extend(metadata.iter().map(|(k, v)| KeyValue::new(format!("cdrflow.{k}"), v.clone())));
    let mut props = WriterProperties::builder();
    // Nearly every value of these differs, so a dictionary only costs a hash per value
    // before the writer gives it up; low-cardinality columns keep theirs.
    for column in HIGH_CARDINALITY {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    // Keyed hashes are uniform: a page's smallest and largest span nearly the whole range,
    // so they prune nothing, and comparing every value to them cost ~2 % of the encoder.
    props = props.set_column_statistics_enabled(ColumnPath::from("caller_hash"), EnabledStatistics::None);
    for column in CATEGORIES {
        props = props.set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::None);
    }
    for column in DELTA_ENCODED {
        props = props.set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED);
    }
    for column in UNCOMPRESSED {
        props = props.set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
    }
    props
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_key_value_metadata(Some(kv))
        .build()
}

/// The archive's zstd level (see [`writer_properties`]).
pub const ZSTD_LEVEL: i32 = 1;

/// Columns written as differences from the value before ([`Encoding::DELTA_BINARY_PACKED`]):
/// instants and offsets that mostly rise, so each takes a few bits before zstd sees it,
/// rather than eight bytes that zstd must find the pattern in. On the bench's 20 000 rows
/// this made the encoder ~12 % fewer instructions and the file ~4 % smaller
/// (`benches/RESULTS.md` §12); every Parquet reader of the last years reads it.
const DELTA_ENCODED: &[&str] = &["start", "answer", "end", "kafka_offset"];

/// Text columns of a small vocabulary (lines, numbers dialled, dispositions, topics, age
/// bands, channels, operators, queues), written without statistics. A file holds one date
/// and region in order of start, so every page and row group holds most of each column's
/// vocabulary: their smallest and largest values span it and prune nothing, while
/// computing them compared every value twice, 14.5 % of the encoder's instructions
/// (`benches/RESULTS.md` §14). Their dictionaries stay, and tell a reader which values a
/// column chunk holds.
pub(crate) const CATEGORIES: &[&str] =
    &["line", "dialled", "disposition", "transfer_to", "topic", "age_band", "channel", "operator_id", "queue_id"];

/// Columns that zstd does not shrink in the archive, written uncompressed: keyed hashes
/// (uniform bytes; a caller seldom calls twice within one file's minutes of one region),
/// offsets once delta-encoded (a few bits each, already packed), and the region and
/// partition (one value a file, a run of a few bytes). On the archives of 1 M and 4 M CDRs
/// (301 files of ~3 300 rows; 1 157 of ~2 300) zstd had made these four columns 0.04–0.05 %
/// larger, not smaller, while compressing them cost 9–10 % of the Parquet encoder's
/// instructions: `caller_hash` is the widest column, and each compressed column of each
/// file makes and drops its zstd contexts (`benches/RESULTS.md` §18).
const UNCOMPRESSED: &[&str] = &["region", "caller_hash", "kafka_partition", "kafka_offset"];

/// Columns written without a dictionary.
const HIGH_CARDINALITY: &[&str] = &["call_id", "linked_id", "caller_hash", "start", "answer", "end", "kafka_offset"];

/// Encodes one batch as a complete Parquet file.
pub fn parquet_bytes(batch: &RecordBatch, metadata: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 3);
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties(metadata)))
        .context("starting a Parquet file")?;
    w.write(batch).context("encoding Parquet")?;
    w.close().context("finishing a Parquet file")?;
    Ok(out)
}
