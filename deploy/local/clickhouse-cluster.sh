#!/usr/bin/env bash
# Local ClickHouse cluster for the cluster tests: Debian's ZooKeeper and four Debian clickhouse-server
# processes as 2 shards x 2 replicas (cluster `hotlines`), all on 127.0.0.1 only, with minimal configs
# and their data under the build area (target/cdrflow-local/cluster).
#
#   deploy/local/clickhouse-cluster.sh start      install if missing, start ZooKeeper and the four servers,
#                                                 wait until ON CLUSTER DDL works, print the URLs line
#   deploy/local/clickhouse-cluster.sh stop       stop the four servers, then ZooKeeper, by PID
#   deploy/local/clickhouse-cluster.sh status     exit 0 if ZooKeeper and all four servers answer
#   deploy/local/clickhouse-cluster.sh kill N     SIGKILL server N (fault tests)
#   deploy/local/clickhouse-cluster.sh restart N  start server N again on its data, wait until it answers
#                                                 (after `kill N`, first waits out the killed server's
#                                                 ZooKeeper session, else its replicas stay inactive 10 s more)
#   deploy/local/clickhouse-cluster.sh urls       print the URLs line
#   deploy/local/clickhouse-cluster.sh install    install the Debian packages only (clickhouse, zookeeper)
#
# Servers, in the order of the URLs line: 1 = shard 01 replica r1, 2 = shard 01 replica r2,
# 3 = shard 02 replica r1, 4 = shard 02 replica r2. `start` prints their HTTP URLs comma-separated as the
# last line of stdout. Replicated tables use the macros {shard} (01|02), {replica} (r1|r2), {cluster}.
#
# Idempotent: `start` on a running cluster only prints the URLs, `stop` on a stopped one does nothing.
# Environment: CDRFLOW_LOCAL_DIR; CDRFLOW_CH_CLUSTER_ZK_PORT (12181); the first of four consecutive ports,
# server N using first + N - 1: CDRFLOW_CH_CLUSTER_HTTP_PORT (8131), CDRFLOW_CH_CLUSTER_TCP_PORT (9131),
# CDRFLOW_CH_CLUSTER_INTERSERVER_PORT (9141); CDRFLOW_CH_CLUSTER_ZK_SESSION_TIMEOUT_MS (4000: how soon a
# killed replica's ZooKeeper session expires; until then insert_quorum still counts it alive, and an insert
# accepted then waits insert_quorum_timeout, 600 s by default, unless the replica comes back).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${CDRFLOW_LOCAL_DIR:-$repo/target/cdrflow-local}"
dir="$local_dir/cluster"
zk_port="${CDRFLOW_CH_CLUSTER_ZK_PORT:-12181}"
http_base="${CDRFLOW_CH_CLUSTER_HTTP_PORT:-8131}"
tcp_base="${CDRFLOW_CH_CLUSTER_TCP_PORT:-9131}"
interserver_base="${CDRFLOW_CH_CLUSTER_INTERSERVER_PORT:-9141}"
zk_session_ms="${CDRFLOW_CH_CLUSTER_ZK_SESSION_TIMEOUT_MS:-4000}"
cluster="hotlines"
zk_dir="$dir/zookeeper"
zk_pidfile="$zk_dir/zookeeper.pid"
# Debian's libzookeeper-java: zookeeper.jar's manifest Class-Path names its other dependencies; the
# log4j 1.2 binding (libslf4j-java, liblog4j1.2-java, both its dependencies) gives it a log file.
zk_jars=(/usr/share/java/zookeeper.jar /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar)

log() { echo "clickhouse-cluster.sh: $*" >&2; }

# Server N (1..4): its directory, ports, shard and replica.
sdir() { echo "$dir/ch$1"; }
http_port() { echo $((http_base + $1 - 1)); }
tcp_port() { echo $((tcp_base + $1 - 1)); }
interserver_port() { echo $((interserver_base + $1 - 1)); }
shard() { echo "0$(( ($1 + 1) / 2 ))"; }
replica() { echo "r$(( ($1 + 1) % 2 + 1 ))"; }

urls() {
    local n line=""
    for n in 1 2 3 4; do line="$line${line:+,}http://127.0.0.1:$(http_port "$n")"; done
    echo "$line"
}

check_server_number() {
    case "${1:-}" in
        1 | 2 | 3 | 4) ;;
        *) echo "usage: $0 kill|restart N, N = 1..4 (shard 01 r1, shard 01 r2, shard 02 r1, shard 02 r2)" >&2; exit 2 ;;
    esac
}

