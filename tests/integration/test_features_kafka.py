"""The feature worker on Apache Kafka, Redis and Feast: fresh aggregates, a restart, faults.

A real ``streamscore worker --role features`` process consumes ``events`` and writes the
streaming views through Feast's push source. The test reads what serving reads (the
online store, through ``FeastOnlineSource``) and what training reads (Feast's
point-in-time join of the offline store) and compares both with the batch computation
of :mod:`features.aggregates` on the same events. Then it kills the worker, sends
more, a late event and a redelivered one, and checks that nothing was lost or counted
twice; and it runs a worker against a Redis that is not there yet.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.aggregates import batch_rows
from features.fraud_data import USER_STREAM_VIEW
from features.online import FeastOnlineSource
from features.store import OnlineStoreConfig, apply_repo, open_store
from streams import stack
from streams.codec import encode
from streams.kafka import send_records
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

USER_REFS = [f"user_stream_stats:{f}" for f in USER_STREAM_VIEW.features]


def metric(port: int, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def feature_settings(
    settings_factory: Callable[..., Settings], prepared_repo: tuple[Path, Path], tmp_path: Path
) -> Callable[..., Settings]:
    """Settings on a private copy of the prepared repo (the worker appends to its offline
    files), applied to the test Redis."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(prepared_repo[0], repo)

    def make(**overrides: Any) -> Settings:
        settings = settings_factory(feature_repo=repo, metrics_port=free_port())
        apply_repo(repo, OnlineStoreConfig(kind="redis", redis_url=settings.redis_url))
        return settings.model_copy(update=overrides)

    return make


@pytest.fixture
def start_features() -> Iterator[Callable[[Settings], dict[str, Any]]]:
    states: list[stack.StackState] = []

    def start(settings: Settings) -> dict[str, Any]:
        state = stack.StackState("external", settings.bootstrap_servers, settings.online_store)
        stack.start_workers(settings, state, 1, role="features")
        states.append(state)
        stack.wait_for_workers(settings, state, timeout_s=120)
        return state.workers[-1]

    yield start
    for state in states:
        for worker in state.workers:
            if stack.alive(worker["pid"]):
                stack.stop_pid(worker["pid"])


def txn(event_id: str, user: str, t_ms: int, amount: float, merchant: str = "m0001") -> dict:
    return {
        "event_id": event_id,
        "event_time": t_ms,
        "user_id": user,
        "merchant_id": merchant,
        "amount": amount,
        "currency": "EUR",
        "channel": "web",
        "country": "DE",
    }


async def send(settings: Settings, events: list[dict]) -> None:
    await send_records(
        settings,
        settings.topic("events"),
        [(e["user_id"].encode(), encode(e)) for e in events],
    )


async def online_row(settings: Settings, user: str) -> tuple[dict[str, Any], float | None]:
    source = FeastOnlineSource(open_store(settings.feature_repo, _online(settings)))
    try:
        values = await source.fetch(USER_REFS, [{"user_id": user}])
        stamp = source.last_event_timestamps()["user_stream_stats"][0]
    finally:
        source.close()
    return {ref.split(":")[1]: v[0] for ref, v in values.items()}, stamp


def _online(settings: Settings) -> OnlineStoreConfig:
    return OnlineStoreConfig(kind="redis", redis_url=settings.redis_url)


async def wait_for_count(
    settings: Settings, user: str, count: int, timeout_s: float = 60
) -> tuple[dict[str, Any], float]:
    """The user's online row once its 24 h count is ``count``; and how long that took."""
    started = time.monotonic()
    while True:
        row, _ = await online_row(settings, user)
        if row["txn_count_24h"] == count:
            return row, time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{user}: online txn_count_24h is {row['txn_count_24h']}, expected {count}")
        await asyncio.sleep(0.2)


def expected_at(events: list[dict], stamp_ms: float) -> pd.Series | None:
    """The batch computation's row of the user as of ``stamp_ms`` (its latest row
    stamped at or before it; None before the first event)."""
    frame = pd.DataFrame(events)
    frame["event_timestamp"] = pd.to_datetime(frame["event_time"], unit="ms", utc=True)
    rows = batch_rows(USER_STREAM_VIEW, frame)
    rows = rows[rows["event_timestamp"] <= pd.Timestamp(stamp_ms * 1000, unit="us", tz="UTC")]
    return rows.iloc[-1] if len(rows) else None


def assert_row_equals(got: dict[str, Any], want: pd.Series | None) -> None:
    assert want is not None
    for feature in USER_STREAM_VIEW.features:
        assert got[feature] == pytest.approx(float(want[feature]), rel=1e-6), feature


