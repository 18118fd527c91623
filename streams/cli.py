"""``streamscore``: the operator's and the newcomer's command line.

``up`` / ``down`` / ``status`` run the local stack in the background, ``worker`` runs one
worker in the foreground, ``produce`` sends demo events or a JSONL file, ``tail`` prints
the records of a topic, ``bootstrap`` prepares features and the example model.
Every command builds one :class:`Settings` (env ``STREAMSCORE_*`` plus its options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.settings import Settings

log = logging.getLogger("streamscore")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: value
        for name in ("broker", "online_store", "bootstrap_servers", "home")
        if (value := getattr(args, name, None)) is not None
    }
    settings = Settings(**overrides)
    if (
        "bootstrap_servers" not in overrides
        and settings.bootstrap_servers == settings.local_bootstrap
    ):
        # After `up --broker kafka`, produce/tail/audit/bench talk to the stack that is up.
        from streams.stack import StackState, state_path

        state = StackState.load(state_path(settings))
        if state is not None and args.command != "up":
            settings = settings.model_copy(update={"bootstrap_servers": state.bootstrap_servers})
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    from streams import stack

    settings = _settings(args)
    started = time.monotonic()
    state = stack.up(settings, workers=args.workers, timeout_s=args.timeout)
    print(
        f"streamscore is up in {time.monotonic() - started:.1f}s: broker {state.broker} at "
        f"{state.bootstrap_servers}, online store {state.online_store}, "
        f"workers {[w['pid'] for w in state.workers]}"
    )
    print("next: streamscore produce --n 1000 && streamscore tail predictions --n 5")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from streams import stack

    stopped = stack.down(_settings(args))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def status_report(settings: Settings) -> dict[str, Any]:
    from models.registry import ModelRegistry
    from streams import stack
    from streams.kafka import BrokerUnavailable, ensure_topics, wait_for_broker

    state = stack.StackState.load(stack.state_path(settings))
    bootstrap = state.bootstrap_servers if state else settings.bootstrap_servers
    effective = settings.model_copy(update={"bootstrap_servers": bootstrap})
    topics: list[str] = []
    broker_up = True
    try:
        asyncio.run(wait_for_broker(effective, timeout_s=3))
        topics = asyncio.run(ensure_topics(effective))
    except BrokerUnavailable:
        broker_up = False
    workers = [w for w in (state.workers if state else []) if stack.alive(w["pid"])]
    registry = ModelRegistry(settings.registry_path)
    models = []
    for name in registry.list_models():
        champion = registry.champion(name)
        if champion is not None:
            models.append({"name": name, "version": champion, "variant": "champion"})
    return {
        "up": bool(state) and broker_up and bool(workers),
        "broker": state.broker if state else settings.broker,
        "broker_reachable": broker_up,
        "bootstrap_servers": bootstrap,
        "online_store": state.online_store if state else settings.online_store,
        "topics": topics,
        "worker_pids": [w["pid"] for w in workers],
        "metrics_url": f"http://{settings.metrics_host}:{workers[0]['metrics_port']}/metrics"
        if workers
        else None,
        "metrics_urls": [
            f"http://{settings.metrics_host}:{w['metrics_port']}/metrics" for w in workers
        ],
        "models": models,
    }


def cmd_status(args: argparse.Namespace) -> int:
    report = status_report(_settings(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"stack:      {'up' if report['up'] else 'down'}")
        print(
            f"broker:     {report['broker']} at {report['bootstrap_servers']} "
            f"({'reachable' if report['broker_reachable'] else 'unreachable'})"
        )
        print(f"online:     {report['online_store']}")
        print(f"workers:    {report['worker_pids'] or 'none'}")
        print(f"metrics:    {report['metrics_url'] or '-'}")
        print(
            "models:     "
            + (
                ", ".join(f"{m['name']} v{m['version']} ({m['variant']})" for m in report["models"])
                or "none"
            )
        )
        print("topics:     " + ", ".join(report["topics"]))
    return 0 if report["up"] else 3


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    run_worker(_settings(args))
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from streams import stack

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stack.bootstrap(_settings(args))
    return 0


def _demo_records(
    settings: Settings, n: int, seed: int, unknown_user_rate: float
) -> list[tuple[bytes | None, bytes]]:
    from features.fraud_data import demo_events, load_entities
    from streams.codec import encode

    users, merchants = load_entities(settings.data_dir)
    events = demo_events(
        n, seed=seed, users=users, merchants=merchants, unknown_user_rate=unknown_user_rate
    )
    return [(str(e["user_id"]).encode(), encode(e)) for e in events]


def _file_records(path: Path) -> list[tuple[bytes | None, bytes]]:
    """JSONL lines sent as they are: a malformed line reaches the pipeline as it would."""
    from streams.codec import decode

    records: list[tuple[bytes | None, bytes]] = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        key = None
        try:
            obj = decode(line)
            if isinstance(obj, dict) and obj.get("user_id") is not None:
                key = str(obj["user_id"]).encode()
        except ValueError:
            pass
        records.append((key, line))
    return records


async def produce_records(
    settings: Settings, records: Sequence[tuple[bytes | None, bytes]], rate: float | None
) -> float:
    from streams.kafka import producer

    client = producer(settings)
    await client.start()
    started = time.monotonic()
    try:
        futures = []
        for i, (key, value) in enumerate(records):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await client.send(settings.topic("events"), value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await client.stop()
    return time.monotonic() - started


def cmd_produce(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.file:
        records = _file_records(Path(args.file))
    else:
        records = _demo_records(settings, args.n, args.seed, args.unknown_user_rate)
    elapsed = asyncio.run(produce_records(settings, records, args.rate))
    print(
        f"sent {len(records)} events to {settings.topic('events')} in {elapsed:.2f}s "
        f"({len(records) / max(elapsed, 1e-9):.0f}/s)",
        file=sys.stderr,
    )
    return 0


def _render(record: Any, envelope: bool) -> str:
    from streams.codec import decode

    try:
        value: Any = decode(record.value) if record.value is not None else None
    except ValueError:
        value = record.value.decode(errors="replace")
    if not envelope:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(
        {
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode(errors="replace") if record.key is not None else None,
            "headers": {k: v.decode(errors="replace") for k, v in (record.headers or [])},
            "value": value,
        },
        ensure_ascii=False,
    )


async def tail_records(
    settings: Settings, topic: str, limit: int | None, idle_s: float | None, from_beginning: bool
) -> int:
    """Print records of ``topic`` as JSON lines; dead letters with their key and headers."""
    from streams.kafka import reader

    consumer = reader(settings, topic, auto_offset_reset="earliest" if from_beginning else "latest")
    envelope = topic == settings.topic("deadletter")
    await consumer.start()
    printed = 0
    last = time.monotonic()
    try:
        while limit is None or printed < limit:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                if idle_s is not None and time.monotonic() - last > idle_s:
                    break
                continue
            last = time.monotonic()
            for record in records[: None if limit is None else limit - printed]:
                print(_render(record, envelope), flush=True)
                printed += 1
    finally:
        await consumer.stop()
    return printed


def cmd_tail(args: argparse.Namespace) -> int:
    settings = _settings(args)
    topic = (
        args.topic if args.topic.startswith(settings.topic_prefix) else settings.topic(args.topic)
    )
    try:
        asyncio.run(tail_records(settings, topic, args.n, args.idle, not args.latest))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from streams.audit import audit

    report = asyncio.run(audit(_settings(args), idle_s=args.idle))
    summary = report.as_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"events in: {summary['events']}  predictions: {summary['predictions']}  "
            f"dead letters: {summary['deadletters']} {summary['deadletters_by_stage']}  "
            f"missing: {summary['missing']}  "
            f"duplicate predictions: {summary['duplicate_predictions']}  "
            f"-> {'reconciled' if report.reconciled else 'NOT reconciled'}"
        )
    return 0 if report.reconciled else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from streams.bench import run_bench

    report = asyncio.run(run_bench(_settings(args), n=args.n, rate=args.rate))
    header = (
        f"{'subject':<12} {'events':>7} {'outcomes':>8} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    print(header)
    for r in report["results"]:
        print(
            f"{r['subject']:<12} {r['events']:>7} {r['outcomes']:>8} {r['events_per_s']:>9.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        )
    print("ratios: " + ", ".join(f"{k}={v}" for k, v in report["ratios"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamscore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--home", type=Path, help="stack directory (STREAMSCORE_HOME)")
        p.add_argument(
            "--bootstrap-servers", help="Kafka bootstrap addresses (STREAMSCORE_BOOTSTRAP_SERVERS)"
        )
        return p

    p = common(
        sub.add_parser("up", help="start broker, online store and workers in the background")
    )
    p.add_argument("--broker", choices=["tansu", "kafka", "external"])
    p.add_argument("--online-store", choices=["sqlite", "redis"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for workers to be ready"
    )
    p.set_defaults(func=cmd_up)

    p = common(sub.add_parser("down", help="stop what up started"))
    p.set_defaults(func=cmd_down)

    p = common(sub.add_parser("status", help="inspect the local stack"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = common(sub.add_parser("worker", help="run one worker in the foreground"))
    p.add_argument("--online-store", choices=["sqlite", "redis"])
    p.set_defaults(func=cmd_worker)

    p = common(
        sub.add_parser(
            "bootstrap", help="apply the feature repo, materialize, train if the registry is empty"
        )
    )
    p.add_argument("--online-store", choices=["sqlite", "redis"])
    p.set_defaults(func=cmd_bootstrap)

    p = common(
        sub.add_parser("produce", help="send demo events or a JSONL file to the events topic")
    )
    p.add_argument("--n", type=int, default=1000, help="demo events to send")
    p.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    p.add_argument("--file", help="JSONL file whose lines are sent as they are")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--unknown-user-rate", type=float, default=0.0)
    p.set_defaults(func=cmd_produce)

    p = common(sub.add_parser("tail", help="print the records of a topic"))
    p.add_argument("topic", help="predictions, deadletter, events, ... (prefix added)")
    p.add_argument("--n", type=int, help="stop after N records")
    p.add_argument("--idle", type=float, help="stop after this many seconds without records")
    p.add_argument("--latest", action="store_true", help="only records that arrive from now on")
    p.set_defaults(func=cmd_tail)

    p = common(
        sub.add_parser("audit", help="reconcile events in versus predictions plus dead letters")
    )
    p.add_argument(
        "--idle", type=float, default=5.0, help="seconds without new records before counting"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = common(
        sub.add_parser("bench", help="throughput and latency against a passthrough baseline")
    )
    p.add_argument("--n", type=int, default=20000, help="events per subject")
    p.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    p.add_argument("--json", help="write the results to this path")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except Exception as exc:  # one place where a user-facing failure becomes a message
        from pydantic import ValidationError

        from features.store import FeatureError
        from models.registry import ModelError
        from streams.kafka import BrokerUnavailable
        from streams.stack import StackError

        if isinstance(
            exc, StackError | BrokerUnavailable | ModelError | FeatureError | ValidationError
        ):
            print(f"streamscore {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
