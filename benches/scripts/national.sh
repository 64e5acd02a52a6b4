#!/usr/bin/env bash
# National scale: 100 M CDRs (in slices the mock broker can hold) through one ingest worker
# and one aggregator, then a rebuild of all counters from the archive; prints and writes
# target/bench-national/result.json (wall time, peak memory, CPU time, CDRs/s, checks
# against the ground truth). About an hour on 2 cores; the archive takes a few GiB.
#
#   benches/scripts/national.sh [CDRS] [SLICE]        # default 100000000 500000
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
deploy/local/clickhouse.sh start
cargo build --release -q -p cdrflow -p cdrflow-benches
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $(uname -m); cdrflow $(git rev-parse --short HEAD)"
target/release/national --cdrs "${1:-100000000}" --slice "${2:-500000}"
