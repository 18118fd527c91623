"""Hostile input on Apache Kafka: an event near the broker's limit among normal ones.

The broker accepts records up to ~1 MB (Kafka's default ``message.max.bytes``); the
worker dead-letters events over ``STREAMSCORE_MAX_EVENT_BYTES`` (64 KiB). The dead
letter must fit what the worker's producer can send, so its value is cut at
``STREAMSCORE_DEADLETTER_MAX_VALUE_BYTES`` and its headers say so. Reconciled with the
same code as `streamscore audit`: every id ends as a prediction or a dead letter, the
worker still runs, and the group's committed offsets reach the end of every partition.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import pytest

from features.fraud_data import demo_events, load_entities
from streams import stack
from streams.audit import read_topic, reconcile
from streams.cli.produce import produce_records
from streams.codec import decode, encode
from streams.settings import Settings
from tests.integration.test_scoring_kafka import collect, committed_lag

pytestmark = pytest.mark.integration

#: Just under a megabyte: what the broker and the producer's default request size accept.
NEAR_BROKER_LIMIT = 1_000_000


async def test_an_event_near_the_broker_limit_is_a_truncated_dead_letter_and_nothing_sticks(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
) -> None:
    settings = settings_factory()
    state = worker_factory(settings)

    users, merchants = load_entities(settings.data_dir)
    good = demo_events(120, seed=11, users=users, merchants=merchants)
    big_event = dict(good[0], event_id="huge-1")
    big_event["padding"] = ""
    padding = NEAR_BROKER_LIMIT - len(encode(big_event))
    big_event["padding"] = "p" * padding
    big = encode(big_event)
    assert len(big) == NEAR_BROKER_LIMIT > settings.max_event_bytes
    records = [(e["user_id"].encode(), encode(e)) for e in good[1:60]]
    records.append((big_event["user_id"].encode(), big))
    records += [(e["user_id"].encode(), encode(e)) for e in good[60:]]
    await produce_records(settings, records, rate=None)

    predictions, dead = await collect(settings, expected=len(records), timeout_s=60)
    events = await read_topic(settings, settings.topic("events"), idle_s=1)
    report = reconcile(events, predictions, dead)
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    assert report.duplicate_ids == []
    assert (report.predictions, report.deadletters) == (len(records) - 1, 1)
    assert {decode(p.value or b"{}")["event_id"] for p in predictions} == {
        e["event_id"] for e in good[1:]
    }

    (letter,) = dead
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["error.class"] == "OversizedEvent"
    assert headers["original.truncated"] == "true"
    assert headers["original.size"] == str(len(big))
    assert headers["original.sha256"] == hashlib.sha256(big).hexdigest()
    assert letter.value == big[: settings.deadletter_max_value_bytes]
    assert letter.key == big_event["user_id"].encode()

    # No stuck partition: every partition's committed offset reaches its end.
    deadline = time.monotonic() + 20
    while (lag := await committed_lag(settings)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    assert lag == 0
    assert all(stack.worker_running(w) for w in state.workers), "the worker died"
