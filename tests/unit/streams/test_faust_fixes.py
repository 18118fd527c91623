"""The commit rule that keeps at-least-once: never commit past an offset not acked."""

import asyncio
import collections
from types import SimpleNamespace
from typing import Any

import pytest

from streams.faust_fixes import (
    UntestedFaustVersion,
    check_version,
    committable_offset,
    fetch_gaps,
)


@pytest.mark.parametrize(
    ("acked", "committed", "expected", "left"),
    [
        ([0, 1, 2], None, 3, []),
        ([0, 1, 2], 0, 3, []),
        ([4, 5, 6], 0, None, [4, 5, 6]),  # 0..3 skipped: wait (Faust committed 7 here)
        ([4, 5, 6], None, 7, []),  # nothing known: as Faust did, only with no seek position
        ([31, 32], 31, 33, []),
        ([32, 33], 31, None, [32, 33]),  # one missing at the head (Faust's off-by-one)
        ([5, 6, 8, 9], 5, 7, [8, 9]),  # a gap in the middle: commit up to it
        ([], 3, None, []),
    ],
)
def test_committable_offset(
    acked: list[int], committed: int | None, expected: int | None, left: list[int]
) -> None:
    assert committable_offset(acked, committed) == expected
    assert acked == left


@pytest.mark.parametrize(
    ("expected", "offsets", "committed", "gaps", "following"),
    [
        (10, [10, 11, 12], 10, [], 13),
        (10, [11, 12], 10, [(10, 11)], 13),  # a transaction marker at the committed offset
        (10, [40, 41], 10, [(10, 40)], 42),  # the log was truncated past the committed offset
        (10, [10, 12, 15], 10, [(11, 12), (13, 15)], 16),  # markers or compaction inside a fetch
        (20, [12, 13], 12, [], 14),  # a fetch after a seek back: nothing is a gap
        (None, [5, 6], 5, [], 7),  # position unknown: no head gap is guessed
        (8, [12], 10, [(10, 12)], 13),  # never below the committed offset
        (8, [], 10, [], 8),
    ],
)
def test_fetch_gaps(
    expected: int | None,
    offsets: list[int],
    committed: int | None,
    gaps: list[tuple[int, int]],
    following: int | None,
) -> None:
    assert fetch_gaps(expected, offsets, committed) == (gaps, following)


def test_an_untested_faust_version_is_refused_with_what_to_do() -> None:
    check_version("0.15.3")
    with pytest.raises(UntestedFaustVersion, match=r"faust-streaming 0\.16\.0: .*0\.15\.3"):
        check_version("0.16.0")
    with pytest.raises(UntestedFaustVersion, match=r"a tested aiokafka \(found 0\.15\.0\)"):
        check_version("0.15.3", "0.15.0")


def test_the_patches_are_in_place_once_an_app_is_made() -> None:
    from faust.transport import consumer

    from streams import faust_fixes

    faust_fixes.apply()
    assert consumer.Consumer._new_offset is faust_fixes._new_offset
    assert consumer.Consumer._wait_next_records is faust_fixes._wait_next_records
    assert consumer.Consumer._add_gap is faust_fixes._add_gap


