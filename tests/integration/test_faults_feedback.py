"""Fault row: the feedback worker SIGKILLed while labels stream in and joins are pending.

Predictions wait in the join table for their labels; labels arrive at a steady rate and
the worker is killed mid-way, then started again: it restores the table from its
changelog. Every pair must come out on ``predictions-labelled``; a pair emitted twice is
counted (the join records a pair as done only after its labelled record was
acknowledged, so a kill in between re-emits it: at-least-once, see the report).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from streams.settings import Settings
from tests.integration.faults import FaultRow, record_row
from tests.integration.test_feedback_kafka import (
    feedback_runner,  # noqa: F401 (the fixture)
    labels,
    predictions,
    read_ids,
    send,
)

# Back in `make test`: it failed about 1 run in 5 (labels of the recovery window dropped
# by Faust below a raced read offset) until streams/faust_fixes.py sought before resuming
# the stream partitions; then 20 of 20 runs passed with no record dropped.
pytestmark = pytest.mark.integration


async def send_paced(settings: Settings, topic: str, records: list, rate: float) -> None:
    step = max(1, int(rate / 10))
    for start in range(0, len(records), step):
        await send(settings, topic, records[start : start + step])
        await asyncio.sleep(0.1)


async def test_feedback_worker_sigkilled_with_pending_joins_loses_no_pair(
    settings_factory: Callable[..., Settings],
    feedback_runner: Callable[[Settings], int],  # noqa: F811
) -> None:
    settings = settings_factory(monitor_slice_fields="")
    rng = np.random.default_rng(9)
    ids = [f"fk-{i}" for i in range(600)]
    truth = {e: int(rng.random() < 0.3) for e in ids}
    pid = feedback_runner(settings)
    await send(settings, "predictions", predictions(ids, rng.random(len(ids))))

    sending = asyncio.create_task(send_paced(settings, "labels", labels(ids, truth), rate=150))
    await asyncio.sleep(2)  # about a third of the labels are in: joins done and pending
    os.killpg(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await asyncio.to_thread(feedback_runner, settings)
    recovery_s = time.monotonic() - killed_at
    await sending

    labelled = await read_ids(settings, "labelled", set(ids), timeout_s=90)
    counts = Counter(r["event_id"] for r in labelled)
    lost = len(set(ids) - set(counts))
    doubled = sum(n - 1 for n in counts.values())
    assert lost == 0, f"{lost} pairs lost"
    assert all(r["label"] == truth[r["event_id"]] for r in labelled)
    record_row(
        FaultRow(
            "feedback worker SIGKILL with pending joins",
            len(ids),
            len(labelled),
            0,
            doubled,
            lost,
            round(recovery_s, 1),
            note="pairs on predictions-labelled; recovery = restart until ready",
        )
    )
