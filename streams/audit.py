"""Reconcile what went in with what came out: events versus predictions plus dead letters.

In: the records of the ``events``, ``predictions`` and ``deadletter`` topics (read from
the beginning until the topics go quiet). Out: an :class:`AuditReport` with the counts,
the events that have no outcome (missing) and the event ids with more than one
prediction (duplicates, which at-least-once allows after a crash but which should be
rare). An event is accounted for when a dead letter names its partition and offset, or
when a prediction carries its ``event_id``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.codec import decode
from streams.kafka import reader
from streams.settings import Settings


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class AuditReport:
    events: int
    predictions: int
    deadletters: int
    missing: list[dict[str, Any]] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    deadletters_by_stage: dict[str, int] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "predictions": self.predictions,
            "deadletters": self.deadletters,
            "deadletters_by_stage": self.deadletters_by_stage,
            "missing": len(self.missing),
            "missing_sample": self.missing[:10],
            "duplicate_predictions": len(self.duplicate_ids),
            "duplicate_sample": self.duplicate_ids[:10],
            "reconciled": self.reconciled,
        }


def _event_id(value: bytes | None) -> str | None:
    try:
        obj = decode(value) if value is not None else None
    except ValueError:
        return None
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) else None


def reconcile(
    events: Iterable[TopicRecord],
    predictions: Iterable[TopicRecord],
    deadletters: Iterable[TopicRecord],
) -> AuditReport:
    """Match every event to an outcome; pure, so tests feed it lists."""
    event_list = list(events)
    predicted = Counter(_event_id(p.value) for p in predictions)
    predicted.pop(None, None)
    dead_at: set[tuple[int, int]] = set()
    stages: Counter[str] = Counter()
    dead_count = 0
    for d in deadletters:
        headers = {k: v.decode(errors="replace") for k, v in d.headers}
        dead_count += 1
        stages[headers.get("error.stage", "?")] += 1
        try:
            dead_at.add((int(headers["source.partition"]), int(headers["source.offset"])))
        except (KeyError, ValueError):
            continue
    missing = []
    for e in event_list:
        if (e.partition, e.offset) in dead_at:
            continue
        event_id = _event_id(e.value)
        if event_id is None or event_id not in predicted:
            missing.append({"partition": e.partition, "offset": e.offset, "event_id": event_id})
    return AuditReport(
        events=len(event_list),
        predictions=sum(predicted.values()),
        deadletters=dead_count,
        missing=missing,
        duplicate_ids=sorted(i for i, n in predicted.items() if n > 1 and i is not None),
        deadletters_by_stage=dict(stages),
    )


async def read_topic(
    settings: Settings, topic: str, idle_s: float, deadline_s: float = 600
) -> list[TopicRecord]:
    """Every record of ``topic`` from the beginning, until nothing new came for ``idle_s``."""
    consumer = reader(settings, topic)
    await consumer.start()
    out: list[TopicRecord] = []
    try:
        last = start = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < deadline_s:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    out.append(
                        TopicRecord(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                    )
                last = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def audit(settings: Settings, idle_s: float = 5.0) -> AuditReport:
    events, predictions, deadletters = await asyncio.gather(
        read_topic(settings, settings.topic("events"), idle_s),
        read_topic(settings, settings.topic("predictions"), idle_s),
        read_topic(settings, settings.topic("deadletter"), idle_s),
    )
    return reconcile(events, predictions, deadletters)