async def test_records_getmany_would_skip_are_fetched_again() -> None:
    """A partition not active yet when its records arrive (Faust's recovery) is sought
    back to its first fetched record, so the records are read again once it is active."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.faust_fixes import _refetch_inactive

    sought: list[tuple[TP, int]] = []

    class Consumer:
        _buffered_partitions: set[TP] = set()
        app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

        async def seek(self, tp: TP, offset: int) -> None:
            sought.append((tp, offset))

    active, late = TP("labels", 1), TP("labels", 0)
    records = {
        active: [SimpleNamespace(offset=7)],
        late: [SimpleNamespace(offset=115), SimpleNamespace(offset=116)],
    }
    await _refetch_inactive(Consumer(), records, {active})
    assert sought == [(late, 115)]


def _record(tp: Any, offset: int) -> SimpleNamespace:
    return SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        headers=[],
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
    )


async def test_records_fetched_below_the_read_offset_are_delivered_not_dropped() -> None:
    """Faust's own fetch loop (``Consumer._drain_messages``) through the patched fetch.

    A seek raced by a fetch leaves Faust's read offset above the position the fetcher
    sought back to: the records from there were dropped ("DROPPED MESSAGE") while the
    fetch position moved past them, so they were lost. The feedback-worker SIGKILL row
    lost 1-283 label/prediction pairs this way in about 1 run of 5.
    """
    import faust
    from faust.types import TP

    from streams import faust_fixes

    faust_fixes.apply()
    app = faust.App("drop-guard", broker="kafka://127.0.0.1:1")
    tp = TP("labels", 0)
    app.topics._acking_topics.add(tp.topic)
    consumer = app.consumer
    consumer._committed_offset[tp] = 10
    consumer._read_offset[tp] = 14  # delivered up to 14 from the old position, then sought to 10
    consumer._active_partitions = {tp}
    fetches = [{tp: [_record(tp, offset) for offset in range(10, 16)]}]
    fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def getmany(active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109
        if fetches:
            return fetches.pop(0)
        fetcher._stopped.set()
        return {}

    delivered: list[int] = []

    async def callback(message: Any) -> None:
        delivered.append(message.offset)

    consumer._getmany = getmany  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 16  # type: ignore[method-assign]
    consumer.callback = callback  # type: ignore[method-assign]
    consumer.resume_flow()
    await asyncio.wait_for(consumer._drain_messages(fetcher), 5)
    assert delivered == [10, 11, 12, 13, 14, 15]  # Faust alone delivered [14, 15]


def _recovery(events: list[str], generation: int = 0) -> Any:
    """A stand-in for Faust's Recovery service: what its resume methods touch."""
    from unittest.mock import AsyncMock, MagicMock

    from faust.types import TP

    stream, changelog = TP("labels", 0), TP("app-join-changelog", 0)

    class Consumer:
        def __init__(self) -> None:
            self.active: set[Any] = {changelog}

        def assignment(self) -> set[Any]:
            return {stream, changelog}

        def resume_partitions(self, tps: Any) -> None:
            events.append(f"resume {sorted(tp.topic for tp in tps)}")
            self.active |= set(tps)

        async def perform_seek(self) -> None:
            events.append(f"seek while active {sorted(tp.topic for tp in self.active)}")

        def resume_flow(self) -> None:
            events.append("resume flow")

    async def wait(coro: Any, timeout: Any = None) -> None:  # noqa: ASYNC109
        await coro

    app = MagicMock()
    app.consumer = Consumer()
    app.consumer_generation_id = generation
    app.on_rebalance_complete.send = AsyncMock()
    app._fetcher.maybe_start = AsyncMock()
    app.assignor.assigned_standbys.return_value = []
    recovery = MagicMock()
    recovery.app = app
    recovery.tables.values.return_value = []
    recovery._is_changelog_tp = lambda tp: tp.topic.endswith("-changelog")
    recovery._wait = wait
    return recovery


@pytest.mark.parametrize("method", ["on_recovery_completed", "_resume_streams"])
async def test_recovery_seeks_stream_partitions_before_it_resumes_them(method: str) -> None:
    """Faust resumed the stream partitions, then sought: in between the fetcher delivered
    their records from the old position and raised the read offsets above the committed
    ones (the recovery window of the feedback-worker SIGKILL row)."""
    from faust.tables.recovery import Recovery

    from streams import faust_fixes

    faust_fixes.apply()
    events: list[str] = []
    recovery = _recovery(events)
    await getattr(Recovery, method)(recovery, 0)
    assert events[:3] == [
        "seek while active ['app-join-changelog']",
        "resume ['labels']",
        "resume flow",
    ]
    recovery.completed.set.assert_called_once()
    recovery.app.on_rebalance_end.assert_called_once()


async def test_recovery_of_a_stale_generation_neither_seeks_nor_resumes() -> None:
    from faust.tables.recovery import Recovery

    from streams import faust_fixes

    faust_fixes.apply()
    events: list[str] = []
    recovery = _recovery(events, generation=2)
    await Recovery.on_recovery_completed(recovery, 1)
    assert events == []


