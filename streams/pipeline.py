"""The scoring pipeline as plain async stages, without Faust or Kafka.

In: a micro-batch of :class:`Inbound` records (bytes as consumed, with their
topic/partition/offset). Out: one :class:`Outbound` record per inbound record, either
a prediction (``predictions``) or a dead letter (``deadletter``, original key and bytes,
headers saying why). Nothing is dropped: ``len(out) == len(in)`` for every batch.

Stages: decode -> validate (data contract, duplicates) -> enrich (one online lookup per
batch) -> route (champion / canary by entity hash) -> score (one ONNX Runtime call per
model per batch; the shadow model scores every event too, to ``predictions-shadow``)
-> build records. After each model's scores, the optional :class:`ScoringMonitor` sees
the model-ready columns and scores (drift windows, missing-feature rates); the signals
of windows it closed wait in :meth:`ScoringPipeline.drain_signals` for the agent to
publish, and with ``served_features`` every prediction's input vector goes to
``features-served`` too. When the model raises, the online store is down or a row misses too
many features, the manifest's fallback policy answers (``fallback: <reason>``); without
a policy those events are dead-lettered at enrich/score. The agent in
:mod:`streams.app` only moves records between Kafka and :meth:`ScoringPipeline.process`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from features.freshness import apply_freshness
from features.online import OnlineFeatureSource
from features.store import FeatureStoreUnavailable
from models.assembly import assemble_inputs, entity_rows
from models.manifest import ModelManifest
from models.routing import RoutingTable, ServingModel
from streams import metrics
from streams.codec import decode_event, encode
from streams.contract import validate_event, validate_with_schema
from streams.errors import DuplicateEvent, EnrichFailed, PipelineError, ScoreFailed
from streams.monitoring.monitor import (
    ScoringMonitor,
    observe_feature_age,
    served_feature_records,
)
from streams.monitoring.signals import Signal

log = logging.getLogger(__name__)

Destination = Literal["predictions", "predictions-shadow", "deadletter", "features-served"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """A consumed record, transport-neutral."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """A record to publish: a prediction, a dead letter or a served-feature log record."""

    destination: Destination
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


#: Largest dead-letter value: the original bytes up to here, cut beyond. 256 KiB is 4x
#: the default event limit (so an event that passed decode and failed later keeps all
#: its bytes) and a quarter of the producer's max request size (Faust's 1,000,000,
#: aiokafka's 1 MiB), leaving ample room for the key and the headers.
DEADLETTER_MAX_VALUE_BYTES = 262_144


def dead_letter(
    record: Inbound, error: PipelineError, max_value_bytes: int = DEADLETTER_MAX_VALUE_BYTES
) -> Outbound:
    """The original key and bytes, unchanged, unless the bytes exceed ``max_value_bytes``;
    the headers say why (contract in ARCHITECTURE).

    A value over the limit is cut to its first ``max_value_bytes`` bytes, and headers
    ``original.truncated`` (``true``), ``original.size`` and ``original.sha256`` (hex of
    the whole original) let an operator match it with the event. Without the cut, a
    dead letter of an event near the broker's limit exceeds the producer's request
    size: it can never be published, and its partition never commits past it.
    """
    value = record.value or b""
    headers = [
        ("error.class", type(error).__name__.encode()),
        ("error.message", error.message.encode(errors="backslashreplace")),
        ("error.stage", error.stage.encode()),
        ("source.topic", record.topic.encode()),
        ("source.partition", str(record.partition).encode()),
        ("source.offset", str(record.offset).encode()),
    ]
    if len(value) > max_value_bytes:
        headers += [
            ("original.truncated", b"true"),
            ("original.size", str(len(value)).encode()),
            ("original.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[:max_value_bytes]
    return Outbound("deadletter", record.key, value, headers)


#: Where a record was read, packed as ``partition << 48 | offset`` (one small int per
#: remembered id rather than a tuple: the memory holds up to 200,000 of them). The worker
#: reads one events topic, so the topic is not part of it.
Position = int


class RecentIds:
    """Bounded memory of the event ids this worker took and where it read each first,
    oldest forgotten first.

    The rule: one offset, one kind of outcome. A second occurrence of an id at another
    position is a duplicate (a producer sent it twice); the same position again is a
    redelivery (a re-seek after a rebalance, a batch not acknowledged before a stop),
    which is scored again as it was the first time: at-least-once allows it and
    consumers deduplicate on ``event_id``. Dead-lettering a redelivery instead gave one
    event a prediction and a ``DuplicateEvent`` dead letter.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, Position] = OrderedDict()

    def add(self, event_id: str, position: Position) -> bool:
        """Remember ``event_id`` read at ``position``; False if it is a duplicate (first
        read at another position)."""
        if self.capacity == 0:
            return True
        first = self._ids.get(event_id)
        if first is not None:
            return first == position
        self._ids[event_id] = position
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, event_id: str, position: Position) -> None:
        """Forget ``event_id`` if it was first read at ``position`` (its outcome was a
        dead letter that allows a replay, so a re-sent copy is not a duplicate)."""
        if self._ids.get(event_id) == position:
            del self._ids[event_id]


