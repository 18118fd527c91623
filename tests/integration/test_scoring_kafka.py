"""The walking skeleton on Apache Kafka and Redis: N events in, exactly N outcomes out.

A real `streamscore worker` process consumes the events topic; valid events come back
as predictions carrying their event ids, bad ones as dead letters whose headers say
why. Counts are reconciled with the same code as `streamscore audit`, and the
consumer group's committed offsets must reach the end of the topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from features.fraud_data import demo_events, load_entities
from streams import stack
from streams.audit import TopicRecord, read_topic, reconcile
from streams.cli.produce import produce_records
from streams.codec import decode, encode
from streams.kafka import client_kwargs, reader
from streams.settings import Settings

pytestmark = pytest.mark.integration

DEAD_LETTER_HEADERS = {
    "error.class",
    "error.message",
    "error.stage",
    "source.topic",
    "source.partition",
    "source.offset",
}


async def collect(
    settings: Settings, expected: int, timeout_s: float = 90
) -> tuple[list[TopicRecord], list[TopicRecord]]:
    """Read predictions and dead letters until ``expected`` outcomes arrived (or time runs out)."""
    consumer = reader(settings, settings.topic("predictions"), settings.topic("deadletter"))
    await consumer.start()
    predictions: list[TopicRecord] = []
    dead: list[TopicRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(predictions) + len(dead) < expected and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                target = dead if tp.topic == settings.topic("deadletter") else predictions
                target.extend(
                    TopicRecord(r.partition, r.offset, r.key, r.value, tuple(r.headers))
                    for r in records
                )
        # Anything beyond the expected count would be a duplicate: give it a moment to show.
        for tp, records in (await consumer.getmany(timeout_ms=2000)).items():
            target = dead if tp.topic == settings.topic("deadletter") else predictions
            target.extend(
                TopicRecord(r.partition, r.offset, r.key, r.value, tuple(r.headers))
                for r in records
            )
    finally:
        await consumer.stop()
    return predictions, dead


async def committed_lag(settings: Settings) -> int:
    """Sum over partitions of (end offset - committed offset) of the worker's group."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    consumer = reader(settings)
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.group_id)
        tps = [TopicPartition(settings.topic("events"), p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def test_every_event_is_predicted_or_dead_lettered(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    root: Path,
) -> None:
    settings = settings_factory()
    worker_factory(settings)

    users, merchants = load_entities(settings.data_dir)
    good = demo_events(400, seed=3, users=users, merchants=merchants, unknown_user_rate=0.05)
    bad_lines = (root / "deploy" / "demo" / "bad-events.jsonl").read_bytes().splitlines()
    records = [(e["user_id"].encode(), encode(e)) for e in good] + [
        (None, line) for line in bad_lines
    ]
    records.append((b"u1", b"x" * (settings.max_event_bytes + 1)))  # oversized
    await produce_records(settings, records, rate=None)

    predictions, dead = await collect(settings, expected=len(records))
    events = await read_topic(settings, settings.topic("events"), idle_s=1)
    report = reconcile(events, predictions, dead)

    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    assert report.duplicate_ids == []
    assert len(predictions) + len(dead) == len(records)

    predicted = {decode(p.value)["event_id"]: decode(p.value) for p in predictions}
    # The demo file holds 2 valid events (an unknown user, the first of a duplicate pair).
    assert set(predicted) == {e["event_id"] for e in good} | {"unknown-user-7", "dup-8"}
    for record in predicted.values():
        assert record["model"] == "fraud" and record["variant"] == "champion"
        assert 0.0 <= record["score"] <= 1.0
        assert record["decision"] in {"approve", "review", "decline"}
        assert record["latency_ms"] is not None and record["latency_ms"] >= 0
    assert predicted["unknown-user-7"]["features_missing"], "unknown entity must list its defaults"
    known = [e for e in good if e["user_id"] in set(users)]
    assert any(not predicted[e["event_id"]]["features_missing"] for e in known)

    stages = {}
    for d in dead:
        headers = {k: v.decode() for k, v in d.headers}
        assert DEAD_LETTER_HEADERS <= set(headers)
        assert headers["source.topic"] == settings.topic("events")
        stages[headers["error.class"]] = headers["error.stage"]
    assert len(dead) == 8
    assert stages == {
        "DecodeError": "decode",
        "OversizedEvent": "decode",
        "ContractViolation": "validate",
        "DuplicateEvent": "validate",
    }
    messages = sorted({k: v.decode() for k, v in d.headers}["error.message"] for d in dead)
    assert any(m.startswith("country: required field is missing") for m in messages)
    assert any(m.startswith("amount:") for m in messages)
    assert any(m.startswith("event_time:") for m in messages)
    # The dead letter is the original bytes, unchanged.
    assert {d.value for d in dead} >= set(bad_lines[:2])

    # At-least-once: offsets get committed once outcomes are durable.
    deadline = time.monotonic() + 20
    while (lag := await committed_lag(settings)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    assert lag == 0
