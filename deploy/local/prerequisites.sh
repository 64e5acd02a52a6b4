#!/usr/bin/env bash
# What a fresh machine with only the Rust toolchain lacks, from Debian's archive:
# a C toolchain and OpenSSL's headers for librdkafka (bundled, built by rdkafka-sys with TLS,
# SASL and zstd), the local ClickHouse (and Debian's ZooKeeper for the cluster tests), and the
# local Apache Kafka's jars (resolved from Maven
# Central by Maven; Java 17+ and Maven come from Debian if missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
missing=()
for tool in cc make perl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
pkg-config --exists openssl 2>/dev/null || missing+=("libssl-dev")
command -v openssl >/dev/null || missing+=("openssl")   # tests make throwaway TLS certificates
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "prerequisites.sh: installing build-essential, perl, pkg-config, libssl-dev and openssl (missing: ${missing[*]})" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq build-essential perl pkg-config libssl-dev openssl >/dev/null
fi
bash "$here/clickhouse.sh" install
bash "$here/clickhouse-cluster.sh" install   # Debian's ZooKeeper, for the cluster tests
bash "$here/kafka.sh" install
bash "$here/registry.sh" install     # Apicurio Registry (Maven Central), for the Avro tests
