#!/usr/bin/env bash
# Local Apache Kafka for tests and the demo: the real Java broker (KRaft, combined controller+broker
# nodes), its jars resolved from Maven Central by Maven (deploy/local/kafka/pom.xml, cached in ~/.m2),
# on 127.0.0.1 only, with its data under the build area (target/cdrflow-local/kafka/<instance>/node-N).
#
#   deploy/local/kafka.sh install [--version V]   resolve the broker's and tools' jars (once per version;
#                                  later runs, offline too, read the cached classpath)
#   deploy/local/kafka.sh start [--nodes N] [--version V]
#                                  install if needed, format and start N nodes (1 by default, or 3), wait
#                                  until every broker answers, print the bootstrap address as the last line
#                                  of stdout (nodes of a partly running cluster are started again)
#   deploy/local/kafka.sh installed  exit 0 iff Java is here and the jars are resolved (start needs no network)
#   deploy/local/kafka.sh stop     stop every node of the instance (SIGTERM, SIGKILL after a timeout)
#   deploy/local/kafka.sh status   exit 0 iff every node runs and answers
#   deploy/local/kafka.sh kill N   SIGKILL node N (fault tests)
#   deploy/local/kafka.sh restart N  (re)start node N on its data, wait until it answers and no partition
#                                  is under-replicated any more (a warning after CDRFLOW_KAFKA_ISR_TIMEOUT)
#   deploy/local/kafka.sh bootstrap              print the bootstrap address
#   deploy/local/kafka.sh topic T N              create topic T with N partitions (if it does not exist),
#                                                replication factor min(3, nodes)
#   deploy/local/kafka.sh produce --topic T --compression none|gzip|snappy|lz4|zstd [--partitions N]
#                                 [--key-sep S] [--sync] FILE|-
#                                  every line of FILE is one message, sent by the Java console producer
#                                  with acks=all (keys parsed from the line up to S with --key-sep);
#                                  fails if any send failed
#   deploy/local/kafka.sh consume --topic T --max-messages N [--group G] [--protocol classic|consumer]
#                                 [--timeout-ms MS] [--print-key]
#                                  the Java console consumer from the beginning, messages on stdout; fails
#                                  if fewer than N came before MS (30000) of silence
#   deploy/local/kafka.sh run CLASS [ARGS...]    any Kafka tool class on the instance's jars, e.g.
#                                                kafka.tools.DumpLogSegments --files X.log
#
# Nodes: node N listens for clients on 127.0.0.1:PORT+2(N-1) and for the controller quorum on the port
# after it (9092/9093, 9094/9095, 9096/9097). 1 node: replication factor 1; 3 nodes: replication
# factor 3 and min.insync.replicas 2 for new topics, the offsets and the transaction topics. Topics are
# auto-created with 4 partitions; messages up to 16 MiB; no time-based retention; the new consumer
# group protocol (KIP-848, group.protocol=consumer) works on Kafka 4. Logs: node-N/log/server.log.
# The instance remembers its version, node count and ports; the commands after `start` use them.
# Idempotent: `start` on a running cluster only prints the address, `stop` on a stopped one does nothing.
#
# Environment: CDRFLOW_KAFKA_PORT (9092: node 1's client port), CDRFLOW_KAFKA_INSTANCE (default) and
# CDRFLOW_KAFKA_DIR (CDRFLOW_LOCAL_DIR/kafka/<instance>): a private cluster next to the shared one takes
# another instance or dir and another port; CDRFLOW_KAFKA_VERSION (4.1.2; 3.9.1 for old clients such as
# ClickHouse 18.16's librdkafka), CDRFLOW_KAFKA_NODES (1), CDRFLOW_KAFKA_HEAP (-Xms256m -Xmx768m per
# node), CDRFLOW_KAFKA_LOG_LEVEL (INFO), CDRFLOW_KAFKA_TIMEOUT (120 s to become ready),
# CDRFLOW_KAFKA_ISR_TIMEOUT (60 s), CDRFLOW_KAFKA_STOP_TIMEOUT (30 s before SIGKILL), CDRFLOW_KAFKA_JAVA
# (java from JAVA_HOME or PATH, 17 or newer; installed from Debian if there is none), CDRFLOW_LOCAL_DIR.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${CDRFLOW_LOCAL_DIR:-$repo/target/cdrflow-local}"
kafka_root="$local_dir/kafka"   # the resolved classpaths and logging configs, shared by all instances
instance="${CDRFLOW_KAFKA_INSTANCE:-default}"
dir="${CDRFLOW_KAFKA_DIR:-$kafka_root/$instance}"
pom="$repo/deploy/local/kafka/pom.xml"
default_version="4.1.2"
dependency_plugin="3.8.1"   # org.apache.maven.plugins:maven-dependency-plugin, as in the pom
heap="${CDRFLOW_KAFKA_HEAP:--Xms256m -Xmx768m}"
log_level="${CDRFLOW_KAFKA_LOG_LEVEL:-INFO}"
ready_timeout="${CDRFLOW_KAFKA_TIMEOUT:-120}"
stop_timeout="${CDRFLOW_KAFKA_STOP_TIMEOUT:-30}"
max_message_bytes=16777216   # tests send 4 MiB messages

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

