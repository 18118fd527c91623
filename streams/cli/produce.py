"""``produce``: the demo's events (and labels), or a JSONL file's lines, to the events topic."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from streams.cli.common import (
    EXIT_OK,
    StreamscoreCommand,
    build_settings,
    common_options,
    eprint,
)
from streams.settings import Settings

Records = list[tuple[bytes | None, bytes]]


def drift_factors(specs: Sequence[str]) -> dict[str, float]:
    """``["amount=3"]`` -> ``{"amount": 3.0}``; a malformed spec names itself."""
    factors: dict[str, float] = {}
    for spec in specs:
        name, sep, factor = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError(spec)
            factors[name.strip()] = float(factor)
        except ValueError:
            raise click.BadParameter(
                f"{spec!r}: expected FIELD=FACTOR, e.g. amount=3", param_hint="--drift"
            ) from None
    return factors


def file_records(path: Path, key_field: str | None) -> Records:
    """JSONL lines sent as they are: a malformed line reaches the pipeline as it would."""
    from streams.codec import decode

    records: Records = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        key = None
        try:
            obj = decode(line)
            if key_field and isinstance(obj, dict) and obj.get(key_field) is not None:
                key = str(obj[key_field]).encode()
        except ValueError:
            pass
        records.append((key, line))
    return records


async def produce_records(
    settings: Settings,
    records: Sequence[tuple[bytes | None, bytes]],
    rate: float | None,
    topic: str = "events",
) -> float:
    """Send records to ``topic`` (logical name); return the seconds it took."""
    from streams.kafka import send_records

    started = time.monotonic()
    await send_records(settings, settings.topic(topic), records, rate)
    return time.monotonic() - started


def served_entity_field(settings: Settings) -> str | None:
    """The event field of the served model's first entity key (what canary routing and
    the online lookup follow); None when that model is not registered here."""
    from models.registry import ModelRegistry

    registry = ModelRegistry(settings.registry_path)
    version = registry.champion(settings.model_name)
    if version is None:
        return None
    fields = list(registry.manifest(settings.model_name, version).entity_keys.values())
    return fields[0] if fields else None


@click.command(cls=StreamscoreCommand)
@common_options
@click.option("--n", type=int, default=1000, show_default=True, help="demo events to send")
@click.option("--rate", type=float, help="events per second (default: as fast as possible)")
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file whose lines are sent as they are",
)
@click.option(
    "--seed",
    type=int,
    help="seed of the demo events (default: fresh each run, so repeated runs on the "
    "durable broker send new event ids)",
)
@click.option("--unknown-user-rate", type=float, default=0.0, show_default=True)
@click.option("--labels", is_flag=True, help="also send the events' ground truth to labels")
@click.option(
    "--flip-labels",
    type=float,
    default=0.0,
    metavar="P",
    help="share of labels sent flipped (provokes a quality drop)",
)
@click.option(
    "--key",
    "key_field",
    metavar="FIELD",
    help="event field the records are keyed by (default: the served model's first "
    "entity key, so one entity's events stay in order on one partition)",
)
@click.option(
    "--drift",
    multiple=True,
    metavar="FIELD=FACTOR",
    help="multiply a numeric event field, e.g. amount=3 (provokes drift); repeatable",
)
def produce(
    n: int,
    rate: float | None,
    file_: Path | None,
    seed: int | None,
    unknown_user_rate: float,
    labels: bool,
    flip_labels: float,
    drift: tuple[str, ...],
    key_field: str | None,
    **options: Any,
) -> int:
    """Send demo events or a JSONL file to the events topic."""
    from streams.codec import encode
    from streams.kafka import keyed_records

    settings = build_settings(**options)
    if key_field is None:
        key_field = served_entity_field(settings)
        if key_field is None and file_ is not None:
            eprint(
                f"no entity key: model {settings.model_name!r} (STREAMSCORE_MODEL_NAME) is "
                "not registered here, so records go unkeyed; --key FIELD names one"
            )
    label_records: Records = []
    if file_ is not None:
        records = file_records(file_, key_field)
    else:
        from features.fraud_data import demo_stream

        try:
            events, truth = demo_stream(
                settings.data_dir,
                n,
                seed if seed is not None else secrets.randbits(31),
                unknown_user_rate,
                drift=drift_factors(drift),
                flip_labels=flip_labels,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        records = keyed_records(events, key_field or "user_id")  # the example's entity
        # a label is keyed like its event
        label_records = [
            (key, encode(label)) for (key, _), label in zip(records, truth, strict=True)
        ]
    elapsed = asyncio.run(produce_records(settings, records, rate))
    eprint(
        f"sent {len(records)} events to {settings.topic('events')} in {elapsed:.2f}s "
        f"({len(records) / max(elapsed, 1e-9):.0f}/s)"
    )
    if labels and label_records:
        asyncio.run(produce_records(settings, label_records, None, topic="labels"))
        eprint(
            f"sent {len(label_records)} labels to {settings.topic('labels')}"
            + (f" ({flip_labels:.0%} flipped)" if flip_labels else "")
        )
    return EXIT_OK
