"""The publish window without Kafka: bounded in flight, acked in order, only once durable,
refused records sent again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.pipeline import Outbound
from streams.publish import PublishWindow, Record, faust_send_many

TOPICS = {"predictions": "p", "deadletter": "d"}


class FakeProducer:
    """Records enqueued; the test decides when (and whether) the broker acknowledges."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.refuse_first = refuse_first

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refuse_first > 0:
            self.refuse_first -= 1
            future.set_exception(ConnectionError("broker away"))
        self.futures.append(future)
        return future

    def ack_all(self) -> None:
        for f in self.futures:
            if not f.done():
                f.set_result(None)


def recorder(acked: list[str]) -> Any:
    """``on_durable(tag)``: a callback that notes ``tag`` in ``acked`` when it runs."""

    def on_durable(tag: str) -> Any:
        async def done() -> None:
            acked.append(tag)

        return done

    return on_durable


def batch(tag: str, n: int = 2) -> list[Outbound]:
    return [Outbound("predictions", b"k", f"{tag}-{i}".encode()) for i in range(n)]


async def test_batches_settle_in_order_and_only_once_acknowledged() -> None:
    producer = FakeProducer()
    window = PublishWindow(producer.send, TOPICS, max_batches=3, retry_max_s=0.01)
    runner = asyncio.create_task(window.run())
    acked: list[str] = []
    on_durable = recorder(acked)

    await window.submit(batch("a"), on_durable("a"))
    await window.submit(batch("b"), on_durable("b"))
    await asyncio.sleep(0.01)
    assert [v for _, _, v in producer.sent] == [b"a-0", b"a-1", b"b-0", b"b-1"], "enqueued at once"
    assert acked == [], "nothing is acked before the broker acknowledged it"
    producer.futures[3].set_result(None)  # b's records first: b must still wait for a
    producer.futures[2].set_result(None)
    await asyncio.sleep(0.01)
    assert acked == []
    producer.ack_all()
    await window.drain()
    assert acked == ["a", "b"]
    runner.cancel()


async def test_the_window_is_bounded() -> None:
    producer = FakeProducer()
    window = PublishWindow(producer.send, TOPICS, max_batches=2, retry_max_s=0.01)
    runner = asyncio.create_task(window.run())

    async def nothing() -> None:
        return None

    await window.submit(batch("a"), nothing)
    await window.submit(batch("b"), nothing)
    third = asyncio.create_task(window.submit(batch("c"), nothing))
    await asyncio.sleep(0.02)
    assert not third.done(), "a third batch waits while two are in flight"
    producer.ack_all()
    await asyncio.wait_for(third, 1)
    producer.ack_all()
    await window.drain()
    runner.cancel()


async def test_refused_records_are_sent_again_before_the_batch_is_acked() -> None:
    producer = FakeProducer(refuse_first=1)
    window = PublishWindow(producer.send, TOPICS, max_batches=2, retry_max_s=0.01)
    runner = asyncio.create_task(window.run())
    acked = asyncio.Event()

    async def done() -> None:
        acked.set()

    await window.submit(batch("a"), done)
    for _ in range(50):
        producer.ack_all()
        await asyncio.sleep(0.01)
        if acked.is_set():
            break
    assert acked.is_set()
    assert [v for _, _, v in producer.sent] == [b"a-0", b"a-1", b"a-0"], "only a-0 again"
    runner.cancel()


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batches"):
        PublishWindow(FakeProducer().send, TOPICS, max_batches=0, retry_max_s=1)


class FakeBuilder:
    """aiokafka's BatchBuilder as faust_send_many uses it: full after ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.closed = False

    def append(
        self, *, timestamp: float | None, key: bytes | None, value: bytes, headers: Any
    ) -> object | None:
        assert timestamp is None, "CreateTime is set by the producer at append"
        if self.closed or len(self.records) >= self.capacity:
            self.closed = True
            return None
        self.records.append((key, value, headers))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeAIOKafka:
    """The aiokafka producer beneath Faust's: create_batch / send_batch / partitions_for."""

    def __init__(self, capacity: int, refuse_first: int = 0) -> None:
        self.capacity = capacity
        self.refuse_first = refuse_first
        self.batches: list[tuple[str, int, list[bytes]]] = []
        self.futures: list[asyncio.Future[Any]] = []

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int) -> Any:
        assert builder.closed, "a submitted batch takes no more records through send()"
        self.batches.append((topic, partition, [v for _, v, _ in builder.records]))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refuse_first > 0:
            self.refuse_first -= 1
            future.set_exception(ConnectionError("broker away"))
        else:
            future.set_result(None)
        self.futures.append(future)
        return future


class FakeFaustProducer:
    """Faust's app.producer: the aiokafka producer it wraps and key_partition."""

    def __init__(self, aio: FakeAIOKafka) -> None:
        self.aio = aio

    def _ensure_producer(self) -> FakeAIOKafka:
        return self.aio

    def key_partition(self, topic: str, key: bytes | None) -> Any:
        from faust.types import TP

        return TP(topic, 0 if key in (None, b"k0") else 1)


