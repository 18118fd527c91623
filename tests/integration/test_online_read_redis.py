"""The online_read path of FeastOnlineSource against get_online_features, on Redis.

Redis keeps event timestamps to the microsecond (SQLite keeps whole seconds), so this
is where a read path that lost the sub-second part would show. The repo is applied as
its own Feast project: its Redis keys never meet the session's feature repo.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from feast import FeatureStore

from features.store import OnlineStoreConfig, redis_client
from tests.online_parity import (
    EXAMPLE_REFS,
    TYPED_REFS,
    WRITTEN_AT,
    assert_same_lookup,
    build_parity_store,
    parity_rows,
)

pytestmark = pytest.mark.integration

PROJECT = f"parity_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def redis_parity_store(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[FeatureStore, Any]]:
    base = tmp_path_factory.mktemp("online_read_redis")
    online = OnlineStoreConfig(kind="redis", redis_url=redis_url)
    store, entities = build_parity_store(base / "repo", online, PROJECT)
    yield store, entities
    # Only this project's keys (the serialized entity key ends with the project name).
    client = redis_client(online)
    keys = list(client.scan_iter(match=f"*{PROJECT}", count=1000))
    if keys:
        client.delete(*keys)


def test_example_views_read_the_same_with_sub_second_timestamps(redis_parity_store: Any) -> None:
    store, (users, merchants) = redis_parity_store
    rows = parity_rows(users, merchants)
    values, stamps = assert_same_lookup(store, EXAMPLE_REFS, rows)
    base = WRITTEN_AT.timestamp()
    # Written at +0.123456 s, +1.999999 s, +2 s: kept to the microsecond.
    assert stamps["user_stats"][:3] == [
        pytest.approx(base + 0.123456, abs=1e-6),
        pytest.approx(base + 1.999999, abs=1e-6),
        base + 2,
    ]
    assert stamps["user_stats"][0] % 1 != 0, "a whole-second stamp would fail parity"
    assert stamps["user_stream_stats"][0] == pytest.approx(base + 3.5, abs=1e-6)
    assert stamps["merchant_stream_stats"][0] == pytest.approx(base + 5.25, abs=1e-6)
    assert values["user_stats:txn_count_7d"][:3] == [7, 0, 3]
    assert values["user_stats:avg_amount_30d"][1] is None, "NaN is missing"
    assert values["user_stats:home_country"][:3] == ["FR", None, "DE"]
    assert all(values[ref][3] is None for ref in EXAMPLE_REFS), "unknown entity"
    assert all(stamps[view][3] is None for view in stamps)
    assert sum(v is not None for v in values["merchant_stats:risk_tier"]) > 30, "materialized"


def test_every_value_type_and_a_two_key_int_entity_read_the_same(redis_parity_store: Any) -> None:
    store, (users, merchants) = redis_parity_store
    rows = parity_rows(users, merchants)
    values, stamps = assert_same_lookup(store, TYPED_REFS + EXAMPLE_REFS[:2], rows)
    assert values["typed_stats:f_int32"][:3] == [-(2**31), 7, None]
    assert values["typed_stats:f_uuid"][0] == uuid.UUID(int=1)
    assert values["typed_stats:f_float32"][1] is None
    assert stamps["typed_stats"][0] == pytest.approx(WRITTEN_AT.timestamp() + 8.654321, abs=1e-6)


def test_an_entityless_view_is_asked_of_get_online_features(redis_parity_store: Any) -> None:
    store, (users, merchants) = redis_parity_store
    values, _ = assert_same_lookup(
        store, ["global_stats:open_alerts", *EXAMPLE_REFS[:1]], parity_rows(users, merchants)[:4]
    )
    assert values["global_stats:open_alerts"] == [3] * 4
