"""The feedback worker: the label join and online quality, in a process of its own.

In: :class:`Settings`. Out: the agents of
:func:`streams.monitoring.feedback.register_feedback` in a Faust worker of its own
(consumer group ``<topic_prefix><consumer_group>-feedback``, so it scales apart from scoring and the
scoring worker carries no join), the consumer-lag gauge, metrics on ``metrics_port``,
and a ready file under ``<home>/run`` once the group is joined (the same file name as a
scoring worker's, so ``streamscore up`` waits for either the same way).

    streamscore worker --role feedback
"""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from streams.faust_app import make_app, mark_ready_on_rebalance, run_worker_app, worker_start
from streams.health import Health
from streams.kafka import ensure_topics, wait_for_broker
from streams.monitoring.feedback import register_feedback
from streams.monitoring.monitor import register_lag_monitor
from streams.settings import Settings

log = logging.getLogger(__name__)


def build_feedback_app(
    settings: Settings, ready: Path | None = None, health: Health | None = None
) -> faust.App:
    from streams.pii import PiiPolicy

    # Slice values become metric labels and signal keys here: none may be personal data.
    PiiPolicy.from_settings(settings)
    app = make_app(settings, f"{settings.group_id}-feedback")
    register_feedback(app, settings)
    register_lag_monitor(app)

    mark_ready_on_rebalance(app, ready, health)

    return app


def run_feedback_worker(settings: Settings) -> None:
    """Wait for the broker and the topics, then hand the loop to Faust until stopped."""
    loop, ready = worker_start(settings)
    loop.run_until_complete(wait_for_broker(settings, timeout_s=30))
    loop.run_until_complete(ensure_topics(settings))
    health = Health("feedback")  # ready: partitions assigned, recovery over
    app = build_feedback_app(settings, ready, health)
    run_worker_app(settings, app, loop, health, ready)


def main() -> None:
    run_feedback_worker(Settings())


if __name__ == "__main__":
    main()
