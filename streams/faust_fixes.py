"""Fixes to faust-streaming 0.15.3's offset bookkeeping that at-least-once depends on,
and to its per-record cost.

They replace private Faust methods, so :func:`apply` refuses a faust-streaming version
they were not tested with (:data:`TESTED_FAUST_VERSIONS`): run
``tests/integration/test_rebalance_kafka.py``, ``test_faults_commits.py`` and
``test_faults_feedback.py`` against the new version, then add it.

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
acked. The pure rule is :func:`committable_offset`, tested on its own.

That strict rule needs to know which offsets hold no record, or it waits for them
forever: a transaction marker, or a log that retention (or ``DeleteRecords``) truncated
past the committed offset (found by tests/integration/test_faults_commits.py: a
restarted worker scored but never committed again). Faust marks such "gaps" from the
offsets it *delivered* to streams (``_drain_messages`` -> ``_add_gap``), with two faults:
after a seek its read offset means "next to read", so a hole right at the committed
offset is missed; and a record Faust fetched but did not deliver (a partition not active
yet during recovery, a generation change) also looks like a hole, so its offset could be
committed with no outcome. Here gaps come from what the broker *returned*
(:func:`fetch_gaps` over each fetch of ``_wait_next_records``, per partition, from the
position of the last seek): only offsets the fetch stepped over are gaps, never records
Faust dropped; Faust's own ``_add_gap`` is switched off.

And ``getmany`` drops the fetched records of a partition that is not active yet (the
fetch position has moved past them): in the recovery window where stream partitions are
resumed and sought before Faust marks them active, such a record was never read again
(a label of the feedback-worker SIGKILL row never joined; with the rules above its
partition stalled at it instead of committing past it). :func:`_refetch_inactive` seeks
such partitions back to their first fetched record.

The recovery window itself: Faust resumed the stream partitions and then sought them to
the committed offsets (``Recovery.on_recovery_completed`` and ``_resume_streams``), in
its consumer thread while the fetcher kept fetching; records delivered in between raised
its read offsets, and ``_drain_messages`` then dropped the records fetched from the
committed offset below them ("DROPPED MESSAGE", at its dev log level) while aiokafka's
fetch position moved past them: lost records (the feedback-worker SIGKILL row lost pairs
in about 1 run of 5), or with the strict rule a stalled partition. The recovery here
seeks first and resumes after (:func:`_seek_then_resume`), and a fetch that starts below
the read offset is delivered, not dropped (:func:`_deliver_below_read_offset`): at worst
a duplicate, never a loss. Remove this module once faust-streaming ships fixes; the
integration tests will say.

Two patches are for speed, measured with ``streamscore bench`` (BENCHMARKS.md): the drain
loop hands a record to its stream without a task per record unless the stream's buffer is
full (:func:`_deliver`, in a copy of ``_drain_messages``), and a fetch held back by full
stream buffers resumes as soon as one drops, not a second later
(:func:`_held_back_by_full_buffers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Generator, Mapping, MutableMapping, MutableSequence, Sequence
from importlib.metadata import version
from typing import Any

from aiokafka import client as aiokafka_client
from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)

_APPLIED = False

#: faust-streaming versions the patches were tested with (the integration tests above).
TESTED_FAUST_VERSIONS = frozenset({"0.15.3"})

#: aiokafka versions the metadata back-off (:func:`_metadata_update`) was measured with.
TESTED_AIOKAFKA_VERSIONS = frozenset({"0.14.0"})

#: The private Faust methods replaced or wrapped; a version that lacks one is refused.
_PATCHED = (
    (faust_aiokafka.AIOKafkaConsumerThread, "seek_to_committed"),
    (faust_consumer.Consumer, "perform_seek"),
    (faust_consumer.Consumer, "_new_offset"),
    (faust_consumer.Consumer, "_add_gap"),
    (faust_consumer.Consumer, "_wait_next_records"),
    (faust_recovery.Recovery, "_resume_streams"),
    (faust_recovery.Recovery, "on_recovery_completed"),
    (aiokafka_client.AIOKafkaClient, "_metadata_update"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records"),
    (faust_consumer.Consumer, "_drain_messages"),
    (faust_consumer.Consumer, "on_buffer_drop"),
)


class UntestedFaustVersion(RuntimeError):
    """The installed faust-streaming is not one the offset patches were tested with."""

    def __init__(self, found: str, missing: Sequence[str] = ()) -> None:
        what = f"faust-streaming {found}"
        if missing:
            what += f" lacks {', '.join(missing)}"
        super().__init__(
            f"{what}: streams.faust_fixes patches Faust's offset bookkeeping and was tested "
            f"with faust-streaming {', '.join(sorted(TESTED_FAUST_VERSIONS))} only. Install "
            f"the version pinned in requirements.lock, or run "
            f"tests/integration/test_rebalance_kafka.py and test_faults_commits.py against "
            f"{found} and add it to TESTED_FAUST_VERSIONS."
        )


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


def fetch_gaps(
    expected: int | None, offsets: Sequence[int], committed: int | None
) -> tuple[list[tuple[int, int]], int | None]:
    """Offset ranges ``[begin, end)`` a fetch stepped over, and the next offset expected.

    ``offsets`` are one partition's record offsets as the broker returned them, in order;
    ``expected`` is the offset the fetch was to start at (the position of the last seek,
    or one past the previous fetch's last record; None when unknown). A fetch that starts
    below ``expected`` follows a seek back: nothing is a gap there. Ranges never reach
    below ``committed`` (those offsets are done).
    """
    if not offsets:
        return [], expected
    gaps: list[tuple[int, int]] = []
    floor = committed if committed is not None else 0
    if expected is not None and offsets[0] > expected:
        gaps.append((max(expected, floor), offsets[0]))
    if offsets[-1] - offsets[0] + 1 != len(offsets):  # a hole inside the fetch (rare)
        for before, after in zip(offsets, offsets[1:], strict=False):
            if after > before + 1:
                gaps.append((max(before + 1, floor), after))
    return [(b, e) for b, e in gaps if b < e], offsets[-1] + 1


def _expected_fetch(consumer: Any) -> MutableMapping[Any, int]:
    """Per partition, the offset the next fetch should start at (see :func:`fetch_gaps`)."""
    expected: MutableMapping[Any, int] | None = consumer.__dict__.get("_streamscore_next_fetch")
    if expected is None:
        expected = consumer.__dict__["_streamscore_next_fetch"] = {}
    return expected


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


#: How many times :func:`_perform_seek` seeks again when a fetch completed meanwhile.
SEEK_ATTEMPTS = 3


def _count(consumer: Any, name: str) -> int:
    return int(consumer.__dict__.get(name, 0))


def _bump(consumer: Any, name: str) -> None:
    consumer.__dict__[name] = _count(consumer, name) + 1


async def _perform_seek(self: Any) -> None:
    """Seek to the committed offsets, again if a fetch completed during the seek.

    The seek runs in the consumer thread while the fetcher keeps fetching, and the read
    offsets are updated only after it: a fetch that completed in between brought the
    records from the committed offset on, and ``_drain_messages`` dropped them (below the
    stale read offset) while the fetch position moved past them. Found by the
    feedback-worker SIGKILL row: labels forwarded during the restarted worker's recovery
    never joined (61 and 81 of 600 in two runs). Seeking again re-reads them; if fetches
    keep racing, the head offsets are left unknown (no gap is assumed), so the strict
    commit rule waits rather than commits past them.
    """
    _bump(self, "_streamscore_seeks")  # fetches in flight now say nothing about holes
    for _ in range(SEEK_ATTEMPTS):
        fetches = _count(self, "_streamscore_fetches")
        committed = await self.seek_to_committed()
        raced = _count(self, "_streamscore_fetches") != fetches
        if not raced:
            break
        log.info("a fetch completed during the seek to committed offsets: seeking again")
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
    expected = _expected_fetch(self)
    _bump(self, "_streamscore_seeks")
    for tp, offset in committed.items():
        tp = faust_consumer.ensure_TP(tp)
        if offset is not None and offset >= 0 and acking(tp.topic) and not raced:
            expected[tp] = offset
        else:
            expected.pop(tp, None)


_original_wait_next_records = faust_consumer.Consumer._wait_next_records


async def _wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
    """Faust's fetch, then the gaps the broker's records stepped over, per partition of
    an acked topic: what lets the strict head rule pass offsets that hold no record."""
    if await _held_back_by_full_buffers(self, timeout):
        return {}, self._get_active_partitions()
    seeks = _count(self, "_streamscore_seeks")
    records, active = await _original_wait_next_records(self, timeout)
    acking = self.app.topics.acks_enabled_for
    if any(batch and acking(tp.topic) for tp, batch in (records or {}).items()):
        _bump(self, "_streamscore_fetches")  # a changelog's fetch races no seek of ours
    if records:
        _deliver_below_read_offset(self, records)
    if records and active is not None:
        await _refetch_inactive(self, records, active)
    if records and _count(self, "_streamscore_seeks") == seeks:
        expected = _expected_fetch(self)
        for tp, batch in records.items():
            if not batch or not acking(tp.topic) or tp not in active_or_buffered(self, active):
                continue
            tp = faust_consumer.ensure_TP(tp)
            gaps, following = fetch_gaps(
                expected.get(tp), [r.offset for r in batch], self._committed_offset.get(tp)
            )
            if following is not None:
                expected[tp] = following
            for begin, end in gaps:
                self._gap[tp].addi(begin, end)
            if gaps:
                self._gap[tp].merge_overlaps()
    return records, active


def _buffer_dropped(consumer: Any) -> asyncio.Event:
    event: asyncio.Event | None = consumer.__dict__.get("_streamscore_buffer_dropped")
    if event is None:
        event = consumer.__dict__["_streamscore_buffer_dropped"] = asyncio.Event()
    return event


_original_on_buffer_drop = faust_consumer.Consumer.on_buffer_drop


def _on_buffer_drop(self: Any, tp: TP) -> None:
    """Faust's: a partition held back by its full stream buffer is fetched again; and the
    fetch loop waiting in :func:`_held_back_by_full_buffers` is woken."""
    _original_on_buffer_drop(self, tp)
    _buffer_dropped(self).set()


async def _held_back_by_full_buffers(consumer: Any, timeout: float) -> bool:  # noqa: ASYNC109
    """Wait, up to ``timeout``, while every partition is held back by a full stream
    buffer; True if they still are.

    Faust stops fetching a partition whose stream buffer is under high pressure
    (``stream_buffer_maxsize`` / 1.25 events) until it drops to 40 %; with no partition
    left to fetch, its ``_wait_next_records`` sleeps a whole second. An agent drains a
    buffer in a fraction of that and then waits for input: the saturated scoring worker
    stalled about 500 ms every 2.7 s (per-batch trace, 60,000-event backlog). Here the
    fetch resumes as soon as a buffer drops (:func:`_on_buffer_drop`).
    """
    if consumer.app.client_only or not consumer.flow_active:
        return False
    if not consumer._buffered_partitions or consumer._get_active_partitions():
        return False
    dropped = _buffer_dropped(consumer)
    dropped.clear()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(dropped.wait(), timeout)
    return not consumer._get_active_partitions()


def _deliver_below_read_offset(consumer: Any, records: Mapping[Any, Any]) -> None:
    """Lower the read offset of a partition whose fetch starts below it, so that
    ``_drain_messages`` delivers the fetched records rather than drops them.

    Faust drops a fetched record below its read offset (the last offset it delivered,
    or where it last sought) as one it delivered already ("DROPPED MESSAGE", logged at
    its dev level only). aiokafka has moved its fetch position past the record by then,
    so it is not read again until the next seek: a record never delivered before is lost
    (or, with the strict commit rule, its partition stalls at it). A fetch starts below
    the read offset only after a seek back that Faust's read offset did not follow yet:
    a seek raced by a fetch (``perform_seek`` updates the read offsets only after the
    consumer thread sought, and records delivered meanwhile raise them). Found by the
    feedback-worker SIGKILL row: a label of the recovery window never joined. Delivering
    such records again costs a duplicate at most (at-least-once); dropping them may lose
    them.
    """
    acking = consumer.app.topics.acks_enabled_for
    read_offset = consumer._read_offset
    for tp, batch in records.items():
        if not batch or not acking(tp.topic):
            continue
        tp = faust_consumer.ensure_TP(tp)
        current = read_offset.get(tp)
        first = batch[0].offset
        if current is not None and first < current:
            log.warning(
                "%s: fetched from offset %d, below the read offset %d (a seek raced a "
                "fetch): delivering the records rather than dropping them",
                tp,
                first,
                current,
            )
            _bump(consumer, "_streamscore_redelivered")
            read_offset[tp] = first


def active_or_buffered(consumer: Any, active: Any) -> Any:
    return active if active is None else active | consumer._buffered_partitions


async def _refetch_inactive(consumer: Any, records: Mapping[Any, Any], active: Any) -> None:
    """Seek back partitions whose fetched records ``getmany`` is about to skip.

    ``Consumer.getmany`` yields only the records of partitions that were active when the
    fetch began; the rest are dropped while the fetch position has moved past them. In
    the window of a recovery where the stream partitions are resumed and sought before
    Faust marks them active, a record dropped there was never read again: found by the
    feedback-worker SIGKILL row (a label at the committed offset of its partition never
    joined; the strict commit rule held the offset, so it stalled rather than vanished).
    """
    acking = consumer.app.topics.acks_enabled_for
    wanted = active_or_buffered(consumer, active)
    for tp, batch in records.items():
        if batch and tp not in wanted and acking(tp.topic):
            offset = batch[0].offset
            log.info("%s: fetched before it was active; reading it again from %d", tp, offset)
            await consumer.seek(tp, offset)
            _expected_fetch(consumer)[faust_consumer.ensure_TP(tp)] = offset


class _ActivePartitions:
    """Faust's live set of active partitions as aiokafka's ``fetched_records`` reads it:
    never empty, so an empty set means "no partition", not "every partition"."""

    __slots__ = ("tps",)

    def __init__(self, tps: Any) -> None:
        self.tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.tps


_original_fetch_records = faust_aiokafka.AIOKafkaConsumerThread._fetch_records


async def _fetch_records(
    self: Any,
    consumer: Any,
    active_partitions: Any,
    timeout: float | None = None,  # noqa: ASYNC109
    max_records: int | None = None,
) -> Any:
    """Faust's fetch, with its active partitions never read as "all partitions".

    aiokafka's ``fetched_records(partitions)`` returns every partition's buffered records
    when ``partitions`` is empty. Faust fetches only with some partition active, but the
    set is live: recovery pauses the changelogs (the set empties) while a fetch waits,
    and the fetch then handed out stream records before their partitions were active;
    ``getmany`` skipped them with the fetch position past them (see
    :func:`_refetch_inactive`; the feedback-worker SIGKILL row hit it in 2 of 10 runs).
    """
    if active_partitions is not None:
        active_partitions = _ActivePartitions(active_partitions)
    return await _original_fetch_records(
        self, consumer, active_partitions, timeout=timeout, max_records=max_records
    )


async def _add_gap(self: Any, tp: TP, offset_from: int, offset_to: int) -> None:
    """Off: Faust infers gaps from the offsets it delivered, which counts a record it
    fetched but did not deliver as a gap; :func:`_wait_next_records` records them."""


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


async def _seek_then_resume(recovery: Any, consumer: Any, assignment: Any) -> None:
    """Seek the stream partitions to their committed offsets, then resume them.

    Faust resumes them first and seeks after: in between, the fetcher delivers their
    records from the position before the seek, which raises Faust's read offsets while
    the seek moves the fetch position back; records fetched from the committed offset
    then fall below those read offsets and were dropped (see
    :func:`_deliver_below_read_offset`). Paused (not active), a partition's records
    stay in aiokafka's buffer, which a seek to another position discards.
    """
    if assignment:
        recovery.log.info("Seek stream partitions to committed offsets.")
        await recovery._wait(
            consumer.perform_seek(), timeout=recovery.app.conf.broker_request_timeout
        )
    consumer.resume_partitions({tp for tp in assignment if not recovery._is_changelog_tp(tp)})


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery._resume_streams`` (a worker with no table), seeking before it
    resumes the stream partitions (:func:`_seek_then_resume`)."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if assignment:
        await _seek_then_resume(self, consumer, assignment)
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery.on_recovery_completed`` (tables restored), seeking before it
    resumes the stream partitions (:func:`_seek_then_resume`)."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    await _seek_then_resume(self, consumer, assignment)
    self.completed.set()
    self.log.dev("Resume stream partitions")
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


class _Continue:
    """The rest of a coroutine that was stepped once by hand and suspended on
    ``yielded``: awaiting this resumes it exactly where it stopped (what ``yield from``
    does with its first value already fetched)."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, thrown in by the task
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Any, yielded: Any) -> Any:
    return await _Continue(coro, yielded)


