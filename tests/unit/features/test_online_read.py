"""The online_read path of FeastOnlineSource against get_online_features, on SQLite.

The same checks against Redis (which keeps sub-second event timestamps) are in
tests/integration/test_online_read_redis.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from feast import FeatureStore
from google.protobuf.timestamp_pb2 import Timestamp

import features.online_read
from features.errors import FeatureStoreUnavailable, UnknownFeatureError
from features.online import FeastOnlineSource
from features.online_read import ONLINE_READ_FEAST_VERSIONS, event_ts, online_read_supported
from features.store import OnlineStoreConfig, open_store
from tests.online_parity import (
    EXAMPLE_REFS,
    TYPED_REFS,
    assert_same_lookup,
    build_parity_store,
    parity_rows,
)


@pytest.fixture(scope="module")
def parity_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FeatureStore, Any]]:
    """The example repo plus the test views on SQLite: materialized, then rewritten rows."""
    base = tmp_path_factory.mktemp("online_read")
    online = OnlineStoreConfig(sqlite_path=base / "online.db")
    store, entities = build_parity_store(base / "repo", online, "parity")
    yield store, entities


def test_example_views_read_the_same_through_online_read(parity_store: Any) -> None:
    store, (users, merchants) = parity_store
    rows = parity_rows(users, merchants)
    values, stamps = assert_same_lookup(store, EXAMPLE_REFS, rows)
    assert set(stamps) == {
        "user_stats",
        "merchant_stats",
        "user_stream_stats",
        "merchant_stream_stats",
    }
    # What was written comes back, as plain Python of the declared type.
    assert values["user_stats:txn_count_7d"][:3] == [7, 0, 3]
    assert type(values["user_stats:txn_count_7d"][0]) is int
    assert values["user_stats:avg_amount_30d"][:3] == [12.5, None, pytest.approx(1e-3)]
    assert values["user_stats:home_country"][:3] == ["FR", None, "DE"]
    assert values["merchant_stream_stats:txn_count_24h"][0] == 400
    # Unknown entities: None everywhere, no timestamp; duplicates: the same answer.
    assert all(values[ref][3] is None for ref in EXAMPLE_REFS)
    assert all(stamps[view][3] is None for view in stamps)
    assert [values[ref][4] for ref in EXAMPLE_REFS if ref.startswith("user_")] == [
        values[ref][0] for ref in EXAMPLE_REFS if ref.startswith("user_")
    ]
    assert stamps["user_stats"][0] == stamps["user_stats"][4] is not None


def test_every_value_type_and_a_two_key_int_entity_read_the_same(parity_store: Any) -> None:
    store, (users, merchants) = parity_store
    rows = parity_rows(users, merchants)
    values, stamps = assert_same_lookup(store, TYPED_REFS + EXAMPLE_REFS[:2], rows)
    first = {ref.split(":")[1]: values[ref][0] for ref in TYPED_REFS}
    assert first["f_int32"] == -(2**31) and type(first["f_int32"]) is int
    assert first["f_int64"] == 2**62
    assert first["f_float64"] == 0.1 and first["f_bool"] is True
    assert first["f_string"] == "é ü" and first["f_bytes"] == b"\x00\xff"
    assert isinstance(first["f_unix_ts"], datetime)
    assert first["f_uuid"] == uuid.UUID(int=1)
    assert first["f_int64_list"] == [1, 2, 3] and first["f_string_list"] == ["a", "b"]
    second = {ref.split(":")[1]: values[ref][1] for ref in TYPED_REFS}
    assert second["f_float32"] is None, "NaN is missing"
    assert second["f_bool"] is False and second["f_int64_list"] == []
    assert values["typed_stats:f_int64"][2] is None, "(u2, 1) has no typed row"
    assert stamps["typed_stats"][0] is not None and stamps["typed_stats"][2] is None


def test_an_entityless_view_is_asked_of_get_online_features(
    parity_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, (users, merchants) = parity_store
    rows = parity_rows(users, merchants)[:5]
    with caplog.at_level(logging.INFO, logger="features.online"):
        values, _ = assert_same_lookup(store, ["global_stats:open_alerts", *EXAMPLE_REFS[:1]], rows)
    assert values["global_stats:open_alerts"] == [3] * 5
    assert values[EXAMPLE_REFS[0]][:3] == [7, 0, 3]
    assert "global_stats has no entity; asking get_online_features" in caplog.text


async def test_fetch_with_the_cache_serves_online_read_answers(parity_store: Any) -> None:
    store, (users, merchants) = parity_store
    rows = parity_rows(users, merchants)
    source = FeastOnlineSource(store, cache_ttl_s=60)
    feast = FeastOnlineSource(store, online_read=False)
    try:
        assert source.read_path == "online_read"
        assert await source.fetch(EXAMPLE_REFS, rows) == await feast.fetch(EXAMPLE_REFS, rows)
        assert source.last_event_timestamps() == feast.last_event_timestamps()
        with pytest.raises(UnknownFeatureError) as err:
            await source.fetch(["user_stats:nope", "user_stats:txn_count_7d"], rows[:1])
        assert err.value.missing == ["user_stats:nope"]
    finally:
        source.close()
        feast.close()


def test_only_checked_feast_releases_read_through_online_read(
    parity_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, (users, merchants) = parity_store
    assert online_read_supported("0.67.0") and not online_read_supported("0.68.0")
    assert online_read_supported() == (
        features.online_read.importlib.metadata.version("feast") in ONLINE_READ_FEAST_VERSIONS
    )
    monkeypatch.setattr(features.online_read, "ONLINE_READ_FEAST_VERSIONS", frozenset({"0.1"}))
    source = FeastOnlineSource(store)
    try:
        assert source.read_path == "get_online_features"
        values, _ = source._fetch_blocking(EXAMPLE_REFS[:2], parity_rows(users, merchants)[:2])
        assert values[EXAMPLE_REFS[0]] == [7, 0]
    finally:
        source.close()


def test_a_store_that_fails_mid_read_is_unavailable_on_both_paths(
    parity_store: Any, tmp_path: Path
) -> None:
    store, (users, merchants) = parity_store
    # The same registry, an online database without tables: sqlite3.OperationalError.
    broken = open_store(
        Path(store.repo_path),
        OnlineStoreConfig(sqlite_path=tmp_path / "empty.db"),
    )
    for online_read in (True, False):
        source = FeastOnlineSource(broken, online_read=online_read)
        try:
            with pytest.raises(FeatureStoreUnavailable) as err:
                source._fetch_blocking(EXAMPLE_REFS[:1], parity_rows(users, merchants)[:1])
            assert err.value.retryable and "no such table" in str(err.value)
        finally:
            source.close()


@pytest.mark.parametrize(
    "ts",
    [
        datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime.fromtimestamp(1764690000.999999, tz=UTC),
        datetime(2026, 3, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 3, 1, 12, 0, 0, 500000),  # naive: UTC, as Feast takes it
        None,
    ],
)
def test_a_stamp_is_what_the_response_timestamp_keeps(ts: datetime | None) -> None:
    expected = None
    if ts is not None:
        proto = Timestamp()
        proto.FromDatetime(ts)
        expected = event_ts(proto.seconds, proto.nanos)
    assert features.online_read._stamp(ts) == expected
