#!/usr/bin/env bash
# kafka.sh — a single-node Apache Kafka 3.9 broker in KRaft mode, without Docker.
#
# Why: CI and developers need the real broker (transactions, consumer-group
# protocol, compaction) and this project's machines reach Maven Central but no
# download site or image registry. So the broker's jars come from Maven Central
# (deploy/kafka/pom.xml) and the broker runs as a plain `java -cp` process.
#
# Usage: kafka.sh fetch|start|stop|status|reset        (from any directory)
#   fetch   download the jars once into $STREAMSCORE_HOME/kafka/libs
#   start   fetch if needed, format storage once, start in the background and
#           return when the broker answers metadata requests; no-op if running
#   stop    stop the broker this script started (pidfile); SIGKILL after a timeout
#   status  exit 0 if our broker is running, 1 otherwise
#   reset   stop and delete the broker's data (the jars are kept)
#
# Environment:
#   STREAMSCORE_HOME       state root (default: $PWD/.streamscore)
#   KAFKA_PORT             client listener on 127.0.0.1 (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 19093)
#   KAFKA_HEAP_OPTS        JVM heap flags (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   KAFKA_STOP_TIMEOUT     seconds to wait before SIGKILL (default 30)
#   MAVEN_REPO_LOCAL       Maven local repository (default: Maven's own, ~/.m2)
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"

STREAMSCORE_HOME="${STREAMSCORE_HOME:-$PWD/.streamscore}"
case "$STREAMSCORE_HOME" in /*) ;; *) STREAMSCORE_HOME="$PWD/$STREAMSCORE_HOME" ;; esac
KAFKA_HOME="$STREAMSCORE_HOME/kafka"
LIBS="$KAFKA_HOME/libs"
STAMP="$LIBS/.fetched"
DATA="$KAFKA_HOME/data"
CONF="$KAFKA_HOME/server.properties"
LOG4J="$KAFKA_HOME/log4j.properties"
CLUSTER_ID_FILE="$KAFKA_HOME/cluster.id"
PIDFILE="$KAFKA_HOME/kafka.pid"
LOGFILE="$KAFKA_HOME/kafka.log"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The stamp holds the pom's hash, so editing the pom (a version bump) re-fetches.
pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

fetch() {
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
    command -v java >/dev/null || die "java not found (Debian: apt-get install default-jre-headless)"
    log "fetching Kafka jars from Maven Central into $LIBS"
    local tmp="$KAFKA_HOME/libs.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$KAFKA_HOME"
    local repo_opt=()
    [[ -n "${MAVEN_REPO_LOCAL:-}" ]] && repo_opt=("-Dmaven.repo.local=$MAVEN_REPO_LOCAL")
    # -f: the pom is found wherever the caller stands.
    # Maven's output goes to a file (it is noise when all is well, and 3.8 prints
    # stray colour codes even with -q -B); shown only when the fetch fails.
    if ! mvn -q -B -f "$POM" "${repo_opt[@]}" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" >"$KAFKA_HOME/fetch.log" 2>&1; then
        rm -rf "$tmp"
        tail -n 40 "$KAFKA_HOME/fetch.log" >&2
        die "mvn dependency:copy-dependencies failed; see $KAFKA_HOME/fetch.log"
    fi
    [[ -n "$(find "$tmp" -name 'kafka_2.13-*.jar' -print -quit)" ]] \
        || { rm -rf "$tmp"; die "fetch finished without kafka_2.13 jar"; }
    pom_hash >"$tmp/.fetched"
    # Swap in whole, so an interrupted fetch never leaves a half-filled libs/.
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

# Our broker is running iff the pidfile names a live java process whose command
# line carries our config path (guards against a recycled pid).
running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"kafka.Kafka $CONF"* ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# JVM flags shared by the broker and StorageTool.
java_args() {
    # shellcheck disable=SC2206  # KAFKA_HEAP_OPTS is a list of flags
    JAVA_ARGS=($KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        "-Dlog4j.configuration=file:$LOG4J" -cp "$LIBS/*")
}

java_cmd() { java_args; java "${JAVA_ARGS[@]}" "$@"; }

write_config() {
    mkdir -p "$DATA"
    cat >"$CONF" <<EOF
# Written by deploy/kafka/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
metadata.log.dir=$DATA
num.partitions=1
auto.create.topics.enable=true
# One broker: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Fewer internal partitions than the defaults (50) make the first group join and
# the first transaction seconds faster on a 2-core machine.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
# Tests join groups constantly; no reason to wait 3 s for more members.
group.initial.rebalance.delay.ms=0
EOF
    cat >"$LOG4J" <<'EOF'
# Broker log to stdout, which kafka.sh sends to kafka.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
EOF
}

format_storage() {
    if [[ -f "$DATA/meta.properties" ]]; then
        return 0
    fi
    if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
        java_cmd kafka.tools.StorageTool random-uuid 2>>"$LOGFILE" | tail -n1 >"$CLUSTER_ID_FILE"
    fi
    log "formatting storage in $DATA (cluster id $(cat "$CLUSTER_ID_FILE"))"
    java_cmd kafka.tools.StorageTool format -t "$(cat "$CLUSTER_ID_FILE")" -c "$CONF" \
        >>"$LOGFILE" 2>&1 || die "storage format failed; see $LOGFILE"
}

# Ready means a metadata request is answered with our broker in it, not merely
# that the port is open (the socket opens before the KRaft quorum has a leader).
metadata_ok() {
    local meta
    meta="$(kcat -b "$BOOTSTRAP" -L -m 3 2>/dev/null)" || return 1
    [[ "$meta" == *"broker 1 at 127.0.0.1:$KAFKA_PORT"* ]]
}

start() {
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid)"
        echo "$BOOTSTRAP"
        return 0
    fi
    rm -f "$PIDFILE"
    command -v kcat >/dev/null || "$HERE/../tools.sh" kcat
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        if port_open "$port"; then die "127.0.0.1:$port is taken by another process"; fi
    done
    fetch
    write_config
    format_storage
    local t0=$SECONDS
    # setsid: the broker outlives the shell that started it (and its Ctrl-C).
    # From a non-interactive shell setsid execs in place, so $! is java's pid
    # (running_pid checks the command line, so a wrong pid would show at once).
    java_args
    setsid java "${JAVA_ARGS[@]}" kafka.Kafka "$CONF" >>"$LOGFILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started pid $pid, log $LOGFILE; waiting for $BOOTSTRAP"
    while ! metadata_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            tail -n 30 "$LOGFILE" >&2
            die "broker exited during start-up; see $LOGFILE"
        fi
        if (( SECONDS - t0 >= KAFKA_START_TIMEOUT )); then
            tail -n 30 "$LOGFILE" >&2
            stop
            die "broker not ready after ${KAFKA_START_TIMEOUT}s; stopped it"
        fi
        sleep 0.5
    done
    log "ready in $((SECONDS - t0))s"
    echo "$BOOTSTRAP"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    terminate "$pid" "$KAFKA_STOP_TIMEOUT"
    rm -f "$PIDFILE"
    log "stopped pid $pid"
}

status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running pid $pid bootstrap $BOOTSTRAP"
        return 0
    fi
    echo "not running"
    return 1
}

reset() {
    stop
    rm -rf "$DATA" "$CONF" "$LOG4J" "$CLUSTER_ID_FILE" "$LOGFILE"
    log "deleted broker data under $KAFKA_HOME (jars kept)"
}

case "${1:-}" in
    fetch) fetch ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    reset) reset ;;
    *) echo "usage: $0 fetch|start|stop|status|reset" >&2; exit 2 ;;
esac
