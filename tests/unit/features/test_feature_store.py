"""Feast with the SQLite online store: apply, materialize, lookups, config and errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import redis.exceptions

from features.errors import FeatureError, FeatureStoreUnavailable, UnknownFeatureError
from features.online import FeastOnlineSource, OnlineFeatureSource
from features.store import (
    OnlineStoreConfig,
    apply_repo,
    load_repo_contents,
    open_store,
    redis_connection_string,
)

REFS = [
    "user_stats:avg_amount_30d",
    "user_stats:home_country",
    "user_stats:txn_count_7d",
    "merchant_stats:fraud_rate_90d",
    "merchant_stats:txn_count_7d",  # same feature name as the user view's
]


def test_repo_defines_the_expected_objects(applied_repo: Any) -> None:
    store = open_store(applied_repo.path, applied_repo.online)
    assert {v.name for v in store.list_feature_views()} == {
        "user_stats",
        "merchant_stats",
        "user_stream_stats",
        "merchant_stream_stats",
    }
    assert {e.name for e in store.list_entities()} >= {"user", "merchant"}
    service = store.get_feature_service("fraud_v1")
    assert {p.name for p in service.feature_view_projections} == {"user_stats", "merchant_stats"}
    assert {s.name for s in store.list_data_sources()} >= {
        "user_stream_push",
        "merchant_stream_push",
    }


def test_the_generator_knows_the_streaming_views_the_repo_declares(applied_repo: Any) -> None:
    from features.fraud_data import MERCHANT_STREAM_VIEW, USER_STREAM_VIEW

    store = open_store(applied_repo.path, applied_repo.online)
    for view in (USER_STREAM_VIEW, MERCHANT_STREAM_VIEW):
        declared = store.get_feature_view(view.name)
        assert [f.name for f in declared.features] == view.features
        assert declared.join_keys == [view.entity_key]
        assert declared.stream_source is not None
        assert declared.stream_source.name == view.push_source


def test_relative_paths_resolve_from_the_repo(applied_repo: Any) -> None:
    assert (applied_repo.path / "data" / "registry.db").is_file()
    assert (applied_repo.path / "data" / "online_store.db").is_file()


async def test_fetch_returns_latest_snapshot_and_none_for_unknown(
    applied_repo: Any,
) -> None:
    source = FeastOnlineSource(open_store(applied_repo.path, applied_repo.online))
    assert isinstance(source, OnlineFeatureSource)
    try:
        source.check(REFS)
        users = pd.read_parquet(applied_repo.data.user_stats)
        latest = users.sort_values("event_timestamp").groupby("user_id").last()
        user = latest.index[3]
        merchants = pd.read_parquet(applied_repo.data.merchant_stats)
        m_latest = merchants.sort_values("event_timestamp").groupby("merchant_id").last()
        merchant = m_latest.index[0]
        rows = [
            {"user_id": user, "merchant_id": merchant},
            {"user_id": "x999999", "merchant_id": "m9999"},
        ]
        values = await source.fetch(REFS, rows)
        assert set(values) == set(REFS)
        assert values["user_stats:avg_amount_30d"][0] == pytest.approx(
            latest.loc[user, "avg_amount_30d"]
        )
        assert values["user_stats:home_country"][0] == latest.loc[user, "home_country"]
        assert values["user_stats:txn_count_7d"][0] == latest.loc[user, "txn_count_7d"]
        assert values["merchant_stats:txn_count_7d"][0] == m_latest.loc[merchant, "txn_count_7d"]
        assert values["merchant_stats:fraud_rate_90d"][0] == pytest.approx(
            m_latest.loc[merchant, "fraud_rate_90d"]
        )
        assert all(values[ref][1] is None for ref in REFS)
        assert type(values["user_stats:txn_count_7d"][0]) is int  # plain python, no protobuf
        assert await source.fetch(REFS, []) == {ref: [] for ref in REFS}
    finally:
        source.close()


async def test_last_fetch_keeps_event_timestamps_per_view(applied_repo: Any) -> None:
    source = FeastOnlineSource(open_store(applied_repo.path, applied_repo.online))
    try:
        assert source.last_event_timestamps() == {}
        users = pd.read_parquet(applied_repo.data.user_stats)
        latest = users.sort_values("event_timestamp").groupby("user_id").last()
        user, other = latest.index[3], latest.index[7]
        merchants = pd.read_parquet(applied_repo.data.merchant_stats)
        m_latest = merchants.sort_values("event_timestamp").groupby("merchant_id").last()
        merchant = m_latest.index[0]
        rows = [
            {"user_id": user, "merchant_id": merchant},
            {"user_id": "x999999", "merchant_id": "m9999"},
            {"user_id": other, "merchant_id": "m9999"},
        ]
        values = await source.fetch(REFS, rows)
        assert set(values) == set(REFS), "fetch still returns values only"
        stamps = source.last_event_timestamps()
        assert set(stamps) == {"user_stats", "merchant_stats"}

        def epoch(ts: Any) -> float:
            return float(int(pd.Timestamp(ts).timestamp()))  # Feast keeps whole seconds

        assert stamps["user_stats"] == [
            epoch(latest.loc[user, "event_timestamp"]),
            None,
            epoch(latest.loc[other, "event_timestamp"]),
        ]
        assert stamps["merchant_stats"] == [
            epoch(m_latest.loc[merchant, "event_timestamp"]),
            None,
            None,
        ]
        await source.fetch(REFS[:1], rows[1:2])
        assert source.last_event_timestamps() == {"user_stats": [None]}, "only the last fetch"
    finally:
        source.close()


async def test_unknown_references_fail_loudly(applied_repo: Any) -> None:
    source = FeastOnlineSource(open_store(applied_repo.path, applied_repo.online))
    try:
        with pytest.raises(UnknownFeatureError) as err:
            source.check(["user_stats:avg_amount_30d", "user_stats:nope", "no_view:x"])
        assert err.value.missing == ["no_view:x", "user_stats:nope"]
        assert "user_stats:avg_amount_30d" in err.value.available
        assert "user_stats:nope" in str(err.value) and not err.value.retryable
        with pytest.raises(UnknownFeatureError, match="no-colon"):
            source.check(["no-colon"])
        with pytest.raises(UnknownFeatureError, match="user_stats:nope"):
            await source.fetch(["user_stats:nope"], [{"user_id": "u00001"}])
    finally:
        source.close()
    with pytest.raises(FeatureError, match="closed"):
        await source.fetch(REFS, [{"user_id": "u00001"}])


def test_apply_is_idempotent_and_drops_removed_objects(
    copy_repo: Callable[[Path], Path], tmp_path: Path
) -> None:
    repo = copy_repo(tmp_path / "repo")
    online = OnlineStoreConfig(sqlite_path=tmp_path / "online.db")
    apply_repo(repo, online)
    apply_repo(repo, online)
    definitions = repo / "fraud_features.py"
    definitions.write_text(
        definitions.read_text()
        .replace("fraud_v1 = FeatureService(", "fraud_v9 = FeatureService(")
        .replace('name="fraud_v1"', 'name="fraud_v9"')
    )
    apply_repo(repo, online)
    store = open_store(repo, online)
    assert sorted(s.name for s in store.list_feature_services()) == ["fraud_v2", "fraud_v9"]
    assert (tmp_path / "online.db").is_file()


def test_repo_without_definitions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="no definition files"):
        load_repo_contents(tmp_path, "streamscore")
    with pytest.raises(FeatureError, match="feature_store.yaml"):
        open_store(tmp_path, OnlineStoreConfig())


def test_redis_url_becomes_feast_connection_string() -> None:
    assert redis_connection_string("redis://127.0.0.1:6379/2", 1.5) == (
        "127.0.0.1:6379,db=2,socket_connect_timeout=1.5,socket_timeout=1.5"
    )
    assert redis_connection_string("rediss://user:p%40ss@cache:6380") == (
        "cache:6380,db=0,socket_connect_timeout=2.0,socket_timeout=2.0,"
        "username=user,password=p@ss,ssl=true,ssl_check_hostname=true"
    )
    with pytest.raises(ValueError, match="redis://"):
        redis_connection_string("http://localhost:6379")
    with pytest.raises(ValueError, match="needs redis_url"):
        OnlineStoreConfig(kind="redis")


def test_open_store_overrides_only_the_online_store(applied_repo: Any) -> None:
    online = OnlineStoreConfig(kind="redis", redis_url="redis://:secret@10.1.2.3:6390/1")
    store = open_store(applied_repo.path, online)
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string.startswith("10.1.2.3:6390,db=1")
    assert store.config.project == "streamscore"
    assert store.config.repo_path == applied_repo.path.resolve()
    assert "secret" not in online.describe()
    yaml_text = (applied_repo.path / "feature_store.yaml").read_text()
    assert "redis" not in yaml_text.split("online_store:")[1].split("offline_store")[0]


class _RedisDown:
    """Stands in for a FeatureStore whose Redis refuses connections."""

    config = SimpleNamespace(
        online_store=SimpleNamespace(type="redis", connection_string="127.0.0.1:1,db=0")
    )

    def get_online_features(self, **_: Any) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1.")

    def refresh_registry(self) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1.")

    def get_feature_view(self, name: str) -> Any:
        # the registry is a file: it answers while Redis is down
        return SimpleNamespace(name=name, join_keys=["user_id"])


async def test_unreachable_store_is_retryable_unavailable() -> None:
    # A real Redis outage is covered by the integration tier: redis-py retries
    # with backoff for several seconds before giving up.
    source = FeastOnlineSource(_RedisDown())  # type: ignore[arg-type]
    try:
        with pytest.raises(FeatureStoreUnavailable) as err:
            await source.fetch(["user_stats:avg_amount_30d"], [{"user_id": "u00001"}])
        assert err.value.retryable
        assert "redis://127.0.0.1:1" in str(err.value) and "Error 111" in str(err.value)
        with pytest.raises(FeatureStoreUnavailable):
            source.check(["user_stats:avg_amount_30d"])
    finally:
        source.close()


def test_materialized_end_is_recent(applied_repo: Any) -> None:
    store = open_store(applied_repo.path, applied_repo.online)
    view = store.get_feature_view("user_stats")
    assert view.most_recent_end_time is not None
    assert view.most_recent_end_time > datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rows(applied_repo: Any, n: int) -> list[dict[str, Any]]:
    users = sorted(pd.read_parquet(applied_repo.data.user_stats)["user_id"].unique())
    merchants = sorted(pd.read_parquet(applied_repo.data.merchant_stats)["merchant_id"].unique())
    # repeated entities, as in a real batch, plus one unknown
    rows = [{"user_id": users[i % 7], "merchant_id": merchants[i % 3]} for i in range(n)]
    return rows + [{"user_id": "x999999", "merchant_id": merchants[0]}]


async def test_cached_lookup_equals_get_online_features_and_asks_distinct_entities_once(
    applied_repo: Any,
) -> None:
    """Parity: what the worker serves (deduplicated, cached) equals what Feast's
    get_online_features returns for the same rows, values and event timestamps."""
    store = open_store(applied_repo.path, applied_repo.online)
    clock = Clock()
    source = FeastOnlineSource(store, cache_ttl_s=10, cache_max_entities=1000, clock=clock)
    asked: list[int] = []
    blocking = source._fetch_blocking

    def counting(refs: list[str], rows: list[dict[str, Any]]) -> Any:
        asked.append(len(rows))
        return blocking(refs, rows)

    source._fetch_blocking = counting  # type: ignore[method-assign]
    try:
        rows = _rows(applied_repo, 40)
        response = store.get_online_features(
            features=REFS, entity_rows=rows, full_feature_names=True
        ).to_dict(include_event_timestamps=True)
        values = await source.fetch(REFS, rows)
        for ref in REFS:
            expected = response[ref.replace(":", "__")]
            assert values[ref] == [None if v != v else v for v in expected], ref
        stamps = source.last_event_timestamps()
        expected_ts = response["user_stats__avg_amount_30d__ts"]
        assert stamps["user_stats"] == [float(t) if t > 0 else None for t in expected_ts]
        assert asked == [len({(r["user_id"], r["merchant_id"]) for r in rows})], "distinct rows"

        assert await source.fetch(REFS, rows) == values, "served from the cache"
        assert len(asked) == 1, "no second lookup within the TTL"
        assert source.last_event_timestamps() == stamps

        user = rows[0]["user_id"]
        assert source.invalidate([{"user_id": user}]) == 1
        await source.fetch(REFS, rows)
        assert asked[1:] == [sum(1 for r in {tuple(r.items()) for r in rows} if r[0][1] == user)]

        clock.now += 11  # past the TTL: everything is looked up again
        assert await source.fetch(REFS, rows) == values
        assert asked[2] == asked[0]
    finally:
        source.close()


async def test_without_a_cache_every_batch_is_looked_up(applied_repo: Any) -> None:
    source = FeastOnlineSource(open_store(applied_repo.path, applied_repo.online), cache_ttl_s=0)
    try:
        rows = _rows(applied_repo, 10)
        first = await source.fetch(REFS, rows)
        assert len(source.cache) == 0
        assert await source.fetch(REFS, rows) == first
    finally:
        source.close()


async def test_entries_past_half_their_ttl_are_served_and_refreshed_in_the_background(
    applied_repo: Any,
) -> None:
    """Refresh-ahead: recurring entities never expire in a batch's way (no miss burst one
    TTL after warm-up), and an entity invalidated during a refresh is not cached again
    from the refresh's possibly older answer."""
    store = open_store(applied_repo.path, applied_repo.online)
    clock = Clock()
    source = FeastOnlineSource(store, cache_ttl_s=10, cache_max_entities=1000, clock=clock)
    asked: list[int] = []
    blocking = source._fetch_blocking

    def counting(refs: list[str], rows: list[dict[str, Any]]) -> Any:
        asked.append(len(rows))
        return blocking(refs, rows)

    source._fetch_blocking = counting  # type: ignore[method-assign]
    try:
        rows = _rows(applied_repo, 40)
        distinct = len({(r["user_id"], r["merchant_id"]) for r in rows})
        values = await source.fetch(REFS, rows)
        assert asked == [distinct]

        clock.now += 4  # not yet half the TTL: nothing to refresh
        assert await source.fetch(REFS, rows) == values
        assert source._refreshing is None

        clock.now += 2  # past half the TTL: served at once, looked up again meanwhile
        assert await source.fetch(REFS, rows) == values
        assert asked == [distinct], "the batch did not wait for a lookup"
        assert source._refreshing is not None
        await source._refreshing
        assert len(asked) == 2 and asked[1] <= distinct, "refreshed in the background"

        clock.now += 6  # past the first lookup's TTL, within the refresh's
        assert await source.fetch(REFS, rows) == values
        assert len(asked) == 2, "no lookup in the batch's way: every entity was refreshed"
        user = rows[0]["user_id"]
        assert source._refreshing is not None, "due again: a second refresh runs"
        source.invalidate([{"user_id": user}])  # the writer updated it meanwhile
        await source._refreshing
        assert source.cache.get("user_stats", (user,), clock.now) is None, (
            "an entity invalidated during a refresh is not cached from it"
        )
        await source.fetch(REFS, rows)
        assert asked[3] == sum(1 for r in {tuple(r.items()) for r in rows} if r[0][1] == user)
    finally:
        source.close()