sudo_cmd() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Java, Maven and the jars -------------------------------------------------------------------

java_bin=""
find_java() {
    [ -n "$java_bin" ] && return 0
    if [ -n "${CDRFLOW_KAFKA_JAVA:-}" ]; then
        java_bin="$CDRFLOW_KAFKA_JAVA"
    elif [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
        java_bin="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null; then
        java_bin="$(command -v java)"
    else
        log "java not found: installing Debian's openjdk-17-jre-headless (needs root and the Debian archive)"
        local pkg=openjdk-17-jre-headless
        sudo_cmd apt-get update -qq || true
        apt-cache show "$pkg" >/dev/null 2>&1 || pkg=default-jre-headless   # Debian 13 has no 17
        DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq "$pkg" >/dev/null \
            || die "could not install java: run apt-get install -y openjdk-17-jre-headless (or default-jre-headless), or set CDRFLOW_KAFKA_JAVA / JAVA_HOME to a Java 17+"
        command -v java >/dev/null || die "java is still not on PATH after installing $pkg: set CDRFLOW_KAFKA_JAVA"
        java_bin="$(command -v java)"
    fi
    local major
    major="$("$java_bin" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
    if [ -z "$major" ] || [ "$major" -lt 17 ]; then
        die "$java_bin is Java ${major:-?}; Kafka needs 17 or newer: apt-get install -y openjdk-17-jre-headless, or set CDRFLOW_KAFKA_JAVA / JAVA_HOME"
    fi
}

find_maven() {
    command -v mvn >/dev/null && return 0
    log "mvn not found: installing Debian's maven (needs root and the Debian archive)"
    sudo_cmd apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq maven >/dev/null \
        || die "could not install Maven: run apt-get install -y maven"
}

major_of() { echo "${1%%.*}"; }

# Kafka 4 logs through log4j2, Kafka 3 through reload4j: a pom profile each.
logging_of() {
    if [ "$(major_of "$1")" -lt 4 ]; then echo reload4j; else echo log4j2; fi
}

check_version() {
    [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "bad Kafka version '$1': want X.Y.Z such as $default_version or 3.9.1"
    local major minor
    major="$(major_of "$1")"
    minor="$(echo "$1" | cut -d. -f2)"
    if [ "$major" -lt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -lt 9 ]; }; then
        die "Kafka $1 is not supported here (the tools' classes moved): use 3.9.x or 4.x"
    fi
}

# The classpath file is keyed by the version and the pom, so an edited pom resolves again.
classpath_file() {
    local pom_hash
    pom_hash="$(sha1sum "$pom" | cut -c1-8)"
    echo "$kafka_root/classpath-$1-$pom_hash.txt"
}

classpath_ok() {
    local cp_file="$1" jar
    [ -s "$cp_file" ] || return 1
    while IFS= read -r -d ':' jar; do
        [ -f "$jar" ] || return 1
    done < <(tr -d '\n' <"$cp_file"; printf ':')
}

install() {
    local version="$1" cp_file
    check_version "$version"
    cp_file="$(classpath_file "$version")"
    if classpath_ok "$cp_file"; then
        find_java
        write_logging_configs
        return 0
    fi
    find_java
    find_maven
    mkdir -p "$kafka_root"
    local logging mvn_log started
    logging="$(logging_of "$version")"
    mvn_log="$kafka_root/mvn-$version.log"
    started=$SECONDS
    log "resolving Apache Kafka $version's jars from Maven Central with Maven ($logging logging; cached in ~/.m2)"
    # The plugin by its full name: a prefix (dependency:) cannot be resolved offline.
    if ! mvn -B -q -Dstyle.color=never -f "$pom" "org.apache.maven.plugins:maven-dependency-plugin:$dependency_plugin:build-classpath" \
            -Dkafka.version="$version" -Dkafka.logging="$logging" \
            -Dmdep.includeScope=runtime -Dmdep.outputFile="$cp_file.tmp" >"$mvn_log" 2>&1; then
        rm -f "$cp_file.tmp"
        if grep -qE "Could not find artifact|was not found in" "$mvn_log"; then
            log "Maven Central has no Apache Kafka $version (org.apache.kafka:kafka_2.13 / kafka-tools): choose another --version or CDRFLOW_KAFKA_VERSION; Maven said:"
        elif grep -qiE "Could not transfer|UnknownHost|Connect|timed out|Network is unreachable|resolution is not attempted|offline" "$mvn_log"; then
            log "Maven could not reach Maven Central to fetch Apache Kafka $version's jars (no network? a proxy or mirror needed in ~/.m2/settings.xml?); once they are in ~/.m2 the install works offline; Maven said:"
        else
            log "Maven failed to resolve Apache Kafka $version's jars from $pom; Maven said:"
        fi
        sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | grep -E "ERROR\] [^ ]" | head -n 1 >&2 || tail -n 15 "$mvn_log" >&2
        exit 1
    fi
    mv "$cp_file.tmp" "$cp_file"
    log "resolved $(tr ':' '\n' <"$cp_file" | grep -c .) jars in $((SECONDS - started)) s ($cp_file)"
    write_logging_configs
}

# Writes a file only if its content changed (atomically: concurrent runs read whole files).
put_file() {
    local path="$1" content
    content="$(cat)"
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then return 0; fi
    printf '%s\n' "$content" >"$path.tmp.$$"
    mv "$path.tmp.$$" "$path"
}

# Brokers log to node-N/log/server.log (level CDRFLOW_KAFKA_LOG_LEVEL, nothing on stdout); the tools
# log warnings and errors to stderr.
write_logging_configs() {
    mkdir -p "$kafka_root/conf"
    put_file "$kafka_root/conf/log4j2-broker.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn" name="cdrflow-kafka-broker">
  <Appenders>
    <RollingFile name="file" fileName="${sys:kafka.logs.dir}/server.log" filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="${sys:cdrflow.kafka.log.level:-INFO}"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
  </Loggers>
</Configuration>
XML
    put_file "$kafka_root/conf/log4j2-tools.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn" name="cdrflow-kafka-tools">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
XML
    put_file "$kafka_root/conf/log4j-broker.properties" <<'PROPS'
log4j.rootLogger=${cdrflow.kafka.log.level}, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=50MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
PROPS
    put_file "$kafka_root/conf/log4j-tools.properties" <<'PROPS'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
}

# --- the instance -------------------------------------------------------------------------------

# What the instance was started with, else the environment, else the defaults (only `start` checks
# that an explicit --version/--nodes or CDRFLOW_KAFKA_VERSION/_NODES matches what the instance holds).
stored() { [ -f "$dir/$1" ] && cat "$dir/$1"; }

version=""
nodes=""
base_port=""
resolve_instance() {
    local had_version had_nodes
    had_version="$(stored version || true)"
    had_nodes="$(stored nodes || true)"
    version="${had_version:-${CDRFLOW_KAFKA_VERSION:-$default_version}}"
    nodes="${had_nodes:-${CDRFLOW_KAFKA_NODES:-1}}"
    base_port="$(stored port || true)"
    base_port="${base_port:-${CDRFLOW_KAFKA_PORT:-9092}}"
}

# For `start`: the wanted version and node count (flags, else the environment) must be the instance's.
check_wanted() {
    local want_version="${1:-${CDRFLOW_KAFKA_VERSION:-}}" want_nodes="${2:-${CDRFLOW_KAFKA_NODES:-}}"
    if [ -n "$want_version" ] && [ -f "$dir/version" ] && [ "$want_version" != "$version" ]; then
        die "instance $dir holds Kafka $version's data, not $want_version's: use another CDRFLOW_KAFKA_INSTANCE (or CDRFLOW_KAFKA_DIR), or stop it and rm -rf $dir"
    fi
    if [ -n "$want_nodes" ] && [ -f "$dir/nodes" ] && [ "$want_nodes" != "$nodes" ]; then
        die "instance $dir is a $nodes-node cluster, not $want_nodes: use another CDRFLOW_KAFKA_INSTANCE (or CDRFLOW_KAFKA_DIR), or stop it and rm -rf $dir"
    fi
    [ -f "$dir/version" ] || version="${want_version:-$default_version}"
    [ -f "$dir/nodes" ] || nodes="${want_nodes:-1}"
    [[ "$nodes" =~ ^[1-9]$ ]] || die "bad node count '$nodes': want 1 or 3"
}

client_port() { echo $((base_port + 2 * ($1 - 1))); }
controller_port() { echo $((base_port + 2 * ($1 - 1) + 1)); }
node_dir() { echo "$dir/node-$1"; }

bootstrap_address() {
    local n out=""
    for n in $(seq 1 "$nodes"); do
        out="${out:+$out,}127.0.0.1:$(client_port "$n")"
    done
    echo "$out"
}

replication_factor() { if [ "$nodes" -lt 3 ]; then echo "$nodes"; else echo 3; fi; }
min_insync() { if [ "$(replication_factor)" -ge 3 ]; then echo 2; else echo 1; fi; }

running_pid() {
    local pidfile pid
    pidfile="$(node_dir "$1")/kafka.pid"
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # The pid must still be this node's broker (not a recycled pid).
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(node_dir "$1")/server.properties" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

lock_instance() {
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock -w 300 9 || die "another kafka.sh holds $dir/.lock for 5 minutes"
}

# --- running the JVMs ---------------------------------------------------------------------------

# The jars as a java @argfile (so that ps shows a node's command line readably): sets $args_file.
args_file=""
prepare_jars() {
    [ -n "$args_file" ] && return 0
    local cp_file
    cp_file="$(classpath_file "$version")"
    classpath_ok "$cp_file" || install "$version"
    find_java
    [ -f "$kafka_root/conf/log4j-tools.properties" ] || write_logging_configs
    args_file="${cp_file%.txt}.args"
    if [ ! -s "$args_file" ] || [ "$cp_file" -nt "$args_file" ]; then
        printf -- '-cp "%s"\n' "$(cat "$cp_file")" >"$args_file.$$"
        mv "$args_file.$$" "$args_file"
    fi
}

logging_opts() {
    local who="$1"   # broker | tools
    if [ "$(logging_of "$version")" = log4j2 ]; then
        echo "-Dlog4j2.configurationFile=$kafka_root/conf/log4j2-$who.xml"
    else
        echo "-Dlog4j.configuration=file:$kafka_root/conf/log4j-$who.properties"
    fi
}

# A short-lived tool: small heap, serial GC, C1 only (starts in about a second). Native access is for
# snappy-java, zstd-jni and lz4-java (Java 22+ warns without it). `tool` runs CLASS ARGS;
# `timed_tool SECONDS CLASS ARGS` gives up after SECONDS.
tool() { timed_tool 0 "$@"; }
timed_tool() {
    local limit="$1"
    shift
    prepare_jars
    local cmd=("$java_bin" -Xms32m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
        --enable-native-access=ALL-UNNAMED "$(logging_opts tools)" "@$args_file" "$@")
    if [ "$limit" -gt 0 ]; then
        timeout -k 5 "$limit" "${cmd[@]}"
    else
        "${cmd[@]}"
    fi
}

producer_class() {
    if [ "$(major_of "$version")" -lt 4 ]; then echo kafka.tools.ConsoleProducer; else echo org.apache.kafka.tools.ConsoleProducer; fi
}
api_versions_class() {
    if [ "$(major_of "$version")" -lt 4 ]; then echo kafka.admin.BrokerApiVersionsCommand; else echo org.apache.kafka.tools.BrokerApiVersionsCommand; fi
}

# The ids of the brokers that answer an ApiVersions request, after a metadata request to the
# cluster for the list of brokers (kafka-broker-api-versions).
answering_ids() {
    timed_tool 30 "$(api_versions_class)" --bootstrap-server "$(bootstrap_address)" 2>/dev/null \
        | sed -n 's/^[^ ]* (id: \([0-9]*\) .*) -> ($/\1/p' | sort -n | tr '\n' ' ' || true
}

all_answer() {
    local ids n
    ids=" $(answering_ids)"
    for n in $(seq 1 "$nodes"); do
        [[ "$ids" == *" $n "* ]] || return 1
    done
}

write_node_config() {
    local n="$1" nd voters="" i
    nd="$(node_dir "$n")"
    for i in $(seq 1 "$nodes"); do
        voters="${voters:+$voters,}$i@127.0.0.1:$(controller_port "$i")"
    done
    mkdir -p "$nd/data" "$nd/log"
    local share=""
    if [ "$(major_of "$version")" -ge 4 ]; then
        share="share.coordinator.state.topic.replication.factor=$(replication_factor)
share.coordinator.state.topic.min.isr=$(min_insync)"
    fi
    put_file "$nd/server.properties" <<PROPS
# Written by deploy/local/kafka.sh start (Kafka $version, node $n of $nodes): edits are overwritten.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(client_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(client_port "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$nd/data
# A 2-core machine shared with ClickHouse and builds: few threads.
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
# Topics: auto-created with 4 partitions; replication min(3, nodes).
auto.create.topics.enable=true
num.partitions=4
default.replication.factor=$(replication_factor)
min.insync.replicas=$(min_insync)
offsets.topic.replication.factor=$(replication_factor)
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$(replication_factor)
transaction.state.log.min.isr=$(min_insync)
transaction.state.log.num.partitions=10
$share
group.initial.rebalance.delay.ms=0
# KIP-848 (group.protocol=consumer): the coordinator owns the member's session; a killed
# member's partitions move on after 6 s, as the tests' classic sessions do (45 s by default).
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
# A killed follower leaves the ISR after 10 s (not 30).
replica.lag.time.max.ms=10000
# Tests send 4 MiB messages.
message.max.bytes=$max_message_bytes
replica.fetch.max.bytes=$max_message_bytes
# No deletion (CDRs can carry old timestamps, and a national run holds 100 M of them).
log.retention.ms=-1
log.retention.bytes=-1
log.segment.bytes=134217728
PROPS
}

# A Kafka Uuid: 16 random bytes in URL-safe base64, not starting with '-' (the storage tool would take
# it for an option).
new_cluster_id() {
    local id="-"
    while [[ "$id" == -* ]]; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    echo "$id"
}

format_node() {
    local n="$1" nd
    nd="$(node_dir "$n")"
    [ -f "$nd/data/meta.properties" ] && return 0
    if ! tool kafka.tools.StorageTool format --ignore-formatted -t "$(cat "$dir/cluster-id")" \
            -c "$nd/server.properties" >"$nd/log/format.log" 2>&1; then
        cat "$nd/log/format.log" >&2
        die "formatting node $n's storage in $nd/data failed: stop the instance and rm -rf $dir, then start again"
    fi
}

# Node N's ports must be free (it is not running, so whoever answers there is another program).
check_ports() {
    local p
    for p in "$(client_port "$1")" "$(controller_port "$1")"; do
        if port_open "$p"; then
            die "port $p (node $1 of $dir) is taken by another program: stop it, or set CDRFLOW_KAFKA_PORT to another base port (node N uses PORT+2(N-1) and the port after it), with another CDRFLOW_KAFKA_INSTANCE for a second cluster"
        fi
    done
}

launch_node() {
    local n="$1" nd
    nd="$(node_dir "$n")"
    prepare_jars
    check_ports "$n"
    # shellcheck disable=SC2086 # $heap holds several JVM options
    nohup "$java_bin" $heap \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 -XX:CICompilerCount=2 \
        -XX:MaxDirectMemorySize=256m -Djdk.nio.maxCachedBufferSize=262144 -XX:+ExitOnOutOfMemoryError \
        "-Xlog:gc*:file=$nd/log/gc.log:time,tags:filecount=2,filesize=10M" \
        -Djava.awt.headless=true --enable-native-access=ALL-UNNAMED -Dkafka.logs.dir="$nd/log" -Dcdrflow.kafka.log.level="$log_level" \
        "$(logging_opts broker)" "@$args_file" kafka.Kafka "$nd/server.properties" \
        >"$nd/log/stdout.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$nd/kafka.pid"
    # Until the forked shell has exec'd java, the pid's command line is not the node's yet.
    for _ in $(seq 1 100); do
        if running_pid "$n" >/dev/null || ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.05
    done
    log "node $n: pid $pid, 127.0.0.1:$(client_port "$n") (controller :$(controller_port "$n")), data in $nd/data"
}

show_log_tail() {
    local n="$1" nd
    nd="$(node_dir "$n")"
    log "node $n's log ($nd/log/server.log, stdout.log):"
    tail -n 25 "$nd/log/server.log" >&2 2>/dev/null || true
    tail -n 10 "$nd/log/stdout.log" >&2 2>/dev/null || true
}

# Waits until every node in $@ runs and answers; on a timeout or a dead node, shows its log and fails.
wait_ready() {
    local deadline=$((SECONDS + ready_timeout)) n all_open ids missing
    while [ "$SECONDS" -lt "$deadline" ]; do
        all_open=1
        for n in "$@"; do
            if ! running_pid "$n" >/dev/null; then
                log "node $n exited while starting"
                show_log_tail "$n"
                die "node $n of $dir did not start (a port taken? see above; CDRFLOW_KAFKA_PORT moves the ports)"
            fi
            port_open "$(client_port "$n")" || all_open=0
        done
        if [ "$all_open" = 1 ]; then
            ids=" $(answering_ids)"
            missing=""
            for n in "$@"; do
                [[ "$ids" == *" $n "* ]] || missing="$missing $n"
            done
            [ -z "$missing" ] && return 0
        fi
        sleep 0.5
    done
    for n in "$@"; do show_log_tail "$n"; done
    die "Kafka nodes ($*) of $dir did not answer within ${ready_timeout}s (CDRFLOW_KAFKA_TIMEOUT)"
}

stop_pids() {
    local pids=("$@") pid deadline=$((SECONDS + stop_timeout)) alive
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    while [ "$SECONDS" -lt "$deadline" ]; do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.2
    done
    log "pids ${pids[*]} ignored SIGTERM for ${stop_timeout}s (CDRFLOW_KAFKA_STOP_TIMEOUT); killing them"
    kill -9 "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
}

# Waits until no partition is under-replicated (a restarted node is back in the ISRs).
wait_in_sync() {
    local deadline=$((SECONDS + ${CDRFLOW_KAFKA_ISR_TIMEOUT:-60})) out
    [ "$nodes" -gt 1 ] || return 0
    while [ "$SECONDS" -lt "$deadline" ]; do
        if out="$(timed_tool 30 org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_address)" \
                --describe --under-replicated-partitions 2>/dev/null)" && [ -z "$out" ]; then
            return 0
        fi
        sleep 1
    done
    log "warning: partitions still under-replicated after ${CDRFLOW_KAFKA_ISR_TIMEOUT:-60}s (CDRFLOW_KAFKA_ISR_TIMEOUT):"
    echo "$out" | head -n 10 >&2
}

# --- commands -----------------------------------------------------------------------------------

cmd_install() {
    local want=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --version) want="${2:?--version needs a value}"; shift 2 ;;
            *) die "install: unknown argument '$1'" ;;
        esac
    done
    want="${want:-${CDRFLOW_KAFKA_VERSION:-$default_version}}"
    version="$want"
    install "$want"
}

