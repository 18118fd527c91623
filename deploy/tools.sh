#!/usr/bin/env bash
# tools.sh — install the Debian tools the tests and deploy scripts need, if missing.
#
# Why: a fresh machine (or CI) has none of them, and the project's own files must
# install what it needs. The tools: redis-server/redis-cli (online store for
# integration tests), kcat (broker readiness checks and smoke tests), promtool
# from the prometheus package (validates deploy/prometheus/prometheus.yml).
#
# Usage: tools.sh [redis-server|kcat|promtool ...]   (default: all of them)
# Idempotent and quiet: does nothing, and runs no `apt-get update`, when every
# requested tool is already on PATH. Needs root (or sudo) only when installing.
set -euo pipefail

# command on PATH -> Debian package that provides it
declare -A PACKAGE_OF=(
    [redis-server]=redis-server
    [redis-cli]=redis-tools
    [kcat]=kcat
    [promtool]=prometheus
)

wanted=("$@")
(( ${#wanted[@]} )) || wanted=(redis-server redis-cli kcat promtool)

missing=()
for tool in "${wanted[@]}"; do
    [[ -n "${PACKAGE_OF[$tool]:-}" ]] || { echo "tools.sh: unknown tool '$tool'" >&2; exit 2; }
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
(( ${#missing[@]} )) || exit 0

as_root=()
if (( EUID != 0 )); then
    command -v sudo >/dev/null || { echo "tools.sh: need root to install ${missing[*]}" >&2; exit 1; }
    as_root=(sudo)
fi

echo "tools.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
# --no-install-recommends keeps prometheus from pulling in its web console assets.
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's packages start their services on install; we start our own, on our ports.
for pkg in "${missing[@]}"; do
    case "$pkg" in
        redis-server | prometheus)
            if command -v systemctl >/dev/null && systemctl is-active --quiet "$pkg" 2>/dev/null; then
                "${as_root[@]}" systemctl stop "$pkg" || true
            fi
            ;;
    esac
done
