"""Online feature lookups for the scoring agent.

In: feature references (``"view:feature"``) and entity rows (join key ->
value), one micro-batch at a time. Out: ``{ref: [value or None per row]}`` with
plain Python values (no protobuf); ``None`` when the entity is unknown to the
online store or the value is missing. ``FeastOnlineSource`` also keeps the event
timestamps of the last lookup's rows per feature view (epoch seconds, ``None`` for an
unknown entity) for the feature-age metric: ``last_event_timestamps()``, an optional
method callers look up with ``getattr``.

``FeastOnlineSource`` makes at most one lookup per batch, for the batch's distinct
entities that its :class:`EntityCache` does not hold (per feature view, keyed by the
view's join keys, bounded, with a TTL; :meth:`FeastOnlineSource.invalidate` drops
entities whose features changed: the streaming-feature writer calls it). An entry
older than half its TTL is still served, and its entity is looked up again in the
background (refresh-ahead, at most :data:`REFRESH_MAX_ROWS` rows at a time, one refresh
at a time), so entities that keep coming back never expire in a batch's way: without it,
the entities seen at warm-up all expired together one TTL later and the batches of that
second paid for all of them (a burst of misses, measured as the half-load p99).

A lookup's per-row cost is what bounds enrichment whenever entities are new, so every
row not asked for is time won, and a lookup reads as little of Feast as it can: with
the Feast release the parity tests check, one ``OnlineStore.online_read`` per feature
view (:mod:`features.online_read`: each view's distinct entities once, plain values,
sub-second event timestamps); with any other release, or a view that path does not
serve (an entity-less one, say), one ``get_online_features`` call. Measured on Redis
with fraud_v2's 4 views and 20 features, every row a miss, batches of 64 and 256 events,
on a shared 2-core box: ``get_online_features`` 5,800-7,500 rows per CPU-second (about
0.15 ms a row), ``online_read`` 9,800-13,100 (about 0.09 ms): 1.6-1.9 times the rate.
``online_read`` itself (Feast's Redis code: key serialization, one pipelined HMGET per
entity and view, protobuf parsing) is about two thirds of what is left (issue 8's note).

Lookups run on a dedicated single-thread executor: the Feast client is blocking, its
SQLite online store keeps one connection per store object (opened with
``check_same_thread=False`` in Feast 0.67, but a connection is not safe to use
from two threads at once), and the Redis client is not meant to be shared
across threads either; one thread serialises them and keeps the event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from feast import FeatureStore
from feast.errors import FeastObjectNotFoundException

from features.errors import FeatureError, FeatureStoreUnavailable, UnknownFeatureError
from features.online_read import (
    NotReadDirectly,
    OnlineStoreReader,
    online_read_supported,
    plain_value,
)
from features.online_read import event_ts as _event_ts
from features.store import describe_store, store_connection_errors

log = logging.getLogger(__name__)

#: Most entity rows one background refresh asks for: it shares the lookup thread with
#: the batches' misses, which wait behind it (about 0.1-0.2 ms a row on Redis).
REFRESH_MAX_ROWS = 64

__all__ = [
    "OnlineFeatureSource",
    "FeastOnlineSource",
    "EntityCache",
    "parse_ref",
    "registered_refs",
]


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``"view:feature"``; anything else is a config error named in the message."""
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature or ":" in feature:
        raise UnknownFeatureError([ref], [])
    return view, feature


def features_by_view(refs: Iterable[str]) -> dict[str, list[str]]:
    """``view -> [feature, ...]`` of ``"view:feature"`` references, in their order."""
    features: dict[str, list[str]] = {}
    for ref in refs:
        view, feature = parse_ref(ref)
        features.setdefault(view, []).append(feature)
    return features


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


EntityKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class CachedEntity:
    """One entity's online values of one feature view, as last looked up."""

    expires: float
    values: Mapping[str, Any]  # feature name -> plain value (None: missing)
    event_ts: float | None  # the view's event timestamp for the entity (None: unknown)
    refresh_at: float = math.inf  # from then on, served and looked up again meanwhile


