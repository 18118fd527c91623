"""The label join: predictions meet their ground truth, in either order, across restarts.

In: ``predictions`` and ``predictions-shadow`` (prediction records), ``labels``
(``{"event_id", "label", "label_time"}``, arriving before or long after the prediction)
and, when slice fields are configured, ``events`` (only those fields are kept).
Out: one record per (event, variant) pair on ``predictions-labelled``; ``quality`` and
``retrain`` signals on ``signals``; the ``streamscore_label_joins`` / ``quality`` metrics.

Flow: a thin forwarder agent re-keys every input by ``event_id`` onto the internal
``feedback-join`` topic, so both sides of an event meet in one partition whatever key
their producers used. The join agent keeps per event id a small state in a Faust table
(changelog-backed: with the ``memory://`` store a restarted worker replays the changelog
from its start, faust 0.15.3 ``MemoryStore.persisted_offset`` is always None, so no
pending join is lost) and emits a pair as soon as a prediction and its label are both
there. Entries older than ``label_join_retention_s`` are expired by the join agent itself
(deletes must happen in the stream of their own partition so that the changelog
tombstone lands in the partition that holds the key).

:func:`join_step` is the whole join logic, pure and unit-tested; the agents only move
records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import StreamT, TopicT

from streams import metrics
from streams.codec import decode, encode
from streams.faust_app import raw_topic
from streams.monitoring.quality import Pair, QualityMonitor
from streams.monitoring.signals import Signal, encode_signal
from streams.settings import Settings

log = logging.getLogger(__name__)

PREDICTION_FIELDS = ("model", "version", "variant", "score", "decision", "event_time")
# How often (per join-topic partition) the join agent looks for expired entries.
SWEEP_INTERVAL_S = 60.0


@dataclass(frozen=True)
class JoinItem:
    """One input of the join, re-keyed by event id."""

    kind: str  # "prediction" | "label" | "context"
    event_id: str
    body: dict[str, Any]


def parse_label(record: Any) -> JoinItem:
    """A ``labels`` record; ValueError names what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"label must be a JSON object, got {type(record).__name__}")
    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("label: event_id must be a non-empty string")
    label = record.get("label")
    if isinstance(label, bool):
        label = int(label)
    if label not in (0, 1):
        raise ValueError(f"label: label must be 0/1 or true/false, got {label!r}")
    return JoinItem("label", event_id, {"label": label, "label_time": record.get("label_time")})


def parse_prediction(record: Any) -> JoinItem:
    if not isinstance(record, dict) or not isinstance(record.get("event_id"), str):
        raise ValueError("prediction: not a prediction record with an event_id")
    missing = [f for f in ("model", "version", "variant", "score", "decision") if f not in record]
    if missing:
        raise ValueError(f"prediction: missing {missing}")
    return JoinItem("prediction", record["event_id"], {f: record.get(f) for f in PREDICTION_FIELDS})


def parse_context(record: Any, slice_fields: Sequence[str]) -> JoinItem:
    if not isinstance(record, dict) or not isinstance(record.get("event_id"), str):
        raise ValueError("event: not an object with an event_id")
    slices = {f: str(record[f]) for f in slice_fields if record.get(f) is not None}
    return JoinItem("context", record["event_id"], {"slices": slices})


def join_step(
    state: dict[str, Any] | None, item: JoinItem, now: float, partition: int = 0
) -> tuple[dict[str, Any], list[Pair], str]:
    """Apply one input to an event's join state: (new state, completed pairs, outcome).

    Outcomes: ``joined``, ``waiting_label``, ``waiting_prediction``, ``context``,
    ``duplicate`` (a redelivered prediction or label: at-least-once upstream).
    The state keeps which variants were already paired, so a redelivery never
    makes a second pair, and keeps the label so a late shadow prediction still joins.
    """
    state = (
        dict(state)
        if state
        else {
            "predictions": {},
            "label": None,
            "slices": {},
            "paired": [],
            "first_seen": now,
            "partition": partition,
        }
    )
    state["predictions"] = dict(state["predictions"])
    state["paired"] = list(state["paired"])
    pending: list[str] = []
    if item.kind == "prediction":
        variant = str(item.body["variant"])
        if variant in state["paired"] or variant in state["predictions"]:
            return state, [], "duplicate"
        state["predictions"][variant] = item.body
        pending = [variant]
        outcome = "waiting_label"
    elif item.kind == "label":
        if state["label"] is not None:
            return state, [], "duplicate"
        state["label"] = item.body
        pending = list(state["predictions"])
        outcome = "waiting_prediction"
    else:
        state["slices"] = {**item.body["slices"], **state["slices"]}
        return state, [], "context"
    pairs: list[Pair] = []
    if state["label"] is not None:
        for variant in pending:
            p = state["predictions"].pop(variant)
            state["paired"].append(variant)
            pairs.append(
                Pair(
                    event_id=item.event_id,
                    model=str(p["model"]),
                    version=str(p["version"]),
                    variant=variant,
                    score=float(p["score"]),
                    decision=str(p["decision"]),
                    label=int(state["label"]["label"]),
                    slices=dict(state["slices"]),
                )
            )
    if pairs:
        outcome = "joined"
    return state, pairs, outcome


def expired_outcome(state: dict[str, Any]) -> str:
    """How an entry that outlived the retention is counted."""
    if state["predictions"]:
        return "expired_unlabelled"
    if state["label"] is not None and not state["paired"]:
        return "expired_label_only"
    return "expired_complete"


