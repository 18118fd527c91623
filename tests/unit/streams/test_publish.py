"""The publish window without Kafka: bounded in flight, acked in order, only once durable,
refused records sent again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.pipeline import Outbound
from streams.publish import PublishWindow

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


def batch(tag: str, n: int = 2) -> list[Outbound]:
    return [Outbound("predictions", b"k", f"{tag}-{i}".encode()) for i in range(n)]


async def test_batches_settle_in_order_and_only_once_acknowledged() -> None:
    producer = FakeProducer()
    window = PublishWindow(producer.send, TOPICS, max_batches=3, retry_max_s=0.01)
    runner = asyncio.create_task(window.run())
    acked: list[str] = []

    def on_durable(tag: str) -> Any:
        async def done() -> None:
            acked.append(tag)

        return done

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
