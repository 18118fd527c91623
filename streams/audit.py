"""Reconcile what went in with what came out: events versus predictions plus dead letters.

With a time range (``--since``/``--until``), only the events whose Kafka timestamp falls
in it are reconciled, and only outputs written since its start are read: an operator
audits the last hour without reading the whole history.

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
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

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
    only_these_events: bool = False,
) -> AuditReport:
    """Match every event to an outcome; pure, so tests feed it lists.

    ``only_these_events``: the events are a range, so outputs of events outside it
    (read because they were written in the same period) are not counted.
    """
    event_list = list(events)
    ids = {_event_id(e.value) for e in event_list} if only_these_events else None
    positions = {(e.partition, e.offset) for e in event_list} if only_these_events else None
    predicted = Counter(_event_id(p.value) for p in predictions)
    predicted.pop(None, None)
    if ids is not None:
        predicted = Counter({i: n for i, n in predicted.items() if i in ids})
    dead_at: set[tuple[int, int]] = set()
    stages: Counter[str] = Counter()
    dead_count = 0
    for d in deadletters:
        headers = {k: v.decode(errors="replace") for k, v in d.headers}
        try:
            position = (int(headers["source.partition"]), int(headers["source.offset"]))
        except (KeyError, ValueError):
            position = None
        if positions is not None and position not in positions:
            continue
        dead_count += 1
        stages[headers.get("error.stage", "?")] += 1
        if position is not None:
            dead_at.add(position)
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


def parse_time(text: str, now: datetime | None = None) -> int:
    """Epoch milliseconds of ``text``: RFC 3339, epoch ms, or an age like ``90s``, ``15m``,
    ``2h``, ``1d`` (that long before now)."""
    now = now or datetime.now(UTC)
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:])
    try:
        if unit is not None and text[:-1].replace(".", "", 1).isdigit():
            return int((now - timedelta(seconds=float(text[:-1]) * unit)).timestamp() * 1000)
        if text.isdigit():
            return int(text)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(
            f"{text!r} is not a time: use RFC 3339 with an offset (2026-11-21T10:00:00Z), "
            f"epoch milliseconds, or an age such as 15m, 2h, 1d"
        )
    return int(parsed.timestamp() * 1000)


async def read_topic(
    settings: Settings,
    topic: str,
    idle_s: float,
    deadline_s: float = 600,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[TopicRecord]:
    """The records of ``topic`` (from ``since_ms`` by timestamp, else from the beginning;
    before ``until_ms`` if given) until nothing new came for ``idle_s``."""
    consumer = reader(settings, topic)
    await consumer.start()
    out: list[TopicRecord] = []
    try:
        if since_ms is not None:
            await _seek_to_time(consumer, since_ms)
        last = start = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - start < deadline_s:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if until_ms is not None and r.timestamp >= until_ms:
                        continue
                    out.append(
                        TopicRecord(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                    )
                last = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def _seek_to_time(consumer: AIOKafkaConsumer, since_ms: int) -> None:
    """Each partition to its first record at or after ``since_ms`` (the end if none)."""
    # start() waited for the topic's metadata, and a group-less consumer then holds
    # every partition of it.
    partitions = list(consumer.assignment())
    found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    for tp in partitions:
        if found.get(tp) is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, found[tp].offset)


async def audit(
    settings: Settings,
    idle_s: float = 5.0,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> AuditReport:
    """Reconcile the events in a time range (all of them by default) with their outcomes."""
    events, predictions, deadletters = await asyncio.gather(
        read_topic(
            settings, settings.topic("events"), idle_s, since_ms=since_ms, until_ms=until_ms
        ),
        read_topic(settings, settings.topic("predictions"), idle_s, since_ms=since_ms),
        read_topic(settings, settings.topic("deadletter"), idle_s, since_ms=since_ms),
    )
    ranged = since_ms is not None or until_ms is not None
    return reconcile(events, predictions, deadletters, only_these_events=ranged)
