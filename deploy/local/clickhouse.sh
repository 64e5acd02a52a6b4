#!/usr/bin/env bash
# Local ClickHouse for tests and the demo: Debian's clickhouse-server, on 127.0.0.1 only,
# with a minimal config and its data under the build area (target/cdrflow-local/clickhouse).
#
#   deploy/local/clickhouse.sh start    install if missing, start in the background, wait until it answers
#   deploy/local/clickhouse.sh stop     stop it by PID
#   deploy/local/clickhouse.sh kill     SIGKILL it (fault tests, the peer bench)
#   deploy/local/clickhouse.sh status   exit 0 if it answers
#   deploy/local/clickhouse.sh install  install the Debian packages only
#
# Idempotent: `start` on a running server and `stop` on a stopped one do nothing.
# Environment: CDRFLOW_CH_HTTP_PORT (8123), CDRFLOW_CH_TCP_PORT (9000), CDRFLOW_LOCAL_DIR,
# CDRFLOW_CH_PARTS_TO_THROW_INSERT and CDRFLOW_CH_MAX_DELAY_TO_INSERT (fault tests only).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${CDRFLOW_LOCAL_DIR:-$repo/target/cdrflow-local}"
dir="$local_dir/clickhouse"
http_port="${CDRFLOW_CH_HTTP_PORT:-8123}"
tcp_port="${CDRFLOW_CH_TCP_PORT:-9000}"
pidfile="$dir/clickhouse.pid"

log() { echo "clickhouse.sh: $*" >&2; }

install() {
    if command -v clickhouse-server >/dev/null && command -v clickhouse-client >/dev/null; then
        return 0
    fi
    log "installing Debian's clickhouse-server and clickhouse-client (needs root and the Debian archive)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # The package's own service start is denied by policy-rc.d in containers: harmless, we start it ourselves.
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
}

answers() {
    clickhouse-client --host 127.0.0.1 --port "$tcp_port" --query "SELECT 1" >/dev/null 2>&1
}

running_pid() {
    [ -f "$pidfile" ] || return 1
    local pid
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_config() {
    mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
    # Fault tests lower the part limits to provoke "too many parts" (CDRFLOW_CH_PARTS_TO_THROW_INSERT),
    # and an insert into a partition with parts to spare is held back for up to
    # CDRFLOW_CH_MAX_DELAY_TO_INSERT seconds (a server slow to write what it received).
    local merge_tree=""
    if [ -n "${CDRFLOW_CH_PARTS_TO_THROW_INSERT:-}" ]; then
        local delay=""
        [ -n "${CDRFLOW_CH_MAX_DELAY_TO_INSERT:-}" ] && delay="<max_delay_to_insert>$CDRFLOW_CH_MAX_DELAY_TO_INSERT</max_delay_to_insert>"
        merge_tree="    <merge_tree><parts_to_throw_insert>$CDRFLOW_CH_PARTS_TO_THROW_INSERT</parts_to_throw_insert><parts_to_delay_insert>$((CDRFLOW_CH_PARTS_TO_THROW_INSERT * 3 / 4))</parts_to_delay_insert>$delay</merge_tree>"
    fi
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
$merge_tree
    <!-- For the peer bench's Kafka table engine: a new consumer group reads a topic from its start. -->
    <kafka><auto_offset_reset>smallest</auto_offset_reset></kafka>
</yandex>
XML
    cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start() {
    if pid="$(running_pid)" && answers; then
        log "already running (pid $pid) on 127.0.0.1:$http_port (http) and :$tcp_port (native)"
        return 0
    fi
    if answers; then
        log "something else already answers on 127.0.0.1:$http_port (not the server of $dir): stop it, or set CDRFLOW_CH_HTTP_PORT and CDRFLOW_CH_TCP_PORT"
        return 1
    fi
    install
    write_config
    log "starting clickhouse-server on 127.0.0.1:$http_port (http) and :$tcp_port (native); data in $dir/data"
    # In the foreground of a background job (no --daemon), so $! is the server itself.
    nohup clickhouse-server --config-file="$dir/config.xml" \
        >"$dir/log/stdout.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 150); do
        if running_pid >/dev/null && answers; then
            log "ready (pid $(cat "$pidfile"))"
            return 0
        fi
        if ! running_pid >/dev/null; then
            break
        fi
        sleep 0.2
    done
    log "clickhouse-server did not come up (is port $tcp_port or $http_port taken? set CDRFLOW_CH_TCP_PORT/CDRFLOW_CH_HTTP_PORT); its log says:"
    tail -n 20 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 || true
    return 1
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        rm -f "$pidfile"
        return 0
    fi
    kill "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { log "stopped (pid $pid)"; rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 10 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# For fault tests and the peer bench: the server dies at once, as on a power cut.
kill9() {
    local pid
    if pid="$(running_pid)"; then
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        log "killed (pid $pid, SIGKILL)"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    start) start ;;
    kill) kill9 ;;
    stop) stop ;;
    status) answers && running_pid >/dev/null ;;
    install) install ;;
    *) echo "usage: $0 start|stop|kill|status|install" >&2; exit 2 ;;
esac
