"""Readers every worker needs whole (``control``, ``feature-updates``) hold every partition.

Both topics are created with one partition by ``up``; a user's cluster can have more
(an operator's ``kafka-topics --alter``, or a pre-created topic). The old ``control``
reader took its partitions from ``topics()`` metadata, which aiokafka does not keep,
and fell back to partition 0: states on other partitions were never applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from models.rollout import RolloutState
from streams.codec import decode
from streams.control import read_control, state_record
from streams.kafka import client_kwargs, follow, producer
from streams.settings import Settings

PARTITIONS = 3


async def _create(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def _send(settings: Settings, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    client = producer(settings)
    await client.start()
    try:
        for partition, key, value in records:
            await client.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await client.stop()


def test_control_states_on_every_partition_are_read(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = settings.topic("control")
    states = [RolloutState(model=f"m{p}", champion="1", seq=p) for p in range(PARTITIONS)]

    async def run() -> dict[str, RolloutState]:
        await _create(settings, topic)
        await _send(settings, topic, [(p, *state_record(s)) for p, s in enumerate(states)])
        return await read_control(settings)

    latest = asyncio.run(run())
    assert latest == {s.model: s for s in states}


def test_follow_from_end_reads_only_what_is_written_after_on_any_partition(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = settings.topic("feature_updates")

    async def run() -> list[tuple[int, dict[str, str]]]:
        await _create(settings, topic)
        await _send(settings, topic, [(p, b"old", b'{"n": "old"}') for p in range(PARTITIONS)])
        consumer, tps = await follow(settings, topic, from_end=True)
        try:
            assert [tp.partition for tp in tps] == list(range(PARTITIONS))
            await _send(settings, topic, [(2, b"new", b'{"n": "new"}')])
            seen: list[tuple[int, dict[str, str]]] = []
            for _ in range(20):
                batches = await consumer.getmany(timeout_ms=250)
                seen += [(r.partition, decode(r.value)) for rs in batches.values() for r in rs]
                if seen:
                    break
            return seen
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == [(2, {"n": "new"})]
