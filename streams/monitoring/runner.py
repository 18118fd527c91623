"""A worker that runs only the feedback loop (label join, online quality, consumer lag).

In: :class:`Settings` from ``STREAMSCORE_*``. Out: the agents of
:func:`streams.monitoring.feedback.register_feedback` in a Faust worker of its own
(consumer group ``<consumer_group>-feedback``), metrics on ``metrics_port``, and a
ready file under ``<home>/run`` once the group is joined. Useful to run the feedback
loop apart from scoring, and what the integration tests restart.

    python -m streams.monitoring.runner
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import faust

from streams import metrics
from streams.faust_app import make_app, mark_ready_on_rebalance
from streams.kafka import ensure_topics, wait_for_broker
from streams.monitoring.feedback import register_feedback
from streams.monitoring.monitor import register_lag_monitor
from streams.settings import Settings

log = logging.getLogger(__name__)


def ready_file(settings: Settings, pid: int | None = None) -> Path:
    return settings.home / "run" / f"feedback-{pid or os.getpid()}.ready"


def build_feedback_app(settings: Settings, ready: Path | None = None) -> faust.App:
    app = make_app(settings, f"{settings.consumer_group}-feedback")
    register_feedback(app, settings)
    register_lag_monitor(app)

    mark_ready_on_rebalance(app, ready)

    return app


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(wait_for_broker(settings, timeout_s=30))
    loop.run_until_complete(ensure_topics(settings))
    ready = ready_file(settings)
    ready.unlink(missing_ok=True)
    app = build_feedback_app(settings, ready)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        ready.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