@dataclass(frozen=True)
class PipelineConfig:
    max_event_bytes: int = 65536
    deadletter_max_value_bytes: int = DEADLETTER_MAX_VALUE_BYTES
    dedupe_window: int = 200_000
    enrich_retries: int = 3
    enrich_backoff_s: float = 0.2
    # Event fields copied into each prediction record's ``slices``: what the feedback
    # worker slices online quality by, without reading ``events`` a second time.
    slice_fields: tuple[str, ...] = ()
    # The PII policy's dead-letter redaction (streams.pii), when the operator turned it on.
    redact_dead_letter: Callable[[Outbound], Outbound] | None = None
    # Per feature view, the oldest served value (seconds before the event) that counts;
    # older ones, and ones stamped after the event, are missing (features.freshness).
    feature_max_age: Mapping[str, float] = field(default_factory=dict)


def _position(record: Inbound) -> Position:
    return (record.partition << 48) | record.offset


def _rfc3339(ts: datetime) -> str:
    if ts.tzinfo is not UTC:  # the contract normalises event times to UTC already
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ScoringPipeline:
    """Turns micro-batches of consumed records into predictions and dead letters.

    It scores with a :class:`RoutingTable` (champion, canary by entity hash, shadow).
    :meth:`swap` replaces the table; :meth:`process` reads it once per batch, so a
    rollout command takes effect between two micro-batches, never inside one.
    """

    def __init__(
        self,
        routing: RoutingTable | ServingModel,
        features: OnlineFeatureSource,
        config: PipelineConfig | None = None,
        monitor: ScoringMonitor | None = None,
        served_features: bool = False,
    ) -> None:
        self._routing = (
            routing if isinstance(routing, RoutingTable) else RoutingTable.single(routing)
        )
        self.features = features
        self.config = config or PipelineConfig()
        self.monitor = monitor
        self.served_features = served_features
        self._seen = RecentIds(self.config.dedupe_window)
        self._signals: list[Signal] = []
        self._last_stamp: tuple[datetime, str, float] | None = None

    def emit(self, signal: Signal) -> None:
        """Queue a signal raised beside the pipeline (the online store's state) for the
        agent to publish with the batch's own."""
        self._signals.append(signal)

    def drain_signals(self) -> list[Signal]:
        """Drift/retrain signals of the windows closed since the last call (for ``signals``)."""
        signals, self._signals = self._signals, []
        return signals

    @property
    def routing(self) -> RoutingTable:
        return self._routing

    @property
    def model(self) -> ServingModel:
        """The champion."""
        return self._routing.champion

    def swap(self, routing: RoutingTable) -> RoutingTable:
        """Serve ``routing`` from the next batch on; return the table it replaces."""
        old, self._routing = self._routing, routing
        return old

    def dead_letter(self, record: Inbound, error: PipelineError) -> Outbound:
        """The dead letter of ``record``, redacted when the PII policy says so."""
        letter = dead_letter(record, error, self.config.deadletter_max_value_bytes)
        if self.config.redact_dead_letter is not None:
            return self.config.redact_dead_letter(letter)
        return letter

    def _validate(self, manifest: ModelManifest, record: Inbound) -> dict[str, Any]:
        obj = decode_event(record.value, self.config.max_event_bytes)
        if manifest.event_schema is None:
            return validate_event(obj)
        return validate_with_schema(obj, manifest.event_schema)

    async def process(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Route every record of ``batch`` to exactly one outbound record, in order.

        Shadow predictions (``predictions-shadow``) and served-feature records
        (``features-served``) follow the batch's own records.
        """
        routing = self._routing  # one table for the whole batch
        out: list[Outbound | None] = [None] * len(batch)
        valid_idx: list[int] = []
        valid_events: list[dict[str, Any]] = []
        started = time.perf_counter()
        for i, record in enumerate(batch):
            try:
                event = self._validate(routing.champion.manifest, record)
                if not self._seen.add(event["event_id"], _position(record)):
                    raise DuplicateEvent(event["event_id"])
            except PipelineError as exc:
                out[i] = self.dead_letter(record, exc)
                continue
            valid_idx.append(i)
            valid_events.append(event)
        metrics.STAGE_SECONDS.labels("validate").observe(time.perf_counter() - started)

        shadow_out: list[Outbound] = []
        served: list[Outbound] = []
        tally: Counter[tuple[str, str, str, str]] = Counter()
        if valid_events:
            try:
                scored, shadow = await self._enrich_and_score(routing, valid_events, served)
            except PipelineError as exc:
                for i, event in zip(valid_idx, valid_events, strict=True):
                    self._seen.forget(event["event_id"], _position(batch[i]))
                    out[i] = self.dead_letter(batch[i], exc)
            else:
                for i, event, prediction in zip(valid_idx, valid_events, scored, strict=True):
                    if isinstance(prediction, PipelineError):
                        self._seen.forget(event["event_id"], _position(batch[i]))
                        out[i] = self.dead_letter(batch[i], prediction)
                    else:
                        out[i] = self._prediction(batch[i], prediction, tally)
                for i, prediction in shadow:
                    shadow_out.append(self._prediction(batch[valid_idx[i]], prediction, tally))

        result = [o for o in out if o is not None]
        assert len(result) == len(batch), "every inbound record needs one outbound record"
        # Counted once per batch and label set, not once per record.
        for labels, n in tally.items():
            metrics.PREDICTIONS.labels(*labels).inc(n)
        dead = Counter(
            dict(o.headers)["error.stage"].decode() for o in result if o.destination == "deadletter"
        )
        for stage, n in dead.items():
            metrics.DEADLETTERS.labels(stage).inc(n)
        return result + shadow_out + served

    async def _features(
        self, routing: RoutingTable, events: list[dict[str, Any]]
    ) -> tuple[dict[str, dict[str, list[Any]] | None], EnrichFailed | None]:
        """One lookup per distinct (feature refs, entity keys) among the served models.

        Champion and canary usually read the same features, so that is one lookup.
        A failed lookup maps to None (the fallback policy may answer instead).
        """
        started = time.perf_counter()
        fetched: dict[str, dict[str, list[Any]] | None] = {}
        by_group: dict[tuple[Any, ...], dict[str, list[Any]] | None] = {}
        error: EnrichFailed | None = None
        for model in routing.models():
            manifest = model.manifest
            group = (tuple(manifest.feature_refs()), tuple(manifest.entity_keys.items()))
            if group not in by_group:
                try:
                    by_group[group] = await self._fetch(manifest, events)
                except EnrichFailed as exc:
                    by_group[group], error = None, exc
            fetched[manifest.version] = by_group[group]
        metrics.STAGE_SECONDS.labels("enrich").observe(time.perf_counter() - started)
        return fetched, error

    async def _enrich_and_score(
        self, routing: RoutingTable, events: list[dict[str, Any]], served: list[Outbound]
    ) -> tuple[list[dict[str, Any] | PipelineError], list[tuple[int, dict[str, Any]]]]:
        """Main predictions (or per-event errors) in event order, and shadow predictions.

        Served-feature log records, when enabled, are appended to ``served``.
        """
        features, error = await self._features(routing, events)
        if error is not None and routing.champion.manifest.fallback is None:
            raise error  # no policy: the batch is dead-lettered at enrich, as before
        started = time.perf_counter()
        on_canary = routing.split(events)
        main: list[dict[str, Any] | PipelineError | None] = [None] * len(events)
        for model, variant, wanted in (
            (routing.champion, "champion", False),
            (routing.canary, "canary", True),
        ):
            if model is None:
                continue
            idx = [i for i, c in enumerate(on_canary) if c == wanted]
            if not idx:
                continue
            rows = features[model.manifest.version]
            subset = [events[i] for i in idx]
            part = self._score_with(model, variant, subset, _take(rows, idx), error, served)
            for i, prediction in zip(idx, part, strict=True):
                main[i] = prediction
        shadow: list[tuple[int, dict[str, Any]]] = []
        if routing.shadow is not None:
            rows = features[routing.shadow.manifest.version]
            for i, prediction in enumerate(
                self._score_with(routing.shadow, "shadow", events, rows, error, served)
            ):
                if isinstance(prediction, PipelineError):
                    # never affects the main record; counted, logged once in _score_with
                    metrics.SHADOW_FAILED.labels(routing.shadow.manifest.name).inc()
                else:
                    shadow.append((i, prediction))
        metrics.STAGE_SECONDS.labels("score").observe(time.perf_counter() - started)
        assert all(m is not None for m in main)
        return [m for m in main if m is not None], shadow

    def _score_with(
        self,
        model: ServingModel,
        variant: str,
        events: list[dict[str, Any]],
        features: dict[str, list[Any]] | None,
        enrich_error: EnrichFailed | None,
        served: list[Outbound],
    ) -> list[dict[str, Any] | PipelineError]:
        """Score ``events`` with one model; the fallback policy answers where it must.

        Rows the model scored feed the monitor (drift is about what the model saw, so
        rows decided by the fallback policy for missing features count too: their
        inputs were assembled and scored) and, when enabled, the served-feature log.
        """
        manifest = model.manifest
        policy = manifest.fallback
        refs = manifest.feature_refs()
        scored_at = datetime.now(UTC)
        if features is None:
            if policy is None:
                err: PipelineError = enrich_error or EnrichFailed("online store unavailable")
                return [err] * len(events)
            return [
                self._fallback(manifest, variant, e, "features_unavailable", refs, scored_at)
                for e in events
            ]
        try:
            batch = assemble_inputs(manifest, events, features)
            scores = np.asarray(model.scorer.score_batch(batch.columns), dtype=np.float64)
            if scores.shape != (len(events),):
                raise ValueError(f"model returned shape {scores.shape} for {len(events)} rows")
        except Exception as exc:  # any model failure is this batch's, not the worker's
            log.exception("model %s v%s failed on a batch", manifest.name, manifest.version)
            if policy is None:
                return [ScoreFailed(f"{type(exc).__name__}: {exc}")] * len(events)
            return [
                self._fallback(manifest, variant, e, "model_error", [], scored_at) for e in events
            ]
        if self.monitor is not None:
            self._signals += self.monitor.observe_batch(
                manifest, variant, batch.columns, scores, batch.missing
            )
        records: list[dict[str, Any] | PipelineError] = []
        missing_features = batch.features_missing(manifest)
        limit = policy.max_missing_fraction if policy else None
        n_missing = sum(len(m) for m in missing_features)
        if n_missing:
            metrics.FEATURES_MISSING.labels(manifest.name).inc(n_missing)
        for event, score, missing in zip(events, scores.tolist(), missing_features, strict=True):
            if limit is not None and refs and len(missing) / len(refs) > limit:
                records.append(
                    self._fallback(manifest, variant, event, "features_missing", missing, scored_at)
                )
                continue
            records.append(
                self._record(
                    manifest,
                    variant,
                    event,
                    score,
                    manifest.decide(score),
                    None,
                    missing,
                    scored_at,
                )
            )
        if self.served_features:
            stamped = [
                r | {"scored_at": _rfc3339(scored_at)} for r in records if isinstance(r, dict)
            ]
            served.extend(
                Outbound("features-served", key, value)
                for key, value in served_feature_records(manifest, stamped, batch.columns)
            )
        return records

    def _fallback(
        self,
        manifest: ModelManifest,
        variant: str,
        event: dict[str, Any],
        reason: str,
        missing: list[str],
        scored_at: datetime,
    ) -> dict[str, Any]:
        score, decision = manifest.fallback_score(event)
        metrics.FALLBACKS.labels(manifest.name, reason).inc()
        return self._record(manifest, variant, event, score, decision, reason, missing, scored_at)

    def _record(
        self,
        manifest: ModelManifest,
        variant: str,
        event: dict[str, Any],
        score: float,
        decision: str,
        fallback: str | None,
        missing: list[str],
        scored_at: datetime,
    ) -> dict[str, Any]:
        """The prediction record (contract in ARCHITECTURE), built in this one place;
        ``scored_at`` and ``latency_ms`` are filled in by :meth:`_prediction`."""
        return {
            "event_id": event["event_id"],
            "entity": {key: event.get(fld) for key, fld in manifest.entity_keys.items()},
            "model": manifest.name,
            "version": manifest.version,
            "variant": variant,
            "score": score,
            "decision": decision,
            "fallback": fallback,
            "features_missing": list(missing),
            "event_time": _rfc3339(event["event_time"]),
            "slices": {
                f: str(event[f]) for f in self.config.slice_fields if event.get(f) is not None
            },
            "scored_at": scored_at,
        }

    async def _fetch(
        self, manifest: ModelManifest, events: list[dict[str, Any]]
    ) -> dict[str, list[Any]]:
        refs = manifest.feature_refs()
        if not refs:
            return {}
        rows = entity_rows(manifest, events)
        attempt = 0
        while True:
            try:
                values = await self.features.fetch(refs, rows)
                break
            except FeatureStoreUnavailable as exc:
                attempt += 1
                # Not retryable: the store's circuit is open, retrying only waits.
                if not exc.retryable or attempt > self.config.enrich_retries:
                    raise EnrichFailed(f"online store unavailable: {exc}") from exc
                log.warning("online store unavailable (attempt %d): %s", attempt, exc)
                await asyncio.sleep(self.config.enrich_backoff_s * 2 ** (attempt - 1))
        # No await since the fetch returned, so the source's "last fetch" is this one.
        self._observe_feature_age(events)
        if self.config.feature_max_age:
            values = self._fresh_only(values, events)
        return values

    def _fresh_only(
        self, values: dict[str, list[Any]], events: list[dict[str, Any]]
    ) -> dict[str, list[Any]]:
        """``values`` without the ones the freshness rule refuses (counted per view)."""
        last_event_timestamps = getattr(self.features, "last_event_timestamps", None)
        if last_event_timestamps is None:
            return values
        fresh, dropped = apply_freshness(
            values,
            last_event_timestamps(),
            [event["event_time"].timestamp() for event in events],
            self.config.feature_max_age,
            getattr(self.features, "timestamp_resolution_s", 0.0),
        )
        for (view, reason), n in dropped.items():
            metrics.FEATURES_STALE.labels(view, reason).inc(n)
        return fresh

    def _observe_feature_age(self, events: list[dict[str, Any]]) -> None:
        """Feature age per view (event time minus the served value's timestamp).

        Only sources that keep their last lookup's event timestamps (an optional
        method, not part of ``OnlineFeatureSource``) feed it; rows of unknown entities
        have no timestamp and are not observed.
        """
        last_event_timestamps = getattr(self.features, "last_event_timestamps", None)
        if last_event_timestamps is None:
            return
        event_times = [event["event_time"].timestamp() for event in events]
        for view, stamps in last_event_timestamps().items():
            # not strict: a source's bookkeeping must never fail a batch
            ages = [t - ts for t, ts in zip(event_times, stamps, strict=False) if ts is not None]
            observe_feature_age(view, ages)

    def _prediction(
        self,
        record: Inbound,
        prediction: dict[str, Any],
        tally: Counter[tuple[str, str, str, str]],
    ) -> Outbound:
        """The record to publish; ``tally`` counts it by (model, version, variant, decision)."""
        scored_at: datetime = prediction["scored_at"]
        stamp, scored_ms = self._stamp(scored_at)
        latency_ms = None
        if record.timestamp_ms is not None:
            latency_ms = round(scored_ms - record.timestamp_ms, 3)
            metrics.END_TO_END_SECONDS.observe(max(latency_ms, 0) / 1000)
        prediction["scored_at"] = stamp
        prediction["latency_ms"] = latency_ms
        variant = prediction["variant"]
        tally[(prediction["model"], prediction["version"], variant, prediction["decision"])] += 1
        key = record.key or str(next(iter(prediction["entity"].values()), "")).encode()
        destination: Destination = "predictions-shadow" if variant == "shadow" else "predictions"
        return Outbound(destination, key, encode(prediction))

    def _stamp(self, scored_at: datetime) -> tuple[str, float]:
        """RFC 3339 and epoch ms of a batch's scoring time, formatted once per batch."""
        if self._last_stamp is None or self._last_stamp[0] is not scored_at:
            self._last_stamp = (scored_at, _rfc3339(scored_at), scored_at.timestamp() * 1000)
        return self._last_stamp[1], self._last_stamp[2]


def _take(features: dict[str, list[Any]] | None, idx: list[int]) -> dict[str, list[Any]] | None:
    if features is None:
        return None
    return {ref: [values[i] for i in idx] for ref, values in features.items()}