class EntityCache:
    """Per feature view, the last looked-up values of at most ``max_entities`` entities,
    each for ``ttl_s`` seconds (least recently stored evicted first). Not thread-safe: use
    it from the event loop only. ``ttl_s`` 0 stores nothing."""

    def __init__(
        self, ttl_s: float, max_entities: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entities = max_entities
        self.clock = clock
        self._views: dict[str, OrderedDict[EntityKey, CachedEntity]] = {}

    def get(self, view: str, key: EntityKey, now: float) -> CachedEntity | None:
        entries = self._views.get(view)
        entry = entries.get(key) if entries else None
        if entry is None:
            return None
        if entry.expires <= now:
            del entries[key]  # type: ignore[union-attr]
            return None
        return entry

    def put(self, view: str, key: EntityKey, entry: CachedEntity) -> None:
        if self.ttl_s <= 0:
            return
        entries = self._views.setdefault(view, OrderedDict())
        entries[key] = entry
        entries.move_to_end(key)
        while len(entries) > self.max_entities:
            entries.popitem(last=False)

    def invalidate(self, view: str, keys: Iterable[EntityKey]) -> int:
        """Forget ``keys`` of ``view``; return how many were held."""
        entries = self._views.get(view)
        if not entries:
            return 0
        return sum(entries.pop(key, None) is not None for key in keys)

    def __len__(self) -> int:
        return sum(len(e) for e in self._views.values())


class FeastOnlineSource:
    """``OnlineFeatureSource`` backed by a Feast FeatureStore (SQLite or Redis).

    ``cache_ttl_s`` 0 disables the entity cache; lookups still ask only for a batch's
    distinct entities. ``online_read`` chooses how a lookup reads: True through the online
    store's ``online_read`` (:mod:`features.online_read`), False through
    ``get_online_features``; None (the default) the first with a Feast release it was
    checked against (:data:`features.online_read.ONLINE_READ_FEAST_VERSIONS`), else the
    second.
    """

    def __init__(
        self,
        store: FeatureStore,
        cache_ttl_s: float = 0.0,
        cache_max_entities: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        online_read: bool | None = None,
    ) -> None:
        self._store = store
        if online_read is None:
            online_read = online_read_supported() and isinstance(store, FeatureStore)
        self._reader = OnlineStoreReader(store) if online_read else None
        self._fallbacks_logged: set[str] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-online")
        self._closed = False
        self._last_event_ts: dict[str, list[float | None]] = {}
        self._cache = EntityCache(cache_ttl_s, cache_max_entities, clock)
        self._join_keys: dict[str, tuple[str, ...]] = {}
        self._refreshing: asyncio.Task[None] | None = None
        # Per lookup in flight (a batch's misses, a background refresh), the (view, key)
        # invalidated since it was decided. Its answer may predate the write, so it is
        # served to the batch that asked but never cached for the next ones (a stale
        # value for up to the TTL otherwise). At most two lookups are in flight, so this
        # stays small; an entry leaves with its lookup.
        self._in_flight: dict[int, set[tuple[str, EntityKey]]] = {}
        self._lookups = 0  # numbers the lookups: their keys in _in_flight

    @property
    def store(self) -> FeatureStore:
        return self._store

    @property
    def read_path(self) -> str:
        """How lookups read: ``online_read`` or ``get_online_features``."""
        return "online_read" if self._reader is not None else "get_online_features"

    @property
    def cache(self) -> EntityCache:
        return self._cache

    @property
    def timestamp_resolution_s(self) -> float:
        """What the online store keeps of a row's timestamp: Feast's SQLite store whole
        seconds (it stores epoch seconds), the others sub-second."""
        return 1.0 if getattr(self._store.config.online_store, "type", "") == "sqlite" else 0.0

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

    def join_keys(self, view: str) -> tuple[str, ...]:
        """The entity join keys of ``view``, from the registry (once per view)."""
        keys = self._join_keys.get(view)
        if keys is None:
            try:
                keys = tuple(self._store.get_feature_view(view).join_keys)
            except FeastObjectNotFoundException as exc:
                raise UnknownFeatureError([view], registered_refs(self._store)) from exc
            except store_connection_errors() as exc:
                raise FeatureStoreUnavailable(describe_store(self._store), exc) from exc
            self._join_keys[view] = keys
        return keys

    def invalidate(self, entities: Iterable[Mapping[str, Any]]) -> int:
        """Forget the cached values of ``entities`` (join key -> value, e.g.
        ``{"user_id": "u1"}``) in every view keyed by exactly those join keys; return how
        many cached entries were dropped. Call it after writing an entity's features."""
        dropped = 0
        entities = list(entities)
        for view, keys in self._join_keys.items():
            wanted = [tuple(e[k] for k in keys) for e in entities if set(keys) == set(e)]
            dropped += self._cache.invalidate(view, wanted)
            for invalidated in self._in_flight.values():
                invalidated.update((view, key) for key in wanted)
        return dropped

    def _track_lookup(self) -> tuple[int, set[tuple[str, EntityKey]]]:
        """Start noting the invalidations that arrive while a lookup runs: a token for
        :meth:`_lookup` and the set they land in. Called when the lookup is decided, in
        the same step of the event loop, so none slips in before it (a refresh task
        only starts running later)."""
        self._lookups += 1
        invalidated: set[tuple[str, EntityKey]] = set()
        self._in_flight[self._lookups] = invalidated
        return self._lookups, invalidated

    async def _lookup(
        self, refs: list[str], rows: list[dict[str, Any]], token: int
    ) -> tuple[dict[str, list[Any]], dict[str, list[float | None]]]:
        """One lookup in the lookup thread; its invalidations stop being noted after it."""
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._fetch_blocking, refs, rows)
        finally:
            self._in_flight.pop(token, None)

    async def fetch(
        self, refs: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        if self._closed:
            raise FeatureError("FeastOnlineSource is closed")
        self._last_event_ts = {}
        if not refs or not entity_rows:
            return {ref: [None] * len(entity_rows) for ref in refs}
        unique_refs = list(dict.fromkeys(refs))
        features = features_by_view(unique_refs)
        now = self._cache.clock()
        keys = {
            view: [tuple(row.get(k) for k in self.join_keys(view)) for row in entity_rows]
            for view in features
        }
        held: dict[str, dict[EntityKey, CachedEntity]] = {view: {} for view in features}
        to_fetch: dict[EntityKey, Mapping[str, Any]] = {}  # one row per distinct entity row
        views_to_fetch: set[str] = set()
        to_refresh: dict[EntityKey, Mapping[str, Any]] = {}
        views_to_refresh: set[str] = set()
        for view, wanted in features.items():
            found = held[view]
            for key, row in zip(keys[view], entity_rows, strict=True):
                if key in found:
                    continue
                entry = self._cache.get(view, key, now)
                if entry is not None and all(f in entry.values for f in wanted):
                    found[key] = entry
                    if entry.refresh_at <= now:
                        views_to_refresh.add(view)
                        to_refresh.setdefault(tuple(sorted(row.items())), row)
                else:
                    views_to_fetch.add(view)
                    to_fetch.setdefault(tuple(sorted(row.items())), row)
        if to_fetch:
            fetch_refs = [r for r in unique_refs if parse_ref(r)[0] in views_to_fetch]
            rows = [dict(r) for r in to_fetch.values()]
            token, invalidated = self._track_lookup()
            values, event_ts = await self._lookup(fetch_refs, rows, token)
            self._store_looked_up(
                views_to_fetch, features, rows, values, event_ts, now, held, invalidated
            )
        if to_refresh and self._refreshing is None and self._cache.ttl_s > 0:
            refresh_refs = [r for r in unique_refs if parse_ref(r)[0] in views_to_refresh]
            rows = [dict(r) for r in list(to_refresh.values())[:REFRESH_MAX_ROWS]]
            self._refreshing = asyncio.create_task(
                self._refresh(views_to_refresh, features, refresh_refs, rows, self._track_lookup())
            )
        out: dict[str, list[Any]] = {}
        for ref in unique_refs:
            view, feature = parse_ref(ref)
            found = held[view]
            out[ref] = [found[key].values[feature] for key in keys[view]]
        # Set here, on the event loop, not in the lookup thread: a caller that reads
        # last_event_timestamps() right after its own await (no await in between) gets
        # its own lookup's timestamps even when other coroutines share this source.
        self._last_event_ts = {
            view: [held[view][key].event_ts for key in keys[view]] for view in features
        }
        return out

    def _store_looked_up(
        self,
        views: set[str],
        features: Mapping[str, list[str]],
        rows: list[dict[str, Any]],
        values: Mapping[str, list[Any]],
        event_ts: Mapping[str, list[float | None]],
        now: float,
        held: dict[str, dict[EntityKey, CachedEntity]] | None,
        skip: set[tuple[str, EntityKey]] | frozenset[tuple[str, EntityKey]] = frozenset(),
    ) -> None:
        """Cache what a lookup at ``now`` returned (and note it in ``held``), except the
        entities in ``skip`` (invalidated while it ran: still noted in ``held``, since
        the batch that asked is served what it asked for)."""
        ttl = self._cache.ttl_s
        expires, refresh_at = now + ttl, now + ttl / 2
        for view in views:
            join_keys = self.join_keys(view)
            for i, row in enumerate(rows):
                key = tuple(row.get(k) for k in join_keys)
                if held is not None and key in held[view]:
                    continue
                entry = CachedEntity(
                    expires,
                    {f: values[f"{view}:{f}"][i] for f in features[view]},
                    event_ts[view][i],
                    refresh_at,
                )
                if held is not None:
                    held[view][key] = entry
                if (view, key) not in skip:
                    self._cache.put(view, key, entry)

    async def _refresh(
        self,
        views: set[str],
        features: Mapping[str, list[str]],
        refs: list[str],
        rows: list[dict[str, Any]],
        tracked: tuple[int, set[tuple[str, EntityKey]]],
    ) -> None:
        """Look ``rows`` up again in the background and cache the answer, except for the
        entities invalidated since the refresh was decided (``tracked``). A failure only
        logs: the entries then expire at their TTL and the next batch that needs them looks
        them up itself."""
        try:
            started = self._cache.clock()
            token, invalidated = tracked
            values, event_ts = await self._lookup(refs, rows, token)
            self._store_looked_up(
                views, features, rows, values, event_ts, started, None, invalidated
            )
        except Exception as exc:  # noqa: BLE001 - informative; the TTL still bounds staleness
            log.warning("background refresh of %d entities failed: %r", len(rows), exc)
        finally:
            self._in_flight.pop(tracked[0], None)  # cancelled before it started, too
            self._refreshing = None

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
            if self._reader is not None:
                try:
                    return self._read_directly(unique_refs, entity_rows)
                except NotReadDirectly as exc:
                    if exc.reason not in self._fallbacks_logged:
                        self._fallbacks_logged.add(exc.reason)
                        log.info("%s; asking get_online_features", exc)
            return self._get_online_features(unique_refs, entity_rows)
        except store_connection_errors() as exc:
            raise FeatureStoreUnavailable(describe_store(self._store), exc) from exc
        except (FeastObjectNotFoundException, KeyError) as exc:
            # Feast raises KeyError for a feature missing from an existing view.
            raise UnknownFeatureError(
                [r for r in unique_refs if r not in registered_refs(self._store)] or unique_refs,
                registered_refs(self._store),
            ) from exc

    def _read_directly(
        self, refs: list[str], entity_rows: list[dict[str, Any]]
    ) -> tuple[dict[str, list[Any]], dict[str, list[float | None]]]:
        assert self._reader is not None
        values, event_ts = self._reader.read(features_by_view(refs), entity_rows)
        out = {}
        for ref in refs:
            view, feature = parse_ref(ref)
            out[ref] = values[view][feature]
        return out, event_ts

    def _get_online_features(
        self, refs: list[str], entity_rows: list[dict[str, Any]]
    ) -> tuple[dict[str, list[Any]], dict[str, list[float | None]]]:
        response = self._store.get_online_features(
            features=refs,
            entity_rows=entity_rows,
            # full names: user_stats:txn_count_7d and merchant_stats:txn_count_7d coexist
            full_feature_names=True,
        )
        columns = response.to_dict()
        # Not to_dict's "__ts" columns: they keep whole seconds only, and the freshness
        # rule (features.freshness) must tell a row written just after an event from
        # one written just before it.
        stamps = {
            name: vector.event_timestamps
            for name, vector in zip(
                response.proto.metadata.feature_names.val, response.proto.results, strict=True
            )
        }
        out: dict[str, list[Any]] = {}
        event_ts: dict[str, list[float | None]] = {}
        for ref in refs:
            view, feature = parse_ref(ref)
            column = f"{view}__{feature}"
            out[ref] = [plain_value(v) for v in columns[column]]
            if view not in event_ts:
                # One online row per entity and view: every feature of a view shares its
                # timestamp, so the first feature's column is the view's.
                event_ts[view] = [_event_ts(s.seconds, s.nanos) for s in stamps[column]]
        return out, event_ts

    def close(self) -> None:
        """Stop the lookup thread; pending lookups finish first."""
        self._closed = True
        if self._refreshing is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._refreshing.cancel()
        self._executor.shutdown(wait=True)
