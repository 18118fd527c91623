"""The feature worker: rolling per-entity aggregates from ``events`` into Feast.

In: raw records of ``events``. Out: rows of the repo's streaming feature views through
their push sources (every row offline, each entity's newest row online; see
:mod:`features.streaming`), one record per view and write on ``feature-updates``
naming the entities written (each scoring worker drops them from its feature cache),
and the ``streamscore_feature_*`` metrics. What the aggregates mean (window bounds, no
leakage, lateness, duplicates) is :mod:`features.aggregates`; this module only moves
records.

Flow, in a process and consumer group of its own (``<topic_prefix><consumer_group>-features``):

1. ``feature-forward`` reads ``events`` and, per streaming view, sends a small
   observation keyed ``<view>/<entity>`` to the internal ``feature-events`` topic, so
   an entity's state lives in one partition whatever key the producer used (and
   merchants, which events are not keyed by, get aggregates too). It acks the events
   once the broker acknowledged the observations.
2. ``feature-aggregate`` takes batches of observations (``feature_batch_max`` within
   ``feature_batch_wait_s``), folds them into each entity's state (a Faust table,
   changelog-backed, partitioned by key like ``feature-events``), writes the rows
   (retried forever with back-off while the store is down: the worker never dies of
   it, its input waits), then stores the new states, publishes the invalidations and
   acks.
3. ``expire``, a timer every ``feature_batch_wait_s``, writes the rows of entities that
   saw no event but whose windows changed since (an event left a window: see the change
   points of :mod:`features.aggregates`), so an idle entity's online row stays exact.

Restarts: the state is recovered from its changelog. An observation consumed again
(its offset was not committed) is either not in the recovered state, then the same
rows are computed and written again (same values), or it is, then it is a duplicate
by event id and counted nothing. Nothing pushed is counted twice; nothing acked is
lost.

    streamscore worker --role features
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT

from features.aggregates import Observation, StreamingView, apply_observations, next_due
from features.store import open_store
from features.streaming import (
    FeastPushWriter,
    OfflineFilesLock,
    hold_offline_files,
    retry_forever,
    streaming_views,
)
from streams import metrics
from streams.codec import decode, decode_event, encode
from streams.contract import validate_with_schema
from streams.errors import ContractViolation, PipelineError
from streams.faust_app import (
    changelog_topic_configs,
    make_app,
    mark_ready_on_rebalance,
    raw_topic,
    run_worker_app,
    worker_start,
)
from streams.feature_updates import update_record
from streams.health import Health
from streams.kafka import ensure_topics, wait_for_broker
from streams.monitoring.monitor import register_lag_monitor
from streams.publish import faust_send, publish, send_best_effort
from streams.settings import Settings

log = logging.getLogger(__name__)

KEY_SEPARATOR = "/"
#: How often the timer rebuilds its index of pending change points from the table.
RESCAN_S = 30.0
#: Upper bound of the back-off between retries of a refused observation record.
SEND_RETRY_MAX_S = 5.0


def observations_of(
    raw: bytes | None, views: Sequence[StreamingView], max_bytes: int, kafka_ms: float | None
) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """The ``feature-events`` records of one event (one per view that can use it), and the
    names of the views that could not (the event lacks or mistypes a field they need)."""
    try:
        obj = decode_event(raw, max_bytes)
    except PipelineError:  # the scoring worker dead-letters it; here it is only counted
        return [], [v.name for v in views]
    records: list[tuple[bytes, bytes]] = []
    invalid: list[str] = []
    for view in views:
        schema = {view.entity_key: "string"} | {f: "number" for f in view.fields}
        try:
            event = validate_with_schema(obj, schema)
        except ContractViolation:
            invalid.append(view.name)
            continue
        entity = event[view.entity_key]
        value = {
            "view": view.name,
            "entity": entity,
            "id": event["event_id"],
            "t": int(event["event_time"].timestamp() * 1000),
            "values": {f: event[f] for f in view.fields},
            "kafka_ms": kafka_ms,
        }
        records.append((f"{view.name}{KEY_SEPARATOR}{entity}".encode(), encode(value)))
    return records, invalid


class FeatureAggregator:
    """Folds a batch of observations into states and writes their rows; no Faust in here
    except the table it is handed (any mutable mapping of bytes to bytes)."""

    def __init__(
        self,
        views: Sequence[StreamingView],
        writer: FeastPushWriter,
        table: Any,
        lateness_s: float,
        retry_max_s: float,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.views = {v.name: v for v in views}
        self.writer = writer
        self.table = table
        self.lateness_ms = int(lateness_s * 1000)
        self.retry_max_s = retry_max_s
        self.clock_us = clock_us
        # One batch or tick at a time: both read a state, write rows, then store it.
        self._lock = asyncio.Lock()
        # table key -> its next change point (epoch ms) not written yet; rebuilt from the
        # table every RESCAN_S (after a restart or a rebalance the table holds other keys).
        self._due: dict[bytes, int] = {}
        self._scanned_at: float | None = None

    async def tick(self) -> list[tuple[bytes, bytes]]:
        """Write the change points the clock has passed (windows an event has left) for
        entities that saw no event since; return the ``feature-updates`` records."""
        async with self._lock:
            if self._scanned_at is None or time.monotonic() - self._scanned_at > RESCAN_S:
                self._due = {}
                for table_key, raw in list(self.table.items()):
                    view_name = table_key.decode().split(KEY_SEPARATOR, 1)[0]
                    if view_name in self.views:
                        due = next_due(self.views[view_name], decode(raw))
                        if due is not None:
                            self._due[table_key] = due
                self._scanned_at = time.monotonic()
            now_ms = self.clock_us() // 1000
            grouped: dict[tuple[str, str], list[Observation]] = {}
            for table_key, due in self._due.items():
                if due <= now_ms:
                    view_name, entity = table_key.decode().split(KEY_SEPARATOR, 1)
                    grouped[(view_name, entity)] = []
            if not grouped:
                return []
            return await self._advance(grouped, {})

    async def process(self, values: Sequence[bytes | None]) -> list[tuple[bytes, bytes]]:
        """Aggregate, write (retrying while the store is down), store the states; return
        the ``feature-updates`` records to publish."""
        async with self._lock:
            return await self._process(values)

    async def _process(self, values: Sequence[bytes | None]) -> list[tuple[bytes, bytes]]:
        grouped: dict[tuple[str, str], list[Observation]] = defaultdict(list)
        sent_ms: dict[tuple[str, str], list[float]] = defaultdict(list)
        for raw in values:
            try:
                item = decode(raw or b"null")
                key = (str(item["view"]), str(item["entity"]))
                obs = Observation(str(item["id"]), int(item["t"]), dict(item["values"]))
            except (ValueError, KeyError, TypeError) as exc:
                metrics.FEATURE_EVENTS.labels("?", "invalid").inc()
                log.warning("unreadable feature-events record skipped: %r", exc)
                continue
            if key[0] not in self.views:
                # A view removed from the repo since the record was forwarded.
                metrics.FEATURE_EVENTS.labels(key[0], "invalid").inc()
                continue
            grouped[key].append(obs)
            if item.get("kafka_ms") is not None:
                sent_ms[key].append(float(item["kafka_ms"]))
        return await self._advance(grouped, sent_ms)

    async def _advance(
        self,
        grouped: Mapping[tuple[str, str], Sequence[Observation]],
        sent_ms: Mapping[tuple[str, str], list[float]],
    ) -> list[tuple[bytes, bytes]]:
        now_us = self.clock_us()
        states: dict[bytes, bytes] = {}
        offline: dict[str, list[dict[str, Any]]] = defaultdict(list)
        online: dict[str, list[dict[str, Any]]] = defaultdict(list)
        written: dict[str, list[str]] = defaultdict(list)
        freshness: dict[str, list[float]] = defaultdict(list)
        corrected: dict[str, int] = defaultdict(int)
        for (view_name, entity), observations in grouped.items():
            view = self.views[view_name]
            table_key = f"{view_name}{KEY_SEPARATOR}{entity}".encode()
            stored = self.table.get(table_key)
            update = apply_observations(
                view,
                decode(stored) if stored else None,
                entity,
                observations,
                self.lateness_ms,
                now_us,
            )
            due = next_due(view, update.state)
            if due is None:
                self._due.pop(table_key, None)
            else:
                self._due[table_key] = due
            for outcome in ("accepted", "duplicate", "too_late"):
                n = getattr(update, outcome)
                if n:
                    metrics.FEATURE_EVENTS.labels(view_name, outcome).inc(n)
            if update.accepted or update.rows:
                states[table_key] = encode(update.state)
            if not update.rows:
                continue
            offline[view_name] += update.rows
            corrected[view_name] += update.corrected
            if update.online_row is not None:
                online[view_name].append(update.online_row)
                written[view_name].append(entity)
                freshness[view_name] += sent_ms.get((view_name, entity), [])
        for view_name, rows in offline.items():
            view = self.views[view_name]
            started = time.perf_counter()

            async def attempt(
                view: StreamingView = view, rows: list[dict[str, Any]] = rows
            ) -> None:
                await self.writer.write(view, rows, online[view.name])

            def on_retry(n: int, exc: BaseException, name: str = view_name) -> None:
                metrics.FEATURE_WRITE_RETRIES.labels(name).inc()
                log.warning("feature store write of %s failed (retry %d): %s", name, n, exc)

            await retry_forever(attempt, on_retry, max_s=self.retry_max_s)
            metrics.FEATURE_WRITE_SECONDS.labels(view_name).observe(time.perf_counter() - started)
            visible_ms = time.time() * 1000
            for sent in freshness[view_name]:
                metrics.FEATURE_FRESHNESS_SECONDS.labels(view_name).observe(
                    max(0.0, (visible_ms - sent) / 1000)
                )
            metrics.FEATURE_ROWS_WRITTEN.labels(view_name, "offline", "new").inc(
                len(rows) - corrected[view_name]
            )
            if corrected[view_name]:
                metrics.FEATURE_ROWS_WRITTEN.labels(view_name, "offline", "corrected").inc(
                    corrected[view_name]
                )
            metrics.FEATURE_ROWS_WRITTEN.labels(view_name, "online", "new").inc(
                len(online[view_name])
            )
        # Only now that the rows are written: the states that say they were.
        for table_key, state in states.items():
            self.table[table_key] = state
        return [update_record(self.views[v], entities) for v, entities in written.items()]


def build_features_app(
    settings: Settings,
    views: Sequence[StreamingView],
    writer: FeastPushWriter,
    ready: Path | None,
    health: Health | None = None,
) -> faust.App:
    # Its table in memory whatever ``table_store`` says: faust-streaming 0.15.3's RocksDB
    # store takes a write's partition from the current event (``stores/rocksdb.py``
    # ``_set``), which a batch's or the expiry timer's writes do not have. The state is
    # bounded by the views' windows (a day of observations per active entity).
    app = make_app(settings, f"{settings.group_id}-features", table_store="memory")
    events = raw_topic(app, settings.topic("events"), settings.partitions)
    observations = raw_topic(
        app, settings.topic("feature_events"), settings.partitions, internal=True
    )
    updates_topic = settings.topic("feature_updates")
    table = app.Table(
        "feature-state",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        # The changelog partition follows the key, as feature-events' does (same
        # partitioner, same partition count), not the partition of the current event.
        use_partitioner=True,
        extra_topic_configs=changelog_topic_configs(settings),
    )
    aggregator = FeatureAggregator(
        views, writer, table, settings.feature_lateness_s, settings.feature_push_retry_max_s
    )

    @app.agent(events, name="feature-forward")
    async def forward(stream: StreamT) -> None:
        inputs = cast(Stream, stream)
        send = faust_send(app.producer)
        topic = observations.get_topic_name()
        async for taken in inputs.noack_take(settings.feature_batch_max, within=0.05):
            batch = cast(Sequence[EventT], taken)
            out: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
            for event in batch:
                message = event.message
                sent_ms = message.timestamp * 1000 if message.timestamp is not None else None
                records, invalid = observations_of(
                    message.value, views, settings.max_event_bytes, sent_ms
                )
                for name in invalid:
                    metrics.FEATURE_EVENTS.labels(name, "invalid").inc()
                out += [(topic, key, value, []) for key, value in records]
            await publish(send, out, SEND_RETRY_MAX_S)
            for event in batch:
                await inputs.ack(event)

    @app.agent(observations, name="feature-aggregate")
    async def aggregate(stream: StreamT) -> None:
        inputs = cast(Stream, stream)
        send = faust_send(app.producer)
        async for taken in inputs.noack_take(
            settings.feature_batch_max, within=settings.feature_batch_wait_s
        ):
            batch = cast(Sequence[EventT], taken)
            updates = await aggregator.process([e.message.value for e in batch])
            # Informative: a lost invalidation leaves a cached value stale for at most the
            # scoring worker's cache TTL.
            await send_best_effort(send, updates_topic, updates)
            for event in batch:
                await inputs.ack(event)

    @app.timer(settings.feature_batch_wait_s)
    async def expire() -> None:
        # Not while partitions move: the table is being restored from its changelog and
        # a state written now would be overwritten by an older one.
        if app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return
        updates = await aggregator.tick()
        await send_best_effort(faust_send(app.producer), updates_topic, updates)

    register_lag_monitor(app)
    mark_ready_on_rebalance(app, ready, health)
    return app


async def _prepare(
    settings: Settings,
) -> tuple[list[StreamingView], FeastPushWriter, OfflineFilesLock]:
    from streams.online_store import online_store_config

    await wait_for_broker(settings, timeout_s=30)
    await ensure_topics(settings)
    store = open_store(settings.feature_repo, online_store_config(settings))
    views = streaming_views(store, settings.feature_view_names)
    if not views:
        log.warning("the feature repo %s declares no streaming feature view", settings.feature_repo)
    # One writer per offline file (Feast's file store rewrites it per push): a second
    # feature worker stops here, before it joins the group, naming the one that runs.
    lock = hold_offline_files(
        store, [v.name for v in views], holder=f"feature worker {settings.group_id}-features"
    )
    for view in views:
        log.info(
            "keeping %s (by %s, push source %s): %s",
            view.name,
            view.entity_key,
            view.push_source,
            ", ".join(view.features),
        )
    return views, FeastPushWriter(store), lock


def run_features_worker(settings: Settings) -> None:
    """Prepare (fail fast on a repo whose streaming views cannot be computed), then hand
    the loop to Faust until stopped."""
    loop, ready = worker_start(settings)
    views, writer, lock = loop.run_until_complete(_prepare(settings))
    health = Health("features")  # ready: partitions assigned, recovery over
    app = build_features_app(settings, views, writer, ready, health)
    try:
        run_worker_app(settings, app, loop, health, ready)
    finally:
        writer.close()
        lock.release()
