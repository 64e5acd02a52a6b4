#!/usr/bin/env bash
# Local schema registry for the Avro tests: the real Apicurio Registry (a Quarkus application), its
# release distribution resolved from Maven Central by Maven (deploy/local/registry/pom.xml: the
# fast-jar tarball io.apicurio:apicurio-registry-app:V:tar.gz:all, cached in ~/.m2) and unpacked under
# the build area (target/cdrflow-local/registry/app-V); on 127.0.0.1 only, with in-memory storage (an
# in-memory H2 database: every start begins empty). Clients talk to its Confluent-compatible API.
#
#   deploy/local/registry.sh install [--version V]  resolve and unpack the distribution (once per version;
#                                  later runs do not call Maven; offline once it is in ~/.m2)
#   deploy/local/registry.sh installed   exit 0 iff a fit Java is here and the distribution is unpacked
#                                  (start needs no network)
#   deploy/local/registry.sh start [--version V]
#                                  install if needed, start it in the background, wait until the
#                                  Confluent-compatible API answers (GET .../subjects is 200), print its
#                                  base URL (http://127.0.0.1:PORT/apis/ccompat/v7) as the last line of
#                                  stdout; on a running registry only print the URL
#   deploy/local/registry.sh stop        stop it (SIGTERM, SIGKILL after a timeout)
#   deploy/local/registry.sh status      exit 0 iff it runs and answers; prints the URL
#   deploy/local/registry.sh url         print the URL (of the running registry, else the configured one)
#
# Apicurio 3.3.3 (the default) is built for Java 21: it runs on the newest Java 21+ found (CDRFLOW_REGISTRY_JAVA,
# JAVA_HOME, PATH, then /usr/lib/jvm/*, e.g. Temurin 25). CDRFLOW_REGISTRY_VERSION=2.6.13.Final runs on Java 17.
# Behaviour set here for the tests: global compatibility rule BACKWARD (Confluent's default; Apicurio's
# own is none, i.e. NONE), canonical-hash mode on (the same schema with other whitespace or key order
# gets the existing id, as with Confluent), deletion of subjects and versions allowed.
# The state (pid, port, version, log) lives in CDRFLOW_REGISTRY_DIR: registry.pid, registry.log.
#
# Environment: CDRFLOW_REGISTRY_PORT (18081), CDRFLOW_REGISTRY_MANAGEMENT_PORT (PORT+1: Apicurio 3's
# health/metrics interface, on 127.0.0.1 too), CDRFLOW_REGISTRY_VERSION (3.3.3), CDRFLOW_REGISTRY_HEAP
# (-Xms64m -Xmx512m), CDRFLOW_REGISTRY_JAVA, CDRFLOW_REGISTRY_COMPATIBILITY (BACKWARD; NONE, FORWARD,
# FULL, BACKWARD_TRANSITIVE...), CDRFLOW_REGISTRY_OPTS (more -D options for the JVM, e.g.
# -Dquarkus.log.level=DEBUG), CDRFLOW_REGISTRY_TIMEOUT (120 s to become ready), CDRFLOW_REGISTRY_STOP_TIMEOUT
# (30 s before SIGKILL), CDRFLOW_REGISTRY_DIR (CDRFLOW_LOCAL_DIR/registry), CDRFLOW_LOCAL_DIR.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${CDRFLOW_LOCAL_DIR:-$repo/target/cdrflow-local}"
dir="${CDRFLOW_REGISTRY_DIR:-$local_dir/registry}"
# The unpacked distributions, shared by every instance (a private one in CDRFLOW_REGISTRY_DIR too).
apps="$local_dir/registry"
pom="$repo/deploy/local/registry/pom.xml"
default_version="3.3.3"
fallback_version="2.6.13.Final"
dependency_plugin="3.8.1"   # org.apache.maven.plugins:maven-dependency-plugin, as in the pom
heap="${CDRFLOW_REGISTRY_HEAP:--Xms64m -Xmx512m}"
compatibility="${CDRFLOW_REGISTRY_COMPATIBILITY:-BACKWARD}"
ready_timeout="${CDRFLOW_REGISTRY_TIMEOUT:-120}"
stop_timeout="${CDRFLOW_REGISTRY_STOP_TIMEOUT:-30}"
api_path="/apis/ccompat/v7"

log() { echo "registry.sh: $*" >&2; }
die() { log "$*"; exit 1; }

sudo_cmd() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

major_of() { echo "${1%%.*}"; }