async def _deliver(consumer: Any, callback: Any, message: Any) -> None:
    """Hand ``message`` to Faust's consumer callback, as ``_drain_messages`` does with
    ``wait_first(callback(message), suspend_flow.wait())``, without a task per message
    when the callback does not wait.

    ``wait_first`` wraps the callback, the flow-suspension wait and the service's stopped
    and crashed waits in four tasks and an ``asyncio.wait`` for every record: 30 % of the
    scoring worker's loop at saturation (py-spy, ``wait_first`` 22.5 %, the cancelled
    ``Event.wait`` tasks 7.3 %). The callback only waits when a stream's buffer is full
    or flow control is paused; otherwise it puts the event in the buffer and returns, and
    in ``wait_first`` that first step would have run before anything else too. So the
    callback is stepped once here; only if it waits is the rest raced against suspension
    and shutdown by ``wait_first``, exactly as before.
    """
    coro = callback(message)
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    await consumer.wait_first(_finish(coro, yielded), consumer.suspend_flow.wait())


async def _drain_messages(self: Any, fetcher: Any) -> None:
    """Faust's ``Consumer._drain_messages`` (0.15.3) with one change: each record is
    handed over by :func:`_deliver` instead of ``wait_first`` (the loop's own comments
    and flags are Faust's)."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = getmany(timeout=1.0)

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        await _deliver(self, callback, message)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


#: The longest pause between two failed metadata updates (Kafka's own clients default
#: ``reconnect.backoff.max.ms`` to 1 s); the first pause is the client's
#: ``retry_backoff_ms`` (100 ms), doubled after each failure, with 20 % jitter.
METADATA_BACKOFF_MAX_S = 1.0

_original_metadata_update = aiokafka_client.AIOKafkaClient._metadata_update


async def _metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
    """aiokafka's metadata update, then a growing pause after a failed one.

    With the broker down, every fetcher pass with unknown leaders forces a metadata
    update, which fails at once (connection refused) and resolves the fetcher's wait, so
    aiokafka 0.14 reconnected in a tight loop: a worker logged ~3,000 lines a second
    during a broker restart. aiokafka has no reconnect back-off setting
    (``retry_backoff_ms``, which Faust does not pass either, only paces other retries),
    so the pause is here: the update's result is held back while it lasts, and every
    caller waiting for metadata waits with it.
    """
    ok: bool = await _original_metadata_update(self, cluster_metadata, topics)
    if ok:
        self.__dict__["_streamscore_md_failures"] = 0
        return ok
    failures = int(self.__dict__.get("_streamscore_md_failures", 0)) + 1
    self.__dict__["_streamscore_md_failures"] = failures
    await asyncio.sleep(metadata_backoff_s(failures, self._retry_backoff))
    return ok


def metadata_backoff_s(failures: int, base_s: float, jitter: float | None = None) -> float:
    """The pause after ``failures`` failed metadata updates in a row (``jitter`` in
    [-1, 1]; random when None)."""
    pause = min(METADATA_BACKOFF_MAX_S, base_s * 2 ** min(failures - 1, 16))
    if jitter is None:
        jitter = random.uniform(-1.0, 1.0)  # noqa: S311 (not cryptographic)
    return pause * (1.0 + 0.2 * jitter)


def check_version(found: str | None = None, found_aiokafka: str | None = None) -> None:
    """Raise :class:`UntestedFaustVersion` unless the patches were tested with this Faust
    and this aiokafka."""
    found = found or version("faust-streaming")
    found_aiokafka = found_aiokafka or version("aiokafka")
    missing = [f"{cls.__name__}.{name}" for cls, name in _PATCHED if not hasattr(cls, name)]
    if found_aiokafka not in TESTED_AIOKAFKA_VERSIONS:
        missing.append(f"a tested aiokafka (found {found_aiokafka})")
    if found not in TESTED_FAUST_VERSIONS or missing:
        raise UntestedFaustVersion(found, missing)


def apply() -> None:
    """Patch Faust once per process (idempotent); refuse an untested faust-streaming."""
    global _APPLIED
    if _APPLIED:
        return
    check_version()
    faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign,assignment]
    faust_consumer.Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    faust_consumer.Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    faust_consumer.Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]
    faust_recovery.Recovery._resume_streams = _resume_streams  # type: ignore[method-assign]
    faust_recovery.Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    aiokafka_client.AIOKafkaClient._metadata_update = _metadata_update  # type: ignore[method-assign]
    faust_aiokafka.AIOKafkaConsumerThread._fetch_records = _fetch_records  # type: ignore[method-assign]
    faust_consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    faust_consumer.Consumer.on_buffer_drop = _on_buffer_drop  # type: ignore[method-assign]
    _APPLIED = True
    log.debug("faust offset bookkeeping patched (streams.faust_fixes)")
