#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, starts the local ClickHouse and the
# local Apache Kafka, runs the whole test suite (end-to-end and crash tests included), and
# stops what it started.
# Slow scale runs are not here: they are benches and scripts (see benches/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

bash deploy/local/prerequisites.sh
started_ch=0
if ! bash deploy/local/clickhouse.sh status; then
    bash deploy/local/clickhouse.sh start
    started_ch=1
fi
started_kafka=0
if ! bash deploy/local/kafka.sh status 2>/dev/null; then
    bash deploy/local/kafka.sh start
    started_kafka=1
fi
cleanup() {
    [ "$started_kafka" = 1 ] && bash deploy/local/kafka.sh stop || true
    [ "$started_ch" = 1 ] && bash deploy/local/clickhouse.sh stop || true
}
trap cleanup EXIT

# Every DDL statement and dashboard query on a modern ClickHouse too (chdb-core, PyPI).
python3 -c "import chdb" 2>/dev/null || python3 -m pip install -q "chdb-core>=26,<27"
# An independent Parquet reader for the archive tests.
python3 -c "import pyarrow" 2>/dev/null || python3 -m pip install -q "pyarrow>=14"
# An S3 server for the object-storage archive test (moto, in memory, on 127.0.0.1).
python3 -c "import moto.server, flask_cors" 2>/dev/null || python3 -m pip install -q "moto[server]>=5,<6"
python3 deploy/local/check_sql_modern.py
# The deploy files' validators (Compose schema, Kubernetes schemas, Dockerfile parser).
python3 -c "import yaml, jsonschema, kubernetes_validate, dockerfile_parse" 2>/dev/null ||
    python3 -m pip install -q pyyaml jsonschema "kubernetes-validate>=1.30" dockerfile-parse
python3 deploy/local/check_deploy.py
# Headless Chromium renders `cdrflow report` to a PNG (tests/deploy.rs).
command -v chromium >/dev/null || {
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq chromium >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }
}

# A short fuzz run of both decoders (cargo fuzz, 30 s each; fuzz/README.md).
bash deploy/local/fuzz.sh "${CDRFLOW_FUZZ_SECONDS:-30}"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
