#!/usr/bin/env bash
# Peers side by side, same broker, same topic, same run (benches/src/bin/pipeline.rs --peers):
# raw consume, one ingest worker, one aggregator, ClickHouse's Kafka engine (+ a SIGKILL and
# restart), cdrflow's Parquet encoder vs pyarrow on the same rows, backfill vs DuckDB.
#
#   benches/scripts/peers.sh [CDRS] [PARTITIONS]      # default 1000000 64
#
# Runs on the local Apache Kafka (deploy/local/kafka.sh; CDRFLOW_KAFKA_INSTANCE/_PORT/_DIR
# choose another instance) and the local ClickHouse (deploy/local/clickhouse.sh): starts each
# if it is not running, and stops at the end only what it started. The feed goes to a fresh
# topic of the run's own, deleted at the end. Installs its Python peers (pyarrow, duckdb)
# from PyPI if missing. Run on an idle machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
python3 -c "import pyarrow, duckdb" 2>/dev/null || python3 -m pip install -q "pyarrow>=15" "duckdb>=1"
cargo build --release -q -p cdrflow -p cdrflow-benches

. benches/scripts/services.sh

echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -m); cdrflow $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with uncommitted changes)')"
echo "# Kafka $(cat "${CDRFLOW_KAFKA_DIR:-target/cdrflow-local/kafka/${CDRFLOW_KAFKA_INSTANCE:-default}}/version" 2>/dev/null || echo '?') at $brokers; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/pipeline --brokers "$brokers" --cdrs "${1:-1000000}" --partitions "${2:-64}" --peers
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