install() {
    bash "$repo/deploy/local/clickhouse.sh" install
    local jar missing=0
    for jar in "${zk_jars[@]}"; do [ -f "$jar" ] || missing=1; done
    if [ "$missing" -eq 0 ] && command -v java >/dev/null; then
        return 0
    fi
    log "installing Debian's zookeeper (its jars and a JRE; needs root and the Debian archive; not run as a service)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq zookeeper >/dev/null
    for jar in "${zk_jars[@]}"; do
        [ -f "$jar" ] || { log "$jar is missing after installing zookeeper: apt-get install --reinstall zookeeper libzookeeper-java libslf4j-java liblog4j1.2-java"; return 1; }
    done
}

# Something accepts connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # $1 is the inner shell's argument
    timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

zk_answers() {
    local reply
    # shellcheck disable=SC2016 # $1 is the inner shell's argument
    reply="$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf ruok >&3 && cat <&3' _ "$zk_port" 2>/dev/null)" || true
    [ "$reply" = imok ]
}

answers() {
    clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$1")" --query "SELECT 1" >/dev/null 2>&1
}

query() {
    local n="$1"
    shift
    clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$n")" "$@"
}

# Process $1 exists and is not a zombie (a SIGKILLed server stays one until PID 1 reaps it, which in a
# container may take seconds or never happen; its ports are already closed).
alive() {
    local state
    state="$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)"
    [ -n "$state" ] && [ "$state" != Z ]
}

# The PID in $1 if that process is alive and was started with this cluster's directory on its command line.
pid_of() {
    [ -f "$1" ] || return 1
    local pid
    pid="$(cat "$1")"
    [ -n "$pid" ] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/" && echo "$pid"
}
zk_pid() { pid_of "$zk_pidfile"; }
server_pid() { pid_of "$(sdir "$1")/clickhouse.pid"; }

write_zk_config() {
    mkdir -p "$zk_dir"/{data,conf,log}
    # Standalone, loopback only, no admin server. tickTime 500 lets ZooKeeper grant sessions of 1-10 s
    # (2 and 20 ticks), so the servers' session_timeout_ms below is honoured, not raised to 4 s minimum.
    # forceSync=no: a test instance, no fsync per write.
    cat >"$zk_dir/conf/zoo.cfg" <<CFG
tickTime=500
dataDir=$zk_dir/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
maxClientCnxns=100
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
forceSync=no
preAllocSize=16384
snapCount=10000
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG
    cat >"$zk_dir/conf/log4j.properties" <<CFG
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.RollingFileAppender
log4j.appender.FILE.File=$zk_dir/log/zookeeper.log
log4j.appender.FILE.MaxFileSize=10MB
log4j.appender.FILE.MaxBackupIndex=2
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
CFG
}

write_server_config() {
    local n="$1" d
    d="$(sdir "$n")"
    mkdir -p "$d"/{data,tmp,user_files,format_schemas,log}
    local shards="" s r
    for s in 1 2; do
        shards="$shards        <shard>
            <internal_replication>true</internal_replication>"
        for r in 1 2; do
            shards="$shards
            <replica><host>127.0.0.1</host><port>$(tcp_port $(( (s - 1) * 2 + r )))</port></replica>"
        done
        shards="$shards
        </shard>
"
    done
    cat >"$d/config.xml" <<XML
<?xml version="1.0"?>
<!-- Server $n of the local cluster $cluster: shard $(shard "$n"), replica $(replica "$n"). Written by clickhouse-cluster.sh. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$(http_port "$n")</http_port>
    <tcp_port>$(tcp_port "$n")</tcp_port>
    <interserver_http_port>$(interserver_port "$n")</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <macros>
        <shard>$(shard "$n")</shard>
        <replica>$(replica "$n")</replica>
        <cluster>$cluster</cluster>
    </macros>
    <remote_servers>
        <$cluster>
$shards        </$cluster>
    </remote_servers>
    <!-- A low session timeout: a killed replica's session (and so its is_active node, which
         insert_quorum counts) expires after this long rather than the default 30 s. -->
    <zookeeper>
        <node index="1"><host>127.0.0.1</host><port>$zk_port</port></node>
        <session_timeout_ms>$zk_session_ms</session_timeout_ms>
        <operation_timeout_ms>$zk_session_ms</operation_timeout_ms>
    </zookeeper>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
</yandex>
XML
}

