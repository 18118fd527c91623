"""Publishing without stalling: a bounded window of batches in flight, acked in order.

In: the outbound records of one micro-batch (:class:`streams.pipeline.Outbound`) and a
callback that acks the batch's source events. Out: the records enqueued on the
producer at once (the next batch is processed while the broker acknowledges this
one), and the callback run once the broker acknowledged every record of the batch and
of every batch submitted before it: an offset is committed only once its outcome is
durable (at-least-once), and batches settle in the order they were consumed.

A record the broker refused is sent again with back-off, forever: giving up would ack
an event that has no outcome. While the broker is away the window fills and
:meth:`PublishWindow.submit` waits, which stops consumption (backpressure).

The producer is reached through :data:`SendFn`, Faust's ``app.producer.send``
(one aiokafka ``send`` per record into its accumulator, which batches per partition
by ``linger_ms`` / ``max_batch_size``); ``Topic.send`` adds per-record Faust machinery
(codecs, callbacks, a ``FutureMessage``) that measured at 15 % of the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams import metrics
from streams.pipeline import Outbound

log = logging.getLogger(__name__)

#: ``send(topic, key, value, headers)`` enqueues one record and returns the future of
#: the broker's acknowledgement.
SendFn = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[Awaitable[Any]]]


#: One record on its way: (topic, key, value, headers).
Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


@dataclass
class _Batch:
    records: list[Record]
    futures: list[asyncio.Future[Any]]
    on_durable: Callable[[], Awaitable[None]]


def faust_send(producer: Any) -> SendFn:
    """A :data:`SendFn` over Faust's producer (``app.producer``, an aiokafka wrapper)."""

    async def send(
        topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        return await producer.send(topic, key, value, None, None, headers or None)

    return send


async def enqueue(send: SendFn, record: Record) -> asyncio.Future[Any]:
    """Hand one record to the producer; a refusal becomes a failed future (retried later)."""
    try:
        return asyncio.ensure_future(await send(*record))
    except Exception as exc:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed


async def settle(
    send: SendFn,
    records: list[Record],
    futures: list[asyncio.Future[Any]],
    retry_max_s: float,
    retry_first_s: float = 0.1,
) -> None:
    """Return once every record is acknowledged, sending failed ones again with back-off."""
    delay = retry_first_s
    while True:
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [
            r for r, res in zip(records, results, strict=True) if isinstance(res, BaseException)
        ]
        if not failed:
            return
        metrics.PUBLISH_RETRIES.inc(len(failed))
        first = next(res for res in results if isinstance(res, BaseException))
        log.warning(
            "publish of %d records failed (%r); retrying in %.1fs", len(failed), first, delay
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max_s)
        records = failed
        futures = [await enqueue(send, r) for r in records]


async def publish(send: SendFn, records: list[Record], retry_max_s: float) -> None:
    """Enqueue every record at once, then wait until the broker acknowledged all of them."""
    futures = [await enqueue(send, r) for r in records]
    await settle(send, records, futures, retry_max_s)


class PublishWindow:
    """At most ``max_batches`` batches published but not yet acknowledged.

    Call :meth:`run` in a task beside the consuming loop; :meth:`submit` each batch;
    :meth:`drain` before offsets must be final (shutdown).
    """

    def __init__(
        self,
        send: SendFn,
        topics: Mapping[str, str],
        max_batches: int,
        retry_max_s: float,
    ) -> None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be at least 1, got {max_batches}")
        self._send = send
        self._topics = dict(topics)
        self._slots = asyncio.Semaphore(max_batches)
        self._pending: asyncio.Queue[_Batch] = asyncio.Queue()
        self._retry_max_s = retry_max_s

    async def submit(
        self, outbound: Sequence[Outbound], on_durable: Callable[[], Awaitable[None]]
    ) -> None:
        """Enqueue ``outbound`` on the producer; ``on_durable`` runs once all are acked.

        Waits while the window is full. Returns before the broker acknowledged anything.
        """
        await self._slots.acquire()
        metrics.PUBLISH_IN_FLIGHT.inc()
        topics = self._topics
        records: list[Record] = [
            (topics[o.destination], o.key, o.value, o.headers) for o in outbound
        ]
        futures = [await enqueue(self._send, r) for r in records]
        self._pending.put_nowait(_Batch(records, futures, on_durable))

    async def run(self) -> None:
        """Settle batches in submission order, forever (cancel the task to stop)."""
        while True:
            batch = await self._pending.get()
            try:
                await settle(self._send, batch.records, batch.futures, self._retry_max_s)
                await batch.on_durable()
            finally:
                self._pending.task_done()
                metrics.PUBLISH_IN_FLIGHT.dec()
                self._slots.release()

    async def drain(self) -> None:
        """Return once every submitted batch is acknowledged and its callback ran."""
        await self._pending.join()


async def send_best_effort(
    send: SendFn, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> None:
    """Enqueue informative records (signals): a failure is logged, never retried, and never
    holds up offsets."""
    for key, value in records:
        try:
            future = await send(topic, key, value, [])
        except Exception as exc:
            log.warning("could not publish a record to %s: %r", topic, exc)
            continue
        asyncio.ensure_future(future).add_done_callback(_log_failure(topic))


def _log_failure(topic: str) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("could not publish a record to %s: %r", topic, future.exception())

    return done
