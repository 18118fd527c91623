"""``up`` / ``down`` / ``status`` run the local stack in the background; ``worker`` runs
one worker in the foreground (what a deployment runs); ``bootstrap`` prepares the
example's features and model (what docker-compose runs before the worker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

import click

from streams.cli.common import (
    EXIT_NOT_UP,
    EXIT_OK,
    StreamscoreCommand,
    build_settings,
    common_options,
    json_option,
    online_store_option,
)
from streams.settings import Settings

log = logging.getLogger("streamscore")


@click.command(cls=StreamscoreCommand)
@common_options
@click.option(
    "--broker",
    type=click.Choice(["kafka", "external"]),
    default=None,
    help="kafka: the embedded Apache Kafka (default); external: STREAMSCORE_BOOTSTRAP_SERVERS",
)
@online_store_option
@click.option("--workers", type=int, default=1, show_default=True, help="scoring workers")
@click.option(
    "--timeout",
    type=float,
    default=180.0,
    show_default=True,
    help="seconds to wait for workers to be ready",
)
@json_option
def up(workers: int, timeout: float, as_json: bool, **options: Any) -> int:
    """Start broker, online store and workers in the background."""
    from streams import stack

    settings = build_settings(follow_stack=False, **options)
    started = time.monotonic()
    from tqdm import tqdm

    # A bar over up's steps on a terminal (disable=None: off when stderr is not a TTY).
    with tqdm(total=len(stack.UP_STEPS), desc="up", unit="step", disable=None) as bar:

        def progress(step: str) -> None:
            if step != stack.UP_STEPS[0]:
                bar.update(1)
            bar.set_description(f"up: {step}")

        # Feast prints its materialization progress on stdout: stdout stays the result.
        with contextlib.redirect_stdout(sys.stderr):
            state = stack.up(settings, workers=workers, timeout_s=timeout, progress=progress)
        bar.update(1)
    if as_json:
        from dataclasses import asdict

        recorded = asdict(state) | {"took_s": round(time.monotonic() - started, 1)}
        recorded.pop("env", None)  # the settings: `streamscore settings --json`
        click.echo(json.dumps(recorded, indent=2))
        return EXIT_OK
    click.echo(
        f"streamscore is up in {time.monotonic() - started:.1f}s: broker {state.broker} at "
        f"{state.bootstrap_servers}, online store {state.online_store}, "
        f"workers {[w['pid'] for w in state.workers]}"
    )
    click.echo("next: streamscore produce --n 1000 && streamscore tail predictions --n 5")
    return EXIT_OK


@click.command(cls=StreamscoreCommand)
@common_options
@json_option
def down(as_json: bool, **options: Any) -> int:
    """Stop what up started."""
    from streams import stack

    stopped = stack.down(build_settings(**options))
    if as_json:
        click.echo(json.dumps({"stopped": stopped}))
        return EXIT_OK
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def status_report(settings: Settings) -> dict[str, Any]:
    """What runs, what the broker says, what is served: the data behind ``status``."""
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
            lag = asyncio.run(committed_lag(effective, settings.group_id, settings.topic("events")))
    except BrokerUnavailable:
        broker_up = False
    running = [w for w in (state.workers if state else []) if stack.worker_running(w)]
    # worker_pids and metrics_url(s) stay the scoring workers'; the feedback worker has its own
    workers = [w for w in running if w.get("role", "score") == "score"]
    feedback = [w for w in running if w.get("role") == "feedback"]
    feature_workers = [w for w in running if w.get("role") == "features"]
    dead = stack.dead_parts(settings, state)
    parts = stack_parts(settings, state, broker_up, bootstrap)
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
        # every part with its state: broker, online store, each worker's /ready
        "parts": parts,
        # From the broker: events not yet committed by the scoring group, per partition
        # (None: nothing committed yet).
        "events_lag": {str(p): n for p, n in lag.items()},
    }


def _online_store_state(settings: Settings, kind: str) -> tuple[str, str]:
    if kind == "redis":
        import redis

        from features.store import redis_client
        from streams.online_store import online_store_config

        online = online_store_config(settings.model_copy(update={"online_store": "redis"}))
        client = redis_client(online)
        try:
            client.ping()
            return "up", online.describe()
        except redis.RedisError as exc:
            return "down", f"{online.describe()}: {exc}"
        finally:
            client.close()
    path = settings.data_dir / "online_store.db"
    return ("up", str(path)) if path.exists() else ("down", f"{path} does not exist")


def stack_parts(
    settings: Settings, state: Any, broker_up: bool, bootstrap: str
) -> list[dict[str, Any]]:
    """Each part of the stack, up or not, and why: what ``status`` tabulates."""
    from streams import stack

    parts: list[dict[str, Any]] = []
    broker_pid = stack.LocalKafka(settings).pid() if (state and state.broker == "kafka") else None
    parts.append(
        {
            "part": f"broker ({state.broker if state else settings.broker})",
            "pid": broker_pid,
            "state": "up" if broker_up else "down",
            "detail": f"{bootstrap} {'answers' if broker_up else 'does not answer'}",
        }
    )
    kind = state.online_store if state else settings.online_store
    online_state, where = _online_store_state(settings, kind)
    parts.append(
        {"part": f"online store ({kind})", "pid": None, "state": online_state, "detail": where}
    )
    for worker in state.workers if state else []:
        role = worker.get("role", "score")
        name = "scoring worker" if role == "score" else f"{role} worker"
        if not stack.worker_running(worker):
            parts.append(
                {
                    "part": name,
                    "pid": worker["pid"],
                    "state": "down",
                    "detail": f"not running (log {worker.get('log')})",
                }
            )
            continue
        answer = stack.worker_readiness(settings, worker)
        if answer is None:
            row = {"state": "starting", "detail": "no answer on /ready yet"}
        elif answer.get("ready"):
            checks = answer.get("checks", {})
            row = {
                "state": "ready",
                "detail": "; ".join(f"{n}: {c['detail']}" for n, c in checks.items()),
            }
        else:
            failing = {n: c["detail"] for n, c in answer.get("checks", {}).items() if not c["ok"]}
            row = {
                "state": "not ready",
                "detail": "; ".join(f"{n}: {d}" for n, d in failing.items()),
            }
        parts.append({"part": name, "pid": worker["pid"]} | row)
    return parts


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


def render_status(report: dict[str, Any]) -> str:
    from tabulate import tabulate

    table = tabulate(
        [[p["part"], p["pid"] or "", p["state"], p["detail"]] for p in report["parts"]],
        headers=["part", "pid", "state", "detail"],
        tablefmt="simple",
        maxcolwidths=[None, None, None, 70],
    )
    lines = [f"stack:      {'up' if report['up'] else 'down'}", "", table, ""]
    if report["dead"]:
        lines.append(f"not running: {', '.join(report['dead'])} (`streamscore up` restarts them)")
    lines.append(f"metrics:    {report['metrics_url'] or '-'}")
    models = ", ".join(f"{m['name']} v{m['version']} ({m['variant']})" for m in report["models"])
    lines.append(f"models:     {models or 'none'}")
    lines.append("topics:     " + ", ".join(report["topics"]))
    lag = ", ".join(f"p{p} {'-' if n is None else n}" for p, n in report["events_lag"].items())
    lines.append(
        f"committed:  events lag {lag or '-'}"
        " (committed offsets of the scoring group, read from the broker)"
    )
    return "\n".join(lines)


@click.command(cls=StreamscoreCommand)
@common_options
@json_option
def status(as_json: bool, **options: Any) -> int:
    """Inspect the local stack (exit 3 when it is not up)."""
    report = status_report(build_settings(**options))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_status(report))
        figures = metrics_figures(report["metrics_url"])
        if figures:
            click.echo(figures)
    return EXIT_OK if report["up"] else EXIT_NOT_UP


@click.command(cls=StreamscoreCommand)
@common_options
@online_store_option
@click.option(
    "--role",
    type=click.Choice(["score", "feedback", "features"]),
    default="score",
    show_default=True,
    help="score events, run the label join and online quality (feedback), or keep the "
    "streaming feature views up to date (features)",
)
def worker(role: str, **options: Any) -> int:
    """Run one worker in the foreground."""
    settings = build_settings(**options)
    if role == "feedback":
        from streams.monitoring.runner import run_feedback_worker

        run_feedback_worker(settings)
        return EXIT_OK
    if role == "features":
        from streams.features_worker import run_features_worker

        run_features_worker(settings)
        return EXIT_OK
    from streams.worker import run_worker

    run_worker(settings)
    return EXIT_OK


@click.command(cls=StreamscoreCommand)
@common_options
@online_store_option
def bootstrap(**options: Any) -> int:
    """Apply the feature repo, materialize, train if the registry is empty."""
    from streams import stack

    logging.getLogger().setLevel(logging.INFO)
    stack.bootstrap(build_settings(**options))
    return EXIT_OK
