#!/usr/bin/env bash
# Peers side by side, same topic, same run (benches/src/bin/pipeline.rs --peers):
# raw consume, one ingest worker, one aggregator, ClickHouse's Kafka engine (+ a SIGKILL and
# restart), cdrflow's Parquet encoder vs pyarrow on the same rows, backfill vs DuckDB.
#
#   benches/scripts/peers.sh [CDRS] [PARTITIONS]      # default 600000 64 (the feed is keyed by region: Moscow's partition overflows the mock broker's ~5 MiB beyond ~650 k)
#
# Installs its Python peers (pyarrow, duckdb) from PyPI if missing, and starts the local
# ClickHouse (deploy/local/clickhouse.sh). Run on an idle machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
python3 -c "import pyarrow, duckdb" 2>/dev/null || python3 -m pip install -q "pyarrow>=15" "duckdb>=1"
deploy/local/clickhouse.sh start
cargo build --release -q -p cdrflow -p cdrflow-benches
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -m); cdrflow $(git rev-parse --short HEAD)"
target/release/pipeline --cdrs "${1:-600000}" --partitions "${2:-64}" --peers
