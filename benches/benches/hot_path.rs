//! Criterion benches of each step of the hot path, on inputs from the synthetic national
//! feed (not one repeated record), each reporting elements/s and bytes/s:
//! JSON decode+validate, Asterisk CSV decode+validate, Avro decode+validate, pseudonymise, rollup update,
//! Arrow append (of rows in and out of the cache), Parquet encode (zstd), reading the archive for the
//! counters (and parquet-rs's own decode of the same columns), ClickHouse row encoding.
//!
//! ```sh
//! cargo bench -p cdrflow-benches --bench hot_path
//! ```

use std::hint::black_box;

use cdrflow_aggregate::clickhouse::encoder::{Unit, encode};
use cdrflow_aggregate::rollup::{CountedCalls, PartitionRollup};
use cdrflow_archive::encode::{ArchivedCdr, parquet_bytes, record_batch};
use cdrflow_archive::read::{NOT_FOR_COUNTERS, read_for_counters};
use cdrflow_benches::hot_path_inputs::{archived, avro_writer, cdrs, decoder, feed, window_in_steady_state};
use cdrflow_schemas::avro;
use cdrflow_schemas::versions::call_key;
use cdrflow_schemas::{CsvFeed, Decoder, Format, LineRegistry, Pseudonymiser};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn bytes(msgs: &[Vec<u8>]) -> u64 {
    msgs.iter().map(|m| m.len() as u64).sum()
}

fn decode(c: &mut Criterion) {
    let d = decoder();
    let json = feed(Format::Json);
    let csv = feed(Format::AsteriskCsv);
    let mut g = c.benchmark_group("decode_validate_pseudonymise");
    g.throughput(Throughput::Elements(json.len() as u64));
    g.bench_function("json", |b| b.iter(|| json.iter().filter(|m| d.decode_json(black_box(m)).is_ok()).count()));
    // The same records through serde alone (the decoder before its fast scanner), and the
    // peer: serde_json parsing them into a `Value` and nothing more (no validation, no hash).
    g.bench_function("json_serde_reference", |b| {
        b.iter(|| json.iter().filter(|m| d.decode_json_reference(black_box(m)).is_ok()).count())
    });
    g.bench_function("json_peer_serde_json_value", |b| {
        b.iter(|| json.iter().filter(|m| serde_json::from_slice::<serde_json::Value>(black_box(m)).is_ok()).count())
    });
    // The SIMD peer: simd-json parsing the same bytes into its borrowed value (it parses in
    // place, so each message is first copied into a reused buffer, as a consumer would).
    g.bench_function("json_peer_simd_json_value", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            json.iter()
                .filter(|m| {
                    buf.clear();
                    buf.extend_from_slice(black_box(m));
                    simd_json::to_borrowed_value(&mut buf).is_ok()
                })
                .count()
        })
    });
    g.throughput(Throughput::Bytes(bytes(&json)));
    g.bench_function("json_bytes", |b| b.iter(|| json.iter().filter(|m| d.decode_json(black_box(m)).is_ok()).count()));
    g.throughput(Throughput::Elements(csv.len() as u64));
    g.bench_function("asterisk_csv", |b| {
        b.iter(|| csv.iter().filter(|m| d.decode_asterisk_csv(black_box(m), &CsvFeed::FromAccountcode).is_ok()).count())
    });
    g.throughput(Throughput::Bytes(bytes(&csv)));
    g.bench_function("asterisk_csv_bytes", |b| {
        b.iter(|| csv.iter().filter(|m| d.decode_asterisk_csv(black_box(m), &CsvFeed::FromAccountcode).is_ok()).count())
    });
    // Avro (Confluent-framed, the writer schema known): the same calls; and the peer,
    // apache-avro reading the bodies into its `Value` with the same resolution to the
    // reader schema and nothing more (no validation, no hash).
    let avro_msgs = feed(Format::AvroConfluent);
    g.throughput(Throughput::Elements(avro_msgs.len() as u64));
    g.bench_function("avro_confluent", |b| {
        b.iter(|| avro_msgs.iter().filter(|m| d.decode_avro_confluent(black_box(m)).is_ok()).count())
    });
    let writer = avro_writer().schema;
    g.bench_function("avro_peer_apache_avro_value", |b| {
        b.iter(|| {
            let reader = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
                .reader_schema(avro::reader_schema())
                .build()
                .unwrap();
            avro_msgs.iter().filter(|m| reader.read_value(&mut black_box(&m[5..])).is_ok()).count()
        })
    });
    g.throughput(Throughput::Bytes(bytes(&avro_msgs)));
    g.bench_function("avro_confluent_bytes", |b| {
        b.iter(|| avro_msgs.iter().filter(|m| d.decode_avro_confluent(black_box(m)).is_ok()).count())
    });
    g.finish();
}

