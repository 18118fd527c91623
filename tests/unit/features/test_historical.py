"""Training's point-in-time join (features.historical) equals Feast's, view by view."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.historical import feast_historical_features, historical_features
from features.store import OnlineStoreConfig, apply_repo, open_store

VIEWS = {
    "user_stats": "user_id",
    "merchant_stats": "merchant_id",
    "user_stream_stats": "user_id",
    "merchant_stream_stats": "merchant_id",
}


@pytest.fixture(scope="module")
def repo_with_corrections(tmp_path_factory: pytest.TempPathFactory, applied_repo: Any) -> Path:
    """A private copy whose user stream history also holds what a feature worker writes
    besides the batch history: a corrected row (same stamp, newer ``created``, other
    values) and a row stamped exactly at a transaction's time."""
    repo = tmp_path_factory.mktemp("historical") / "repo"
    shutil.copytree(applied_repo.path, repo)
    apply_repo(repo, OnlineStoreConfig(sqlite_path=repo / "online.db"))
    path = repo / "data" / "user_stream_stats.parquet"
    rows = pd.read_parquet(path)
    tx = pd.read_parquet(repo / "data" / "transactions.parquet")
    corrected = rows.iloc[[10, 200, 400]].copy()
    corrected["txn_count_24h"] += 100
    corrected["created"] += pd.Timedelta(seconds=5)
    exact = rows.iloc[[50]].copy()
    exact["user_id"] = tx["user_id"].iloc[300]
    exact["event_timestamp"] = tx["event_timestamp"].iloc[300]
    exact["created"] = exact["event_timestamp"]
    exact["txn_count_24h"] = 777
    pd.concat([rows, corrected, exact], ignore_index=True).to_parquet(path, index=False)
    return repo


def _entity_rows(repo: Path) -> pd.DataFrame:
    tx = pd.read_parquet(repo / "data" / "transactions.parquet")
    # Feast's Dask store keeps one entity row per (join keys, time): no duplicates.
    tx = tx.drop_duplicates(["user_id", "event_timestamp"])
    tx = tx.drop_duplicates(["merchant_id", "event_timestamp"])
    # Out of time order, with an unknown user, so order and missing entities are checked.
    rows = tx[["event_timestamp", "user_id", "merchant_id"]].sample(frac=1.0, random_state=3)
    unknown = rows.iloc[[0]].assign(user_id="u-nobody", merchant_id="m-nobody")
    return pd.concat([rows, unknown], ignore_index=True)


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_each_view_equals_feasts_point_in_time_join(repo_with_corrections: Path, view: str) -> None:
    store = open_store(repo_with_corrections, OnlineStoreConfig(sqlite_path=Path("unused.db")))
    entities = _entity_rows(repo_with_corrections)
    fast = historical_features(store, entities, "fraud_v2")
    assert len(fast) == len(entities) and fast.index.equals(entities.index)
    assert fast[["event_timestamp", "user_id", "merchant_id"]].equals(entities)

    key = VIEWS[view]
    refs = [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
    columns = [r.replace(":", "__") for r in refs]
    asked = entities[["event_timestamp", key]].assign(_row=np.arange(len(entities)))
    feast = (
        store.get_historical_features(entity_df=asked, features=refs, full_feature_names=True)
        .to_df()
        .set_index("_row")[columns]
        .reindex(range(len(entities)))  # Feast leaves out rows with no row in the TTL
    )
    got = fast[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(_comparable(got), _comparable(feast), check_dtype=False)
    assert got.notna().any(axis=1).sum() > len(entities) // 3, "the join found little"
    assert got.iloc[-1].isna().all()  # the unknown entity


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float (Feast and pandas pick other int/NaN dtypes), strings as objects."""
    out = frame.copy()
    for column in out.columns:
        numeric = pd.to_numeric(out[column], errors="coerce")
        if numeric.notna().sum() == out[column].notna().sum():
            out[column] = numeric.astype(float)
        else:
            out[column] = out[column].astype(object).where(out[column].notna(), None)
    out.index = pd.RangeIndex(len(out))
    return out


def test_corrections_and_exact_stamps_win_and_views_are_joined_independently(
    repo_with_corrections: Path,
) -> None:
    store = open_store(repo_with_corrections, OnlineStoreConfig(sqlite_path=Path("unused.db")))
    tx = pd.read_parquet(repo_with_corrections / "data" / "transactions.parquet")
    entities = tx[["event_timestamp", "user_id", "merchant_id"]].iloc[[300]]
    fast = historical_features(store, entities, "fraud_v2")
    assert fast["user_stream_stats__txn_count_24h"].tolist() == [777]

    # A user's first transaction: no streaming row yet, the merchant's views still count
    # (Feast's Dask store would drop the whole entity row).
    first = tx.drop_duplicates("user_id").iloc[[-1]][["event_timestamp", "user_id", "merchant_id"]]
    row = historical_features(store, first, "fraud_v2").iloc[0]
    assert pd.isna(row["user_stream_stats__txn_count_24h"])
    assert pd.notna(row["merchant_stats__txn_count_7d"])


def test_the_feast_path_keeps_every_entity_row_in_order(repo_with_corrections: Path) -> None:
    store = open_store(repo_with_corrections, OnlineStoreConfig(sqlite_path=Path("unused.db")))
    entities = _entity_rows(repo_with_corrections).iloc[:300]
    via_feast = feast_historical_features(store, entities, "fraud_v1")
    fast = historical_features(store, entities, "fraud_v1")
    assert via_feast.index.equals(entities.index)
    assert list(via_feast.columns) == list(fast.columns)
    # fraud_v1's views are daily snapshots every user has from its first day: the two
    # paths agree wherever Feast kept the row.
    kept = via_feast["user_stats__txn_count_7d"].notna()
    assert kept.sum() > 200
    pd.testing.assert_frame_equal(_comparable(via_feast[kept]), _comparable(fast[kept]))


def test_a_read_that_meets_a_write_half_done_is_tried_again(tmp_path: Path) -> None:
    """Feast's file store rewrites the offline file in place on each push of a running
    feature worker; `streamscore train` beside it reads the file as it is between writes."""
    import threading

    from features.historical import _read_parquet

    frame = pd.DataFrame({"user_id": ["u1", "u2"], "txn_count_1h": [1, 2]})
    whole = tmp_path / "whole.parquet"
    frame.to_parquet(whole, index=False)
    path = tmp_path / "view.parquet"
    path.write_bytes(whole.read_bytes()[:20])  # what a reader sees mid-write
    timer = threading.Timer(0.1, lambda: path.write_bytes(whole.read_bytes()))
    timer.start()
    try:
        pd.testing.assert_frame_equal(_read_parquet(str(path), ["user_id", "txn_count_1h"]), frame)
    finally:
        timer.join()
    path.write_bytes(b"PAR1")
    with pytest.raises(Exception, match="(?i)parquet|magic|size"):
        _read_parquet(str(path), ["user_id"], attempts=2)