write_users_config() {
    mkdir -p "$dir"
    cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
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

# Refuse, naming the variable to change, if a port of a component that is not running is taken.
check_free() {
    local port="$1" var="$2" what="$3"
    if port_open "$port"; then
        log "port $port ($what) is taken by something else on 127.0.0.1: stop it, or set $var"
        return 1
    fi
}

start_zk() {
    if zk_pid >/dev/null; then
        return 0
    fi
    check_free "$zk_port" CDRFLOW_CH_CLUSTER_ZK_PORT "ZooKeeper client port"
    write_zk_config
    local cp
    cp="$zk_dir/conf:$(IFS=:; echo "${zk_jars[*]}")"
    log "starting ZooKeeper on 127.0.0.1:$zk_port; data in $zk_dir/data"
    nohup java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true \
        -Dlog4j.configuration="file:$zk_dir/conf/log4j.properties" \
        -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$zk_dir/conf/zoo.cfg" \
        >"$zk_dir/log/stdout.log" 2>&1 </dev/null &
    echo $! >"$zk_pidfile"
    for _ in $(seq 1 300); do
        if zk_answers; then
            log "ZooKeeper ready (pid $(cat "$zk_pidfile"))"
            return 0
        fi
        zk_pid >/dev/null || break
        sleep 0.2
    done
    log "ZooKeeper did not come up (is port $zk_port taken? set CDRFLOW_CH_CLUSTER_ZK_PORT); its log says:"
    tail -n 20 "$zk_dir/log/zookeeper.log" "$zk_dir/log/stdout.log" >&2 || true
    return 1
}

check_server_ports() {
    local n="$1"
    if answers "$n"; then
        log "something else already answers on 127.0.0.1:$(tcp_port "$n") (not server $n of $dir): stop it, or set CDRFLOW_CH_CLUSTER_TCP_PORT"
        return 1
    fi
    check_free "$(tcp_port "$n")" CDRFLOW_CH_CLUSTER_TCP_PORT "server $n native"
    check_free "$(http_port "$n")" CDRFLOW_CH_CLUSTER_HTTP_PORT "server $n http"
    check_free "$(interserver_port "$n")" CDRFLOW_CH_CLUSTER_INTERSERVER_PORT "server $n interserver"
}

# Start server N in the background (no wait); nothing if it runs.
launch_server() {
    local n="$1" d
    d="$(sdir "$n")"
    if server_pid "$n" >/dev/null; then
        return 0
    fi
    check_server_ports "$n"
    # After `kill N`, wait until the old ZooKeeper session has expired: a replica that starts while its
    # old is_active node still exists gives up ("appears to be already active") and retries only 10 s later.
    if [ -f "$d/killed_at" ]; then
        local wait_ms
        wait_ms=$(( $(cat "$d/killed_at") + zk_session_ms + 500 - $(date +%s%3N) ))
        if [ "$wait_ms" -gt 0 ]; then
            log "waiting $wait_ms ms for server $n's old ZooKeeper session to expire"
            sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))"
        fi
        rm -f "$d/killed_at"
    fi
    write_server_config "$n"
    log "starting server $n (shard $(shard "$n") replica $(replica "$n")) on 127.0.0.1:$(http_port "$n") (http), :$(tcp_port "$n") (native), :$(interserver_port "$n") (interserver); data in $d/data"
    # In the foreground of a background job (no --daemon), so $! is the server itself.
    nohup clickhouse-server --config-file="$d/config.xml" \
        >"$d/log/stdout.log" 2>&1 </dev/null &
    echo $! >"$d/clickhouse.pid"
}

# Wait until server N answers SELECT 1.
wait_server() {
    local n="$1" d
    d="$(sdir "$n")"
    for _ in $(seq 1 600); do
        if server_pid "$n" >/dev/null && answers "$n"; then
            log "server $n ready (pid $(cat "$d/clickhouse.pid"))"
            return 0
        fi
        server_pid "$n" >/dev/null || break
        sleep 0.2
    done
    log "server $n did not come up (are ports $(tcp_port "$n"), $(http_port "$n"), $(interserver_port "$n") taken? set CDRFLOW_CH_CLUSTER_TCP_PORT, _HTTP_PORT, _INTERSERVER_PORT); its log says:"
    tail -n 20 "$d/log/clickhouse-server.err.log" "$d/log/stdout.log" >&2 || true
    return 1
}

# The cluster is usable: every server sees the 4 replicas of `hotlines`, and an ON CLUSTER DDL runs on all
# four (that needs ZooKeeper and every server's distributed DDL worker).
wait_cluster() {
    local n rows out
    for n in 1 2 3 4; do
        rows="$(query "$n" --query "SELECT count() FROM system.clusters WHERE cluster = '$cluster'")"
        if [ "$rows" != 4 ]; then
            log "server $n sees $rows replicas in cluster $cluster, not 4: see $(sdir "$n")/config.xml"
            return 1
        fi
    done
    for _ in $(seq 1 6); do
        if out="$(query 1 --distributed_ddl_task_timeout=20 --query "CREATE DATABASE IF NOT EXISTS cdrflow_cluster_probe ON CLUSTER $cluster" 2>&1)" &&
            out="$(query 1 --distributed_ddl_task_timeout=20 --query "DROP DATABASE IF EXISTS cdrflow_cluster_probe ON CLUSTER $cluster" 2>&1)"; then
            return 0
        fi
        sleep 1
    done
    log "ON CLUSTER DDL does not work on cluster $cluster: $out"
    log "see the servers' logs in $dir/ch*/log and ZooKeeper's in $zk_dir/log"
    return 1
}