async def test_failed_metadata_updates_back_off_up_to_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka 0.14 retried a failed metadata update at once: with the broker down a
    consumer and a producer made ~5,600 connection attempts a second. Driven through
    aiokafka's own update on a client that reaches no broker."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.cluster import ClusterMetadata

    from streams import faust_fixes

    faust_fixes.apply()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(faust_fixes.asyncio, "sleep", sleep)
    monkeypatch.setattr(faust_fixes.random, "uniform", lambda low, high: 0.0)
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1", retry_backoff_ms=100)
    cluster = ClusterMetadata()
    for _ in range(6):
        assert await client._metadata_update(cluster, set()) is False  # no broker known
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])

    async def succeeded(self: Any, cluster_metadata: Any, topics: Any) -> bool:
        return True

    monkeypatch.setattr(faust_fixes, "_original_metadata_update", succeeded)
    assert await client._metadata_update(cluster, set()) is True
    monkeypatch.setattr(faust_fixes, "_original_metadata_update", lambda *a: _false())
    await client._metadata_update(cluster, set())
    assert pauses[-1] == pytest.approx(0.1)  # a success starts the back-off over


async def _false() -> bool:
    return False


def test_metadata_backoff_jitter_is_within_a_fifth() -> None:
    from streams.faust_fixes import metadata_backoff_s

    assert metadata_backoff_s(1, 0.1, jitter=1.0) == pytest.approx(0.12)
    assert metadata_backoff_s(3, 0.1, jitter=-1.0) == pytest.approx(0.32)
    assert metadata_backoff_s(40, 0.1, jitter=0.0) == pytest.approx(1.0)


async def test_a_fetch_with_no_active_partition_returns_no_record() -> None:
    """aiokafka's own ``Fetcher.fetched_records`` through Faust's patched fetch: an empty
    set of active partitions (recovery paused the changelogs while the fetch waited)
    returned every buffered record, stream partitions' included."""
    import contextlib
    import functools

    from aiokafka.consumer.fetcher import Fetcher, FetchResult
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.types import TP

    from streams import faust_fixes

    faust_fixes.apply()
    stream = TP("labels", 0)

    def buffered() -> FetchResult:
        result = FetchResult.__new__(FetchResult)
        rows = [_record(stream, 7), _record(stream, 8)]
        result.getall = lambda max_records=None: rows  # type: ignore[method-assign]
        result.has_more = lambda: False  # type: ignore[method-assign]
        return result

    fetcher = SimpleNamespace(
        _closed=False,
        _subscriptions=SimpleNamespace(
            reassignment_in_progress=False,
            is_assigned=lambda tp: True,
            fetch_context=contextlib.nullcontext,
        ),
        _notify=lambda future: None,
        _wait_consume_future=None,
    )
    fetcher.fetched_records = functools.partial(Fetcher.fetched_records, fetcher)
    consumer = SimpleNamespace(_closed=False, _fetcher=fetcher)
    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))

    fetcher._records = {stream: buffered()}
    fetch = AIOKafkaConsumerThread._fetch_records
    assert await fetch(thread, consumer, set(), timeout=0) == {}  # Faust alone: both records
    assert [r.offset for r in (await fetch(thread, consumer, {stream}, timeout=0))[stream]] == [
        7,
        8,
    ]


class _Service:
    """What ``_deliver`` and ``_drain_messages`` use of a Faust consumer, on mode's own
    ``Service.wait_first``."""

    def __init__(self, messages: list[Any], callback: Any) -> None:
        from mode import Service

        self.service = Service()
        self._stopped = self.service._stopped
        self.suspend_flow = asyncio.Event()
        self.callback = callback
        self._read_offset: dict[Any, int | None] = collections.defaultdict(lambda: None)
        self._commit_every = None
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.log = SimpleNamespace(dev=lambda *a: None, info=lambda *a: None, exception=print)
        self._messages = messages

    async def wait_first(self, *coros: Any) -> Any:
        self.raced = getattr(self, "raced", 0) + 1
        return await self.service.wait_first(*coros)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def getmany(self, timeout: float) -> Any:  # noqa: ASYNC109
        messages, self._messages = self._messages, []

        async def records() -> Any:
            for message in messages:
                yield message.tp, message
            self._stopped.set()  # one fetch, then the loop ends

        return records()


