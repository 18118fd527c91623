"""Fault rows: the scoring worker SIGKILLed mid-batch then restarted, and SIGTERMed under
load; both reconciled by event id against Apache Kafka.

SIGKILL: every event ends as a prediction or a dead letter; the events scored again are
counted and bounded by what can be in flight at a kill: the events acknowledged since
the last commit (``broker_commit_interval`` 1 s, plus a second of slack, at the
producing rate) plus the publish window (``publish_max_in_flight`` batches of
``batch_max``). SIGTERM: the worker finishes what is in flight, commits and exits 0
within the grace period (``stack.stop_pid`` waits 20 s before a SIGKILL); a worker started
afterwards scores the rest, none twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from streams import stack
from streams.cli.produce import produce_records
from streams.codec import decode
from streams.settings import Settings
from tests.integration.faults import (
    FaultRow,
    demo_records,
    duplicates,
    reconcile_all,
    record_row,
)

pytestmark = pytest.mark.integration

RATE = 400.0
COMMIT_INTERVAL_S = 1.0  # streams/faust_app.py: broker_commit_interval
GRACE_S = 20.0  # stack.stop_pid: SIGTERM, then SIGKILL after this long


def _scored_at(record_value: bytes | None) -> float:
    stamp = decode(record_value or b"{}")["scored_at"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_worker_sigkilled_mid_batch_then_restarted_loses_nothing(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    state = worker_factory(settings)
    records = demo_records(settings, 4000, seed=41)

    producing = asyncio.create_task(produce_records(settings, records, rate=RATE))
    await asyncio.sleep(3)  # mid-stream: batches are being scored and published
    os.killpg(state.workers[0]["pid"], signal.SIGKILL)
    killed_at = time.time()
    await asyncio.to_thread(worker_factory, settings)
    await producing

    report, predictions, dead = await reconcile_all(settings, expected=len(records))
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    doubled = duplicates(predictions)
    bound = RATE * (COMMIT_INTERVAL_S + 1.0) + settings.publish_max_in_flight * settings.batch_max
    assert doubled <= bound, f"{doubled} events scored twice; the in-flight bound is {bound:.0f}"
    after = [t for t in (_scored_at(p.value) for p in predictions) if t > killed_at]
    recovery_s = min(after) - killed_at
    record_row(
        FaultRow(
            "worker SIGKILL mid-batch, restarted",
            report.events,
            report.predictions,
            report.deadletters,
            doubled,
            len(report.missing),
            round(recovery_s, 1),
            note=f"duplicate bound {bound:.0f}; recovery includes the new worker's start",
        )
    )


async def test_worker_sigtermed_under_load_exits_0_within_grace_and_commits(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    state = worker_factory(settings)
    records = demo_records(settings, 3000, seed=43)

    producing = asyncio.create_task(produce_records(settings, records, rate=RATE))
    await asyncio.sleep(3)
    pid = state.workers[0]["pid"]
    os.killpg(pid, signal.SIGTERM)
    termed_at = time.monotonic()
    status = None
    while time.monotonic() - termed_at < GRACE_S:
        # WNOHANG does not block; the worker is this process's child.
        done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222
        if done:
            break
        await asyncio.sleep(0.1)
    stop_s = time.monotonic() - termed_at
    assert status is not None and os.waitstatus_to_exitcode(status) == 0, (
        f"the worker did not exit 0 within {GRACE_S:.0f} s (status {status})"
    )
    restarted_at = time.time()
    await asyncio.to_thread(worker_factory, settings)
    await producing

    report, predictions, dead = await reconcile_all(settings, expected=len(records))
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    doubled = duplicates(predictions)
    assert doubled == 0, "SIGTERM finishes and commits what is in flight: nothing is redone"
    after = [t for t in (_scored_at(p.value) for p in predictions) if t > restarted_at]
    record_row(
        FaultRow(
            "SIGTERM under load",
            report.events,
            report.predictions,
            report.deadletters,
            doubled,
            len(report.missing),
            round(stop_s, 1),
            note=f"exit 0 in {stop_s:.1f} s (grace {GRACE_S:.0f} s); "
            f"restart to first prediction {min(after) - restarted_at:.1f} s",
        )
    )
