"""Streaming views through real Feast (SQLite online, file offline): discovery and writes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.aggregates import Observation, apply_observations
from features.errors import FeatureError, FeatureStoreUnavailable
from features.fraud_data import MERCHANT_STREAM_VIEW, USER_STREAM_VIEW
from features.online import FeastOnlineSource
from features.store import OnlineStoreConfig, apply_repo, open_store
from features.streaming import FeastPushWriter, streaming_views


def test_the_repo_streaming_views_are_discovered(applied_repo: Any) -> None:
    store = open_store(applied_repo.path, applied_repo.online)
    assert streaming_views(store) == [MERCHANT_STREAM_VIEW, USER_STREAM_VIEW]
    assert streaming_views(store, ["user_stream_stats"]) == [USER_STREAM_VIEW]
    with pytest.raises(FeatureError, match="user_stats: not fed by a push source"):
        streaming_views(store, ["user_stats"])


def test_a_field_the_worker_cannot_compute_is_refused_by_name(
    copy_repo: Callable[[Path], Path], tmp_path: Path
) -> None:
    repo = copy_repo(tmp_path / "repo")
    definitions = repo / "fraud_features.py"
    definitions.write_text(
        definitions.read_text().replace(
            'Field(name="txn_count_10m", dtype=Int64),',
            'Field(name="txn_count_10m", dtype=Int64),\n'
            '        Field(name="amount_avg_1h", dtype=Float32),',
        )
    )
    online = OnlineStoreConfig(sqlite_path=tmp_path / "online.db")
    apply_repo(repo, online)
    with pytest.raises(FeatureError, match="user_stream_stats: streaming feature 'amount_avg_1h'"):
        streaming_views(open_store(repo, online))


async def test_pushed_rows_are_served_online_and_joined_point_in_time(
    applied_repo: Any, tmp_path: Path
) -> None:
    # A private copy: this test appends to the offline file.
    repo = tmp_path / "repo"
    shutil.copytree(applied_repo.path, repo)
    online = OnlineStoreConfig(sqlite_path=tmp_path / "online.db")
    apply_repo(repo, online)
    store = open_store(repo, online)
    writer = FeastPushWriter(store)
    t0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    observations = [Observation(f"e{i}", t0 + i * 1000, {"amount": 2.0}) for i in range(5)]
    update = apply_observations(
        USER_STREAM_VIEW, None, "new-user", observations, 0, (t0 + 4001) * 1000
    )
    assert update.online_row is not None
    await writer.write(USER_STREAM_VIEW, update.rows, [update.online_row])
    source = FeastOnlineSource(store)
    try:
        refs = ["user_stream_stats:txn_count_1h", "user_stream_stats:amount_sum_1h"]
        values = await source.fetch(refs, [{"user_id": "new-user"}])
        assert values == {refs[0]: [5], refs[1]: [10.0]}
        # 1 ms after the last event, of which Feast's SQLite store keeps whole seconds.
        assert source.last_event_timestamps()["user_stream_stats"] == [(t0 + 4001) // 1000]
        assert source.timestamp_resolution_s == 1.0
    finally:
        source.close()
        writer.close()
    # Training's point-in-time join: an event at the 3rd event's time sees the 2 before it.
    entity_df = pd.DataFrame(
        {
            "user_id": ["new-user", "new-user"],
            "event_timestamp": pd.to_datetime([t0 + 2000, t0 + 10_000], unit="ms", utc=True),
        }
    )
    joined = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    joined = joined.sort_values("event_timestamp")
    assert joined["txn_count_1h"].tolist() == [2, 5]


async def test_an_unwritable_offline_store_is_unavailable_not_a_crash(
    applied_repo: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(applied_repo.path, repo)
    online = OnlineStoreConfig(sqlite_path=tmp_path / "online.db")
    apply_repo(repo, online)
    writer = FeastPushWriter(open_store(repo, online))
    (repo / "data" / "user_stream_stats.parquet").unlink()
    update = apply_observations(USER_STREAM_VIEW, None, "u", [Observation("e", 1, {})], 0, 2000)
    assert update.online_row is not None
    try:
        with pytest.raises(FeatureStoreUnavailable, match="user_stream_stats"):
            await writer.write(USER_STREAM_VIEW, update.rows, [update.online_row])
    finally:
        writer.close()


def test_one_writer_per_offline_file_across_processes(applied_repo: Any, tmp_path: Path) -> None:
    """A second writer (another process, as a second feature worker is) is refused naming
    the first; a killed holder leaves no lock behind; backfill waits for no one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from features.errors import OfflineFileBusy
    from features.streaming import hold_offline_files
    from streams.cli import main

    repo = tmp_path / "repo"
    shutil.copytree(applied_repo.path, repo)
    online = OnlineStoreConfig(sqlite_path=tmp_path / "online.db")
    apply_repo(repo, online)
    store = open_store(repo, online)
    views = ["user_stream_stats", "merchant_stream_stats"]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from features.store import OnlineStoreConfig, open_store\n"
            "from features.streaming import hold_offline_files\n"
            f"config = OnlineStoreConfig(sqlite_path={str(tmp_path / 'o.db')!r})\n"
            f"store = open_store({str(repo)!r}, config)\n"
            f"lock = hold_offline_files(store, {views!r}, holder='feature worker A')\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OfflineFileBusy) as refused:
            hold_offline_files(store, views, holder="feature worker B")
        message = str(refused.value)
        assert "user_stream_stats" in message and "user_stream_stats.parquet" in message
        assert f"feature worker A (pid {holder.pid}" in message
        assert "run a single feature worker" in message
        # A backfill under a running worker would be undone by its next append.
        assert main(["features", "backfill", "user_stream_stats", "--repo", str(repo)]) == 2
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while True:  # the kernel drops a dead holder's flock
        try:
            lock = hold_offline_files(store, views, holder="feature worker B")
            break
        except OfflineFileBusy:
            assert time.monotonic() < deadline, "the killed holder's lock stayed"
            time.sleep(0.05)
    assert [p.name for p in lock.paths] == [
        "merchant_stream_stats.parquet",
        "user_stream_stats.parquet",
    ]
    lock.release()
    assert main(["features", "backfill", "user_stream_stats", "--repo", str(repo)]) == 0
