"""The generator: deterministic, leakage-free, with a learnable amount of fraud."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.fraud_data import (
    OfflineData,
    demo_events,
    generate_offline_data,
    load_entities,
    offline_data_from_dir,
)

END = datetime(2026, 1, 1, tzinfo=UTC)


def _frames(data: OfflineData) -> list[pd.DataFrame]:
    return [
        pd.read_parquet(p)
        for p in (data.transactions, data.user_stats, data.merchant_stats, data.user_stream_stats)
    ]


def test_same_seed_same_files_other_seed_differs(tmp_path: Path, small_data: OfflineData) -> None:
    again = generate_offline_data(
        tmp_path / "a", seed=11, n_users=300, n_merchants=50, days=30, end=END
    )
    for left, right in zip(_frames(small_data), _frames(again), strict=True):
        pd.testing.assert_frame_equal(left, right)
    other = generate_offline_data(
        tmp_path / "b", seed=12, n_users=300, n_merchants=50, days=30, end=END
    )
    assert not _frames(other)[0]["amount"].equals(_frames(small_data)[0]["amount"])


def test_transactions_follow_the_schema(small_data: OfflineData) -> None:
    tx = pd.read_parquet(small_data.transactions)
    assert list(tx.columns) == [
        "event_id",
        "event_timestamp",
        "user_id",
        "merchant_id",
        "amount",
        "currency",
        "channel",
        "country",
        "is_fraud",
    ]
    assert str(tx["event_timestamp"].dt.tz) == "UTC"
    assert tx["event_id"].is_unique
    assert (tx["amount"] >= 0).all()
    assert tx["event_timestamp"].min() >= pd.Timestamp(small_data.start)
    assert tx["event_timestamp"].max() < pd.Timestamp(small_data.end)
    assert set(tx["channel"]) <= {"web", "app", "pos"}
    assert tx["user_id"].str.fullmatch(r"u\d{5}").all()
    assert tx["merchant_id"].str.fullmatch(r"m\d{4}").all()
    assert 0.01 <= tx["is_fraud"].mean() <= 0.03


def test_fraud_is_detectable_from_the_planted_signals(small_data: OfflineData) -> None:
    tx = pd.read_parquet(small_data.transactions)
    by_channel = tx.groupby("channel")["is_fraud"].mean()
    assert by_channel["web"] > 3 * by_channel["pos"]
    assert (
        tx.loc[tx.is_fraud == 1, "amount"].median()
        > 2 * tx.loc[tx.is_fraud == 0, "amount"].median()
    )


def test_user_snapshots_only_use_earlier_transactions(small_data: OfflineData) -> None:
    tx = pd.read_parquet(small_data.transactions)
    stats = pd.read_parquet(small_data.user_stats)
    rng = np.random.default_rng(0)
    sample = stats.iloc[rng.choice(len(stats), size=60, replace=False)]
    for row in sample.itertuples():
        mine = tx[(tx.user_id == row.user_id) & (tx.event_timestamp < row.event_timestamp)]
        last7 = mine[mine.event_timestamp >= row.event_timestamp - timedelta(days=7)]
        last30 = mine[mine.event_timestamp >= row.event_timestamp - timedelta(days=30)]
        assert row.txn_count_7d == len(last7)
        assert row.distinct_merchants_30d == last30.merchant_id.nunique()
        expected_avg = last30.amount.mean() if len(last30) else 0.0
        assert row.avg_amount_30d == pytest.approx(expected_avg, rel=1e-4, abs=1e-3)
        expected_max = last30.amount.max() if len(last30) else 0.0
        assert row.max_amount_30d == pytest.approx(expected_max, rel=1e-5)


def test_merchant_fraud_rate_only_uses_labels_known_before_the_snapshot(
    small_data: OfflineData,
) -> None:
    tx = pd.read_parquet(small_data.transactions)
    stats = pd.read_parquet(small_data.merchant_stats)
    # A snapshot at day d may only see labels of transactions from days before d - 2.
    for row in stats.sample(40, random_state=1).itertuples():
        snap = row.event_timestamp
        known = tx[
            (tx.merchant_id == row.merchant_id)
            & (tx.event_timestamp < snap - timedelta(days=2))
            & (tx.event_timestamp >= snap - timedelta(days=92))
        ]
        expected = (known.is_fraud.sum() + 0.015 * 20) / (len(known) + 20)
        assert row.fraud_rate_90d == pytest.approx(expected, rel=1e-4)


def test_stream_history_counts_the_hour_before(small_data: OfflineData) -> None:
    tx = pd.read_parquet(small_data.transactions)
    stream = pd.read_parquet(small_data.user_stream_stats)
    # A row 1 ms after each transaction (it entered the windows), and 1 ms after it left
    # each window (10 minutes, 1 hour, 24 hours later): the change points.
    stamps = set(zip(stream.user_id, stream.event_timestamp, strict=True))
    end = pd.Timestamp(small_data.end)
    for offset in (timedelta(0), timedelta(minutes=10), timedelta(hours=1), timedelta(hours=24)):
        shifted = tx.event_timestamp + offset + timedelta(milliseconds=1)
        expected = {(u, t) for u, t in zip(tx.user_id, shifted, strict=True) if t <= end}
        assert expected <= stamps
    assert stream.event_timestamp.max() <= end  # nothing after the history's end
    assert len(stamps) == len(stream)
    row = stream.sort_values("txn_count_1h").iloc[-1]
    mine = tx[
        (tx.user_id == row.user_id)
        & (tx.event_timestamp < row.event_timestamp)
        & (tx.event_timestamp >= row.event_timestamp - timedelta(hours=1))
    ]
    assert row.txn_count_1h == len(mine) > 0


def test_entities_and_offline_data_read_back(small_data: OfflineData) -> None:
    users, merchants = load_entities(small_data.transactions.parent)
    assert users and merchants
    assert set(users) <= set(small_data.users)
    assert set(merchants) <= set(small_data.merchants)
    again = offline_data_from_dir(small_data.transactions.parent)
    assert again.end == small_data.end
    assert again.start == small_data.start


def test_missing_data_dir_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="generate the data first"):
        load_entities(tmp_path)


def test_demo_events_follow_the_contract() -> None:
    users = [f"u{i:05d}" for i in range(50)]
    merchants = [f"m{i:04d}" for i in range(10)]
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    events = demo_events(
        500, seed=5, users=users, merchants=merchants, now=now, unknown_user_rate=0.1
    )
    assert events == demo_events(
        500, seed=5, users=users, merchants=merchants, now=now, unknown_user_rate=0.1
    )
    assert len({e["event_id"] for e in events}) == 500
    for event in events:
        assert set(event) == {
            "event_id",
            "event_time",
            "user_id",
            "merchant_id",
            "amount",
            "currency",
            "channel",
            "country",
        }
        assert isinstance(event["amount"], float) and event["amount"] >= 0
        assert datetime.fromisoformat(event["event_time"]) == now
        assert event["merchant_id"] in merchants
    unknown = [e for e in events if e["user_id"] not in users]
    assert 20 <= len(unknown) <= 80
    assert all(e["user_id"] in users for e in demo_events(100, 5, users, merchants, now=now))


def test_demo_events_reject_bad_rates() -> None:
    with pytest.raises(ValueError, match="fraud_rate"):
        demo_events(1, 1, ["u00001"], ["m0001"], fraud_rate=2.0)
