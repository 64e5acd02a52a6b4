"""The rebuild peer: DuckDB computes the hourly counters from cdrflow's archive with the
same versions rule as `cdrflow backfill` (per UTC date and call id, the latest end, then the
latest partition and offset). Prints one JSON object.

    python3 benches/scripts/peers/duckdb_counters.py ARCHIVE_DIR [THREADS]   # default 1
"""
import json, sys, time

import duckdb

archive = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
files = f"read_parquet('{archive}/dt=*/region=*/*.parquet', hive_partitioning = true, hive_types = {{'dt': VARCHAR, 'region': INTEGER}})"
t = time.perf_counter()
cells = con.execute(f"""
    WITH v AS (
        SELECT *, row_number() OVER (PARTITION BY dt, call_id
                                     ORDER BY "end" DESC, kafka_partition DESC, kafka_offset DESC) AS rank
        FROM {files}
    )
    SELECT region, line, epoch(date_trunc('hour', "start")) AS hour,
           count(*) AS offered,
           count(*) FILTER (WHERE disposition = 'answered') AS answered,
           sum(queue_wait_ms) FILTER (WHERE disposition = 'answered') AS wait_sum_ms,
           sum(talk_ms) AS talk_sum_ms
    FROM v WHERE rank = 1
    GROUP BY ALL
""").fetchall()
s = time.perf_counter() - t
read = con.execute(f"SELECT count(*) FROM {files}").fetchone()[0]
print(json.dumps({"peer": f"duckdb {duckdb.__version__} ({threads} thread{'s' if threads > 1 else ''})", "rows": read, "cells": len(cells),
                  "calls": sum(c[3] for c in cells), "seconds": round(s, 3), "rows_per_second": round(read / s)}))
