# Sourced by the pipeline bench scripts (from the repository's root): starts the local Kafka
# (deploy/local/kafka.sh; CDRFLOW_KAFKA_INSTANCE/_PORT/_DIR choose another instance) and the
# local ClickHouse (deploy/local/clickhouse.sh) if they are not running, stops at exit only
# what it started, and sets `brokers` to Kafka's bootstrap address.
started_kafka="" started_clickhouse=""
stop_what_was_started() {
    if [ -n "$started_clickhouse" ]; then deploy/local/clickhouse.sh stop || true; fi
    if [ -n "$started_kafka" ]; then bash deploy/local/kafka.sh stop || true; fi
}
trap stop_what_was_started EXIT
if ! bash deploy/local/kafka.sh status >/dev/null 2>&1; then
    started_kafka=1
    bash deploy/local/kafka.sh start >/dev/null
fi
brokers="$(bash deploy/local/kafka.sh bootstrap)"
if ! deploy/local/clickhouse.sh status >/dev/null 2>&1; then
    started_clickhouse=1
    deploy/local/clickhouse.sh start
fi
