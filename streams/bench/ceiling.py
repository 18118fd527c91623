"""Bench subject ``ceiling``: raw aiokafka consume -> produce passthrough, nothing else.

In: ``<prefix>events`` (group-less, from the beginning). Out: every record unchanged
to ``<prefix>predictions``, one gathered produce per fetched batch, acks=all: the
floor any Kafka pipeline on this broker pays. Settings from ``STREAMSCORE_*`` env.
Run by the bench as ``python -m streams.bench.ceiling``; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal

from streams.kafka import producer, reader
from streams.settings import Settings


async def passthrough(settings: Settings, stop: asyncio.Event) -> None:
    consumer = reader(settings, settings.topic("events"))
    client = producer(settings)
    await consumer.start()
    await client.start()
    out = settings.topic("predictions")
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            futures = [
                await client.send(out, value=r.value, key=r.key)
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*futures)
    finally:
        await client.stop()
        await consumer.stop()


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await passthrough(Settings(), stop)


if __name__ == "__main__":
    asyncio.run(_main())
