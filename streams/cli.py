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
import secrets
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
        and settings.bootstrap_servers == f"127.0.0.1:{settings.kafka_port}"
    ):
        # After `up --broker external`, produce/tail/audit/bench talk to the stack that is up.
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
    from streams.kafka import BrokerUnavailable, committed_lag, existing_topics, wait_for_broker

    state = stack.StackState.load(stack.state_path(settings))
    bootstrap = state.bootstrap_servers if state else settings.bootstrap_servers
    effective = settings.model_copy(update={"bootstrap_servers": bootstrap})
    topics: list[str] = []
    lag: dict[int, int | None] = {}
    broker_up = True
    try:
        asyncio.run(wait_for_broker(effective, timeout_s=3))
        topics = asyncio.run(existing_topics(effective))
        if settings.topic("events") in topics:
            lag = asyncio.run(
                committed_lag(effective, settings.consumer_group, settings.topic("events"))
            )
    except BrokerUnavailable:
        broker_up = False
    running = [w for w in (state.workers if state else []) if stack.worker_running(w)]
    # worker_pids and metrics_url(s) stay the scoring workers'; the feedback worker has its own
    workers = [w for w in running if w.get("role", "score") == "score"]
    feedback = [w for w in running if w.get("role") == "feedback"]
    feature_workers = [w for w in running if w.get("role") == "features"]
    dead = stack.dead_parts(settings, state)
    registry = ModelRegistry(settings.registry_path)
    models = []
    for name in registry.list_models():
        champion = registry.champion(name)
        if champion is not None:
            models.append({"name": name, "version": champion, "variant": "champion"})
    return {
        "up": bool(state) and broker_up and bool(workers) and not dead,
        "dead": dead,
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
        "feedback_worker_pids": [w["pid"] for w in feedback],
        "feedback_metrics_urls": [
            f"http://{settings.metrics_host}:{w['metrics_port']}/metrics" for w in feedback
        ],
        "features_worker_pids": [w["pid"] for w in feature_workers],
        "models": models,
        # From the broker: events not yet committed by the scoring group, per partition
        # (None: nothing committed yet).
        "events_lag": {str(p): n for p, n in lag.items()},
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
        print(f"feedback:   {report['feedback_worker_pids'] or 'none'}")
        print(f"features:   {report['features_worker_pids'] or 'none'}")
        if report["dead"]:
            print(f"not running: {', '.join(report['dead'])} (`streamscore up` restarts them)")
        print(f"metrics:    {report['metrics_url'] or '-'}")
        print(
            "models:     "
            + (
                ", ".join(f"{m['name']} v{m['version']} ({m['variant']})" for m in report["models"])
                or "none"
            )
        )
        print("topics:     " + ", ".join(report["topics"]))
        print(
            "committed:  events lag "
            + (
                ", ".join(
                    f"p{p} {'-' if n is None else n}" for p, n in report["events_lag"].items()
                )
                or "-"
            )
            + " (committed offsets of the scoring group, read from the broker)"
        )
        figures = metrics_figures(report["metrics_url"])
        if figures:
            print(figures)
    return 0 if report["up"] else 3


def metrics_figures(url: str | None, timeout_s: float = 2.0) -> str | None:
    """The key figures of a worker's /metrics as text; None when it does not answer."""
    import urllib.error
    import urllib.request

    from streams.monitoring.status import render_status_figures

    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            text = response.read().decode()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        log.warning("no figures from %s: %s", url, exc)
        return None
    return render_status_figures(text)


def cmd_worker(args: argparse.Namespace) -> int:
    if args.role == "feedback":
        from streams.monitoring.runner import run_feedback_worker

        run_feedback_worker(_settings(args))
        return 0
    if args.role == "features":
        from streams.features_worker import run_features_worker

        run_features_worker(_settings(args))
        return 0
    from streams.worker import run_worker

    run_worker(_settings(args))
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from streams import stack

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stack.bootstrap(_settings(args))
    return 0


def _drift_factors(specs: Sequence[str]) -> dict[str, float]:
    """``["amount=3"]`` -> ``{"amount": 3.0}``; a malformed spec names itself."""
    factors: dict[str, float] = {}
    for spec in specs:
        name, sep, factor = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError(spec)
            factors[name.strip()] = float(factor)
        except ValueError:
            raise ValueError(f"--drift {spec!r}: expected FIELD=FACTOR, e.g. amount=3") from None
    return factors


def demo_records(
    settings: Settings,
    n: int,
    seed: int,
    unknown_user_rate: float = 0.0,
    drift: dict[str, float] | None = None,
    flip_labels: float = 0.0,
) -> tuple[list[tuple[bytes | None, bytes]], list[tuple[bytes | None, bytes]]]:
    """(events, labels) for the demo: recent transactions replayed, stamped now.

    ``drift`` multiplies numeric event fields (``{"amount": 3}``) so an operator can
    provoke a drift signal; ``flip_labels`` is the share of ground-truth labels sent
    flipped, which provokes an online quality drop. Labels are ``labels`` records
    (``{"event_id", "label", "label_time"}``), keyed like their events.
    """
    import numpy as np

    from features.fraud_data import replay_events
    from streams.codec import encode

    if not 0.0 <= unknown_user_rate <= 1.0 or not 0.0 <= flip_labels <= 1.0:
        raise ValueError("--unknown-user-rate and --flip-labels must be in [0, 1]")
    events, truth = replay_events(settings.data_dir, n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    unknown = rng.random(n) < unknown_user_rate
    flipped = rng.random(n) < flip_labels
    label_time = events[0]["event_time"] if events else None
    records: list[tuple[bytes | None, bytes]] = []
    labels: list[tuple[bytes | None, bytes]] = []
    for i, event in enumerate(events):
        if unknown[i]:
            event["user_id"] = f"x{rng.integers(0, 10**6):06d}"  # no online features
        for name, factor in (drift or {}).items():
            if isinstance(event.get(name), int | float):
                event[name] = round(event[name] * factor, 2)
        key = str(event["user_id"]).encode()
        records.append((key, encode(event)))
        label = truth[i] ^ int(flipped[i])
        labels.append(
            (key, encode({"event_id": event["event_id"], "label": label, "label_time": label_time}))
        )
    return records, labels


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
    settings: Settings,
    records: Sequence[tuple[bytes | None, bytes]],
    rate: float | None,
    topic: str = "events",
) -> float:
    """Send records to ``topic`` (logical name); return the seconds it took."""
    from streams.kafka import send_records

    started = time.monotonic()
    await send_records(settings, settings.topic(topic), records, rate)
    return time.monotonic() - started


def cmd_produce(args: argparse.Namespace) -> int:
    settings = _settings(args)
    labels: list[tuple[bytes | None, bytes]] = []
    if args.file:
        records = _file_records(Path(args.file))
    else:
        try:
            records, labels = demo_records(
                settings,
                args.n,
                args.seed if args.seed is not None else secrets.randbits(31),
                args.unknown_user_rate,
                drift=_drift_factors(args.drift),
                flip_labels=args.flip_labels,
            )
        except ValueError as exc:
            print(f"streamscore produce: {exc}", file=sys.stderr)
            return 2
    elapsed = asyncio.run(produce_records(settings, records, args.rate))
    print(
        f"sent {len(records)} events to {settings.topic('events')} in {elapsed:.2f}s "
        f"({len(records) / max(elapsed, 1e-9):.0f}/s)",
        file=sys.stderr,
    )
    if args.labels and labels:
        asyncio.run(produce_records(settings, labels, None, topic="labels"))
        print(
            f"sent {len(labels)} labels to {settings.topic('labels')}"
            + (f" ({args.flip_labels:.0%} flipped)" if args.flip_labels else ""),
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
    from streams.audit import audit, parse_time

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"streamscore audit: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(audit(_settings(args), idle_s=args.idle, since_ms=since, until_ms=until))
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
    from streams.bench.harness import SUBJECTS, BenchConfig, run_bench, stack_settings
    from streams.bench.report import SubjectResult, render_ratios, render_table

    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] or list(SUBJECTS)
    unknown = [s for s in subjects if s not in SUBJECTS]
    if unknown:
        print(
            f"streamscore bench: unknown subjects {unknown}; choose from {SUBJECTS}",
            file=sys.stderr,
        )
        return 2
    overrides: dict[str, Any] = {"workers": args.workers}
    for name in ("n", "latency_rate", "seed", "worker_python"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)
    settings = stack_settings(_settings(args))
    report = asyncio.run(
        run_bench(settings, subjects, config, progress=lambda m: print(m, file=sys.stderr))
    )
    results = [SubjectResult(**r) for r in report["results"].values()]
    print(render_table(results))
    print(render_ratios(report["ratios"]) or "ratios: none (a subject of each pair is missing)")
    for r in results:
        for note in r.notes:
            print(f"note: {r.subject}: {note}")
    print(f"bench took {report['duration_s']:.0f}s")
    if args.json:
        report["command"] = " ".join(["streamscore", *sys.argv[1:]])
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from features.store import open_store
    from models.training import TrainingConfig, train_model
    from streams.worker import online_store_config

    logging.getLogger().setLevel(logging.INFO)
    settings = _settings(args)
    store = open_store(settings.feature_repo, online_store_config(settings))
    registry = lifecycle_registry(settings)
    config = TrainingConfig(max_iter=args.max_iter) if args.max_iter else TrainingConfig()
    manifest = train_model(
        store, settings.data_dir, registry, name=args.name, seed=args.seed, config=config
    )
    state = "champion" if registry.champion(args.name) == manifest.version else "candidate"
    print(
        f"registered {manifest.name} v{manifest.version} as {state}: "
        + ", ".join(f"{k}={manifest.metrics[k]:.4f}" for k in ("roc_auc", "pr_auc"))
        + f"; data sha256 {manifest.lineage.data_sha256[:12]}, rows {manifest.lineage.rows}"
    )
    print(f"next: streamscore models promote {manifest.version}  (or canary / shadow)")
    return 0


def lifecycle_registry(settings: Settings) -> Any:
    from streams.lifecycle import registry_of

    return registry_of(settings)


def cmd_models(args: argparse.Namespace) -> int:
    from streams import lifecycle

    settings = _settings(args)
    name = args.model or settings.model_name
    if args.action == "list":
        rows = lifecycle.list_models(settings, args.model)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'model':<10} {'ver':>4} {'state':<10} {'roc_auc':>8} {'pr_auc':>7} lineage")
        for r in rows:
            m = r["metrics"]
            state = r["state"] + (f" {r['percent']:g}%" if "percent" in r else "")
            lin = r["lineage"]
            print(
                f"{r['name']:<10} {r['version']:>4} {state:<10} "
                f"{m.get('roc_auc', m.get('mae', float('nan'))):>8.4f} "
                f"{m.get('pr_auc', m.get('rmse', float('nan'))):>7.4f} "
                f"{lin['feature_service']} {lin['start'][:10]}..{lin['end'][:10]} "
                f"rows={lin['rows']} data={lin['data_sha256']}"
            )
        return 0
    if args.action == "show":
        print(lifecycle.show(settings, args.model or settings.model_name, args.version))
        return 0
    if args.action == "register":
        manifest = lifecycle.register(settings, Path(args.onnx), Path(args.manifest))
        print(f"registered {manifest.name} v{manifest.version} (sha256 {manifest.sha256[:12]})")
        return 0
    action = {"canary-off": "clear-canary", "shadow-off": "clear-shadow"}.get(
        args.action, args.action
    )
    workers = args.workers
    if workers is None:
        # Wait for the workers `up` started; a deployment passes --workers N itself.
        from streams import stack

        state_file = stack.StackState.load(stack.state_path(settings))
        workers = len(
            [
                w
                for w in (state_file.workers if state_file else [])
                if stack.worker_running(w) and w.get("role", "score") == "score"
            ]
        )
    report = lifecycle.rollout(
        settings,
        name,
        action,
        version=getattr(args, "version", None),
        percent=getattr(args, "percent", None),
        force=getattr(args, "force", False),
        reason=args.reason,
        wait_workers=workers or None,
        wait_s=args.wait if workers or args.workers is not None else 0.0,
    )
    state = report["state"]
    canary = state["canary"]
    print(
        f"{name} rollout #{state['seq']} ({action}) published: champion v{state['champion']}"
        + (f", canary v{canary['version']} {canary['percent']:g}%" if canary else "")
        + (f", shadow v{state['shadow']}" if state["shadow"] else "")
    )
    if report["gate"]:
        print(f"quality gate: {report['gate']}")
    for ack in report["acks"]:
        print(f"  {ack['worker']}: {ack['event']} {ack['after_s']}s after issue")
    if args.wait:
        print(f"{len(report['acks'])} worker(s) acknowledged within {report['waited_s']}s")
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
    p.add_argument(
        "--broker",
        choices=["kafka", "external"],
        help="kafka: the embedded Apache Kafka (default); external: STREAMSCORE_BOOTSTRAP_SERVERS",
    )
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
    p.add_argument(
        "--role",
        choices=["score", "feedback", "features"],
        default="score",
        help="score events (default), run the label join and online quality (feedback), or "
        "keep the streaming feature views up to date (features)",
    )
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
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the demo events (default: fresh each run, so repeated runs on the "
        "durable broker send new event ids)",
    )
    p.add_argument("--unknown-user-rate", type=float, default=0.0)
    p.add_argument(
        "--labels", action="store_true", help="also send the events' ground truth to labels"
    )
    p.add_argument(
        "--flip-labels",
        type=float,
        default=0.0,
        metavar="P",
        help="share of labels sent flipped (provokes a quality drop)",
    )
    p.add_argument(
        "--drift",
        action="append",
        default=[],
        metavar="FIELD=FACTOR",
        help="multiply a numeric event field, e.g. amount=3 (provokes drift); repeatable",
    )
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
    p.add_argument(
        "--since",
        help="only events from this time (RFC 3339, epoch ms, or an age: 15m, 2h, 1d)",
    )
    p.add_argument("--until", help="only events before this time (same forms as --since)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = common(
        sub.add_parser(
            "bench",
            help="ceiling, framework, naive, streamscore and quix on the same broker, same run",
        )
    )
    p.add_argument("--n", type=int, help="events of each saturated run (default 30000)")
    p.add_argument(
        "--subjects",
        default="",
        help="comma-separated subset of ceiling,framework,naive,streamscore,quix",
    )
    p.add_argument("--quick", action="store_true", help="small runs (CI's guard uses these)")
    p.add_argument(
        "--latency-rate",
        "--rate",
        type=float,
        help="events/s of the latency runs (default: half of each subject's maximum)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="also N streamscore workers on N partitions"
    )
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--worker-python",
        type=Path,
        help="python of another checkout's venv: bench that checkout's worker instead",
    )
    p.add_argument("--json", help="write the report to this path")
    p.set_defaults(func=cmd_bench)

    p = common(
        sub.add_parser(
            "train", help="point-in-time training set from Feast, train, register a candidate"
        )
    )
    p.add_argument("--online-store", choices=["sqlite", "redis"])
    p.add_argument("--name", default="fraud")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--max-iter", type=int, help="boosting iterations (default: the example's)")
    p.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="the registry and live rollout through control")
    msub = models.add_subparsers(dest="action", required=True)

    def model_cmd(action: str, help_text: str) -> argparse.ArgumentParser:
        mp = common(msub.add_parser(action, help=help_text))
        mp.add_argument("--model", help="model name (default: STREAMSCORE_MODEL_NAME)")
        mp.set_defaults(func=cmd_models)
        return mp

    mp = model_cmd("list", "versions, state, metrics and lineage")
    mp.add_argument("--json", action="store_true")
    mp = model_cmd("show", "the model card of one version")
    mp.add_argument("name_", metavar="NAME", nargs="?", help="model name")
    mp.add_argument("version")
    mp.set_defaults(func=_show_compat)
    mp = model_cmd("register", "register an ONNX file with its manifest JSON as a candidate")
    mp.add_argument("--onnx", required=True)
    mp.add_argument("--manifest", required=True)
    for action, help_text in (
        ("promote", "make VERSION the champion (quality gate first)"),
        ("canary", "route --percent of entities to VERSION"),
        ("shadow", "score every event with VERSION too, to predictions-shadow"),
        ("rollback", "back to the previous champion (stops canary and shadow)"),
        ("canary-off", "stop the canary"),
        ("shadow-off", "stop the shadow"),
    ):
        mp = model_cmd(action, help_text)
        if action in ("promote", "canary", "shadow"):
            mp.add_argument("version")
        if action == "canary":
            mp.add_argument("--percent", type=float, required=True)
        if action == "promote":
            mp.add_argument("--force", action="store_true", help="override the quality gate")
        mp.add_argument("--reason", help="why (required with --force; kept in the history)")
        mp.add_argument(
            "--wait", type=float, default=10.0, help="seconds to wait for workers' acks (0: no)"
        )
        mp.add_argument("--workers", type=int, help="return once this many workers applied it")
    return parser


def _show_compat(args: argparse.Namespace) -> int:
    """``models show NAME VERSION`` or ``models show VERSION`` (default model)."""
    if args.name_:
        args.model = args.name_
    return cmd_models(args)


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
