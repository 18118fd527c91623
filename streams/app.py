"""The Faust app: topics and the scoring agent.

In: raw records of the ``events`` topic. Out: prediction records to ``predictions``,
shadow predictions to ``predictions-shadow``, dead letters to ``deadletter``, the
served-feature log to ``features-served`` (when enabled) and drift signals of the
pipeline's monitor to ``signals``. The same app runs the feedback loop
(:func:`streams.monitoring.feedback.register_feedback`: label join, online quality) and
the consumer-lag gauge. Rollout
commands from ``control`` reach the pipeline through :class:`ControlFollower`, a task
beside the agent. The agent is a thin loop: it takes micro-batches of
events, hands them to :class:`streams.pipeline.ScoringPipeline`, publishes the results
and waits for the broker to acknowledge every one of them before the batch's offsets
are acked (``take_events`` acks after the loop body), so an offset is committed only
once its outcome is durable: at-least-once.

Run it with ``streamscore worker``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT, TopicT

from streams import metrics
from streams.control import ControlFollower
from streams.faust_app import make_app, mark_ready_on_rebalance, raw_topic
from streams.monitoring.feedback import register_feedback, send_signals
from streams.monitoring.monitor import register_lag_monitor
from streams.pipeline import Inbound, Outbound, ScoringPipeline
from streams.settings import Settings

log = logging.getLogger(__name__)


def to_inbound(event: EventT) -> Inbound:
    message = event.message
    timestamp_ms = message.timestamp * 1000 if message.timestamp is not None else None
    return Inbound(
        key=message.key,
        value=message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=timestamp_ms,
    )


async def publish(
    outbound: Sequence[Outbound], topics: dict[str, TopicT], retry_max_s: float
) -> None:
    """Publish every record and return only when the broker acknowledged all of them.

    A failed record is sent again with back-off, forever: giving up would mean acking
    an event that has no outcome. While the broker is away the partition stalls, which
    is the honest behaviour for at-least-once.
    """
    pending = list(outbound)
    delay = 0.1
    while pending:
        futures = [
            await topics[o.destination].send(
                key=o.key, value=o.value, headers=o.headers, force=True
            )
            for o in pending
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [o for o, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            metrics.PUBLISH_RETRIES.inc(len(failed))
            first = next(r for r in results if isinstance(r, BaseException))
            log.warning(
                "publish of %d records failed (%r); retrying in %.1fs", len(failed), first, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max_s)
        pending = failed


def build_app(
    settings: Settings,
    pipeline: ScoringPipeline,
    ready_file: Path | None = None,
    control: ControlFollower | None = None,
) -> faust.App:
    """The Faust app with its topics and the scoring agent, ready for a Worker."""
    app = make_app(settings, settings.consumer_group)
    events = raw_topic(app, settings.topic("events"), settings.partitions)
    outputs = {
        "predictions": raw_topic(app, settings.topic("predictions"), settings.partitions),
        "deadletter": raw_topic(app, settings.topic("deadletter"), settings.partitions),
        "predictions-shadow": raw_topic(
            app, settings.topic("predictions-shadow"), settings.partitions
        ),
    }
    if settings.served_features_log:
        outputs["features-served"] = raw_topic(
            app, settings.topic("features_served"), settings.partitions
        )
    feedback = register_feedback(app, settings)
    register_lag_monitor(app)

    if control is not None:
        # A plain task, not an agent: every worker must read every control record, and an
        # agent would share the topic's partition within the consumer group.
        @app.task
        async def follow_control() -> None:
            try:
                await control.follow()
            finally:
                await control.stop()

    @app.agent(events, name="score")
    async def score(stream: StreamT) -> None:
        async for batch in cast(Stream, stream).take_events(
            settings.batch_max, within=settings.batch_wait_s
        ):
            metrics.EVENTS_CONSUMED.inc(len(batch))
            metrics.BATCH_SIZE.observe(len(batch))
            outbound = await pipeline.process([to_inbound(e) for e in batch])
            started = time.perf_counter()
            await publish(outbound, outputs, settings.publish_retry_max_s)
            metrics.STAGE_SECONDS.labels("publish").observe(time.perf_counter() - started)
            # After the batch's outcomes: a signal is informative, it never holds up offsets.
            signals = pipeline.drain_signals()
            try:
                await send_signals(feedback.signals_topic, signals)
            except Exception as exc:  # the broker is away: the outcomes above are durable
                log.warning("could not publish %d signals: %r", len(signals), exc)

    mark_ready_on_rebalance(app, ready_file)

    return app
