"""The Faust app of the scoring worker: topics and the scoring agent, nothing else.

In: raw records of the ``events`` topic. Out: prediction records to ``predictions``,
shadow predictions to ``predictions-shadow``, dead letters to ``deadletter``, the
served-feature log to ``features-served`` (when enabled) and drift signals of the
pipeline's monitor to ``signals``. The label join and online quality run in the
feedback worker (:mod:`streams.monitoring.runner`, ``streamscore worker --role
feedback``), so this worker carries no join, no changelog table and no second read of
``events``. Rollout commands from ``control`` reach the pipeline through
:class:`ControlFollower`, a task beside the agent.

The agent is a thin loop: it takes micro-batches with ``noack_take`` (Faust's manual-ack
take: ``take_events`` acks a batch in a ``finally``, even when the body raised or was
cancelled), hands them to :class:`streams.pipeline.ScoringPipeline`, and submits the
outcomes to a :class:`streams.publish.PublishWindow`, which acks the batch's events only
once the broker acknowledged all of its outcomes, in order, while the next batches are
already being scored: at-least-once, without waiting for the broker between batches.

Run it with ``streamscore worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT

from streams import metrics
from streams.control import ControlFollower
from streams.errors import PipelineError
from streams.faust_app import make_app, mark_ready_on_rebalance, raw_topic
from streams.feature_updates import FeatureUpdatesFollower
from streams.health import Health
from streams.monitoring.monitor import register_lag_monitor
from streams.monitoring.signals import encode_signal
from streams.pipeline import Inbound, Outbound, ScoringPipeline
from streams.publish import PublishWindow, faust_send, faust_send_many, send_best_effort
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How long a stopping worker waits for its in-flight batches to be acknowledged.
DRAIN_TIMEOUT_S = 10.0


class UnexpectedError(PipelineError):
    """The pipeline raised where it should have routed: a bug, dead-lettered per batch so
    the partition keeps moving and the reason is on the record."""

    stage = "score"


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


async def score_batch(pipeline: ScoringPipeline, batch: Sequence[Inbound]) -> list[Outbound]:
    """The pipeline's outcomes; if it raised anyway, a dead letter per event (logged once)."""
    try:
        return await pipeline.process(batch)
    except Exception as exc:
        log.exception("the pipeline raised on a batch of %d; dead-lettering it", len(batch))
        # The class only: an exception's text may quote event values (personal data);
        # the log above keeps the details for the operator.
        error = UnexpectedError(type(exc).__name__)
        metrics.DEADLETTERS.labels(error.stage).inc(len(batch))
        return [pipeline.dead_letter(record, error) for record in batch]


def build_app(
    settings: Settings,
    pipeline: ScoringPipeline,
    ready_file: Path | None = None,
    control: ControlFollower | None = None,
    feature_updates: FeatureUpdatesFollower | None = None,
    health: Health | None = None,
) -> faust.App:
    """The Faust app with its topics and the scoring agent, ready for a Worker."""
    app = make_app(settings, settings.group_id)
    events = raw_topic(app, settings.topic("events"), settings.partitions)
    destinations = {
        "predictions": settings.topic("predictions"),
        "deadletter": settings.topic("deadletter"),
        "predictions-shadow": settings.topic("predictions_shadow"),
        "features-served": settings.topic("features_served"),
    }
    signals_topic = settings.topic("signals")
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

    if feature_updates is not None:
        # A task for the same reason: every worker's cache needs every invalidation.
        @app.task
        async def follow_feature_updates() -> None:
            try:
                await feature_updates.follow()
            finally:
                await feature_updates.stop()

    @app.agent(events, name="score")
    async def score(stream: StreamT) -> None:
        source = cast(Stream, stream)
        # Everything alive now (Faust, Feast, ONNX Runtime, the model: about 220,000
        # objects) lives as long as the worker: keep it out of the collector's full
        # passes. Measured in the worker at 1,500 events/s: full collections took 97-321 ms
        # each, every 3-5 s, stalling the loop (a p99 of their own); after the freeze
        # 2-22 ms.
        gc.freeze()
        send = faust_send(app.producer)
        window = PublishWindow(
            None,
            destinations,
            settings.publish_max_in_flight,
            settings.publish_retry_max_s,
            send_many=faust_send_many(app.producer),
        )
        settling = asyncio.create_task(window.run())

        def acker(batch: Sequence[EventT]) -> Callable[[], Awaitable[None]]:
            async def ack() -> None:
                for event in batch:
                    await source.ack(event)

            return ack

        try:
            async for taken in source.noack_take(settings.batch_max, within=settings.batch_wait_s):
                batch = cast(Sequence[EventT], taken)  # noack_take yields the events themselves
                metrics.EVENTS_CONSUMED.inc(len(batch))
                metrics.BATCH_SIZE.observe(len(batch))
                outbound = await score_batch(pipeline, [to_inbound(e) for e in batch])
                await window.submit(outbound, acker(batch))
                # Informative: never held up by, nor holding up, the batch's offsets.
                signals = pipeline.drain_signals()
                if signals:
                    await send_best_effort(send, signals_topic, [encode_signal(s) for s in signals])
        finally:
            # Stopping: let what is in flight settle so its offsets can be committed; what
            # does not settle in time is simply scored again after the restart.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(window.drain()), DRAIN_TIMEOUT_S)
            settling.cancel()

    # No hook on revocation: Faust waits for every consumed event to be acked before it
    # commits and hands partitions over (App._consumer_wait_empty); the window settles
    # them meanwhile.
    mark_ready_on_rebalance(app, ready_file, health)

    return app
