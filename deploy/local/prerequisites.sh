#!/usr/bin/env bash
# What a fresh machine with only the Rust toolchain lacks, from Debian's archive:
# a C toolchain for librdkafka (bundled, built by rdkafka-sys) and the local ClickHouse.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
missing=()
for tool in cc make perl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "prerequisites.sh: installing build-essential and perl (missing: ${missing[*]})" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq build-essential perl >/dev/null
fi
bash "$here/clickhouse.sh" install
