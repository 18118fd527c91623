"""Fault row: the Redis online store is down for 15 s under load, then back, empty.

The test Redis keeps no data across a restart (deploy/redis.sh: no RDB, no AOF), so this
one row covers two faults of the matrix: the outage (predictions flagged
``fallback: features_unavailable`` at once while the circuit is open, recovery without a
restart) and the store restarted empty (detected, signalled, re-materialized by the
worker: not silently scored on the manifest's defaults).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from features.breaker import rematerialize
from features.store import open_store
from models.registry import ModelRegistry
from streams import stack
from streams.audit import read_topic
from streams.cli.produce import produce_records
from streams.codec import decode
from streams.online_store import online_store_config
from streams.settings import Settings
from tests.integration.faults import (
    FaultRow,
    demo_records,
    duplicates,
    reconcile_all,
    record_row,
    redis_service,
)

pytestmark = pytest.mark.integration

OUTAGE_S = 15.0


@pytest.fixture
def redis_restored(settings_factory: Callable[..., Settings]) -> Iterator[None]:
    """Whatever happens, Redis runs and holds the session's features afterwards."""
    yield
    redis_service("start")
    settings = settings_factory()
    rematerialize(open_store(settings.feature_repo, online_store_config(settings)))


async def test_redis_down_15s_then_back_empty_is_flagged_then_rematerialized_without_restart(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    redis_restored: None,
) -> None:
    settings = settings_factory(store_breaker_open_s=1.0, store_probe_every_s=2.0)
    state = worker_factory(settings)
    records = demo_records(settings, 3600, seed=31)
    rate = 100.0  # 36 s of events: 5 s before the outage, 15 s of it, 16 s after

    producing = asyncio.create_task(produce_records(settings, records, rate=rate))
    await asyncio.sleep(5)
    redis_service("stop")
    down_at = time.time()
    await asyncio.sleep(OUTAGE_S)
    redis_service("start")  # empty
    up_at = time.time()
    await producing

    report, predictions, dead = await reconcile_all(settings, expected=len(records))
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    assert all(stack.worker_running(w) for w in state.workers), "the worker died"

    scored = [decode(p.value or b"{}") for p in predictions]
    flagged = [p for p in scored if p["fallback"] == "features_unavailable"]
    assert len(flagged) > 0.5 * rate * OUTAGE_S, "the outage's events must be flagged"
    # Recovery: the first prediction after Redis came back that used real features.
    served = sorted(
        _epoch(p["scored_at"])
        for p in scored
        if p["fallback"] is None and not p["features_missing"] and _epoch(p["scored_at"]) > up_at
    )
    assert served, "after the store came back, nothing was scored on its features again"
    recovery_s = served[0] - up_at
    # Not silently scored on defaults: once back, no prediction of a known entity shows
    # all of its features missing (an empty store would give exactly that).
    registry = ModelRegistry(settings.registry_path)
    champion = registry.champion("fraud")
    assert champion is not None
    refs = set(registry.manifest("fraud", champion).feature_refs())
    on_defaults = [
        p
        for p in scored
        if _epoch(p["scored_at"]) > up_at
        and p["fallback"] is None
        and set(p["features_missing"]) == refs
    ]
    assert on_defaults == [], f"{len(on_defaults)} predictions scored on defaults"

    signals = [
        decode(s.value or b"{}")
        for s in await read_topic(settings, settings.topic("signals"), idle_s=1)
    ]
    states = [s["statistic"] for s in signals if s["kind"] == "online_store"]
    assert "open" in states and "empty" in states and "rematerialized" in states, states
    assert states[-1] in ("closed", "rematerialized"), states

    record_row(
        FaultRow(
            "Redis down 15 s, back empty",
            report.events,
            report.predictions,
            report.deadletters,
            duplicates(predictions),
            len(report.missing),
            round(recovery_s, 1),
            note=f"{len(flagged)} features_unavailable; down at {down_at:.0f}",
        )
    )


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
