# lib.sh — shell helpers shared by the deploy scripts (sourced, not run).

# terminate PID TIMEOUT_S: SIGTERM, wait up to TIMEOUT_S, then SIGKILL and wait for exit.
terminate() {
    local pid="$1" timeout="$2"
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if (( SECONDS >= deadline )); then
            echo "pid $pid still alive after ${timeout}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