async def test_an_entity_invalidated_during_a_batch_lookup_is_not_cached_from_it(
    applied_repo: Any,
) -> None:
    """The race of a lookup in flight: the feature worker writes an entity and its
    invalidation arrives while a batch's lookup of that entity is still running. The
    answer may predate the write: the batch that asked is served it, but it must not be
    cached, or every later batch is served the old value for up to the TTL."""
    store = open_store(applied_repo.path, applied_repo.online)
    clock = Clock()
    source = FeastOnlineSource(store, cache_ttl_s=10, cache_max_entities=1000, clock=clock)
    started, release = threading.Event(), threading.Event()
    asked: list[int] = []
    blocking = source._fetch_blocking

    def held_up(refs: list[str], rows: list[dict[str, Any]]) -> Any:
        asked.append(len(rows))
        answer = blocking(refs, rows)  # read before the write lands
        started.set()
        assert release.wait(10), "the test never released the lookup"
        return answer

    source._fetch_blocking = held_up  # type: ignore[method-assign]
    try:
        rows = _rows(applied_repo, 40)
        user, other = rows[0]["user_id"], rows[1]["user_id"]
        lookup = asyncio.create_task(source.fetch(REFS, rows))
        # the lookup thread is blocked, the event loop is free
        assert await asyncio.to_thread(started.wait, 10), "the lookup never started"
        source.invalidate([{"user_id": user}])  # the write happened meanwhile
        release.set()
        values = await lookup
        assert values["user_stats:avg_amount_30d"][0] is not None, "the batch was served"
        assert source.cache.get("user_stats", (user,), clock.now) is None, (
            "an entity invalidated while its lookup ran is not cached from that lookup"
        )
        assert source.cache.get("user_stats", (other,), clock.now) is not None
        assert not source._in_flight, "nothing is tracked once the lookup is done"

        await source.fetch(REFS, rows)
        assert asked[1] == sum(1 for r in {tuple(r.items()) for r in rows} if r[0][1] == user), (
            "the next batch looks the invalidated entity up again, and only it"
        )
    finally:
        release.set()
        source.close()