cmd_start() {
    local want_version="" want_nodes=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --version) want_version="${2:?--version needs a value}"; shift 2 ;;
            --nodes) want_nodes="${2:?--nodes needs a value}"; shift 2 ;;
            *) die "start: unknown argument '$1'" ;;
        esac
    done
    lock_instance
    # A stopped cluster may move to CDRFLOW_KAFKA_PORT (static quorum: the ports live in the configs only).
    local n running=() stopped=()
    resolve_instance
    check_wanted "$want_version" "$want_nodes"
    for n in $(seq 1 "$nodes"); do
        if running_pid "$n" >/dev/null; then running+=("$n"); else stopped+=("$n"); fi
    done
    if [ "${#running[@]}" -eq 0 ]; then
        base_port="${CDRFLOW_KAFKA_PORT:-$base_port}"
    elif [ -n "${CDRFLOW_KAFKA_PORT:-}" ] && [ "$CDRFLOW_KAFKA_PORT" != "$base_port" ]; then
        log "warning: instance $dir runs on port $base_port, not CDRFLOW_KAFKA_PORT=$CDRFLOW_KAFKA_PORT"
    fi
    if [ "${#stopped[@]}" -eq 0 ]; then
        if all_answer; then
            log "already running: $nodes node(s) of Kafka $version in $dir"
            bootstrap_address
            return 0
        fi
        log "$nodes node(s) run but do not all answer yet: waiting"
        wait_ready "${running[@]}"
        bootstrap_address
        return 0
    fi
    check_version "$version"
    install "$version"
    local started=$SECONDS
    if [ "${#running[@]}" -eq 0 ]; then
        [ -s "$dir/cluster-id" ] || new_cluster_id >"$dir/cluster-id"
        echo "$version" >"$dir/version"
        echo "$nodes" >"$dir/nodes"
        echo "$base_port" >"$dir/port"
        for n in "${stopped[@]}"; do write_node_config "$n"; done
    fi
    for n in "${stopped[@]}"; do check_ports "$n"; done
    log "starting $nodes-node Kafka $version in $dir (${#stopped[@]} node(s) to start)"
    local pid pids=()
    for n in "${stopped[@]}"; do format_node "$n" & pids+=("$!"); done
    for pid in "${pids[@]}"; do wait "$pid" || exit 1; done
    for n in "${stopped[@]}"; do launch_node "$n"; done
    wait_ready $(seq 1 "$nodes")
    log "ready in $((SECONDS - started)) s: $(bootstrap_address)"
    bootstrap_address
}

