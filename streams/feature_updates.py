"""Keep a scoring worker's feature cache honest: drop entities the feature worker wrote.

In: ``feature-updates`` records (one per streaming view and write of the feature worker,
``{"view", "entities": [{join_key: value}, ...]}``). Out: calls of the scoring worker's
``FeastOnlineSource.invalidate``, so the next event of a written entity is enriched
from the online store, not from a cached value up to ``feature_cache_ttl_s`` old.

Every scoring worker needs every record (each has its own cache), so the reader is
group-less, like the control follower's. It starts at the topic's end: at start-up the
cache is empty, so nothing older can be stale in it. A record lost or read late leaves
a cached value stale for at most the cache TTL, the bound the cache always had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import TopicAuthorizationFailedError

from features.aggregates import StreamingView
from features.online import FeastOnlineSource
from streams import metrics
from streams.codec import decode, encode
from streams.kafka import reader
from streams.settings import Settings

log = logging.getLogger(__name__)

METADATA_WAIT_S = 10.0
"""How long start-up waits for ``feature-updates``' partitions to show in the metadata."""


def update_record(view: StreamingView, entities: Sequence[str]) -> tuple[bytes, bytes]:
    """A ``feature-updates`` record: the entities of ``view`` whose rows were just written."""
    return view.name.encode(), encode(
        {"view": view.name, "entities": [{view.entity_key: e} for e in entities]}
    )


def parse_update(value: bytes | None) -> list[dict[str, Any]]:
    """The entity rows of a ``feature-updates`` record ([] for one that cannot be read)."""
    try:
        record = decode(value or b"null")
        return [dict(e) for e in record["entities"]]
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable feature-updates record ignored: %r", exc)
        return []


class FeatureUpdatesUnreadable(RuntimeError):
    """The scoring worker cannot read ``feature-updates``: fail at start-up, not hang."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic} has no partitions this worker may see: it does not exist, or the "
            "worker's principal lacks Describe and Read on it (README, Security: ACL table)"
        )


class FeatureUpdatesFollower:
    """Reads ``feature-updates`` from its end and invalidates the written entities."""

    def __init__(self, settings: Settings, source: FeastOnlineSource) -> None:
        self.settings = settings
        self.source = source
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        topic = self.settings.topic("feature_updates")
        # A group-less consumer named with the topic is assigned all of its partitions once
        # its metadata arrives. A topic this principal may not read is refused, or never
        # assigned: fail here, naming the topic and the ACL, not hang without /ready.
        self._consumer = reader(self.settings, topic)
        try:
            await self._consumer.start()
        except TopicAuthorizationFailedError as exc:
            await self.stop()
            raise FeatureUpdatesUnreadable(topic) from exc
        deadline = time.monotonic() + METADATA_WAIT_S
        while not (tps := sorted(self._consumer.assignment(), key=lambda tp: tp.partition)):
            if time.monotonic() > deadline:
                await self.stop()
                raise FeatureUpdatesUnreadable(topic)
            await asyncio.sleep(0.2)
        await self._consumer.seek_to_end(*tps)
        # Resolve the end positions now, not lazily at the first fetch, or a write that
        # lands between start() and that fetch would be skipped.
        for tp in tps:
            await self._consumer.position(tp)

    async def follow(self) -> None:
        """Invalidate until cancelled."""
        assert self._consumer is not None, "start() first"
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            entities = [
                e for records in batches.values() for r in records for e in parse_update(r.value)
            ]
            if entities:
                dropped = self.source.invalidate(entities)
                metrics.FEATURE_CACHE_INVALIDATIONS.inc(dropped)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
