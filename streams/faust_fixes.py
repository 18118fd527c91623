"""Fixes to faust-streaming 0.15.3's offset bookkeeping that at-least-once depends on.

Found by reconciling counts (tests/integration/test_rebalance_kafka.py): on a fresh
consumer group, events fetched while a worker recovers after a rebalance were never
scored, and their offsets were committed anyway. Three flaws combine:

1. Faust skips messages that arrive while flow control is suspended (during
   rebalance recovery) and relies on ``perform_seek()`` to fetch them again. It seeks
   with aiokafka's ``seek_to_committed()``, which seeks only when the committed offset
   is above 0: a partition with nothing committed (or 0) keeps its fetch position, so
   the skipped messages are never read again.
2. ``perform_seek()`` records a committed offset of 0 as "unknown".
3. ``Consumer._new_offset()`` commits past a gap at the head of the acked offsets when
   the committed offset is unknown or 0, and by one when it is known (a Kafka
   committed offset is the next offset to read, so the first acked offset must equal
   it; Faust only waits when it is more than one ahead).

:func:`apply` patches the three places: it seeks explicitly to the committed offset
(or, with nothing committed, to the beginning, as ``auto_offset_reset=earliest``
says), remembers where it sought, and never commits past an offset that was not
acked. The pure rule is :func:`committable_offset`, tested on its own. Remove this
module once faust-streaming ships a fix; the integration test will say.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableSequence
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)

_APPLIED = False


def committable_offset(acked: MutableSequence[int], committed: int | None) -> int | None:
    """The offset to commit for one partition, or None to wait.

    ``acked`` is sorted; the leading run of consecutive offsets is removed from it when
    it can be committed. ``committed`` is the next offset to read (Kafka's meaning).
    """
    if not acked:
        return None
    if committed is not None and acked[0] > committed:
        return None  # an offset at the head is not processed yet: committing would skip it
    end = 0
    while end + 1 < len(acked) and acked[end + 1] == acked[end] + 1:
        end += 1
    last = acked[end]
    del acked[: end + 1]
    if committed is not None and last + 1 <= committed:
        return None  # nothing new beyond what is committed
    return last + 1


async def _seek_explicitly(consumer: Any, acking: Any) -> dict[Any, int | None]:
    """Seek the partitions of acked (stream) topics to their committed offset, or to the
    beginning. Table changelogs are left where recovery put them, as Faust does."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    nothing = [tp for tp, offset in committed.items() if offset is None and acking(tp.topic)]
    for tp, offset in committed.items():
        if offset is not None and offset <= 0 and acking(tp.topic):
            consumer.seek(tp, 0)  # aiokafka seeks only when the offset is above 0
    if nothing:
        await consumer.seek_to_beginning(*nothing)
        for tp in nothing:
            committed[tp] = await consumer.position(tp)
    return committed


async def _seek_to_committed(self: Any) -> Mapping[Any, int | None]:
    acking = self.consumer.app.topics.acks_enabled_for
    return await self.call_thread(_seek_explicitly, self._ensure_consumer(), acking)


async def _perform_seek(self: Any) -> None:
    committed = await self.seek_to_committed()
    self._read_offset.update(
        {
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in committed.items()
        }
    )
    acking = self.app.topics.acks_enabled_for
    self._committed_offset.update(
        {
            faust_consumer.ensure_TP(tp): offset
            for tp, offset in committed.items()
            if offset is not None and (offset > 0 or (offset == 0 and acking(tp.topic)))
        }
    )


def _new_offset(self: Any, tp: TP) -> int | None:
    acked = self._acked[tp]
    if not acked:
        return None
    gaps = self._gap[tp]  # offsets missing from a compacted topic count as acked, as in Faust
    if gaps:
        for interval in gaps.overlap(0, max(acked)):
            acked.extend(range(interval.begin, interval.end))
        acked[:] = sorted(set(acked))
        gaps.chop(0, acked[-1] + 1)
    else:
        acked.sort()
    before = list(acked)
    offset = committable_offset(acked, self._committed_offset[tp])
    self._acked_index[tp].difference_update(set(before) - set(acked))
    return offset


def apply() -> None:
    """Patch Faust once per process (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign,assignment]
    faust_consumer.Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    _APPLIED = True
    log.debug("faust offset bookkeeping patched (streams.faust_fixes)")