all_node_numbers() {
    local d
    for d in "$dir"/node-*; do
        [ -d "$d" ] && echo "${d##*/node-}"
    done | sort -n
}

cmd_stop() {
    lock_instance
    resolve_instance
    local n pid pids=() names=()
    for n in $(all_node_numbers); do
        if pid="$(running_pid "$n")"; then pids+=("$pid"); names+=("$n"); fi
    done
    if [ "${#pids[@]}" -eq 0 ]; then
        log "not running ($dir)"
        for n in $(all_node_numbers); do rm -f "$(node_dir "$n")/kafka.pid"; done
        return 0
    fi
    local started=$SECONDS
    stop_pids "${pids[@]}"
    for n in $(all_node_numbers); do rm -f "$(node_dir "$n")/kafka.pid"; done
    log "stopped node(s) ${names[*]} (pids ${pids[*]}) in $((SECONDS - started)) s"
}

cmd_status() {
    resolve_instance
    local n bad=0
    [ -f "$dir/nodes" ] || { log "instance $dir was never started"; return 1; }
    for n in $(seq 1 "$nodes"); do
        if running_pid "$n" >/dev/null; then :; else log "node $n is not running"; bad=1; fi
    done
    [ "$bad" = 0 ] || return 1
    if all_answer; then
        log "$nodes node(s) of Kafka $version run and answer: $(bootstrap_address)"
    else
        log "not every node answers"
        return 1
    fi
}

