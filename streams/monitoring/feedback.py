"""The label join: predictions meet their ground truth, in either order, across restarts.

In: ``predictions`` and ``predictions-shadow`` (prediction records; the event fields
that slice online quality travel in their ``slices`` field) and ``labels``
(``{"event_id", "label", "label_time"}``, arriving before or long after the
prediction). Nothing else: the feedback worker never reads ``events``.
Out: one record per (event, variant) pair on ``predictions-labelled``; ``quality`` and
``retrain`` signals on ``signals``; the ``streamscore_label_joins`` / ``quality`` metrics.

Flow: a thin forwarder agent re-keys every input by ``event_id`` onto the internal
``feedback-join`` topic, so both sides of an event meet in one partition whatever key
their producers used; it acks a batch only once the broker acknowledged its re-keyed
records. The join agent keeps per event id a small state in a Faust table
(changelog-backed: with the ``memory://`` store a restarted worker replays the changelog
from its start, faust 0.15.3 ``MemoryStore.persisted_offset`` is always None, so no
pending join is lost) and emits a pair as soon as a prediction and its label are both
there. Order per input: publish the pairs and signals, wait for the broker's
acknowledgement, then write the new state, then ack the input. A crash anywhere in
between loses nothing: the input is consumed again and, since the state was not
written, its pair is emitted again (at-least-once; downstream deduplicates on
``event_id`` + ``variant``). Writing the state first, as before, marked a pair done
that was never published. Waiting entries older than ``label_join_retention_s`` and
completed ones older than ``label_join_completed_retention_s`` are deleted by the join
agent itself (deletes must happen in the stream of their own partition so
that the changelog tombstone lands in the partition that holds the key).

:func:`join_step` is the whole join logic, pure and unit-tested; the agents only move
records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT

from streams import metrics
from streams.codec import decode, encode
from streams.faust_app import changelog_topic_configs, raw_topic
from streams.monitoring.quality import Pair, QualityMonitor
from streams.monitoring.signals import Signal, encode_signal
from streams.publish import SendFn, faust_send, publish, send_best_effort
from streams.settings import Settings

log = logging.getLogger(__name__)

PREDICTION_FIELDS = ("model", "version", "variant", "score", "decision", "event_time")
# How often (per join-topic partition) the join agent looks for expired entries.
SWEEP_INTERVAL_S = 60.0
# The join table's RocksDB, per partition (with ``table_store`` rocksdb): Faust's defaults
# are 3 x 64 MiB of memtables and a 2 GiB block cache per partition's database; a join
# that writes each key about twice and reads it once needs neither. At most ~64 MiB of
# memtables and 32 MiB of cache per partition.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 16 * 1024**2,
    "max_write_buffer_number": 4,
    "block_cache_size": 32 * 1024**2,
}
# Upper bound of the back-off between retries of a refused join or pair record.
SEND_RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class JoinItem:
    """One input of the join, re-keyed by event id."""

    kind: str  # "prediction" | "label"
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
    body = {f: record.get(f) for f in PREDICTION_FIELDS}
    slices = record.get("slices")
    body["slices"] = (
        {str(k): str(v) for k, v in slices.items() if v is not None}
        if isinstance(slices, dict)
        else {}
    )
    return JoinItem("prediction", record["event_id"], body)


def decode_join_item(raw: bytes | None) -> JoinItem:
    """A record of the internal join topic; ValueError for anything else (for instance
    the ``context`` records of 0.1, when events were read a second time)."""
    record = decode(raw or b"null")
    if not isinstance(record, dict) or record.get("kind") not in ("prediction", "label"):
        kind = record.get("kind") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"join record of kind {kind!r}: expected prediction or label")
    item = JoinItem(record["kind"], str(record.get("event_id")), record.get("body") or {})
    # the same checks the forwarder made, so a bad record is refused here, not mid-join
    if item.kind == "label":
        parse_label({"event_id": item.event_id, **item.body})
    else:
        parse_prediction({"event_id": item.event_id, **item.body})
    return item


def join_step(
    state: dict[str, Any] | None, item: JoinItem, now: float, partition: int = 0
) -> tuple[dict[str, Any], list[Pair], str]:
    """Apply one input to an event's join state: (new state, completed pairs, outcome).

    Outcomes: ``joined``, ``waiting_label``, ``waiting_prediction``,
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
        body = dict(item.body)
        state["slices"] = {**body.pop("slices", {}), **state["slices"]}
        state["predictions"][variant] = body
        pending = [variant]
        outcome = "waiting_label"
    else:
        if state["label"] is not None:
            return state, [], "duplicate"
        state["label"] = item.body
        pending = list(state["predictions"])
        outcome = "waiting_prediction"
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
        if not state["predictions"]:
            state["completed_at"] = now  # kept a while for redeliveries, see is_expired
    return state, pairs, outcome


def is_expired(
    state: dict[str, Any], now: float, retention_s: float, completed_retention_s: float
) -> bool:
    """Is an entry due for deletion? Waiting entries live ``retention_s`` (a label may come
    days later); a completed one only ``completed_retention_s`` (it only answers
    redeliveries and a shadow prediction arriving with its champion). Keeping completed
    joins for the full retention held days of them in memory and in the changelog that
    every restart replays."""
    completed_at = state.get("completed_at")
    if completed_at is not None and not state["predictions"]:
        return bool(completed_at < now - completed_retention_s)
    return bool(state["first_seen"] < now - retention_s)


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


