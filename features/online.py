"""Online feature lookups for the scoring agent.

In: feature references (``"view:feature"``) and entity rows (join key ->
value), one micro-batch at a time. Out: ``{ref: [value or None per row]}`` with
plain Python values (no protobuf); ``None`` when the entity is unknown to the
online store or the value is missing. ``FeastOnlineSource`` also keeps the event
timestamps of the last lookup's rows per feature view (epoch seconds, ``None`` for an
unknown entity) for the feature-age metric: ``last_event_timestamps()``, an optional
method callers look up with ``getattr``.

``FeastOnlineSource`` makes ONE ``get_online_features`` call per batch and runs
it on a dedicated single-thread executor: the Feast client is blocking, its
SQLite online store keeps one connection per store object (opened with
``check_same_thread=False`` in Feast 0.67, but a connection is not safe to use
from two threads at once), and the Redis client is not meant to be shared
across threads either; one thread serialises them and keeps the event loop free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from feast import FeatureStore
from feast.errors import FeastObjectNotFoundException
from feast.online_response import TIMESTAMP_POSTFIX

from features.errors import FeatureError, FeatureStoreUnavailable, UnknownFeatureError
from features.store import describe_store, store_connection_errors

__all__ = ["OnlineFeatureSource", "FeastOnlineSource", "parse_ref", "registered_refs"]


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``"view:feature"``; anything else is a config error named in the message."""
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature or ":" in feature:
        raise UnknownFeatureError([ref], [])
    return view, feature


@runtime_checkable
class OnlineFeatureSource(Protocol):
    """Where the scoring agent gets features from; Feast in production, a dict in unit tests."""

    def check(self, refs: Sequence[str]) -> None:
        """Raise UnknownFeatureError (at start-up) if any reference does not exist."""
        ...

    async def fetch(
        self, refs: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        """Values of ``refs`` for each row, ``None`` where unknown or missing."""
        ...


def registered_refs(store: FeatureStore) -> set[str]:
    """Every ``view:feature`` the store's registry can serve online."""
    refs: set[str] = set()
    store.refresh_registry()
    for view in store.list_all_feature_views():
        for field in view.features:
            refs.add(f"{view.name}:{field.name}")
    return refs


class FeastOnlineSource:
    """``OnlineFeatureSource`` backed by a Feast FeatureStore (SQLite or Redis)."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-online")
        self._closed = False
        self._last_event_ts: dict[str, list[float | None]] = {}

    @property
    def store(self) -> FeatureStore:
        return self._store

    def check(self, refs: Sequence[str]) -> None:
        for ref in refs:
            parse_ref(ref)
        try:
            available = registered_refs(self._store)
        except store_connection_errors() as exc:
            raise FeatureStoreUnavailable(describe_store(self._store), exc) from exc
        missing = [ref for ref in refs if ref not in available]
        if missing:
            raise UnknownFeatureError(missing, available)

    async def fetch(
        self, refs: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        if self._closed:
            raise FeatureError("FeastOnlineSource is closed")
        self._last_event_ts = {}
        if not refs or not entity_rows:
            return {ref: [None] * len(entity_rows) for ref in refs}
        loop = asyncio.get_running_loop()
        values, event_ts = await loop.run_in_executor(
            self._executor, self._fetch_blocking, list(refs), [dict(r) for r in entity_rows]
        )
        # Set here, on the event loop, not in the lookup thread: a caller that reads
        # last_event_timestamps() right after its own await (no await in between) gets
        # its own lookup's timestamps even when other coroutines share this source.
        self._last_event_ts = event_ts
        return values

    def last_event_timestamps(self) -> dict[str, list[float | None]]:
        """Per feature view, the event time (epoch seconds) of each row of the last fetch.

        ``None`` where the online store has no row for the entity.
        """
        return self._last_event_ts

    def _fetch_blocking(
        self, refs: list[str], entity_rows: list[dict[str, Any]]
    ) -> tuple[dict[str, list[Any]], dict[str, list[float | None]]]:
        unique_refs = list(dict.fromkeys(refs))
        try:
            response = self._store.get_online_features(
                features=unique_refs,
                entity_rows=entity_rows,
                # full names: user_stats:txn_count_7d and merchant_stats:txn_count_7d coexist
                full_feature_names=True,
            )
            columns = response.to_dict(include_event_timestamps=True)
        except store_connection_errors() as exc:
            raise FeatureStoreUnavailable(describe_store(self._store), exc) from exc
        except (FeastObjectNotFoundException, KeyError) as exc:
            # Feast raises KeyError for a feature missing from an existing view.
            raise UnknownFeatureError(
                [r for r in unique_refs if r not in registered_refs(self._store)] or unique_refs,
                registered_refs(self._store),
            ) from exc
        out: dict[str, list[Any]] = {}
        event_ts: dict[str, list[float | None]] = {}
        for ref in unique_refs:
            view, feature = parse_ref(ref)
            column = f"{view}__{feature}"
            out[ref] = [_plain(v) for v in columns[column]]
            if view not in event_ts:
                # One online row per entity and view: every feature of a view shares its
                # timestamp, so the first feature's column is the view's.
                event_ts[view] = [_event_ts(s) for s in columns[column + TIMESTAMP_POSTFIX]]
        return out, event_ts

    def close(self) -> None:
        """Stop the lookup thread; pending lookups finish first."""
        self._closed = True
        self._executor.shutdown(wait=True)


def _event_ts(seconds: int) -> float | None:
    # Feast fills an empty protobuf Timestamp (0 s) for entities it did not find.
    return float(seconds) if seconds > 0 else None


def _plain(value: Any) -> Any:
    # Feast already converts protobuf to Python; NaN from a float column means "missing".
    if isinstance(value, float) and value != value:
        return None
    return value
