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

import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer

from features.aggregates import StreamingView
from features.online import FeastOnlineSource
from streams import metrics
from streams.codec import decode, encode
from streams.kafka import follow
from streams.settings import Settings

log = logging.getLogger(__name__)


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


class FeatureUpdatesFollower:
    """Reads ``feature-updates`` from its end and invalidates the written entities."""

    def __init__(self, settings: Settings, source: FeastOnlineSource) -> None:
        self.settings = settings
        self.source = source
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        # From the end: at start-up the cache is empty, nothing older can be stale in it.
        self._consumer, _ = await follow(
            self.settings, self.settings.topic("feature_updates"), from_end=True
        )

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