def _message(offset: int) -> Any:
    return SimpleNamespace(tp=("events", 0), topic="events", offset=offset, key=None, value=b"")


async def test_the_drain_loop_hands_over_records_without_a_task_per_record() -> None:
    """Faust's drain loop, patched: a callback that does not wait runs inline (no
    ``wait_first``: four tasks and an ``asyncio.wait`` per record before); records keep
    their order and the read offset follows them."""
    from streams.faust_fixes import _drain_messages

    seen: list[int] = []

    async def callback(message: Any) -> None:
        seen.append(message.offset)

    consumer = _Service([_message(o) for o in (3, 4, 5)], callback)
    tasks_before = len(asyncio.all_tasks())
    await _drain_messages(consumer, SimpleNamespace(_stopped=asyncio.Event()))
    assert seen == [3, 4, 5]
    assert consumer._read_offset[("events", 0)] == 5
    assert not getattr(consumer, "raced", 0)
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_waiting_callback_is_finished_as_faust_did_and_gives_way_to_a_suspension() -> None:
    """A callback that waits (a full stream buffer) is raced against the flow's suspension
    by ``wait_first``, exactly as Faust did: it finishes where it stopped when the buffer
    frees, and is cancelled when the flow is suspended first."""
    from streams.faust_fixes import _deliver

    room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    delivered: list[int] = []

    async def callback(message: Any) -> int:
        await room  # the buffer is full
        delivered.append(message.offset)
        return message.offset

    consumer = _Service([], callback)
    waiting = asyncio.create_task(_deliver(consumer, callback, _message(7)))
    await asyncio.sleep(0.01)
    assert not waiting.done() and consumer.raced == 1
    room.set_result(None)
    await asyncio.wait_for(waiting, 1)
    assert delivered == [7]

    blocked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled: list[bool] = []

    async def stuck(message: Any) -> None:
        try:
            await blocked
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    waiting = asyncio.create_task(_deliver(consumer, stuck, _message(8)))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert cancelled == [True]


async def test_a_callback_error_reaches_the_drain_loop_inline_or_after_waiting() -> None:
    from streams.faust_fixes import _deliver

    async def fails_at_once(message: Any) -> None:
        raise ValueError("bad")

    async def fails_later(message: Any) -> None:
        await asyncio.sleep(0.001)
        raise ValueError("bad later")

    consumer = _Service([], fails_at_once)
    with pytest.raises(ValueError, match="bad"):
        await _deliver(consumer, fails_at_once, _message(1))
    with pytest.raises(ValueError, match="bad later"):
        await _deliver(consumer, fails_later, _message(2))


async def test_a_fetch_held_back_by_full_buffers_resumes_when_one_drops() -> None:
    """With every partition held back by a full stream buffer, Faust's fetch slept a
    whole second; patched, Faust's own ``on_buffer_drop`` wakes it at once."""
    import time

    from faust.transport import consumer as faust_consumer

    from streams import faust_fixes

    faust_fixes.apply()
    tp = ("events", 0)
    active: set[Any] = set()
    consumer = SimpleNamespace(
        app=SimpleNamespace(client_only=False),
        flow_active=True,
        _buffered_partitions={tp},
        _get_active_partitions=lambda: active,
    )
    started = time.monotonic()
    waiting = asyncio.create_task(faust_fixes._held_back_by_full_buffers(consumer, 5.0))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    faust_consumer.Consumer.on_buffer_drop(consumer, tp)  # what the stream's queue calls
    assert await asyncio.wait_for(waiting, 1) is False  # not held back any more
    assert time.monotonic() - started < 0.5
    assert active == {tp}
    # Nothing held back: no wait at all.
    assert (
        await asyncio.wait_for(faust_fixes._held_back_by_full_buffers(consumer, 5.0), 0.1) is False
    )