# The client commands fail at once, not after the clients' timeouts, on an instance that is not running.
require_running() {
    local n
    for n in $(seq 1 "$nodes"); do
        running_pid "$n" >/dev/null && return 0
    done
    die "Kafka instance $dir is not running: run kafka.sh start (with the same CDRFLOW_KAFKA_INSTANCE/_DIR)"
}

node_arg() {
    local n="${1:-}"
    if ! [[ "$n" =~ ^[1-9]$ ]] || [ "$n" -gt "$nodes" ]; then
        die "want a node number from 1 to $nodes, got '${n}'"
    fi
    [ -f "$(node_dir "$n")/server.properties" ] || die "node $n of $dir was never started: run kafka.sh start"
    echo "$n"
}

cmd_kill() {
    lock_instance
    resolve_instance
    local n pid
    n="$(node_arg "${1:-}")"
    if pid="$(running_pid "$n")"; then
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        log "killed node $n (pid $pid, SIGKILL)"
    else
        log "node $n is not running"
    fi
    rm -f "$(node_dir "$n")/kafka.pid"
}

cmd_restart() {
    lock_instance
    resolve_instance
    local n pid started=$SECONDS
    n="$(node_arg "${1:-}")"
    if pid="$(running_pid "$n")"; then
        log "stopping node $n (pid $pid)"
        stop_pids "$pid"
    fi
    install "$version"
    launch_node "$n"
    wait_ready "$n"
    log "node $n answers after $((SECONDS - started)) s; waiting for its replicas to catch up"
    wait_in_sync
    log "node $n is back in $((SECONDS - started)) s"
}

