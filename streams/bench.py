"""``streamscore bench``: throughput and latency of the running pipeline, next to a
baseline measured in the same run on the same broker.

In: a running stack (``streamscore up``) and a number of events. Out: a report with,
for each subject, events/s and end-to-end latency percentiles, plus the pipeline's
figures as ratios of the baseline's, because the machine is shared and noisy and only
same-run ratios compare.

- ``passthrough``: a raw aiokafka consumer -> producer loop in this process, forwarding
  records unchanged from one topic to another (the floor any Kafka pipeline pays).
- ``pipeline``: demo events to ``events``, outcomes read back from ``predictions`` and
  ``deadletter``.

Latency is taken from Kafka record timestamps: output record timestamp minus input
record timestamp (both CreateTime, same machine), matched by event id, so the bench's
own reading speed does not count.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streams.codec import decode, encode
from streams.kafka import ensure_topics, producer, reader, send_records
from streams.settings import Settings


@dataclass
class BenchResult:
    subject: str
    events: int
    outcomes: int
    seconds: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def summarize(
    subject: str, sent: int, latencies_ms: Sequence[float], seconds: float
) -> BenchResult:
    lat = np.asarray(latencies_ms, dtype=np.float64)
    pct = np.percentile(lat, [50, 99]) if len(lat) else np.array([np.nan, np.nan])
    return BenchResult(
        subject=subject,
        events=sent,
        outcomes=len(lat),
        seconds=round(seconds, 3),
        events_per_s=round(len(lat) / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(float(pct[0]), 2),
        p99_ms=round(float(pct[1]), 2),
        max_ms=round(float(lat.max()), 2) if len(lat) else float("nan"),
    )


async def _send_all(
    settings: Settings, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float | None
) -> dict[str, float]:
    """Send records; return event id -> record timestamp (ms) as the broker stored it."""
    metadata = await send_records(settings, topic, records, rate)
    return {
        decode(value)["event_id"]: float(meta.timestamp)
        for (_, value), meta in zip(records, metadata, strict=True)
    }


async def _collect(
    settings: Settings, topics: Sequence[str], expected: int, timeout_s: float
) -> list[tuple[str, float, float]]:
    """(event id, output record timestamp ms, arrival monotonic s) for each outcome."""
    consumer = reader(settings, *topics, auto_offset_reset="latest")
    await consumer.start()
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)  # resolve "latest" now, before the load starts
    out: list[tuple[str, float, float]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                now = time.monotonic()
                for r in records:
                    try:
                        event_id = decode(r.value)["event_id"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    out.append((event_id, float(r.timestamp), now))
    finally:
        await consumer.stop()
    return out


async def _measure(
    settings: Settings,
    subject: str,
    topic_in: str,
    topics_out: Sequence[str],
    records: Sequence[tuple[bytes, bytes]],
    rate: float | None,
    timeout_s: float,
) -> BenchResult:
    collector = asyncio.create_task(_collect(settings, topics_out, len(records), timeout_s))
    await asyncio.sleep(1.0)  # let the collector take its partitions before the first record
    started = time.monotonic()
    sent_at = await _send_all(settings, topic_in, records, rate)
    outcomes = await collector
    latencies = [ts - sent_at[i] for i, ts, _ in outcomes if i in sent_at]
    last = max((arrived for _, _, arrived in outcomes), default=started)
    return summarize(subject, len(records), latencies, last - started)


async def _passthrough(
    settings: Settings, topic_in: str, topic_out: str, stop: asyncio.Event
) -> None:
    """The baseline: forward every record unchanged, batch by batch, acks=all."""
    consumer = reader(settings, topic_in)
    client = producer(settings)
    await consumer.start()
    await client.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=500)
            futures = [
                await client.send(topic_out, value=r.value, key=r.key)
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*futures)
    finally:
        await client.stop()
        await consumer.stop()


def demo_records(settings: Settings, n: int, seed: int) -> list[tuple[bytes, bytes]]:
    from features.fraud_data import demo_events, load_entities

    users, merchants = load_entities(settings.data_dir)
    tag = uuid.uuid4().hex[:6]
    events = demo_events(n, seed=seed, users=users, merchants=merchants)
    for e in events:
        e["event_id"] = f"bench-{tag}-{e['event_id']}"
    return [(str(e["user_id"]).encode(), encode(e)) for e in events]


async def run_bench(
    settings: Settings, n: int, rate: float | None, seed: int = 5, timeout_s: float = 300
) -> dict[str, Any]:
    await ensure_topics(settings)
    records = demo_records(settings, n, seed)

    base = settings.model_copy(
        update={"topic_prefix": f"{settings.topic_prefix}bench-{uuid.uuid4().hex[:6]}."}
    )
    await ensure_topics(base)
    stop = asyncio.Event()
    forwarder = asyncio.create_task(
        _passthrough(base, base.topic("events"), base.topic("predictions"), stop)
    )
    try:
        passthrough = await _measure(
            base,
            "passthrough",
            base.topic("events"),
            [base.topic("predictions")],
            records,
            rate,
            timeout_s,
        )
    finally:
        stop.set()
        await forwarder

    pipeline = await _measure(
        settings,
        "pipeline",
        settings.topic("events"),
        [settings.topic("predictions"), settings.topic("deadletter")],
        records,
        rate,
        timeout_s,
    )
    ratios = {
        "throughput_vs_passthrough": round(pipeline.events_per_s / passthrough.events_per_s, 3)
        if passthrough.events_per_s
        else None,
        "p50_vs_passthrough": round(pipeline.p50_ms / passthrough.p50_ms, 2)
        if passthrough.p50_ms
        else None,
        "p99_vs_passthrough": round(pipeline.p99_ms / passthrough.p99_ms, 2)
        if passthrough.p99_ms
        else None,
    }
    return {
        "n": n,
        "rate": rate,
        "bootstrap_servers": settings.bootstrap_servers,
        "results": [asdict(passthrough), asdict(pipeline)],
        "ratios": ratios,
    }