/// The aggregator's decode: the same validation, caller numbers checked but not hashed.
fn decode_for_counters(c: &mut Criterion) {
    let d = Decoder::new(LineRegistry::builtin(), Pseudonymiser::check_only());
    let json = feed(Format::Json);
    let mut g = c.benchmark_group("decode_validate");
    g.throughput(Throughput::Elements(json.len() as u64));
    g.bench_function("json_for_counters", |b| {
        b.iter(|| json.iter().filter(|m| d.decode_json(black_box(m)).is_ok()).count())
    });
    g.finish();
}

fn pseudonymise(c: &mut Criterion) {
    let p = Pseudonymiser::new(b"bench key, 32 bytes long........").unwrap();
    let callers: Vec<String> = feed(Format::Json)
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(m).ok()?["caller"].as_str().map(str::to_owned))
        .collect();
    let mut g = c.benchmark_group("pseudonymise");
    g.throughput(Throughput::Elements(callers.len() as u64));
    g.bench_function("hmac_sha256", |b| b.iter(|| callers.iter().filter(|n| p.hash(black_box(n)).is_some()).count()));
    g.throughput(Throughput::Bytes(callers.iter().map(|c| c.len() as u64).sum()));
    g.bench_function("hmac_sha256_bytes", |b| {
        b.iter(|| callers.iter().filter(|n| p.hash(black_box(n)).is_some()).count())
    });
    g.finish();
}

fn rollup(c: &mut Criterion) {
    let lines = LineRegistry::builtin();
    let cdrs = cdrs();
    let mut g = c.benchmark_group("rollup");
    g.throughput(Throughput::Elements(cdrs.len() as u64));
    // What the aggregator does per valid CDR: key the call, check its window, add it. The
    // window is a long-running aggregator's (`window_in_steady_state`); the second bench
    // starts from an empty one, whose map grows as it goes.
    let update = |r: PartitionRollup, w: CountedCalls| {
        let (mut r, mut w) = (r, w);
        for c in &cdrs {
            let call = call_key(&black_box(c).call_id);
            if w.first_time(call, c.utc_hour()) {
                r.add(c, call, &lines);
            }
        }
        (r, w)
    };
    g.bench_function("update", |b| {
        b.iter_batched(
            || (PartitionRollup::default(), window_in_steady_state(&cdrs)),
            |(r, w)| update(r, w),
            // One window at a time: each holds 48 hours of calls.
            BatchSize::PerIteration,
        )
    });
    g.bench_function("update_empty_window", |b| {
        b.iter_batched(
            || (PartitionRollup::default(), CountedCalls::new(48)),
            |(r, w)| update(r, w),
            BatchSize::SmallInput,
        )
    });
    let mut r = PartitionRollup::default();
    for (i, c) in cdrs.iter().enumerate() {
        r.saw(i as i64);
        r.add(c, call_key(&c.call_id), &lines);
    }
    let unit = Unit { group: "bench", topic: "cdrs", partition: 0, flushed_at: 1_700_000_000 };
    g.throughput(Throughput::Elements(r.rows.len() as u64));
    g.bench_function("clickhouse_row_encoding", |b| b.iter(|| encode(black_box(&unit), &r, &lines).len()));
    g.finish();
}