cmd_topic() {
    resolve_instance
    require_running
    local topic="${1:?usage: kafka.sh topic TOPIC PARTITIONS}" partitions="${2:?usage: kafka.sh topic TOPIC PARTITIONS}"
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_address)" --create --if-not-exists \
        --topic "$topic" --partitions "$partitions" --replication-factor "$(replication_factor)" >&2
}

cmd_produce() {
    resolve_instance
    require_running
    local topic="" compression="" partitions="" key_sep="" sync=() file=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --topic) topic="${2:?--topic needs a value}"; shift 2 ;;
            --compression) compression="${2:?--compression needs a value}"; shift 2 ;;
            --partitions) partitions="${2:?--partitions needs a value}"; shift 2 ;;
            --key-sep) key_sep="${2:?--key-sep needs a value}"; shift 2 ;;
            --sync) sync=(--sync); shift ;;
            -) file="-"; shift ;;
            -*) die "produce: unknown option '$1'" ;;
            *) file="$1"; shift ;;
        esac
    done
    [ -n "$topic" ] || file=""
    [ -n "$file" ] || die "usage: kafka.sh produce --topic T --compression none|gzip|snappy|lz4|zstd [--partitions N] [--key-sep S] [--sync] FILE|-"
    case "${compression:=none}" in
        none|gzip|snappy|lz4|zstd) ;;
        *) die "produce: compression '$compression' is not one of none|gzip|snappy|lz4|zstd" ;;
    esac
    [ "$file" = - ] || [ -r "$file" ] || die "produce: cannot read $file"
    [ -z "$partitions" ] || cmd_topic "$topic" "$partitions"
    local keys=()
    [ -z "$key_sep" ] || keys=(--property parse.key=true --property "key.separator=$key_sep")
    local errors rc=0
    errors="$(mktemp)"
    # Asynchronous sends (real multi-record batches, lingering 20 ms); a failed send is only logged by
    # the console producer, so its ERROR lines make this fail.
    if [ "$file" = - ]; then
        tool "$(producer_class)" --bootstrap-server "$(bootstrap_address)" --topic "$topic" \
            --compression-codec "$compression" --request-required-acks all --timeout 20 --max-block-ms 20000 "${sync[@]}" \
            --producer-property "max.request.size=$max_message_bytes" "${keys[@]}" 2>"$errors" || rc=$?
    else
        tool "$(producer_class)" --bootstrap-server "$(bootstrap_address)" --topic "$topic" \
            --compression-codec "$compression" --request-required-acks all --timeout 20 --max-block-ms 20000 "${sync[@]}" \
            --producer-property "max.request.size=$max_message_bytes" "${keys[@]}" <"$file" 2>"$errors" || rc=$?
    fi
    cat "$errors" >&2
    if [ "$rc" = 0 ] && grep -qE '\] (ERROR|FATAL) |Exception' "$errors"; then rc=1; fi
    rm -f "$errors"
    [ "$rc" = 0 ] || die "produce to $topic ($compression) failed"
    log "produced $( [ "$file" = - ] && echo "stdin" || echo "$(wc -l <"$file") line(s) of $file") to $topic ($compression, acks=all)"
}

