//! One hot-path step, run a given number of times over the bench's 20 000 records, for
//! instruction counts under valgrind (`benches/scripts/instructions.sh`): on a shared VM
//! whose wall-clock speed drifts ±30 %, a count of instructions compares two builds exactly.
//!
//! ```sh
//! cargo run --release -p cdrflow-benches --example steps -- rollup 5   # the rollup, 5 times
//! ```

use std::hint::black_box;

use cdrflow_aggregate::rollup::{CountedCalls, PartitionRollup};
use cdrflow_archive::encode::{ArchivedCdr, parquet_bytes, record_batch};
use cdrflow_archive::read::read_for_counters;
use cdrflow_benches::hot_path_inputs::{archived, cdrs, decoder, feed, window_in_steady_state};
use cdrflow_schemas::versions::call_key;
use cdrflow_schemas::{Cdr, CsvFeed, Format, LineRegistry};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let step = args.get(1).map(String::as_str).unwrap_or("rollup");
    let times: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    let lines = LineRegistry::builtin();
    let mut sink = 0usize;
    let records;
    match step {
        "json" | "csv" => {
            let d = decoder();
            let msgs = feed(if step == "json" { Format::Json } else { Format::AsteriskCsv });
            records = msgs.len();
            for _ in 0..times {
                for m in &msgs {
                    let ok = if step == "json" {
                        d.decode_json(black_box(m)).is_ok()
                    } else {
                        d.decode_asterisk_csv(black_box(m), &CsvFeed::FromAccountcode).is_ok()
                    };
                    sink += ok as usize;
                }
            }
        }
        "rollup" | "rollup_empty_window" => {
            let cdrs = cdrs();
            records = cdrs.len();
            // The window of a long-running aggregator; `rollup_empty_window`: one that
            // starts empty, and grows its map as it goes.
            for _ in 0..times {
                let window = if step == "rollup" { window_in_steady_state(&cdrs) } else { CountedCalls::new(48) };
                sink += rollup_pass(&cdrs, window, &lines);
            }
        }
        "arrow" | "parquet" => {
            let rows = archived();
            let refs: Vec<&ArchivedCdr> = rows.iter().collect();
            records = rows.len();
            let batch = record_batch(&refs, &lines).unwrap();
            // Rows per file (`ROWS`, default all): the ingest worker's files are smaller.
            let per_file = rows_per_file(rows.len());
            for _ in 0..times {
                let mut at = 0;
                while at < rows.len() {
                    let n = per_file.min(rows.len() - at);
                    sink += if step == "arrow" {
                        record_batch(black_box(&refs[at..at + n]), &lines).unwrap().num_rows()
                    } else {
                        parquet_bytes(black_box(&batch.slice(at, n)), &[]).unwrap().len()
                    };
                    at += n;
                }
            }
        }
        "read" => {
            // The archive read back for the counters, as `backfill` reads it, from files
            // of `ROWS` rows (default 2 500).
            let rows = archived();
            let refs: Vec<&ArchivedCdr> = rows.iter().collect();
            records = rows.len();
            let per_file = rows_per_file(2_500);
            let files: Vec<bytes::Bytes> = refs
                .chunks(per_file)
                .map(|c| parquet_bytes(&record_batch(c, &lines).unwrap(), &[]).unwrap().into())
                .collect();
            for _ in 0..times {
                for f in &files {
                    sink += read_for_counters(black_box(f.clone()), &lines).unwrap().len();
                }
            }
        }
        other => panic!("unknown step {other:?}: json, csv, rollup, rollup_empty_window, arrow, parquet or read"),
    }
    // The records of one pass (the script divides by them), and what was made of them.
    println!("records {records} result {sink}");
}

/// Rows per Parquet file: `ROWS` if set, else `default`.
fn rows_per_file(default: usize) -> usize {
    std::env::var("ROWS").ok().and_then(|r| r.parse().ok()).unwrap_or(default)
}

/// One pass of the rollup over `cdrs`, apart so that a profiler can count it alone
/// (`valgrind --tool=callgrind --toggle-collect='*rollup_pass*'`). Returns the cells.
#[inline(never)]
fn rollup_pass(cdrs: &[Cdr], mut w: CountedCalls, lines: &LineRegistry) -> usize {
    let mut r = PartitionRollup::default();
    for c in cdrs {
        let call = call_key(&black_box(c).call_id);
        if w.first_time(call, c.utc_hour()) {
            r.add(c, call, lines);
        }
    }
    let cells = r.rows.len();
    std::mem::forget((r, w));
    cells
}