check_version() {
    [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+(\.Final)?$ ]] || die "bad Apicurio Registry version '$1': want X.Y.Z such as $default_version, or 2.6.13.Final"
    local major
    major="$(major_of "$1")"
    if [ "$major" -lt 2 ] || [ "$major" -gt 3 ]; then
        die "Apicurio Registry $1 is not supported here: use 3.x (such as $default_version) or 2.6.13.Final"
    fi
}

# 3.x is compiled for Java 21 (class files 65); 2.x for Java 11.
java_needed() { if [ "$(major_of "$1")" -ge 3 ]; then echo 21; else echo 17; fi; }

# --- Java, Maven and the distribution -----------------------------------------------------------

java_major() {
    "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

# The java to run VERSION with: CDRFLOW_REGISTRY_JAVA if set (it must fit), else the first fit one of
# JAVA_HOME, PATH and the newest under /usr/lib/jvm. Prints nothing and fails if there is none.
pick_java() {
    local need="$1" cand major best="" best_major=0
    if [ -n "${CDRFLOW_REGISTRY_JAVA:-}" ]; then
        major="$(java_major "$CDRFLOW_REGISTRY_JAVA" || true)"
        [ -n "$major" ] && [ "$major" -ge "$need" ] || return 1
        echo "$CDRFLOW_REGISTRY_JAVA"
        return 0
    fi
    for cand in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)"; do
        if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
        major="$(java_major "$cand" || true)"
        if [ -n "$major" ] && [ "$major" -ge "$need" ]; then echo "$cand"; return 0; fi
    done
    for cand in /usr/lib/jvm/*/bin/java; do
        [ -x "$cand" ] || continue
        major="$(java_major "$cand" || true)"
        if [ -n "$major" ] && [ "$major" -ge "$need" ] && [ "$major" -gt "$best_major" ]; then
            best="$cand"
            best_major="$major"
        fi
    done
    [ -n "$best" ] || return 1
    echo "$best"
}

java_bin=""
find_java() {
    local version="$1" need
    need="$(java_needed "$version")"
    if java_bin="$(pick_java "$need")"; then return 0; fi
    if [ -n "${CDRFLOW_REGISTRY_JAVA:-}" ]; then
        die "CDRFLOW_REGISTRY_JAVA=$CDRFLOW_REGISTRY_JAVA is Java $(java_major "$CDRFLOW_REGISTRY_JAVA" 2>/dev/null || echo '?'); Apicurio Registry $version needs $need or newer: point it at a Java $need+ (e.g. /usr/lib/jvm/temurin-25-jdk-amd64/bin/java)"
    fi
    # Debian 13 has openjdk-21 and -25; Debian 12 has only 17 (enough for 2.6.13.Final).
    local pkg="" p
    log "no Java $need+ in CDRFLOW_REGISTRY_JAVA, JAVA_HOME, PATH or /usr/lib/jvm: trying Debian's (needs root and the Debian archive)"
    sudo_cmd apt-get update -qq >/dev/null 2>&1 || true
    for p in openjdk-25-jre-headless openjdk-21-jre-headless openjdk-17-jre-headless; do
        if [ "$need" -le "${p//[^0-9]/}" ] && apt-cache show "$p" >/dev/null 2>&1; then pkg="$p"; break; fi
    done
    if [ -n "$pkg" ]; then
        DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq "$pkg" >/dev/null \
            || die "could not install $pkg: run apt-get install -y $pkg, or set CDRFLOW_REGISTRY_JAVA to a Java $need+"
        java_bin="$(pick_java "$need")" && return 0
    fi
    die "Apicurio Registry $version needs Java $need or newer and there is none (Debian offers ${pkg:-none}): install one (e.g. a Temurin 25 JDK in /usr/lib/jvm/temurin-25-jdk-amd64) and set CDRFLOW_REGISTRY_JAVA or JAVA_HOME to it, or run Apicurio 2.6 on Java 17 with CDRFLOW_REGISTRY_VERSION=2.6.13.Final"
}

find_maven() {
    command -v mvn >/dev/null && return 0
    log "mvn not found: installing Debian's maven (needs root and the Debian archive)"
    sudo_cmd apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq maven >/dev/null \
        || die "could not install Maven: run apt-get install -y maven"
}

# The unpacked distribution; its marker file names the tarball it came from, so a changed pom
# (its hash is in the marker) resolves and unpacks again.
app_dir() { echo "$apps/app-$1"; }
marker_of() { echo "$(app_dir "$1")/.cdrflow-unpacked"; }
pom_hash() { sha1sum "$pom" | cut -c1-8; }

# The jar to run: 3.x is a fast-jar (quarkus-run.jar), 2.x a legacy jar (*-runner.jar).
run_jar() {
    local d
    d="$(app_dir "$1")"
    if [ -f "$d/quarkus-run.jar" ]; then
        echo "$d/quarkus-run.jar"
    else
        compgen -G "$d/*-runner.jar" | head -n 1
    fi
}

installed_ok() {
    local m
    m="$(marker_of "$1")"
    [ -f "$m" ] && [ "$(sed -n 1p "$m")" = "$(pom_hash)" ] && [ -n "$(run_jar "$1")" ]
}

install() {
    local version="$1"
    check_version "$version"
    if installed_ok "$version"; then
        find_java "$version"
        return 0
    fi
    find_java "$version"
    find_maven
    mkdir -p "$apps"
    local mvn_log="$apps/mvn-$version.log" path_file="$apps/tarball-$version.txt" started=$SECONDS
    log "resolving Apicurio Registry $version (io.apicurio:apicurio-registry-app:$version:tar.gz:all, ~150 MB) from Maven Central with Maven (cached in ~/.m2)"
    # The plugin by its full name: a prefix (dependency:) cannot be resolved offline.
    if ! mvn -B -q -Dstyle.color=never -f "$pom" "org.apache.maven.plugins:maven-dependency-plugin:$dependency_plugin:build-classpath" \
            -Dregistry.version="$version" -Dmdep.outputFile="$path_file.tmp" >"$mvn_log" 2>&1; then
        rm -f "$path_file.tmp"
        if grep -qE "Could not find artifact|was not found in" "$mvn_log"; then
            log "Maven Central has no Apicurio Registry $version distribution (io.apicurio:apicurio-registry-app:$version:tar.gz:all): choose another --version or CDRFLOW_REGISTRY_VERSION ($default_version, 2.6.13.Final); Maven said:"
        elif grep -qiE "Could not transfer|UnknownHost|Connect|timed out|Network is unreachable|resolution is not attempted|offline" "$mvn_log"; then
            log "Maven could not reach Maven Central to fetch Apicurio Registry $version (no network? a proxy or mirror needed in ~/.m2/settings.xml?); once it is in ~/.m2 the install works offline; Maven said:"
        else
            log "Maven failed to resolve Apicurio Registry $version from $pom; Maven said:"
        fi
        sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | grep -E "ERROR\] [^ ]" | head -n 1 >&2 || tail -n 15 "$mvn_log" >&2
        exit 1
    fi
    local tarball
    tarball="$(tr -d '\n' <"$path_file.tmp")"
    rm -f "$path_file.tmp"
    [ -f "$tarball" ] || die "Maven resolved Apicurio Registry $version to '$tarball', which is not a file: see $mvn_log"
    # Unpacked beside its final place, then moved (a concurrent start never sees half a tree).
    local target tmp
    target="$(app_dir "$version")"
    tmp="$target.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar -xzf "$tarball" -C "$tmp" --no-same-owner || { rm -rf "$tmp"; die "could not unpack $tarball (a broken download? delete its folder in ~/.m2 and install again)"; }
    printf '%s\n%s\n' "$(pom_hash)" "$tarball" >"$tmp/.cdrflow-unpacked"
    [ -n "$(compgen -G "$tmp/quarkus-run.jar" || compgen -G "$tmp/*-runner.jar" || true)" ] \
        || { rm -rf "$tmp"; die "$tarball holds neither quarkus-run.jar nor a *-runner.jar: not a registry distribution"; }
    rm -rf "$target"
    mv "$tmp" "$target"
    log "installed Apicurio Registry $version in $((SECONDS - started)) s ($target, $(du -sm "$target" | cut -f1) MB)"
}

# --- the instance -------------------------------------------------------------------------------

stored() { [ -f "$dir/$1" ] && cat "$dir/$1"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

lock_instance() {
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock -w 300 9 || die "another registry.sh holds $dir/.lock for 5 minutes"
}

running_pid() {
    local pid
    pid="$(stored registry.pid || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # The pid must still be this instance's registry (not a recycled pid).
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-Dcdrflow.registry.dir=$dir " || return 1
    echo "$pid"
}

# The port: the running instance's, else CDRFLOW_REGISTRY_PORT.
current_port() {
    local p=""
    if running_pid >/dev/null; then p="$(stored port || true)"; fi
    echo "${p:-${CDRFLOW_REGISTRY_PORT:-18081}}"
}

url_of() { echo "http://127.0.0.1:$1$api_path"; }

# The Confluent-compatible API answers (GET .../subjects is 200).
answers() {
    local code
    code="$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$(url_of "$1")/subjects" 2>/dev/null || true)"
    [ "$code" = 200 ]
}

show_log_tail() {
    log "its log ($dir/registry.log):"
    grep -vF 'apicurio-registry.access' "$dir/registry.log" 2>/dev/null | tail -n 25 >&2 || true
}

# The JVM and Quarkus/Apicurio options. 3.x reads apicurio.*, 2.x registry.*.
launch() {
    local version="$1" port="$2" mgmt_port="$3" jar opts=()
    jar="$(run_jar "$version")"
    mkdir -p "$dir/tmp"
    opts=(-Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$port")
    if [ "$(major_of "$version")" -ge 3 ]; then
        opts+=(
            # The management interface (health, metrics) is built in: keep it local and off 9000
            # (ClickHouse's native port).
            -Dquarkus.management.host=127.0.0.1 "-Dquarkus.management.port=$mgmt_port"
            # In-memory storage: SQL on an in-memory H2 (Apicurio 3's default "in-memory" kind).
            -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2
            -Dapicurio.datasource.url=jdbc:h2:mem:cdrflow_registry
            -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2 -Dapicurio.datasource.jdbc.max-size=20
            "-Dapicurio.storage.snapshot.location=$dir/tmp" "-Dapicurio.import.work-dir=$dir/tmp"
            -Dapicurio.ccompat.use-canonical-hash=true
            -Dapicurio.rest.deletion.group.enabled=true -Dapicurio.rest.deletion.artifact.enabled=true
            -Dapicurio.rest.deletion.artifact-version.enabled=true
        )
        case "$compatibility" in NONE|none|"") ;; *) opts+=("-Dapicurio.rules.global.compatibility=$compatibility") ;; esac
    else
        opts+=(
            -Dregistry.ccompat.use-canonical-hash=true
            -Dregistry.rest.artifact.deletion.enabled=true
        )
        case "$compatibility" in NONE|none|"") ;; *) opts+=("-Dregistry.rules.global.compatibility=$compatibility") ;; esac
    fi
    # shellcheck disable=SC2086 # $heap and CDRFLOW_REGISTRY_OPTS hold several JVM options
    nohup "$java_bin" $heap -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -XX:CICompilerCount=2 \
        -Djava.awt.headless=true "-Djava.io.tmpdir=$dir/tmp" "-Dcdrflow.registry.dir=$dir" \
        "${opts[@]}" ${CDRFLOW_REGISTRY_OPTS:-} -jar "$jar" \
        >"$dir/registry.log" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$dir/registry.pid"
    echo "$port" >"$dir/port"
    echo "$version" >"$dir/version"
    # Until the forked shell has exec'd java, the pid's command line is not the registry's yet.
    for _ in $(seq 1 100); do
        if running_pid >/dev/null || ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.05
    done
    log "Apicurio Registry $version: pid $pid, 127.0.0.1:$port ($("$java_bin" -version 2>&1 | head -n 1 | sed 's/"//g'), $jar)"
}

wait_ready() {
    local port="$1" deadline=$((SECONDS + ready_timeout))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! running_pid >/dev/null; then
            log "the registry exited while starting"
            show_log_tail
            if grep -qiE 'Port .* (seems to be )?in use|Address already in use' "$dir/registry.log" 2>/dev/null; then
                die "a port of the registry is taken by another program (HTTP $port, management ${mgmt_port:-?}): stop it, or set CDRFLOW_REGISTRY_PORT / CDRFLOW_REGISTRY_MANAGEMENT_PORT"
            fi
            die "Apicurio Registry did not start (see above)"
        fi
        answers "$port" && return 0
        sleep 0.5
    done
    show_log_tail
    die "Apicurio Registry did not answer on $(url_of "$port") within ${ready_timeout}s (CDRFLOW_REGISTRY_TIMEOUT)"
}

stop_pid() {
    local pid="$1" deadline=$((SECONDS + stop_timeout))
    kill "$pid" 2>/dev/null || true
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    log "pid $pid ignored SIGTERM for ${stop_timeout}s (CDRFLOW_REGISTRY_STOP_TIMEOUT); killing it"
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# --- commands -----------------------------------------------------------------------------------

version_arg() {
    local want=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --version) want="${2:?--version needs a value}"; shift 2 ;;
            *) die "unknown argument '$1' (want --version V)" ;;
        esac
    done
    want="${want:-${CDRFLOW_REGISTRY_VERSION:-}}"
    if [ -z "$want" ]; then
        # No version asked for: 3.x where a Java 21+ is at hand, else 2.6 on the Java 17 every
        # machine of the project has (same Confluent-compatible API).
        if pick_java 21 >/dev/null; then want="$default_version"; else
            want="$fallback_version"
            log "no Java 21+ here (CDRFLOW_REGISTRY_JAVA, JAVA_HOME, PATH, /usr/lib/jvm): using Apicurio Registry $want, which runs on Java 17"
        fi
    fi
    echo "$want"
}

cmd_install() {
    local version
    version="$(version_arg "$@")"
    install "$version"
}

mgmt_port=""
cmd_start() {
    local version port pid
    version="$(version_arg "$@")"
    lock_instance
    if pid="$(running_pid)"; then
        port="$(stored port)"
        local had
        had="$(stored version || true)"
        if [ "$had" != "$version" ]; then
            log "warning: Apicurio Registry $had runs (pid $pid), not $version: stop it first to change versions"
        fi
        if [ -n "${CDRFLOW_REGISTRY_PORT:-}" ] && [ "$CDRFLOW_REGISTRY_PORT" != "$port" ]; then
            log "warning: the registry of $dir runs on port $port, not CDRFLOW_REGISTRY_PORT=$CDRFLOW_REGISTRY_PORT"
        fi
        if ! answers "$port"; then
            log "it runs (pid $pid) but does not answer yet: waiting"
            wait_ready "$port"
        else
            log "already running: Apicurio Registry $had (pid $pid)"
        fi
        url_of "$port"
        return 0
    fi
    rm -f "$dir/registry.pid"
    port="${CDRFLOW_REGISTRY_PORT:-18081}"
    mgmt_port="${CDRFLOW_REGISTRY_MANAGEMENT_PORT:-$((port + 1))}"
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65534 ]; then
        die "bad CDRFLOW_REGISTRY_PORT '$port': want a free TCP port (the next one is the management interface's)"
    fi
    check_version "$version"
    if port_open "$port"; then
        die "port $port is taken by another program: stop it, or set CDRFLOW_REGISTRY_PORT to a free port"
    fi
    if [ "$(major_of "$version")" -ge 3 ] && port_open "$mgmt_port"; then
        die "port $mgmt_port (the registry's management interface) is taken by another program: stop it, or set CDRFLOW_REGISTRY_MANAGEMENT_PORT (or CDRFLOW_REGISTRY_PORT) to a free port"
    fi
    install "$version"
    local started=$SECONDS
    launch "$version" "$port" "$mgmt_port"
    wait_ready "$port"
    log "ready in $((SECONDS - started)) s: $(url_of "$port")"
    url_of "$port"
}

cmd_stop() {
    lock_instance
    local pid started=$SECONDS
    if ! pid="$(running_pid)"; then
        log "not running ($dir)"
        rm -f "$dir/registry.pid"
        return 0
    fi
    stop_pid "$pid"
    rm -f "$dir/registry.pid"
    log "stopped Apicurio Registry (pid $pid) in $((SECONDS - started)) s"
}

cmd_status() {
    local pid port
    if ! pid="$(running_pid)"; then
        log "not running ($dir)"
        return 1
    fi
    port="$(stored port)"
    if answers "$port"; then
        log "Apicurio Registry $(stored version || true) runs (pid $pid) and answers"
        url_of "$port"
    else
        log "Apicurio Registry runs (pid $pid) but does not answer on $(url_of "$port")"
        return 1
    fi
}

# Whether `start` can run without the network: a fit Java is here and the distribution is unpacked.
cmd_installed() {
    local v="${CDRFLOW_REGISTRY_VERSION:-$default_version}"
    pick_java "$(java_needed "$v")" >/dev/null || return 1
    installed_ok "$v"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    install) cmd_install "$@" ;;
    installed) cmd_installed ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) url_of "$(current_port)" ;;
    *) echo "usage: $0 install|installed|start|stop|status|url (see the header of $0)" >&2; exit 2 ;;
esac
