#!/usr/bin/env bash
# redis.sh — a throwaway Redis on 127.0.0.1 for the Feast online store.
#
# Why: integration tests and `make`-style local runs need a real Redis, and the
# project's own files must install it. Data is not persisted (--save '',
# --appendonly no): the online store is rebuilt by materialization anyway.
#
# Usage: redis.sh start|stop|status                     (from any directory)
#   start   install redis-server if missing; if a Redis already answers on the
#           port, use it (it is not ours, so stop leaves it alone); else start
#           one in the background and wait for PING
#   stop    stop only the Redis this script started (pidfile)
#   status  exit 0 if a Redis answers PING on the port
#
# Environment:
#   STREAMSCORE_HOME  state root (default: $PWD/.streamscore); pid/log in redis/
#   REDIS_PORT        port on 127.0.0.1 (default 6379)
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STREAMSCORE_HOME="${STREAMSCORE_HOME:-$PWD/.streamscore}"
case "$STREAMSCORE_HOME" in /*) ;; *) STREAMSCORE_HOME="$PWD/$STREAMSCORE_HOME" ;; esac
REDIS_DIR="$STREAMSCORE_HOME/redis"
PIDFILE="$REDIS_DIR/redis.pid"
LOGFILE="$REDIS_DIR/redis.log"
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_START_TIMEOUT="${REDIS_START_TIMEOUT:-15}"
REDIS_STOP_TIMEOUT="${REDIS_STOP_TIMEOUT:-10}"

log() { echo "redis.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

answers_ping() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
}

# Ours iff the pidfile names a live redis-server listening on our port.
our_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid cmdline
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *redis-server*":$REDIS_PORT"* ]] || return 1
    echo "$pid"
}

start() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
        || "$HERE/tools.sh" redis-server redis-cli
    if answers_ping; then
        local pid
        if pid="$(our_pid)"; then
            log "already running (ours, pid $pid)"
        else
            log "a Redis already answers on 127.0.0.1:$REDIS_PORT; using it (not ours, stop will leave it)"
        fi
        echo "redis://127.0.0.1:$REDIS_PORT/0"
        return 0
    fi
    mkdir -p "$REDIS_DIR"
    rm -f "$PIDFILE"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
        --pidfile "$PIDFILE" --dir "$REDIS_DIR" --logfile "$LOGFILE" \
        --save '' --appendonly no >/dev/null
    local deadline=$((SECONDS + REDIS_START_TIMEOUT))
    until answers_ping; do
        (( SECONDS < deadline )) || { tail -n 20 "$LOGFILE" >&2 || true; die "no PING answer after ${REDIS_START_TIMEOUT}s"; }
        sleep 0.1
    done
    # --daemonize writes the pidfile just after it starts answering; wait for it.
    until our_pid >/dev/null; do
        (( SECONDS < deadline )) || die "redis answers but wrote no pidfile at $PIDFILE"
        sleep 0.1
    done
    log "started pid $(cat "$PIDFILE"), log $LOGFILE"
    echo "redis://127.0.0.1:$REDIS_PORT/0"
}

stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        if answers_ping; then
            log "the Redis on 127.0.0.1:$REDIS_PORT is not ours; leaving it running"
        else
            log "not running"
        fi
        return 0
    fi
    terminate "$pid" "$REDIS_STOP_TIMEOUT"
    rm -f "$PIDFILE"
    log "stopped pid $pid"
}

status() {
    if answers_ping; then
        local pid owner="not ours"
        pid="$(our_pid)" && owner="ours, pid $pid"
        echo "running on 127.0.0.1:$REDIS_PORT ($owner)"
        return 0
    fi
    echo "not running"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