async def test_fresh_aggregates_of_a_new_user_training_parity_and_a_restart(
    feature_settings: Callable[..., Settings], start_features: Callable[[Settings], dict]
) -> None:
    settings = feature_settings(feature_lateness_s=120)
    worker = start_features(settings)
    user = f"new-{uuid.uuid4().hex[:8]}"
    t0 = int(time.time() * 1000) - 60_000
    events = [txn(f"{user}-{i}", user, t0 + i * 5_000, 10.0 + i) for i in range(5)]
    await send(settings, events)
    row, took = await wait_for_count(settings, user, 5, timeout_s=30)
    print(f"five events of a new user visible online after {took:.2f} s")
    assert_row_equals(row, expected_at(events, time.time() * 1000))
    # Redis keeps the stamp to the microsecond: 1 ms after the last event.
    _, stamp = await online_row(settings, user)
    assert stamp == pytest.approx((events[-1]["event_time"] + 1) / 1000, abs=1e-5)
    # What training reads: Feast's point-in-time join, at each event's time, gives the
    # rows of the events before it (never the event itself), as the batch computation.
    store = open_store(settings.feature_repo, _online(settings))
    entity_df = pd.DataFrame(
        {
            "user_id": [user] * 5,
            "event_timestamp": pd.to_datetime(
                [e["event_time"] for e in events], unit="ms", utc=True
            ),
        }
    )
    # Feast's file store leaves out entity rows without any feature row (the first event).
    joined = entity_df.merge(
        store.get_historical_features(entity_df=entity_df, features=USER_REFS).to_df(),
        on=["user_id", "event_timestamp"],
        how="left",
    )
    assert joined["txn_count_24h"].fillna(0).tolist() == [0, 1, 2, 3, 4]
    for i in range(1, 5):
        assert_row_equals(joined.iloc[i].to_dict(), expected_at(events, events[i]["event_time"]))

    # A crash (SIGKILL), then: two new events, one late within the allowed lateness,
    # and one redelivered (same id as an event already counted).
    os.kill(worker["pid"], signal.SIGKILL)
    late = txn(f"{user}-late", user, t0 + 7_000, 100.0)
    again = dict(events[2])
    more = [txn(f"{user}-{i}", user, t0 + i * 5_000, 1.0) for i in (5, 6)]
    await send(settings, [more[0], late, again, more[1]])
    worker = start_features(settings)
    row, _ = await wait_for_count(settings, user, 8)
    assert_row_equals(row, expected_at([*events, *more, late], time.time() * 1000))
    assert (
        metric(
            worker["metrics_port"],
            "streamscore_feature_events_total",
            view="user_stream_stats",
            outcome="duplicate",
        )
        >= 1
    )
    # Too late: beyond 120 s behind the newest event of the user; counted, not added.
    await send(settings, [txn(f"{user}-old", user, t0 - 600_000, 5.0)])
    deadline = time.monotonic() + 30
    while (
        metric(
            worker["metrics_port"],
            "streamscore_feature_events_total",
            view="user_stream_stats",
            outcome="too_late",
        )
        < 1
    ):
        assert time.monotonic() < deadline, "the too-late event was not counted"
        await asyncio.sleep(0.2)
    row, _ = await online_row(settings, user)
    assert row["txn_count_24h"] == 8
    assert (
        metric(
            worker["metrics_port"],
            "streamscore_feature_freshness_seconds_count",
            view="user_stream_stats",
        )
        >= 1
    )


async def test_the_worker_retries_while_redis_is_down_and_catches_up_when_it_is_back(
    feature_settings: Callable[..., Settings],
    start_features: Callable[[Settings], dict],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = feature_settings(
        redis_url=f"redis://127.0.0.1:{port}/0", feature_push_retry_max_s=0.5
    )
    # Nothing listens on the port: the worker starts (its registry is a file) and retries.
    worker = start_features(settings)
    user = f"down-{uuid.uuid4().hex[:8]}"
    t0 = int(time.time() * 1000)
    await send(settings, [txn(f"{user}-{i}", user, t0 + i, 1.0) for i in range(3)])
    deadline = time.monotonic() + 60
    while metric(worker["metrics_port"], "streamscore_feature_write_retries_total") < 2:
        assert time.monotonic() < deadline, "no write retries counted"
        assert stack.alive(worker["pid"]), "the feature worker died while Redis was down"
        await asyncio.sleep(0.3)
    redis = await asyncio.create_subprocess_exec(
        *[
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=asyncio.subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        _, took = await wait_for_count(settings, user, 3)
        assert stack.alive(worker["pid"])
        print(f"visible {took:.2f} s after Redis came up")
    finally:
        redis.terminate()
        await asyncio.wait_for(redis.wait(), 10)


async def test_a_second_feature_worker_on_the_same_offline_files_is_refused(
    feature_settings: Callable[..., Settings], start_features: Callable[[Settings], dict]
) -> None:
    """Feast's file offline store rewrites the whole parquet per push: two writers would
    lose each other's rows. The second worker stops at start-up naming the first; the
    first keeps writing."""
    settings = feature_settings()
    first = start_features(settings)
    state = stack.StackState("external", settings.bootstrap_servers, settings.online_store)
    second_settings = settings.model_copy(update={"metrics_port": free_port()})
    stack.start_workers(second_settings, state, 1, role="features")
    second = state.workers[-1]
    try:
        deadline = time.monotonic() + 60
        while stack.alive(second["pid"]):
            assert time.monotonic() < deadline, "the second feature worker did not stop"
            await asyncio.sleep(0.2)  # alive() is False for an exited (zombie) child
    finally:
        stack.stop_pid(second["pid"])
    log = await asyncio.to_thread(Path(second["log"]).read_text)
    assert "user_stream_stats" in log and "is already written by feature worker" in log, log
    assert f"pid {first['pid']}" in log, log
    assert "run a single feature worker" in log
    # The first one is unaffected: a new user's events still reach the online store.
    user = f"one-{uuid.uuid4().hex[:8]}"
    t0 = int(time.time() * 1000) - 10_000
    await send(settings, [txn(f"{user}-{i}", user, t0 + i * 1000, 2.0) for i in range(2)])
    await wait_for_count(settings, user, 2, timeout_s=30)
    assert stack.alive(first["pid"])
