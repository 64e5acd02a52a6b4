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
use cdrflow_benches::hot_path_inputs::{cdrs, decoder, feed};
use cdrflow_schemas::versions::call_key;
use cdrflow_schemas::{CsvFeed, Format, LineRegistry};

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
        "rollup" => {
            let cdrs = cdrs();
            records = cdrs.len();
            for _ in 0..times {
                let (mut r, mut w) = (PartitionRollup::default(), CountedCalls::new(48));
                for c in &cdrs {
                    let call = call_key(&black_box(c).call_id);
                    if w.first_time(call, c.utc_hour()) {
                        r.add(c, call, &lines);
                    }
                }
                sink += r.rows.len();
                std::mem::forget((r, w));
            }
        }
        "arrow" | "parquet" => {
            let rows: Vec<ArchivedCdr> = cdrs()
                .into_iter()
                .enumerate()
                .map(|(i, cdr)| ArchivedCdr { partition: 0, offset: i as i64, cdr })
                .collect();
            let refs: Vec<&ArchivedCdr> = rows.iter().collect();
            records = rows.len();
            let batch = record_batch(&refs, &lines).unwrap();
            // Rows per file (`ROWS`, default all): the ingest worker's files are smaller.
            let per_file: usize = std::env::var("ROWS").ok().and_then(|r| r.parse().ok()).unwrap_or(rows.len());
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
        other => panic!("unknown step {other:?}: json, csv, rollup, arrow or parquet"),
    }
    // The records of one pass (the script divides by them), and what was made of them.
    println!("records {records} result {sink}");
}
