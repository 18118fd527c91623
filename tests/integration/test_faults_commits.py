"""Commits never stick where the committed offset is not a readable record.

Two ways a partition's committed offset points at no record a consumer ever sees:

- a **transaction marker**: after a transactional producer's last record, the offset
  one past it is the commit marker, and the worker commits it (the next offset to read);
- **retention or ``DeleteRecords``** truncated the log past the committed offset, so the
  restarted worker's fetch resets to the log start.

Before the fix in :mod:`streams.faust_fixes`, a restarted worker scored everything but
never committed again on such a partition (its first acked offset was ahead of the
committed one and the commit rule waited for offsets that do not exist): lag grew and
every restart replayed. This runs the patched Faust path against Apache Kafka.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from features.fraud_data import demo_events, load_entities
from streams import stack
from streams.audit import read_topic, reconcile
from streams.codec import encode
from streams.kafka import client_kwargs, committed_lag, ensure_topics, send_records
from streams.settings import Settings
from tests.integration.test_scoring_kafka import collect

pytestmark = pytest.mark.integration


async def produce_in_transactions(
    settings: Settings, records: list[tuple[bytes, bytes]], per_transaction: int
) -> None:
    producer = AIOKafkaProducer(
        **client_kwargs(settings), transactional_id=f"it-txn-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for start in range(0, len(records), per_transaction):
            async with producer.transaction():
                for key, value in records[start : start + per_transaction]:
                    await producer.send(settings.topic("events"), value=value, key=key)
    finally:
        await producer.stop()


async def wait_for_lag(settings: Settings, wanted: dict[int, int], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        lag = await committed_lag(settings, settings.group_id, settings.topic("events"))
        if lag == wanted or time.monotonic() > deadline:
            return lag
        await asyncio.sleep(0.5)


async def test_commits_pass_transaction_markers_and_a_truncated_log_after_a_restart(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    await ensure_topics(settings)
    users, merchants = load_entities(settings.data_dir)
    events = demo_events(300, seed=5, users=users, merchants=merchants)
    records = [(e["user_id"].encode(), encode(e)) for e in events]
    first, second = records[:150], records[150:]

    # Phase 1: events written in transactions; each leaves a marker after its records.
    await produce_in_transactions(settings, first, per_transaction=25)
    state = worker_factory(settings)
    predictions, dead = await collect(settings, expected=len(first), timeout_s=90)
    assert (len(predictions), len(dead)) == (len(first), 0)
    # Every partition ends in a marker, which the worker never sees: the committed offset
    # stays on it (lag 1) until a record follows.
    partitions = range(settings.partitions)
    assert await wait_for_lag(settings, dict.fromkeys(partitions, 1), 30) == dict.fromkeys(
        partitions, 1
    )
    stack.stop_pid(state.workers[0]["pid"])

    # Phase 2: plain records after the markers; partition 0 is truncated past its
    # committed offset (as retention would), into the new records.
    sent = await send_records(settings, settings.topic("events"), second)
    written = await read_topic(settings, settings.topic("events"), idle_s=1)
    assert len(written) == len(records)
    tp0 = TopicPartition(settings.topic("events"), 0)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        committed = (await admin.list_consumer_group_offsets(settings.group_id))[tp0]
        cut = committed.offset + 3
        await admin.delete_records({tp0: RecordsToDelete(cut)})
    finally:
        await admin.close()
    # Deleted before any worker read them: the two records after the marker. (The log
    # below them, scored in phase 1, is gone too.)
    unread = {m.offset for m in sent if m.partition == 0 and committed.offset <= m.offset < cut}
    assert len(unread) == 2

    worker_factory(settings)
    outcomes, dead = await collect(settings, expected=len(records) - len(unread), timeout_s=90)
    lag = await wait_for_lag(settings, dict.fromkeys(partitions, 0), 30)
    assert lag == dict.fromkeys(partitions, 0), "a partition's commits are stuck"
    kept = [e for e in written if not (e.partition == 0 and e.offset in unread)]
    report = reconcile(kept, outcomes, dead)
    assert report.events == len(records) - len(unread)
    assert report.reconciled, report.as_dict()
    assert report.duplicate_ids == [], "the restart replayed what was scored"
