"""``tail``: a topic's records as JSON lines (dead letters with their key and headers)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from streams.cli.common import EXIT_OK, StreamscoreCommand, build_settings, common_options
from streams.settings import Settings


def render_record(record: Any, envelope: bool) -> str:
    """One record as a JSON line: its value, or (``envelope``) partition, offset, key,
    headers and value."""
    from streams.codec import decode

    try:
        value: Any = decode(record.value) if record.value is not None else None
    except ValueError:
        value = record.value.decode(errors="replace")
    if not envelope:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(
        {
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode(errors="replace") if record.key is not None else None,
            "headers": {k: v.decode(errors="replace") for k, v in (record.headers or [])},
            "value": value,
        },
        ensure_ascii=False,
    )


async def tail_records(
    settings: Settings, topic: str, limit: int | None, idle_s: float | None, from_beginning: bool
) -> int:
    """Print records of ``topic`` as JSON lines; dead letters with their key and headers."""
    from streams.kafka import reader

    consumer = reader(settings, topic, auto_offset_reset="earliest" if from_beginning else "latest")
    envelope = topic == settings.topic("deadletter")
    await consumer.start()
    printed = 0
    last = time.monotonic()
    try:
        while limit is None or printed < limit:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                if idle_s is not None and time.monotonic() - last > idle_s:
                    break
                continue
            last = time.monotonic()
            for record in records[: None if limit is None else limit - printed]:
                click.echo(render_record(record, envelope))
                printed += 1
    finally:
        await consumer.stop()
    return printed


@click.command(cls=StreamscoreCommand)
@common_options
@click.argument("topic")
@click.option("--n", type=int, help="stop after N records")
@click.option("--idle", type=float, help="stop after this many seconds without records")
@click.option("--latest", is_flag=True, help="only records that arrive from now on")
def tail(topic: str, n: int | None, idle: float | None, latest: bool, **options: Any) -> int:
    """Print the records of TOPIC: predictions, deadletter, events, ... (prefix added)."""
    settings = build_settings(**options)
    if not topic.startswith(settings.topic_prefix):
        topic = settings.topic(topic)
    try:
        asyncio.run(tail_records(settings, topic, n, idle, not latest))
    except KeyboardInterrupt:
        pass
    return EXIT_OK
