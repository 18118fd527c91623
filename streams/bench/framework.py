"""Bench subject ``framework``: the least a Faust app on this broker can do.

In: ``<prefix>events``. Out: each record's key and value unchanged to
``<prefix>predictions``. A Faust agent takes micro-batches (``take_events``, the
scoring worker's default batch size and wait, not the environment's, so that tuning the
worker, or slowing it on purpose, does not move its baseline) and produces each batch
with one gathered send, acked before the batch's offsets are: the scoring worker's shape
without the scoring.
The app is built like the scoring worker's (:func:`streams.faust_app.make_app`), so the
two differ only by the work done per batch. Settings from ``STREAMSCORE_*`` env.
Run by the bench as ``python -m streams.bench.framework``.
"""

from __future__ import annotations

import asyncio
from typing import cast

import faust
from faust.streams import Stream
from faust.types import StreamT

from streams.faust_app import make_app, raw_topic
from streams.settings import Settings


def build_forwarder(settings: Settings) -> faust.App:
    app = make_app(settings, settings.group_id)
    events = raw_topic(app, settings.topic("events"), settings.partitions)
    out = raw_topic(app, settings.topic("predictions"), settings.partitions)

    batch_max = Settings.model_fields["batch_max"].default
    batch_wait_s = Settings.model_fields["batch_wait_s"].default

    @app.agent(events, name="forward")
    async def forward(stream: StreamT) -> None:
        async for batch in cast(Stream, stream).take_events(batch_max, within=batch_wait_s):
            futures = [
                await out.send(key=e.message.key, value=e.message.value, force=True) for e in batch
            ]
            await asyncio.gather(*futures)

    return app


if __name__ == "__main__":
    settings = Settings()
    faust.Worker(build_forwarder(settings), loglevel="warning").execute_from_commandline()
