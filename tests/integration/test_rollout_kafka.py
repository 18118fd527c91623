"""Live rollout on Apache Kafka + Redis: two real workers, commands through `control`.

While events flow, the operator's commands (canary, shadow, promote, rollback) are
issued as `streamscore models ...` issues them; every worker must apply each one
(lifecycle acks on `signals`), and at the end every event has exactly one outcome:
no loss, no double scoring across the switches.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from features.fraud_data import demo_events, load_entities
from models.registry import ModelRegistry
from streams import lifecycle, stack
from streams.audit import read_topic, reconcile
from streams.cli.produce import produce_records
from streams.codec import decode, encode
from streams.control import wait_for_acks
from streams.settings import Settings
from tests.integration.test_scoring_kafka import collect

pytestmark = pytest.mark.integration


def private_registry(shared: Path, dest: Path) -> Path:
    """A copy of the session's registry plus a v2 (same ONNX, its own version)."""
    shutil.copytree(shared, dest)
    registry = ModelRegistry(dest)
    v1 = registry.manifest("fraud", "1")
    fields = v1.model_dump(exclude={"name", "version", "sha256", "created_at", "history"})
    registry.register("fraud", registry.model_path("fraud", "1"), **fields)
    return dest


async def test_rollout_under_load_with_two_workers(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    prepared_repo: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    registry_root = private_registry(prepared_repo[1], tmp_path / "registry")
    settings = settings_factory(registry_root=registry_root)
    worker_factory(settings, count=2)

    users, merchants = load_entities(settings.data_dir)
    good = demo_events(3000, seed=5, users=users, merchants=merchants)
    records = [(e["user_id"].encode(), encode(e)) for e in good]
    producing = asyncio.create_task(produce_records(settings, records, rate=250))

    timeline = []
    for action, version, percent in (
        ("canary", "2", 30.0),
        ("shadow", "2", None),
        ("promote", "2", None),
        ("rollback", None, None),
    ):
        await asyncio.sleep(1.5)
        started = time.monotonic()
        report = await asyncio.to_thread(
            lifecycle.rollout,
            settings,
            "fraud",
            action,  # type: ignore[arg-type]
            version=version,
            percent=percent,
            force=action == "promote",
            reason="integration test" if action == "promote" else None,
            wait_workers=2,
            wait_s=20,
        )
        acks = report["acks"]
        timeline.append((action, round(time.monotonic() - started, 2), acks))
        assert len(acks) == 2 and {a["event"] for a in acks} == {"rollout_applied"}, timeline
    await producing
    print("rollout timeline:", timeline)

    predictions, dead = await collect(settings, expected=len(records), timeout_s=120)
    events = await read_topic(settings, settings.topic("events"), idle_s=1)
    report = reconcile(events, predictions, dead)
    assert report.reconciled and report.duplicate_ids == [], report.as_dict()
    assert len(predictions) == len(records) and dead == []

    values = [decode(p.value) for p in predictions]
    seen = {(v["variant"], v["version"]) for v in values}
    assert {("champion", "1"), ("canary", "2"), ("champion", "2")} <= seen, seen
    # sticky: while the canary ran, an entity was on one side only
    on_canary = {v["entity"]["user_id"] for v in values if v["variant"] == "canary"}
    on_champion_v1 = {
        v["entity"]["user_id"]
        for v in values
        if v["variant"] == "champion" and v["version"] == "1" and v["scored_at"]
    }
    assert on_canary and on_champion_v1
    shadow = await read_topic(settings, settings.topic("predictions-shadow"), idle_s=1)
    assert shadow, "the shadow wrote predictions-shadow while it was on"
    assert {decode(s.value)["variant"] for s in shadow} == {"shadow"}
    assert {decode(s.value)["event_id"] for s in shadow} <= {e["event_id"] for e in good}
    # the last events (after rollback) are served by v1 again
    last = max(values, key=lambda v: v["scored_at"])
    assert (last["variant"], last["version"]) == ("champion", "1")
    state = ModelRegistry(registry_root).rollout("fraud")
    assert state is not None and state.champion == "1" and state.seq == 4

    # One more command, then a worker that starts now must recover it from control alone:
    # its registry copy has no recorded rollout state (state.json), only the versions.
    await asyncio.to_thread(
        lifecycle.rollout, settings, "fraud", "canary", "2", 10.0, wait_workers=2, wait_s=20
    )
    late_registry = tmp_path / "late-registry"
    shutil.copytree(registry_root, late_registry)
    (late_registry / "fraud" / "state.json").unlink()
    late_home = tmp_path / "late"
    late = settings.model_copy(
        update={
            "consumer_group": settings.consumer_group + "-late",
            "home": late_home,
            "registry_root": late_registry,
        }
    )
    late_pid = worker_factory(late, count=1).workers[0]["pid"]
    # Its acknowledgement of seq 5 was emitted at start-up, from what it read on control.
    acks = await wait_for_acks(settings, "fraud", 5, workers=3, timeout_s=15)
    late_ack = [a for a in acks if a["worker"].endswith(f":{late_pid}")]
    assert len(acks) == 3 and len(late_ack) == 1, acks
    assert late_ack[0]["details"]["routing"]["canary"] == "2"
    assert late_ack[0]["details"]["routing"]["canary_percent"] == 10.0