async def test_send_many_batches_per_topic_and_partition_and_overflows_into_new_batches() -> None:
    aio = FakeAIOKafka(capacity=2)
    send_many = faust_send_many(FakeFaustProducer(aio))
    records: list[Record] = [
        ("p", b"k0", b"v0", []),
        ("p", b"k1", b"v1", []),
        ("p", b"k0", b"v2", []),
        ("p", b"k0", b"v3", [("h", b"1")]),
        ("d", None, b"v4", []),
    ]
    sent = await send_many(records)
    assert aio.batches == [
        ("p", 0, [b"v0", b"v2"]),
        ("p", 0, [b"v3"]),
        ("p", 1, [b"v1"]),
        ("d", 0, [b"v4"]),
    ], "grouped per partition, in order within it, a full batch continued in a new one"
    assert sorted(v for group, _ in sent for _, _, v, _ in group) == [
        b"v0",
        b"v1",
        b"v2",
        b"v3",
        b"v4",
    ], "every record in exactly one group"
    assert len(sent) == 4, "one future per produce batch, not per record"


async def test_a_refused_produce_batch_is_sent_again_before_the_window_acks() -> None:
    aio = FakeAIOKafka(capacity=10, refuse_first=1)
    window = PublishWindow(
        None,
        TOPICS,
        max_batches=2,
        retry_max_s=0.01,
        send_many=faust_send_many(FakeFaustProducer(aio)),
    )
    runner = asyncio.create_task(window.run())
    acked = asyncio.Event()

    async def done() -> None:
        acked.set()

    await window.submit(batch("a"), done)
    await asyncio.wait_for(acked.wait(), 2)
    assert aio.batches == [("p", 1, [b"a-0", b"a-1"])] * 2, "the refused batch again, whole"
    runner.cancel()


async def test_send_many_turns_a_producer_error_into_a_failed_future() -> None:
    class Broken(FakeAIOKafka):
        async def partitions_for(self, topic: str) -> set[int]:
            raise ConnectionError("no metadata")

    sent = await faust_send_many(FakeFaustProducer(Broken(capacity=2)))([("p", b"k0", b"v", [])])
    assert len(sent) == 1 and sent[0][0] == [("p", b"k0", b"v", [])]
    with pytest.raises(ConnectionError):
        await sent[0][1]


async def test_submit_does_not_wait_for_the_producer_to_take_the_records() -> None:
    """aiokafka's ``send_batch`` waits until the partition's previous batch was taken by
    its sender (one produce request in flight per broker): the agent must not wait with
    it, and the batches still reach the producer, and settle, in order."""
    handed: list[list[bytes]] = []
    gates: list[asyncio.Event] = []
    acks: list[asyncio.Future[Any]] = []

    async def slow_send_many(records: Any) -> Any:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()  # the producer's sender is busy with the previous request
        handed.append([r[2] for r in records])
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acks.append(ack)
        return [(list(records), ack)]

    window = PublishWindow(None, TOPICS, max_batches=3, retry_max_s=0.01, send_many=slow_send_many)
    runner = asyncio.create_task(window.run())
    acked: list[str] = []
    on_durable = recorder(acked)

    await asyncio.wait_for(window.submit(batch("a"), on_durable("a")), 0.1)
    await asyncio.wait_for(window.submit(batch("b"), on_durable("b")), 0.1)
    await asyncio.sleep(0.01)
    assert handed == [], "both submitted while the producer took nothing yet"
    draining = asyncio.create_task(window.drain())
    for gate in gates:
        gate.set()
    while len(gates) < 2:
        await asyncio.sleep(0.001)
        gates[-1].set()
    await asyncio.sleep(0.01)
    assert handed == [[b"a-0", b"a-1"], [b"b-0", b"b-1"]]
    assert not draining.done(), "drain waits for the broker's acknowledgements too"
    for ack in reversed(acks):
        ack.set_result(None)
    await asyncio.wait_for(draining, 1)
    assert acked == ["a", "b"]
    runner.cancel()


async def test_batches_that_wait_for_the_producer_go_out_together_and_settle_apart() -> None:
    """While one produce request is in flight the next micro-batches gather and are
    handed over in one call; each still settles on its own records, in order, and a
    refused produce batch is sent again for the records of its batches only."""
    calls: list[list[bytes]] = []
    first = asyncio.Event()
    futures: list[asyncio.Future[Any]] = []

    async def send_many(records: Any) -> Any:
        calls.append([r[2] for r in records])
        if len(calls) == 1:
            await first.wait()  # the first request is in flight
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        futures.append(future)
        return [(list(records), future)]

    window = PublishWindow(None, TOPICS, max_batches=4, retry_max_s=0.01, send_many=send_many)
    runner = asyncio.create_task(window.run())
    acked: list[str] = []
    on_durable = recorder(acked)

    for tag in "abc":
        await window.submit(batch(tag, 1), on_durable(tag))
        await asyncio.sleep(0.01)
    first.set()
    await asyncio.sleep(0.01)
    assert calls == [[b"a-0"], [b"b-0", b"c-0"]], "b and c waited together, went together"
    futures[1].set_exception(ConnectionError("refused"))  # b's and c's produce batch
    futures[0].set_result(None)
    for _ in range(100):
        for f in futures:
            if not f.done():
                f.set_result(None)
        await asyncio.sleep(0.005)
        if len(acked) == 3:
            break
    assert acked == ["a", "b", "c"]
    assert sorted(calls[2:]) == [[b"b-0"], [b"c-0"]], "each batch resends its own records"
    runner.cancel()
