#!/usr/bin/env bash
# Rebuilding counters from the archive: `cdrflow backfill` against DuckDB (PyPI, installed
# here if missing) computing the same hourly counters from the same Parquet files, with the
# same versions rule (latest end per call id, within a UTC date). Both read every file; both
# totals must agree.
#
#   benches/scripts/backfill_vs_duckdb.sh [CDRS]     # default 1000000
#
# It runs `cdrflow demo --cdrs CDRS` first (embedded broker, local ClickHouse) to make the
# archive and the streaming counters, then times both rebuilds on that archive.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cdrs="${1:-1000000}"
work="target/bench-backfill"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q "duckdb>=1"
cargo build --release -q
bin=target/release/cdrflow
"$bin" demo --cdrs "$cdrs" --workdir "$work" >/dev/null
archive="$work/archive"

echo "== cdrflow backfill ($cdrs CDRs in $(find "$archive" -name '*.parquet' | wc -l) files)"
/usr/bin/time -f "wall %e s, peak RSS %M KiB" "$bin" backfill --from "$archive" --database cdrflow_demo 2>/tmp/backfill.time | tee /tmp/backfill.json
cat /tmp/backfill.time | tail -1

echo "== DuckDB (same files, same rule)"
python3 - "$archive" <<'PY'
import sys, time, duckdb
archive = sys.argv[1]
con = duckdb.connect()
t = time.time()
rows = con.execute(f"""
    WITH v AS (
        SELECT *, row_number() OVER (PARTITION BY dt, call_id ORDER BY "end" DESC, kafka_partition DESC, kafka_offset DESC) AS rank
        FROM read_parquet('{archive}/dt=*/region=*/*.parquet', hive_partitioning = true, hive_types = {{'dt': VARCHAR, 'region': INTEGER}})
    )
    SELECT region, line, epoch(date_trunc('hour', "start")) AS hour,
           count(*) AS offered,
           count(*) FILTER (WHERE disposition = 'answered') AS answered,
           sum(queue_wait_ms) FILTER (WHERE disposition = 'answered') AS wait_sum_ms,
           sum(talk_ms) AS talk_sum_ms
    FROM v WHERE rank = 1
    GROUP BY ALL
""").fetchall()
s = time.time() - t
read = con.execute(f"SELECT count(*) FROM read_parquet('{archive}/dt=*/region=*/*.parquet')").fetchone()[0]
print(f"duckdb {duckdb.__version__}: {len(rows)} cells, {sum(r[3] for r in rows)} calls from {read} rows in {s:.2f} s = {read / s:,.0f} rows/s")
PY
echo "(cdrflow's rows/s above is rows_per_second_reading; both on the same machine, one after the other)"
