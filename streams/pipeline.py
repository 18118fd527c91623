"""The scoring pipeline as plain async stages, without Faust or Kafka.

In: a micro-batch of :class:`Inbound` records (bytes as consumed, with their
topic/partition/offset). Out: one :class:`Outbound` record per inbound record, either
a prediction (``predictions``) or a dead letter (``deadletter``, original key and bytes,
headers saying why). Nothing is dropped: ``len(out) == len(in)`` for every batch.

Stages: decode -> validate (data contract, duplicates) -> enrich (one online lookup per
batch) -> score (one ONNX Runtime call per batch) -> build records. The agent in
:mod:`streams.app` only moves records between Kafka and :meth:`ScoringPipeline.process`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from features.online import OnlineFeatureSource
from features.store import FeatureStoreUnavailable
from models.assembly import assemble_inputs, entity_rows
from models.registry import LoadedModel
from streams import metrics
from streams.codec import decode_event, encode
from streams.contract import validate_event
from streams.errors import DuplicateEvent, EnrichFailed, PipelineError, ScoreFailed

log = logging.getLogger(__name__)

Destination = Literal["predictions", "deadletter"]


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
    """A record to publish: a prediction or a dead letter."""

    destination: Destination
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def dead_letter(record: Inbound, error: PipelineError) -> Outbound:
    """The original key and bytes, unchanged; the headers say why (contract in ARCHITECTURE)."""
    headers = [
        ("error.class", type(error).__name__.encode()),
        ("error.message", error.message.encode()),
        ("error.stage", error.stage.encode()),
        ("source.topic", record.topic.encode()),
        ("source.partition", str(record.partition).encode()),
        ("source.offset", str(record.offset).encode()),
    ]
    return Outbound("deadletter", record.key, record.value or b"", headers)


class RecentIds:
    """Bounded memory of event ids already taken by this worker, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; False if it was already there."""
        if self.capacity == 0:
            return True
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, event_id: str) -> None:
        self._ids.pop(event_id, None)


@dataclass(frozen=True)
class PipelineConfig:
    max_event_bytes: int = 65536
    dedupe_window: int = 200_000
    enrich_retries: int = 3
    enrich_backoff_s: float = 0.2


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ScoringPipeline:
    """Turns micro-batches of consumed records into predictions and dead letters."""

    def __init__(
        self,
        model: LoadedModel,
        features: OnlineFeatureSource,
        config: PipelineConfig | None = None,
        variant: str = "champion",
    ) -> None:
        self.model = model
        self.features = features
        self.config = config or PipelineConfig()
        self.variant = variant
        self._refs = model.manifest.feature_refs()
        self._seen = RecentIds(self.config.dedupe_window)

    async def process(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Route every record of ``batch`` to exactly one outbound record, in order."""
        out: list[Outbound | None] = [None] * len(batch)
        valid_idx: list[int] = []
        valid_events: list[dict[str, Any]] = []
        started = time.perf_counter()
        for i, record in enumerate(batch):
            try:
                event = validate_event(decode_event(record.value, self.config.max_event_bytes))
                if not self._seen.add(event["event_id"]):
                    raise DuplicateEvent(event["event_id"])
            except PipelineError as exc:
                out[i] = dead_letter(record, exc)
                continue
            valid_idx.append(i)
            valid_events.append(event)
        metrics.STAGE_SECONDS.labels("validate").observe(time.perf_counter() - started)

        if valid_events:
            try:
                scored = await self._enrich_and_score(valid_events)
            except PipelineError as exc:
                for i, event in zip(valid_idx, valid_events, strict=True):
                    self._seen.forget(event["event_id"])
                    out[i] = dead_letter(batch[i], exc)
            else:
                for i, prediction in zip(valid_idx, scored, strict=True):
                    out[i] = self._prediction(batch[i], prediction)

        result = [o for o in out if o is not None]
        assert len(result) == len(batch), "every inbound record needs one outbound record"
        for o in result:
            if o.destination == "deadletter":
                metrics.DEADLETTERS.labels(dict(o.headers)["error.stage"].decode()).inc()
        return result

    async def _enrich_and_score(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        manifest = self.model.manifest
        started = time.perf_counter()
        features = await self._fetch(events)
        enriched = time.perf_counter()
        metrics.STAGE_SECONDS.labels("enrich").observe(enriched - started)
        try:
            batch = assemble_inputs(manifest, events, features)
            scores = np.asarray(self.model.scorer.score_batch(batch.columns), dtype=np.float64)
        except Exception as exc:  # any model failure is this batch's, not the worker's
            log.exception("model %s v%s failed on a batch", manifest.name, manifest.version)
            raise ScoreFailed(f"{type(exc).__name__}: {exc}") from exc
        metrics.STAGE_SECONDS.labels("score").observe(time.perf_counter() - enriched)
        scored_at = datetime.now(UTC)
        keys = list(manifest.entity_keys.items())
        records = []
        missing_features = batch.features_missing(manifest)
        for event, score, missing in zip(events, scores.tolist(), missing_features, strict=True):
            records.append(
                {
                    "event_id": event["event_id"],
                    "entity": {key: event.get(fld) for key, fld in keys},
                    "model": manifest.name,
                    "version": manifest.version,
                    "variant": self.variant,
                    "score": score,
                    "decision": manifest.decide(score),
                    "fallback": None,
                    "features_missing": missing,
                    "event_time": _rfc3339(event["event_time"]),
                    "scored_at": scored_at,
                }
            )
            if missing:
                metrics.FEATURES_MISSING.labels(manifest.name).inc(len(missing))
        return records

    async def _fetch(self, events: list[dict[str, Any]]) -> dict[str, list[Any]]:
        if not self._refs:
            return {}
        rows = entity_rows(self.model.manifest, events)
        attempt = 0
        while True:
            try:
                return await self.features.fetch(self._refs, rows)
            except FeatureStoreUnavailable as exc:
                attempt += 1
                if attempt > self.config.enrich_retries:
                    raise EnrichFailed(f"online store unavailable: {exc}") from exc
                log.warning("online store unavailable (attempt %d): %s", attempt, exc)
                await asyncio.sleep(self.config.enrich_backoff_s * 2 ** (attempt - 1))

    def _prediction(self, record: Inbound, prediction: dict[str, Any]) -> Outbound:
        scored_at: datetime = prediction["scored_at"]
        latency_ms = None
        if record.timestamp_ms is not None:
            latency_ms = round(scored_at.timestamp() * 1000 - record.timestamp_ms, 3)
            metrics.END_TO_END_SECONDS.observe(max(latency_ms, 0) / 1000)
        prediction["scored_at"] = _rfc3339(scored_at)
        prediction["latency_ms"] = latency_ms
        metrics.PREDICTIONS.labels(
            prediction["model"], prediction["version"], self.variant, prediction["decision"]
        ).inc()
        key = record.key or str(next(iter(prediction["entity"].values()), "")).encode()
        return Outbound("predictions", key, encode(prediction))
