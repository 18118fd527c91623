"""Rebalances lose nothing: workers join and leave a fresh consumer group while events flow.

This test found a hole in faust-streaming's offset bookkeeping (events fetched during
rebalance recovery were skipped and their offsets committed anyway; see
streams/faust_fixes.py). Counts in must equal outcomes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from features.fraud_data import demo_events, load_entities
from streams import stack
from streams.audit import read_topic, reconcile
from streams.cli import produce_records
from streams.codec import encode
from streams.settings import Settings
from tests.integration.test_scoring_kafka import collect

pytestmark = pytest.mark.integration


async def test_workers_joining_and_leaving_lose_no_event(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    state = worker_factory(settings, count=2)
    users, merchants = load_entities(settings.data_dir)
    events = demo_events(3000, seed=21, users=users, merchants=merchants)
    records = [(e["user_id"].encode(), encode(e)) for e in events]
    # Events start flowing right away, while the group may still be recovering.
    producing = asyncio.create_task(produce_records(settings, records, rate=300))

    await asyncio.sleep(2)
    stack.start_workers(settings, state, 3)  # a third worker joins ...
    await asyncio.to_thread(stack.wait_for_workers, settings, state, 120)
    await asyncio.sleep(1)
    stack.stop_pid(state.workers[-1]["pid"])  # ... and leaves while events flow
    await producing

    predictions, dead = await collect(settings, expected=len(records), timeout_s=90)
    report = reconcile(
        await read_topic(settings, settings.topic("events"), idle_s=1), predictions, dead
    )
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
