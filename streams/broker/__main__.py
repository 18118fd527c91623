"""``python -m streams.broker fetch|start|stop|status|reset``: the embedded broker alone.

For the test runner (``deploy/test.sh``) and for operators who want the broker without
workers; ``streamscore up`` does the same through :mod:`streams.stack`. Settings come
from ``STREAMSCORE_*`` as everywhere (home, ports, java, mirror, cache).
"""

from __future__ import annotations

import argparse
import logging
import sys

from streams.broker.jars import JarError, ensure_jars
from streams.broker.kafka import BrokerStartError, LocalKafka
from streams.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.broker")
    parser.add_argument("action", choices=["fetch", "start", "stop", "status", "reset"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="streams.broker: %(message)s")
    settings = Settings()
    broker = LocalKafka(settings)
    try:
        if args.action == "fetch":
            print(ensure_jars(settings.kafka_cache_dir, settings.kafka_maven_mirror))
        elif args.action == "start":
            broker.start()
            print(broker.bootstrap)
        elif args.action == "stop":
            broker.stop()
        elif args.action == "reset":
            broker.reset()
        else:
            pid = broker.pid()
            print(f"running pid {pid} at {broker.bootstrap}" if pid else "not running")
            return 0 if pid else 1
    except (JarError, BrokerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
