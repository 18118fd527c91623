"""``up`` / ``down`` / ``status`` run the local stack in the background; ``worker`` runs
one worker in the foreground (what a deployment runs); ``bootstrap`` prepares the
example's features and model (what docker-compose runs before the worker)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import click

from streams.cli.common import (
    EXIT_NOT_UP,
    EXIT_OK,
    StreamscoreCommand,
    build_settings,
    common_options,
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
def up(workers: int, timeout: float, **options: Any) -> int:
    """Start broker, online store and workers in the background."""
    from streams import stack

    settings = build_settings(follow_stack=False, **options)
    started = time.monotonic()
    state = stack.up(settings, workers=workers, timeout_s=timeout)
    click.echo(
        f"streamscore is up in {time.monotonic() - started:.1f}s: broker {state.broker} at "
        f"{state.bootstrap_servers}, online store {state.online_store}, "
        f"workers {[w['pid'] for w in state.workers]}"
    )
    click.echo("next: streamscore produce --n 1000 && streamscore tail predictions --n 5")
    return EXIT_OK


@click.command(cls=StreamscoreCommand)
@common_options
def down(**options: Any) -> int:
    """Stop what up started."""
    from streams import stack

    stopped = stack.down(build_settings(**options))
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
    lines = [
        f"stack:      {'up' if report['up'] else 'down'}",
        f"broker:     {report['broker']} at {report['bootstrap_servers']} "
        f"({'reachable' if report['broker_reachable'] else 'unreachable'})",
        f"online:     {report['online_store']}",
        f"workers:    {report['worker_pids'] or 'none'}",
        f"feedback:   {report['feedback_worker_pids'] or 'none'}",
        f"features:   {report.get('features_worker_pids') or 'none'}",
    ]
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
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
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