fn archive(c: &mut Criterion) {
    let lines = LineRegistry::builtin();
    let rows = archived();
    let refs: Vec<&ArchivedCdr> = rows.iter().collect();
    let mut g = c.benchmark_group("archive");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("arrow_append", |b| b.iter(|| record_batch(black_box(&refs), &lines).unwrap().num_rows()));
    // As an ingest worker appends them: the rows of one date and region, which the
    // partition's other dates and regions interleave at irregular gaps (one row in five
    // here, chosen by a hash of its place), decoded long enough before that they are out of
    // the cache. Five such files in turn over 256 k rows (~70 MB, more than this machine's
    // 32 MiB of L3) make each pass find its rows cold.
    let pool: Vec<ArchivedCdr> = rows.iter().cycle().take(256 * 1024).cloned().collect();
    let file_of = |i: usize| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 5;
    let files: Vec<Vec<&ArchivedCdr>> =
        (0..5).map(|k| pool.iter().enumerate().filter(|(i, _)| file_of(*i) == k).map(|(_, r)| r).collect()).collect();
    g.throughput(Throughput::Elements((pool.len() / files.len()) as u64));
    let mut next = 0;
    g.bench_function("arrow_append_rows_out_of_cache", |b| {
        b.iter(|| {
            next = (next + 1) % files.len();
            record_batch(black_box(&files[next]), &lines).unwrap().num_rows()
        })
    });
    drop(files);
    drop(pool);
    g.throughput(Throughput::Elements(rows.len() as u64));
    let batch = record_batch(&refs, &lines).unwrap();
    g.bench_function("parquet_encode_zstd", |b| b.iter(|| parquet_bytes(black_box(&batch), &[]).unwrap().len()));
    // The same rows as the small files a catch-up writes (a unit of ~2 500 rows per
    // partition and half-second rotation, one file per date and region in it).
    let small: Vec<_> = refs.chunks(2_500).map(|c| record_batch(c, &lines).unwrap()).collect();
    g.bench_function("parquet_encode_zstd_2500_row_files", |b| {
        b.iter(|| small.iter().map(|s| parquet_bytes(black_box(s), &[]).unwrap().len()).sum::<usize>())
    });
    // Reading those files back as `backfill` does (the columns the counters use, into
    // CDRs), and the peer: parquet-rs decoding the same columns into Arrow arrays and no
    // further, as any Parquet reader would.
    let files: Vec<bytes::Bytes> = small.iter().map(|s| parquet_bytes(s, &[]).unwrap().into()).collect();
    g.bench_function("read_for_counters_2500_row_files", |b| {
        b.iter(|| files.iter().map(|f| read_for_counters(black_box(f.clone()), &lines).unwrap().len()).sum::<usize>())
    });
    g.bench_function("read_peer_parquet_to_arrow_2500_row_files", |b| {
        use parquet::arrow::{ProjectionMask, arrow_reader::ParquetRecordBatchReaderBuilder};
        b.iter(|| {
            let rows_read = |f: &bytes::Bytes| {
                let builder = ParquetRecordBatchReaderBuilder::try_new(black_box(f.clone())).unwrap();
                let wanted = builder.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
                let wanted = wanted.iter().map(String::as_str).filter(|n| !NOT_FOR_COUNTERS.contains(n));
                let mask = ProjectionMask::columns(builder.parquet_schema(), wanted);
                builder.with_projection(mask).build().unwrap().map(|b| b.unwrap().num_rows()).sum::<usize>()
            };
            files.iter().map(rows_read).sum::<usize>()
        })
    });
    g.throughput(Throughput::Bytes(batch.get_array_memory_size() as u64));
    g.bench_function("parquet_encode_zstd_bytes", |b| b.iter(|| parquet_bytes(black_box(&batch), &[]).unwrap().len()));
    g.finish();
}

criterion_group!(name = hot_path; config = Criterion::default().sample_size(20); targets = decode, decode_for_counters, pseudonymise, rollup, archive);
criterion_main!(hot_path);
