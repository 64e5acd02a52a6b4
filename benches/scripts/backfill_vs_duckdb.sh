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
python3 benches/scripts/peers/duckdb_counters.py "$archive"
echo "(cdrflow's rows/s above is rows_per_second_reading; both on the same machine, one after the other)"
