"""Publishing without stalling: a bounded window of batches in flight, acked in order.

In: the outbound records of one micro-batch (:class:`streams.pipeline.Outbound`) and a
callback that acks the batch's source events. Out: the records handed to the producer
in order by the window's own task (the next batch is processed while the producer takes
this one and the broker acknowledges it), and the callback run once the broker
acknowledged every record of the batch and of every batch submitted before it: an
offset is committed only once its outcome is durable (at-least-once), and batches settle
in the order they were consumed.

A record the broker refused is sent again with back-off, forever: giving up would ack
an event that has no outcome. While the broker is away the window fills and
:meth:`PublishWindow.submit` waits, which stops consumption (backpressure).

The scoring worker reaches the producer through :data:`SendManyFn`
(:func:`faust_send_many`): a batch's records are grouped per topic and partition into
aiokafka ``BatchBuilder`` objects of the producer beneath Faust's (``create_batch`` /
``send_batch``), so a batch costs one acknowledgement future per produced batch rather
than a ``send`` call and a future per record (those measured at about 11 % of the
worker's loop). Elsewhere, :data:`SendFn` is Faust's ``app.producer.send``, one record at
a time; ``Topic.send`` adds per-record Faust machinery (codecs, callbacks, a
``FutureMessage``) that measured at 15 % of the loop.
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


#: Records handed to the producer together and the future of their acknowledgement.
Sent = tuple[list[Record], asyncio.Future[Any]]

#: ``send_many(records)`` hands ``records`` to the producer in as few produce batches as
#: it can and returns each produce batch's records with its acknowledgement future. A
#: refusal is a failed future (never an exception), so the caller can send them again.
SendManyFn = Callable[[Sequence[Record]], Awaitable[list[Sent]]]


@dataclass
class _Batch:
    sent: list[Sent]
    on_durable: Callable[[], Awaitable[None]]


def faust_send(producer: Any) -> SendFn:
    """A :data:`SendFn` over Faust's producer (``app.producer``, an aiokafka wrapper)."""

    async def send(
        topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        return await producer.send(topic, key, value, None, None, headers or None)

    return send


def faust_send_many(producer: Any) -> SendManyFn:
    """A :data:`SendManyFn` over the aiokafka producer beneath Faust's ``app.producer``.

    Each (topic, partition) gets ``BatchBuilder`` objects of the producer's own batch size and
    compression (``create_batch``), submitted with ``send_batch``: aiokafka's public
    batch API. The partition of a record is Faust's ``key_partition`` (aiokafka's
    partitioner, the partition ``send`` would pick). Record timestamps are set when a
    record is appended (CreateTime), as ``send`` sets them.
    """

    async def send_many(records: Sequence[Record]) -> list[Sent]:
        try:
            aio = producer._ensure_producer()  # faust 0.15: the AIOKafkaProducer it wraps
            groups: dict[tuple[str, int], list[Record]] = {}
            partitions_known: set[str] = set()
            for record in records:
                topic = record[0]
                if topic not in partitions_known:
                    await aio.partitions_for(topic)  # metadata, for key_partition
                    partitions_known.add(topic)
                tp = producer.key_partition(topic, record[1])
                groups.setdefault((topic, tp.partition), []).append(record)
        except Exception as exc:
            return [(list(records), _failed(exc))]
        sent: list[Sent] = []
        for (topic, partition), group in groups.items():
            builder = aio.create_batch()
            held: list[Record] = []
            for record in group:
                if held and _append(builder, record) is None:
                    sent.append(await _send_batch(aio, builder, topic, partition, held))
                    builder, held = aio.create_batch(), []
                if not held and _append(builder, record) is None:
                    # Larger than a producer batch on its own: aiokafka's send() would
                    # refuse it too. Fail it like a refused send; the caller retries, so
                    # the size rules upstream (dead-letter truncation) must prevent this.
                    sent.append(([record], _failed(ValueError("record exceeds batch size"))))
                    continue
                held.append(record)
            if held:
                sent.append(await _send_batch(aio, builder, topic, partition, held))
        return sent

    return send_many


def _append(builder: Any, record: Record) -> Any:
    return builder.append(timestamp=None, key=record[1], value=record[2], headers=record[3])


async def _send_batch(
    aio: Any, builder: Any, topic: str, partition: int, records: list[Record]
) -> Sent:
    builder.close()  # nothing else is appended to it through producer.send()
    try:
        return records, asyncio.ensure_future(
            await aio.send_batch(builder, topic, partition=partition)
        )
    except Exception as exc:
        return records, _failed(exc)


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(exc)
    return failed


def one_by_one(send: SendFn) -> SendManyFn:
    """A :data:`SendManyFn` over a :data:`SendFn`: one future per record."""

    async def send_many(records: Sequence[Record]) -> list[Sent]:
        return [([r], await enqueue(send, r)) for r in records]

    return send_many


async def enqueue(send: SendFn, record: Record) -> asyncio.Future[Any]:
    """Hand one record to the producer; a refusal becomes a failed future (retried later)."""
    try:
        return asyncio.ensure_future(await send(*record))
    except Exception as exc:
        return _failed(exc)


async def settle(
    send_many: SendManyFn,
    sent: list[Sent],
    retry_max_s: float,
    retry_first_s: float = 0.1,
) -> None:
    """Return once every record of ``sent`` is acknowledged, sending the records of failed
    groups again through ``send_many`` with back-off."""
    delay = retry_first_s
    while True:
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        failed = [
            r
            for (group, _), res in zip(sent, results, strict=True)
            if isinstance(res, BaseException)
            for r in group
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
        sent = await send_many(failed)


async def publish(send: SendFn, records: list[Record], retry_max_s: float) -> None:
    """Enqueue every record at once, then wait until the broker acknowledged all of them."""
    send_many = one_by_one(send)
    await settle(send_many, await send_many(records), retry_max_s)


class PublishWindow:
    """At most ``max_batches`` batches published but not yet acknowledged.

    Call :meth:`run` in a task beside the consuming loop; :meth:`submit` each batch;
    :meth:`drain` before offsets must be final (shutdown).

    :meth:`submit` only queues a batch: :meth:`run` hands the batches to the producer in
    order and, beside that, settles them in order. Handing a batch to aiokafka waits
    until the partition's previous batch was taken by its sender, which waits for the
    broker to acknowledge the request before (one produce request in flight per broker);
    inside ``submit`` that wait held the agent for 10 ms of every 45 ms batch cycle at
    saturation (per-batch trace), with the broker's round trip on the critical path.
    """

    def __init__(
        self,
        send: SendFn | None,
        topics: Mapping[str, str],
        max_batches: int,
        retry_max_s: float,
        send_many: SendManyFn | None = None,
    ) -> None:
        """Records go out through ``send_many`` if given, else one by one through ``send``."""
        if max_batches < 1:
            raise ValueError(f"max_batches must be at least 1, got {max_batches}")
        if send_many is None:
            if send is None:
                raise ValueError("PublishWindow needs send or send_many")
            send_many = one_by_one(send)
        self._send_many = send_many
        self._topics = dict(topics)
        self._slots = asyncio.Semaphore(max_batches)
        self._unsent: asyncio.Queue[tuple[list[Record], Callable[[], Awaitable[None]]]] = (
            asyncio.Queue()
        )
        self._pending: asyncio.Queue[_Batch] = asyncio.Queue()
        self._retry_max_s = retry_max_s

    async def submit(
        self, outbound: Sequence[Outbound], on_durable: Callable[[], Awaitable[None]]
    ) -> None:
        """Queue ``outbound`` for the producer; ``on_durable`` runs once all are acked.

        Waits while the window is full. Returns before the records reach the producer.
        """
        await self._slots.acquire()
        metrics.PUBLISH_IN_FLIGHT.inc()
        topics = self._topics
        records: list[Record] = [
            (topics[o.destination], o.key, o.value, o.headers) for o in outbound
        ]
        self._unsent.put_nowait((records, on_durable))

    async def run(self) -> None:
        """Send and settle batches in submission order, forever (cancel the task to stop)."""
        await asyncio.gather(self._send(), self._settle())

    async def _send(self) -> None:
        """Hand the queued batches to the producer, all that wait at once: while a
        produce request is in flight the next batches gather, and go out together
        (small micro-batches would otherwise cost a broker round trip each)."""
        while True:
            queued = [await self._unsent.get()]
            while not self._unsent.empty():
                queued.append(self._unsent.get_nowait())
            try:
                records = [record for batch_records, _ in queued for record in batch_records]
                try:
                    sent = await self._send_many(records)
                except Exception as exc:  # settle() sends them again
                    sent = [(records, _failed(exc))]
                for (_, on_durable), own in zip(queued, _split(queued, sent), strict=True):
                    self._pending.put_nowait(_Batch(own, on_durable))
            finally:
                for _ in queued:
                    self._unsent.task_done()

    async def _settle(self) -> None:
        while True:
            batch = await self._pending.get()
            try:
                await settle(self._send_many, batch.sent, self._retry_max_s)
                await batch.on_durable()
            finally:
                self._pending.task_done()
                metrics.PUBLISH_IN_FLIGHT.dec()
                self._slots.release()

    async def drain(self) -> None:
        """Return once every submitted batch is acknowledged and its callback ran."""
        await self._unsent.join()
        await self._pending.join()


def _split(queued: Sequence[tuple[list[Record], Any]], sent: list[Sent]) -> list[list[Sent]]:
    """Per queued batch, its own records of each produce batch, with that batch's future:
    a batch settles on its records only, and sends only those again if refused."""
    owner = {id(record): i for i, (records, _) in enumerate(queued) for record in records}
    own: list[list[Sent]] = [[] for _ in queued]
    for group, future in sent:
        parts: dict[int, list[Record]] = {}
        for record in group:
            parts.setdefault(owner[id(record)], []).append(record)
        for i, part in parts.items():
            own[i].append((part, future))
    return own


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
