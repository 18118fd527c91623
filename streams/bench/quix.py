"""Bench subject ``quix``: the same per-event work as ``naive``, as a Quix Streams app.

In: ``<prefix>events`` (Quix's JSON deserializer). Out: one prediction per event to
``<prefix>predictions`` (Quix's JSON serializer). Per event: Feast
``get_online_features`` and one ONNX Runtime run (:class:`PerEventScorer`), then
publish; Quix's defaults otherwise (at-least-once, its own commit interval). Quix
stamps an output with its input's timestamp, so the app sets the output timestamp to
the publish time: the bench measures latency from record timestamps.

Quix Streams 3.28 needs pydantic < 2.14 and streamscore is locked to 2.14, so this runs
in its own environment, ``.venv/quix`` (``make bench-env``, pinned in
``requirements-bench.lock``), with the repository on ``PYTHONPATH``; it imports no
Faust. Run by the bench as ``.venv/quix/bin/python -m streams.bench.quix``.
"""

from __future__ import annotations

import time
from typing import Any

from quixstreams import Application

from streams.bench.per_event import PerEventScorer
from streams.settings import Settings


def _now_ms(value: Any, key: Any, timestamp: int, headers: Any) -> int:
    return int(time.time() * 1000)


def build_quix(settings: Settings) -> Application:
    scorer = PerEventScorer(settings)
    app = Application(
        broker_address=settings.bootstrap_servers,
        consumer_group=settings.group_id,
        auto_offset_reset="earliest",
        loglevel="WARNING",
    )
    events = app.topic(
        settings.topic("events"), key_deserializer="bytes", value_deserializer="json"
    )
    out = app.topic(settings.topic("predictions"), key_serializer="bytes", value_serializer="json")
    sdf = app.dataframe(events)
    sdf = sdf.apply(scorer.score).set_timestamp(_now_ms)
    sdf.to_topic(out)
    return app


if __name__ == "__main__":
    build_quix(Settings()).run()