async def send_all(send: SendFn, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Send and wait for the broker's ack of every record (failed ones are sent again):
    the input is acked only after this returns."""
    await publish(send, [(topic, k, v, []) for k, v in records], SEND_RETRY_MAX_S)


@dataclass
class FeedbackHandles:
    """What :func:`register_feedback` added, for tests and for the caller's own use."""

    table: Any
    quality: QualityMonitor
    forward_agent: Any
    join_agent: Any


def register_feedback(
    app: faust.App, settings: Settings, quality: QualityMonitor | None = None
) -> FeedbackHandles:
    """Add the label-join table and agents to ``app`` (before the worker starts)."""
    quality = quality or quality_monitor(settings)
    parts = settings.partitions
    signals_topic = settings.topic("signals")
    labelled_topic = settings.topic("labelled")
    join_topic = raw_topic(app, settings.topic("feedback_join"), parts, internal=True)
    prediction_topics = {settings.topic("predictions"), settings.topic("predictions_shadow")}
    labels_topic = settings.topic("labels")
    source = app.topic(
        *sorted(prediction_topics),
        labels_topic,
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
        extra_topic_configs=changelog_topic_configs(settings),
        options=ROCKSDB_OPTIONS,
    )
    retention = settings.label_join_retention_s
    completed_retention = min(settings.label_join_completed_retention_s, retention)
    sweep_every = min(SWEEP_INTERVAL_S, completed_retention / 4)
    last_sweep: dict[int, float] = {}

    def parse(topic: str, raw: bytes | None) -> JoinItem:
        record = decode(raw or b"null")
        if topic in prediction_topics:
            return parse_prediction(record)
        return parse_label(record)

    @app.agent(source, name="feedback-forward")
    async def forward(stream: StreamT) -> None:
        inputs = cast(Stream, stream)
        send = faust_send(app.producer)
        # noack_take: take_events would ack the batch in a finally, even when the send
        # below raised or was cancelled, and the inputs would be lost.
        async for taken in inputs.noack_take(500, within=0.05):
            batch = cast(Sequence[EventT], taken)
            out: list[tuple[bytes, bytes]] = []
            for event in batch:
                try:
                    item = parse(event.message.topic, event.message.value)
                except ValueError as exc:  # orjson's decode error is a ValueError too
                    metrics.LABEL_JOINS.labels("invalid").inc()
                    log.warning("feedback: skipped a record of %s: %s", event.message.topic, exc)
                    continue
                out.append((item.event_id.encode(), encode(asdict(item))))
            await send_all(send, join_topic.get_topic_name(), out)
            for event in batch:
                await inputs.ack(event)

    @app.agent(join_topic, name="feedback-join")
    async def join(stream: StreamT) -> None:
        inputs = cast(Stream, stream).noack()
        send = faust_send(app.producer)
        async for event in inputs.events():
            try:
                item = decode_join_item(event.message.value)
            except ValueError as exc:  # an agent that crashed here would never ack again
                metrics.LABEL_JOINS.labels("invalid").inc()
                log.warning("feedback: skipped a join record: %s", exc)
                await inputs.ack(event)
                continue
            partition = event.message.partition
            now = time.time()
            key = item.event_id.encode()
            stored = table.get(key)
            try:
                state, pairs, outcome = join_step(
                    decode(stored) if stored else None, item, now, partition
                )
            except (KeyError, TypeError, ValueError) as exc:
                # A stored state this code cannot read (written by another version):
                # counted and skipped, since a crashed agent would never ack again.
                metrics.LABEL_JOINS.labels("invalid").inc()
                log.warning("feedback: cannot join %s with its stored state: %r", key, exc)
                await inputs.ack(event)
                continue
            signals: list[Signal] = []
            for pair in pairs:
                signals += quality.add(pair)
            if pairs or signals:
                records = [(key, encode(labelled_record(p, state))) for p in pairs]
                await send_all(send, labelled_topic, records)
                # Informative; a lost signal is recomputed with the next pairs.
                await send_best_effort(send, signals_topic, [encode_signal(s) for s in signals])
            # Only now that the pairs are durable: the state that says they were emitted.
            if outcome != "duplicate":
                table[key] = encode(state)
            metrics.LABEL_JOINS.labels(outcome).inc()
            if item.kind == "prediction" and outcome != "duplicate":
                p = item.body
                quality.prediction_seen(str(p["model"]), str(p["version"]), str(p["variant"]))
            await inputs.ack(event)
            if now - last_sweep.setdefault(partition, now) >= sweep_every:
                _sweep(table, partition, now, retention, completed_retention)
                last_sweep[partition] = now
                metrics.PREDICTIONS_AWAITING_LABEL.set(len(table))

    return FeedbackHandles(table, quality, forward, join)


def _sweep(
    table: Any, partition: int, now: float, retention_s: float, completed_retention_s: float
) -> int:
    """Delete this partition's entries that :func:`is_expired`; return how many."""
    expired = []
    for key, raw in list(table.items()):
        state = decode(raw)
        if state.get("partition") == partition and is_expired(
            state, now, retention_s, completed_retention_s
        ):
            expired.append((key, state))
    for key, state in expired:
        metrics.LABEL_JOINS.labels(expired_outcome(state)).inc()
        del table[key]
    return len(expired)
