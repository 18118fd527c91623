"""Slow fault rows (marked ``chaos``: `make chaos` runs them, `make test` does not):
the broker restarted under load, a rebalance 1 -> 2 -> 1 under load, a model whose
file is corrupted on the worker's disk, a slow Redis and a slow downstream (a produce
quota on the worker). Each reconciled by event id against Apache Kafka.

Recovery time here is the longest pause between two consecutive predictions while
events flowed: how long scoring stood still because of the fault.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.registry import ModelRegistry
from models.rollout import RolloutState
from streams import stack
from streams.audit import AuditReport, TopicRecord
from streams.cli.produce import produce_records
from streams.codec import decode
from streams.control import publish_state, wait_for_acks
from streams.kafka import committed_lag, reader
from streams.settings import Settings
from tests.integration.faults import (
    FaultRow,
    broker_service,
    demo_records,
    duplicates,
    longest_pause,
    reconcile_all,
    record_row,
)
from tests.integration.test_faults_redis import redis_restored  # noqa: F401 (fixture)
from tests.integration.test_rollout_kafka import private_registry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PAUSE_S = 15.0
GRACE_S = 20.0  # stack.stop_pid: SIGTERM, then SIGKILL after this long
#: Faust's stream buffers (4,096 events per partition) and aiokafka's fetch buffers (1 MiB
#: per partition) bound what a stalled worker holds: well under this.
MEMORY_BOUND_MB = 100.0


async def test_broker_restarted_under_load_recovers_by_itself(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    state = worker_factory(settings)
    records = demo_records(settings, 4000, seed=51)
    producing = asyncio.create_task(produce_records(settings, records, rate=200))
    await asyncio.sleep(4)
    started = time.monotonic()
    await asyncio.to_thread(broker_service, "stop")
    await asyncio.to_thread(broker_service, "start")
    outage_s = time.monotonic() - started
    await producing  # the producer rode the restart out by itself too

    report, predictions, dead = await reconcile_all(settings, expected=len(records), timeout_s=180)
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    assert all(stack.worker_running(w) for w in state.workers), "the worker died"
    record_row(
        FaultRow(
            "broker restarted under load",
            report.events,
            report.predictions,
            report.deadletters,
            duplicates(predictions),
            len(report.missing),
            round(longest_pause(predictions), 1),
            note=f"broker stop+start took {outage_s:.1f} s",
        )
    )


async def test_rebalance_one_two_one_under_load_loses_nothing(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    state = worker_factory(settings)
    records = demo_records(settings, 5000, seed=53)
    producing = asyncio.create_task(produce_records(settings, records, rate=250))
    await asyncio.sleep(3)
    stack.start_workers(settings, state, 2)  # 1 -> 2
    await asyncio.to_thread(stack.wait_for_workers, settings, state, 120)
    await asyncio.sleep(3)
    await asyncio.to_thread(stack.stop_pid, state.workers[-1]["pid"])  # 2 -> 1
    await producing

    report, predictions, dead = await reconcile_all(settings, expected=len(records))
    assert report.events == len(records)
    assert report.reconciled, report.as_dict()
    record_row(
        FaultRow(
            "rebalance 1 -> 2 -> 1 under load",
            report.events,
            report.predictions,
            report.deadletters,
            duplicates(predictions),
            len(report.missing),
            round(longest_pause(predictions), 1),
        )
    )


async def test_a_corrupted_model_file_is_refused_and_the_worker_keeps_serving(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    prepared_repo: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    registry_root = private_registry(prepared_repo[1], tmp_path / "registry")
    registry = ModelRegistry(registry_root)
    onnx = registry.model_path("fraud", "2")
    onnx.write_bytes(onnx.read_bytes()[:-64] + b"\0" * 64)  # bit rot on the worker's disk
    settings = settings_factory(registry_root=registry_root)
    worker_factory(settings)
    records = demo_records(settings, 2000, seed=55)
    producing = asyncio.create_task(produce_records(settings, records, rate=250))
    await asyncio.sleep(2)
    # As a promotion issued from a host whose copy of v2 is intact would arrive.
    current = registry.rollout("fraud") or RolloutState(model="fraud", champion="1")
    promoted = RolloutState(
        model="fraud",
        champion="2",
        previous=[current.champion],
        seq=current.seq + 1,
        action="promote",
        reason="fault test: corrupted file",
    )
    await publish_state(settings, promoted)
    acks = await wait_for_acks(settings, "fraud", promoted.seq, workers=1, timeout_s=30)
    await producing

    assert [a["event"] for a in acks] == ["rollout_refused"], acks
    assert "sha256" in str(acks[0]).lower() or "hash" in str(acks[0]).lower(), acks
    report, predictions, dead = await reconcile_all(settings, expected=len(records))
    assert report.reconciled, report.as_dict()
    versions = {decode(p.value or b"{}")["version"] for p in predictions}
    assert versions == {"1"}, "the refused version must never serve"
    record_row(
        FaultRow(
            "model file corrupted on disk",
            report.events,
            report.predictions,
            report.deadletters,
            duplicates(predictions),
            len(report.missing),
            round(longest_pause(predictions), 1),
            note="promotion refused (sha256), v1 kept serving",
        )
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def peak_rss_until(done: asyncio.Task[Any], pid: int, peak: float) -> float:
    """The highest RSS of ``pid`` (MB, sampled every 0.5 s) until ``done`` ends."""
    while not done.done():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.5)
    await done
    return peak


async def reconciled_bounded_drained(
    settings: Settings, expected: int, growth_mb: float, fault: str, drain_s: float
) -> tuple[AuditReport, list[TopicRecord]]:
    """Every id reconciled, RSS growth under the chaos bound, and the committed lag back
    to 0 within ``drain_s``: what each slow-dependency row asserts after its fault."""
    report, predictions, _ = await reconcile_all(settings, expected=expected, timeout_s=180)
    assert report.events == expected
    assert report.reconciled, report.as_dict()
    assert growth_mb < MEMORY_BOUND_MB, f"RSS grew {growth_mb:.0f} MB under {fault}"
    lag = await committed_lag(settings, settings.group_id, settings.topic("events"))
    deadline = time.monotonic() + drain_s
    while any(v for v in lag.values()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        lag = await committed_lag(settings, settings.group_id, settings.topic("events"))
    assert all(v == 0 for v in lag.values()), f"lag did not drain: {lag}"
    return report, predictions


async def test_slow_redis_keeps_memory_bounded_and_lag_drains(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    redis_restored: None,  # noqa: F811
) -> None:
    """Redis answers nothing for 15 s (CLIENT PAUSE) while events come at 1,000/s."""
    settings = settings_factory(store_breaker_open_s=1.0)
    state = worker_factory(settings)
    pid = state.workers[0]["pid"]
    records = demo_records(settings, 25_000, seed=57)
    baseline = rss_mb(pid)
    producing = asyncio.create_task(produce_records(settings, records, rate=1000))
    await asyncio.sleep(3)
    port = os.environ["REDIS_PORT"]
    pause = ["redis-cli", "-p", port, "CLIENT", "PAUSE", str(int(PAUSE_S * 1000)), "ALL"]
    await asyncio.to_thread(subprocess.run, pause, check=True)
    paused_at = time.time()
    peak = await peak_rss_until(producing, pid, baseline)
    report, predictions = await reconciled_bounded_drained(
        settings, len(records), peak - baseline, "a slow Redis", drain_s=30
    )
    flagged = sum(
        decode(p.value or b"{}")["fallback"] == "features_unavailable" for p in predictions
    )
    record_row(
        FaultRow(
            "slow Redis (paused 15 s) at 1,000/s",
            report.events,
            report.predictions,
            report.deadletters,
            duplicates(predictions),
            len(report.missing),
            round(longest_pause(predictions), 1),
            note=f"RSS {baseline:.0f} -> peak {peak:.0f} MB; {flagged} features_unavailable; "
            f"paused at {paused_at:.0f}",
        )
    )


async def test_two_workers_sigtermed_under_load_exit_0_within_grace(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    """A group of two stopped at once (a deployment's rollout): each exits 0 within the
    grace period; a worker started afterwards scores the rest, none twice."""
    settings = settings_factory()
    state = worker_factory(settings, count=2)
    records = demo_records(settings, 3000, seed=59)
    producing = asyncio.create_task(produce_records(settings, records, rate=400))
    await asyncio.sleep(3)
    pids = [w["pid"] for w in state.workers]
    for pid in pids:
        os.killpg(pid, signal.SIGTERM)
    termed_at = time.monotonic()
    exits: dict[int, tuple[float, int]] = {}
    while len(exits) < len(pids) and time.monotonic() - termed_at < GRACE_S:
        for pid in pids:
            if pid in exits:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: no wait)
            if done:
                exits[pid] = (time.monotonic() - termed_at, os.waitstatus_to_exitcode(status))
        await asyncio.sleep(0.1)
    assert len(exits) == len(pids), f"not stopped within {GRACE_S:.0f} s: {exits}"
    assert all(code == 0 for _, code in exits.values()), exits
    slowest = max(s for s, _ in exits.values())
    await asyncio.to_thread(worker_factory, settings)
    await producing

    report, predictions, dead = await reconcile_all(settings, expected=len(records))
    assert report.reconciled, report.as_dict()
    doubled = duplicates(predictions)
    record_row(
        FaultRow(
            "two workers SIGTERMed at once under load",
            report.events,
            report.predictions,
            report.deadletters,
            doubled,
            len(report.missing),
            round(slowest, 1),
            note="recovery = the slower worker's exit 0 after SIGTERM",
        )
    )
    assert doubled == 0, "a stopping worker finishes and commits what is in flight"


async def read_committed(settings: Settings, topic: str, idle_s: float = 3.0) -> list:
    consumer = reader(settings, topic, isolation_level="read_committed")
    await consumer.start()
    out: list = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out += records
                last = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def test_exactly_once_setting_across_a_sigkill_is_still_at_least_once(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    """``STREAMSCORE_PROCESSING_GUARANTEE=exactly_once`` turns on Faust's transactions (a
    transactional producer per assigned partition commits the offsets), but the agent's
    outputs go through ``app.producer``, outside them (README, Delivery guarantees): a
    ``read_committed`` reader still sees the redone events after a SIGKILL. This row
    measures that; it asserts what does hold: nothing lost."""
    settings = settings_factory(processing_guarantee="exactly_once")
    state = worker_factory(settings)
    records = demo_records(settings, 3000, seed=61)
    producing = asyncio.create_task(produce_records(settings, records, rate=400))
    await asyncio.sleep(3)
    os.killpg(state.workers[0]["pid"], signal.SIGKILL)
    await asyncio.to_thread(worker_factory, settings)
    await producing

    report, _, dead = await reconcile_all(settings, expected=len(records))
    assert report.reconciled, report.as_dict()
    committed = await read_committed(settings, settings.topic("predictions"))
    ids = {decode(p.value or b"{}")["event_id"] for p in committed}
    assert len(ids) == len(records), "a read_committed reader misses predictions"
    record_row(
        FaultRow(
            "SIGKILL with exactly_once (read_committed)",
            len(records),
            len(committed),
            len(dead),
            len(committed) - len(ids),
            len(records) - len(ids),
            None,
            note="Faust 0.15.3: outputs are not in the offsets' transaction",
        )
    )


#: Faust's client id (``broker_client_id``): its producer is what the quota slows.
WORKER_CLIENT_ID = "faust-0.15.3"
QUOTA_BYTES_S = 16 * 1024


def client_quota(settings: Settings, client_id: str, producer_byte_rate: int | None) -> None:
    """Set (or remove, with None) a produce quota on a client id with Kafka's own
    ``kafka-configs`` (``kafka.admin.ConfigCommand``): the broker delays that client's
    produce responses to keep it under the rate, as a slow or overloaded downstream does."""
    from streams.broker.jars import ensure_jars
    from streams.broker.kafka import java_binary

    change = (
        ["--add-config", f"producer_byte_rate={producer_byte_rate}"]
        if producer_byte_rate is not None
        else ["--delete-config", "producer_byte_rate"]
    )
    jars = ensure_jars(settings.kafka_cache_dir, settings.kafka_maven_mirror, progress=False)
    subprocess.run(
        [
            str(java_binary(settings)),
            "-Xmx128m",
            "-cp",
            f"{jars}/*",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            settings.bootstrap_servers,
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            client_id,
            *change,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


async def test_slow_downstream_keeps_memory_bounded_loses_nothing_and_drains(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    """The worker's producer held to 16 KiB/s by a broker quota for 15 s (predictions need
    ~10x that) while events come at 400/s: backpressure holds what is in flight (the
    publish window, Faust's stream buffers), the input waits in Kafka as lag, nothing is
    lost, and the lag drains once the quota is lifted."""
    settings = settings_factory()
    state = worker_factory(settings)
    pid = state.workers[0]["pid"]
    records = demo_records(settings, 8000, seed=61)
    baseline = rss_mb(pid)
    producing = asyncio.create_task(produce_records(settings, records, rate=400))
    await asyncio.sleep(3)
    await asyncio.to_thread(client_quota, settings, WORKER_CLIENT_ID, QUOTA_BYTES_S)
    peak = baseline
    try:
        throttled_until = time.monotonic() + PAUSE_S
        while time.monotonic() < throttled_until:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.5)
        lag_throttled = await committed_lag(settings, settings.group_id, settings.topic("events"))
    finally:
        await asyncio.to_thread(client_quota, settings, WORKER_CLIENT_ID, None)
    lifted = time.monotonic()
    assert sum(v or 0 for v in lag_throttled.values()) > 400, (
        f"the quota did not slow the worker: {lag_throttled}"
    )
    peak = await peak_rss_until(producing, pid, peak)
    report, predictions = await reconciled_bounded_drained(
        settings, len(records), peak - baseline, "a slow downstream", drain_s=60
    )
    drained_s = time.monotonic() - lifted
    record_row(
        FaultRow(
            "slow downstream (produce quota 16 KiB/s, 15 s) at 400/s",
            report.events,
            report.predictions,
            report.deadletters,
            duplicates(predictions),
            len(report.missing),
            round(drained_s, 1),
            note=f"RSS {baseline:.0f} -> peak {peak:.0f} MB; lag at the end of the quota "
            f"{sum(v or 0 for v in lag_throttled.values())}; recovery = quota lifted until lag 0",
        )
    )