all_answer() {
    local n
    zk_answers && zk_pid >/dev/null || return 1
    for n in 1 2 3 4; do
        server_pid "$n" >/dev/null && answers "$n" || return 1
    done
}

start() {
    if all_answer; then
        log "already running (ZooKeeper pid $(zk_pid), servers $(for n in 1 2 3 4; do server_pid "$n"; done | paste -sd " ")); cluster $cluster"
        urls
        return 0
    fi
    local started
    started="$(date +%s)"
    # Every port of what is not running yet must be free before anything starts.
    zk_pid >/dev/null || check_free "$zk_port" CDRFLOW_CH_CLUSTER_ZK_PORT "ZooKeeper client port"
    local n
    for n in 1 2 3 4; do server_pid "$n" >/dev/null || check_server_ports "$n"; done
    install
    write_users_config
    start_zk
    for n in 1 2 3 4; do launch_server "$n"; done
    for n in 1 2 3 4; do wait_server "$n"; done
    wait_cluster
    log "cluster $cluster ready in $(( $(date +%s) - started )) s (ZooKeeper 127.0.0.1:$zk_port, session timeout $zk_session_ms ms)"
    urls
}

# SIGTERM, then SIGKILL after 10 s; the pid file goes.
stop_pid() {
    local pid="$1" pidfile="$2" what="$3"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        alive "$pid" || { log "stopped $what (pid $pid)"; rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$what (pid $pid) ignored SIGTERM for 10 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.05; done
    rm -f "$pidfile"
}

stop() {
    local n pid
    # The servers in parallel (each may take a few seconds to shut down), then ZooKeeper.
    local jobs=()
    for n in 1 2 3 4; do
        if pid="$(server_pid "$n")"; then
            stop_pid "$pid" "$(sdir "$n")/clickhouse.pid" "server $n" &
            jobs+=($!)
        else
            rm -f "$(sdir "$n")/clickhouse.pid"
        fi
    done
    for pid in "${jobs[@]}"; do wait "$pid"; done
    if pid="$(zk_pid)"; then
        stop_pid "$pid" "$zk_pidfile" ZooKeeper
    else
        rm -f "$zk_pidfile"
    fi
    [ "${#jobs[@]}" -gt 0 ] || zk_pid >/dev/null || log "not running"
}

status() {
    local n ok=0
    if zk_pid >/dev/null && zk_answers; then log "ZooKeeper: up on 127.0.0.1:$zk_port"; else log "ZooKeeper: down"; ok=1; fi
    for n in 1 2 3 4; do
        if server_pid "$n" >/dev/null && answers "$n"; then
            log "server $n (shard $(shard "$n") replica $(replica "$n")): up on http://127.0.0.1:$(http_port "$n")"
        else
            log "server $n (shard $(shard "$n") replica $(replica "$n")): down"
            ok=1
        fi
    done
    return "$ok"
}

# For fault tests: server N dies at once, as on a power cut.
kill9() {
    local n="$1" pid
    if pid="$(server_pid "$n")"; then
        kill -9 "$pid"
        date +%s%3N >"$(sdir "$n")/killed_at"
        while alive "$pid"; do sleep 0.05; done
        log "killed server $n (pid $pid, SIGKILL)"
    else
        log "server $n is not running"
    fi
    rm -f "$(sdir "$n")/clickhouse.pid"
}

restart() {
    local n="$1" pid
    if ! zk_pid >/dev/null || ! [ -f "$(sdir "$n")/config.xml" ]; then
        log "the cluster is not running: $0 start"
        return 1
    fi
    if pid="$(server_pid "$n")"; then
        stop_pid "$pid" "$(sdir "$n")/clickhouse.pid" "server $n"
    fi
    launch_server "$n"
    wait_server "$n"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    kill) check_server_number "${2:-}"; kill9 "$2" ;;
    restart) check_server_number "${2:-}"; restart "$2" ;;
    urls) urls ;;
    install) install ;;
    *) echo "usage: $0 start|stop|status|kill N|restart N|urls|install" >&2; exit 2 ;;
esac
