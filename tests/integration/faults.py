"""Shared by the fault-matrix tests (``test_faults_*.py``): run a load, reconcile it by
event id with the audit module, and record the row the chaos table prints.

A row is appended as one JSON line to ``$FAULT_REPORT`` when it is set
(``make chaos`` sets it and prints the table with :func:`print_table`); the test
asserts on the same figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from features.fraud_data import demo_events, load_entities
from streams.audit import AuditReport, TopicRecord, read_topic, reconcile
from streams.codec import decode, encode
from streams.settings import Settings
from tests.integration.test_scoring_kafka import collect

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FaultRow:
    fault: str
    events_in: int
    predictions: int
    deadletters: int
    duplicates: int
    lost: int
    recovery_s: float | None
    note: str = ""


def demo_records(settings: Settings, n: int, seed: int) -> list[tuple[bytes, bytes]]:
    users, merchants = load_entities(settings.data_dir)
    return [
        (e["user_id"].encode(), encode(e))
        for e in demo_events(n, seed=seed, users=users, merchants=merchants)
    ]


async def reconcile_all(
    settings: Settings, expected: int, timeout_s: float = 120
) -> tuple[AuditReport, list[TopicRecord], list[TopicRecord]]:
    """Every event of the run against every prediction and dead letter, by id: read again
    until every event is accounted for (a count would stop early on duplicates) or time
    runs out."""
    deadline = time.monotonic() + timeout_s
    predictions, dead = await collect(settings, expected=expected, timeout_s=timeout_s)
    while True:
        events = await read_topic(settings, settings.topic("events"), idle_s=1)
        report = reconcile(events, predictions, dead)
        if (report.reconciled and report.events >= expected) or time.monotonic() > deadline:
            return report, predictions, dead
        await asyncio.sleep(2)
        predictions, dead = await asyncio.gather(
            read_topic(settings, settings.topic("predictions"), idle_s=1),
            read_topic(settings, settings.topic("deadletter"), idle_s=1),
        )


def duplicates(predictions: list[TopicRecord]) -> int:
    """Predictions beyond the first per event id (what at-least-once redelivered)."""
    ids = [decode(p.value or b"{}").get("event_id") for p in predictions]
    return len(ids) - len(set(ids))


def record_row(row: FaultRow) -> FaultRow:
    target = os.environ.get("FAULT_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(asdict(row)) + "\n")
    print(f"fault row: {json.dumps(asdict(row))}", file=sys.stderr)
    return row


def redis_service(action: str) -> None:
    """Stop or start the test Redis (deploy/redis.sh, with the port and home deploy/test.sh
    exported)."""
    subprocess.run(["bash", str(ROOT / "deploy/redis.sh"), action], check=True, timeout=60)


def broker_service(action: str) -> None:
    """Stop or start the test broker (the ports deploy/test.sh exported)."""
    env = dict(
        os.environ,
        STREAMSCORE_KAFKA_PORT=os.environ["TEST_KAFKA_PORT"],
        STREAMSCORE_KAFKA_CONTROLLER_PORT=os.environ["TEST_KAFKA_CONTROLLER_PORT"],
    )
    subprocess.run(
        [sys.executable, "-m", "streams.broker", action], env=env, check=True, timeout=180
    )


def scored_at(record: TopicRecord) -> float:
    stamp = decode(record.value or b"{}")["scored_at"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def longest_pause(predictions: list[TopicRecord]) -> float:
    """The longest time between two consecutive predictions: how long scoring stood still."""
    times = sorted(scored_at(p) for p in predictions)
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def print_table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    head = ("fault", "events in", "predictions", "dead letters", "duplicates", "lost", "recovery")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        recovery = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f} s"
        lines.append(
            f"| {r['fault']} | {r['events_in']} | {r['predictions']} | {r['deadletters']} | "
            f"{r['duplicates']} | {r['lost']} | {recovery} |"
        )
    return "\n".join(lines)


def monotonic_s(start: float) -> float:
    return round(time.monotonic() - start, 1)


if __name__ == "__main__":  # make chaos: print the table of the rows recorded
    print(print_table(Path(sys.argv[1])))
