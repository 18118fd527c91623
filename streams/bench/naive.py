"""Bench subject ``naive``: the per-event Faust app a user writes first.

In: ``<prefix>events``. Out: one prediction per event to ``<prefix>predictions``. For
each event the agent decodes it, calls Feast ``get_online_features`` for that one
entity and ONNX Runtime for that one row (:class:`PerEventScorer`, blocking, on the
event loop, as such an app does), and sends the prediction. Settings from
``STREAMSCORE_*`` env. Run by the bench as ``python -m streams.bench.naive``.
"""

from __future__ import annotations

import faust
from faust.types import StreamT

from streams.bench.per_event import PerEventScorer
from streams.codec import decode, encode
from streams.faust_app import make_app, raw_topic
from streams.settings import Settings


def build_naive(settings: Settings) -> faust.App:
    scorer = PerEventScorer(settings)
    app = make_app(settings, settings.group_id)
    events = raw_topic(app, settings.topic("events"), settings.partitions)
    out = raw_topic(app, settings.topic("predictions"), settings.partitions)

    @app.agent(events, name="score")
    async def score(stream: StreamT) -> None:
        async for event in stream.events():
            prediction = scorer.score(decode(event.message.value))
            await out.send(key=event.message.key, value=encode(prediction))

    return app


if __name__ == "__main__":
    settings = Settings()
    faust.Worker(build_naive(settings), loglevel="warning").execute_from_commandline()
