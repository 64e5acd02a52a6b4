#!/usr/bin/env bash
# National scale: 100 M CDRs produced in one go (one `cdrflow generate`, zstd batches) into a
# fresh topic on the local Apache Kafka while one ingest worker and one aggregator consume it,
# then a rebuild of all counters from the archive, a month at a time; prints and writes
# target/bench-national/result.json (wall time, peak memory, CPU time, CDRs/s, the topic's
# size on the broker's disk, checks against the ground truth). About an hour on 2 cores; the
# topic takes ~10 GiB and the archive ~4 GiB (both under target/; the topic is deleted at the end).
#
#   benches/scripts/national.sh [CDRS] [PARTITIONS]   # default 100000000 96
#
# Starts the local Kafka (deploy/local/kafka.sh; CDRFLOW_KAFKA_INSTANCE/_PORT/_DIR choose another
# instance) and ClickHouse (deploy/local/clickhouse.sh) if they are not running, and stops at the
# end only what it started.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cargo build --release -q -p cdrflow -p cdrflow-benches

. benches/scripts/services.sh
kafka_dir="${CDRFLOW_KAFKA_DIR:-target/cdrflow-local/kafka/${CDRFLOW_KAFKA_INSTANCE:-default}}"

echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -m); cdrflow $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (with uncommitted changes)')"
echo "# Kafka $(cat "$kafka_dir/version" 2>/dev/null || echo '?') at $brokers; load average: $(cut -d' ' -f1-3 /proc/loadavg); $(df -h --output=avail "$repo/target" | tail -1 | tr -d ' ') free"
target/release/national --brokers "$brokers" --kafka-data "$kafka_dir/node-1/data" \
    --cdrs "${1:-100000000}" --partitions "${2:-96}"
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
