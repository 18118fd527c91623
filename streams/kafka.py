"""Plain aiokafka helpers for the CLI and start-up: reach the broker, create topics,
produce and read records. The scoring path itself runs in Faust (:mod:`streams.app`).

In: :class:`Settings`. Out: aiokafka clients configured for the cluster (plaintext,
SASL or TLS), topics that exist, or a :class:`BrokerUnavailable` that says which
address did not answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata

from streams.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    def __init__(self, bootstrap: str, waited_s: float, cause: BaseException | None) -> None:
        super().__init__(
            f"no Kafka broker answered at {bootstrap} within {waited_s:.0f}s"
            + (f" (last error: {cause!r})" if cause else "")
        )


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by every aiokafka client we create."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs


async def wait_for_broker(settings: Settings, timeout_s: float = 60.0) -> None:
    """Return once the cluster answers a metadata request; fail fast with the address."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    # aiokafka logs every refused connection at ERROR; while we wait that is expected.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await _poll_metadata(settings, deadline)
        return
    except (KafkaError, OSError) as exc:
        last = exc
    finally:
        quiet.setLevel(level)
    raise BrokerUnavailable(settings.bootstrap_servers, timeout_s, last)


async def _poll_metadata(settings: Settings, deadline: float) -> None:
    last: BaseException | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise last or TimeoutError("broker did not answer")


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the streamscore topics that do not exist yet; return all of their names."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = settings.all_topics()
        control = settings.topic("control")
        missing = [
            NewTopic(
                name,
                num_partitions=1 if name == control else settings.partitions,
                replication_factor=1,
                # Rollout commands keyed by model name: only the latest per model matters.
                topic_configs={"cleanup.policy": "compact"} if name == control else {},
            )
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            log.info("created topics %s", [t.name for t in missing])
        return wanted
    finally:
        await admin.close()


async def existing_topics(settings: Settings) -> list[str]:
    """The streamscore topics that exist on the cluster, in settings order (nothing created)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [name for name in settings.all_topics() if name in existing]


async def committed_lag(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    """Per partition of ``topic``: end offset minus the offset ``group`` committed, read
    from the broker (not from a worker's own view), so a partition whose commits are
    stuck shows its lag even while the worker reports none. ``None``: nothing committed.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    # A group-less consumer of the topic holds all of its partitions once started.
    consumer = reader(settings, topic)
    await consumer.start()
    try:
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    lag: dict[int, int | None] = {}
    for tp in tps:
        done = committed.get(tp)
        lag[tp.partition] = (
            ends[tp] - done.offset if done is not None and done.offset >= 0 else None
        )
    return lag


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    kwargs = client_kwargs(settings) | {"acks": "all", "linger_ms": 5} | overrides
    return AIOKafkaProducer(**kwargs)


def keyed_records(
    values: Sequence[dict[str, Any]], key_field: str | None
) -> list[tuple[bytes | None, bytes]]:
    """``(key, value)`` records: each value encoded, keyed by its ``key_field`` (unkeyed
    where it is missing or ``key_field`` is None), so one entity's events share a partition."""
    from streams.codec import encode

    return [
        (
            None
            if key_field is None or value.get(key_field) is None
            else str(value[key_field]).encode(),
            encode(value),
        )
        for value in values
    ]


async def send_records(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes]],
    rate: float | None = None,
) -> list[RecordMetadata]:
    """Send ``(key, value)`` records, paced to ``rate`` per second if given; return once
    the broker acknowledged all of them, with their metadata in order."""
    client = producer(settings)
    await client.start()
    try:
        started = time.monotonic()
        futures = []
        for i, (key, value) in enumerate(records):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await client.send(topic, value=value, key=key))
        return list(await asyncio.gather(*futures))
    finally:
        await client.stop()


def reader(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A group-less consumer from the beginning: for tail, audit and tests."""
    kwargs = (
        client_kwargs(settings)
        | {"group_id": None, "auto_offset_reset": "earliest", "enable_auto_commit": False}
        | overrides
    )
    return AIOKafkaConsumer(*topics, **kwargs)