def labelled_record(pair: Pair, state: dict[str, Any]) -> dict[str, Any]:
    """The ``predictions-labelled`` record of a pair."""
    label = state.get("label") or {}
    return asdict(pair) | {"label_time": label.get("label_time")}


def quality_monitor(settings: Settings) -> QualityMonitor:
    return QualityMonitor(
        window_pairs=settings.quality_window_pairs,
        emit_every=settings.quality_emit_every,
        min_pairs=settings.quality_min_pairs,
        positive_decisions=settings.positive_decisions,
        slice_fields=settings.slice_fields,
        min_roc_auc=settings.quality_min_roc_auc,
        retrain_after=settings.retrain_after_windows,
    )


async def send_all(topic: TopicT, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Send and wait for the broker's ack of each, so the source offset is acked after."""
    futures = [await topic.send(key=k, value=v, force=True) for k, v in records]
    await asyncio.gather(*futures)


async def send_signals(topic: TopicT, signals: Sequence[Signal]) -> None:
    """Publish signals (from this module or from :mod:`streams.monitoring.monitor`)."""
    if signals:
        await send_all(topic, [encode_signal(s) for s in signals])


@dataclass
class FeedbackHandles:
    """What :func:`register_feedback` added, for tests and for the caller's own use."""

    table: Any
    quality: QualityMonitor
    signals_topic: TopicT
    forward_agent: Any
    join_agent: Any


def register_feedback(
    app: faust.App, settings: Settings, quality: QualityMonitor | None = None
) -> FeedbackHandles:
    """Add the label-join table and agents to ``app`` (before the worker starts)."""
    quality = quality or quality_monitor(settings)
    parts = settings.partitions
    signals_topic = raw_topic(app, settings.topic("signals"), parts)
    labelled = raw_topic(app, settings.topic("labelled"), parts)
    join_topic = raw_topic(app, settings.topic("feedback_join"), parts, internal=True)
    prediction_topics = {settings.topic("predictions"), settings.topic("predictions_shadow")}
    labels_topic = settings.topic("labels")
    sources = [*sorted(prediction_topics), labels_topic]
    if settings.slice_fields:
        sources.append(settings.topic("events"))
    source = app.topic(
        *sources,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table(
        "feedback-join",
        default=None,
        # bytes in and out: the values are our codec's JSON (streams.codec)
        key_type=bytes,
        value_type=bytes,
        partitions=parts,
    )
    retention = settings.label_join_retention_s
    sweep_every = min(SWEEP_INTERVAL_S, retention / 4)
    last_sweep: dict[int, float] = {}

    def parse(topic: str, raw: bytes | None) -> JoinItem:
        record = decode(raw or b"null")
        if topic in prediction_topics:
            return parse_prediction(record)
        if topic == labels_topic:
            return parse_label(record)
        return parse_context(record, settings.slice_fields)

    @app.agent(source, name="feedback-forward")
    async def forward(stream: StreamT) -> None:
        async for batch in cast(Stream, stream).take_events(500, within=0.05):
            out: list[tuple[bytes, bytes]] = []
            for event in batch:
                try:
                    item = parse(event.message.topic, event.message.value)
                except ValueError as exc:  # orjson's decode error is a ValueError too
                    metrics.LABEL_JOINS.labels("invalid").inc()
                    log.warning("feedback: skipped a record of %s: %s", event.message.topic, exc)
                    continue
                out.append((item.event_id.encode(), encode(asdict(item))))
            await send_all(join_topic, out)

    @app.agent(join_topic, name="feedback-join")
    async def join(stream: StreamT) -> None:
        async for event in cast(Stream, stream).events():
            raw = decode(event.message.value or b"{}")
            item = JoinItem(raw["kind"], raw["event_id"], raw["body"])
            partition = event.message.partition
            now = time.time()
            key = item.event_id.encode()
            stored = table.get(key)
            state, pairs, outcome = join_step(
                decode(stored) if stored else None, item, now, partition
            )
            metrics.LABEL_JOINS.labels(outcome).inc()
            if outcome != "duplicate":
                table[key] = encode(state)
            if item.kind == "prediction" and outcome != "duplicate":
                p = item.body
                quality.prediction_seen(str(p["model"]), str(p["version"]), str(p["variant"]))
            signals: list[Signal] = []
            for pair in pairs:
                signals += quality.add(pair)
            await send_all(labelled, [(key, encode(labelled_record(p, state))) for p in pairs])
            await send_signals(signals_topic, signals)
            if now - last_sweep.setdefault(partition, now) >= sweep_every:
                _sweep(table, partition, now - retention)
                last_sweep[partition] = now
                metrics.PREDICTIONS_AWAITING_LABEL.set(len(table))

    return FeedbackHandles(table, quality, signals_topic, forward, join)


def _sweep(table: Any, partition: int, older_than: float) -> int:
    """Expire this partition's entries first seen before ``older_than``; return how many."""
    expired = []
    for key, raw in list(table.items()):
        state = decode(raw)
        if state.get("partition") == partition and state["first_seen"] < older_than:
            expired.append((key, state))
    for key, state in expired:
        metrics.LABEL_JOINS.labels(expired_outcome(state)).inc()
        del table[key]
    return len(expired)