cmd_consume() {
    resolve_instance
    require_running
    local topic="" max="" group=() props=() timeout_ms=30000
    while [ $# -gt 0 ]; do
        case "$1" in
            --topic) topic="${2:?--topic needs a value}"; shift 2 ;;
            --max-messages) max="${2:?--max-messages needs a value}"; shift 2 ;;
            --group) group=(--group "${2:?--group needs a value}"); shift 2 ;;
            --protocol) props+=(--consumer-property "group.protocol=${2:?--protocol needs classic or consumer}"); shift 2 ;;
            --timeout-ms) timeout_ms="${2:?--timeout-ms needs a value}"; shift 2 ;;
            --print-key) props+=(--property print.key=true); shift ;;
            *) die "consume: unknown argument '$1'" ;;
        esac
    done
    [ -n "$topic" ] || max=""
    [ -n "$max" ] || die "usage: kafka.sh consume --topic T --max-messages N [--group G] [--protocol classic|consumer] [--timeout-ms MS] [--print-key]"
    local errors rc=0 got
    errors="$(mktemp)"
    tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$(bootstrap_address)" --topic "$topic" \
        --from-beginning --max-messages "$max" --timeout-ms "$timeout_ms" "${group[@]}" "${props[@]}" 2>"$errors" || rc=$?
    cat "$errors" >&2
    got="$(sed -n 's/^Processed a total of \([0-9]*\) messages*$/\1/p' "$errors" | tail -n 1)"
    rm -f "$errors"
    [ "$rc" = 0 ] || die "consume from $topic failed"
    # The console consumer exits 0 after its timeout even when it got fewer messages than asked for.
    [ "${got:-0}" -ge "$max" ] || die "consumed ${got:-0} of $max message(s) from $topic within ${timeout_ms} ms of silence"
}

# Whether `start` can run without the network: Java is here and the jars are resolved.
cmd_installed() {
    local v="${CDRFLOW_KAFKA_VERSION:-$default_version}"
    # Only look: find_java would install Java.
    [ -x "${CDRFLOW_KAFKA_JAVA:-/nonexistent}" ] || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] \
        || command -v java >/dev/null || return 1
    classpath_ok "$(classpath_file "$v")"
}

cmd_run() {
    resolve_instance
    [ $# -gt 0 ] || die "usage: kafka.sh run CLASS [ARGS...]"
    tool "$@"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    install) cmd_install "$@" ;;
    installed) cmd_installed ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill "$@" ;;
    restart) cmd_restart "$@" ;;
    bootstrap) resolve_instance; bootstrap_address ;;
    topic) cmd_topic "$@" ;;
    produce) cmd_produce "$@" ;;
    consume) cmd_consume "$@" ;;
    run) cmd_run "$@" ;;
    *) echo "usage: $0 install|installed|start|stop|status|kill N|restart N|bootstrap|topic T N|produce|consume|run (see the header of $0)" >&2; exit 2 ;;
esac
