"""The Parquet peer: pyarrow writes the same rows as cdrflow's archive files.

Reads every Parquet file of the archive (reading is not timed), then times writing each
file's rows again with the archive's settings (zstd level 1, 128 Ki-row groups, page
statistics on the columns the archive's files have them for), one file after another, one
thread. Prints one JSON object.

    python3 benches/scripts/peers/pyarrow_write.py ARCHIVE_DIR
"""
import io, json, sys, time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
files = sorted(Path(sys.argv[1]).glob("dt=*/region=*/*.parquet"))
tables = [pq.read_table(f) for f in files]
first = pq.ParquetFile(files[0]).metadata.row_group(0)
with_statistics = [first.column(i).path_in_schema for i in range(first.num_columns) if first.column(i).is_stats_set]
rows = sum(t.num_rows for t in tables)
t0 = time.perf_counter()
size = 0
for t in tables:
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd", compression_level=1, row_group_size=128 * 1024,
                   write_statistics=with_statistics, write_page_index=True)
    size += buf.tell()
s = time.perf_counter() - t0
print(json.dumps({"peer": f"pyarrow {pa.__version__}", "files": len(tables), "rows": rows,
                  "bytes": size, "seconds": round(s, 3), "rows_per_second": round(rows / s)}))
