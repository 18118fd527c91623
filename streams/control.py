"""Rollout commands through the compacted ``control`` topic.

In: records keyed by model name whose value is the whole desired
:class:`models.rollout.RolloutState` (JSON). Out: the worker's pipeline serving that
state (:meth:`ScoringPipeline.swap`, between two micro-batches) and a ``lifecycle``
record on ``signals`` per applied or refused state, which is how the CLI learns that
every worker applied a command.

Every worker must see every command, so the reader is group-less (no consumer group
would split the single partition between workers): it reads the topic from the
beginning at start-up (compaction keeps the latest state per model, so a restarted
worker recovers the current rollout) and then follows it. A state that names a model
the registry refuses (hash mismatch, unreadable) is not applied; the worker keeps
serving what it served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from models.errors import ModelError
from models.registry import ModelRegistry
from models.rollout import RolloutState
from models.routing import RoutingTable, ServingModel, build_routing
from streams import metrics
from streams.codec import decode, encode
from streams.kafka import follow, producer, reader
from streams.pipeline import ScoringPipeline
from streams.settings import Settings

log = logging.getLogger(__name__)

LIFECYCLE_KEY = b"lifecycle"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def state_record(state: RolloutState) -> tuple[bytes, bytes]:
    return state.model.encode(), encode(state.model_dump(mode="json"))


def parse_state(value: bytes | None) -> RolloutState | None:
    """A control record's state; None for a tombstone or a record we cannot read."""
    if value is None:
        return None
    try:
        return RolloutState.model_validate(decode(value))
    except ValueError as exc:
        log.error("unreadable control record ignored: %s", exc)
        return None


async def publish_state(settings: Settings, state: RolloutState) -> None:
    """Send the whole desired state, keyed by model name, and wait for the broker's ack."""
    client = producer(settings)
    await client.start()
    try:
        key, value = state_record(state)
        await client.send_and_wait(settings.topic("control"), key=key, value=value)
    finally:
        await client.stop()


async def read_control(settings: Settings) -> dict[str, RolloutState]:
    """The latest state per model on ``control`` (group-less, from the beginning to the end)."""
    consumer, tps = await follow(settings, settings.topic("control"), from_end=False)
    try:
        return await _read_to_end(consumer, tps)
    finally:
        await consumer.stop()


async def _read_to_end(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[str, RolloutState]:
    ends = await consumer.end_offsets(tps)
    latest: dict[str, RolloutState] = {}

    async def behind() -> bool:
        for tp in tps:
            if await consumer.position(tp) < ends[tp]:
                return True
        return False

    while await behind():
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                state = parse_state(record.value)
                if state is not None:
                    latest[state.model] = state
    return latest


class ControlFollower:
    """Applies rollout states of one model to a pipeline; the Kafka loop is separate."""

    def __init__(
        self, settings: Settings, pipeline: ScoringPipeline, registry: ModelRegistry
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.registry = registry
        self.model = settings.model_name
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.applied: list[RolloutState] = []
        self.refused: list[tuple[RolloutState, str]] = []

    @property
    def seq(self) -> int:
        state = self.pipeline.routing.state
        return state.seq if state else -1

    def _loaded(self) -> dict[str, ServingModel]:
        return {m.manifest.version: m for m in self.pipeline.routing.models()}

    async def apply(self, state: RolloutState) -> bool:
        """Serve ``state`` from the next batch on; False when ignored or refused."""
        if state.model != self.model:
            return False
        current = self.pipeline.routing.state
        if current is not None and state == current:
            metrics.CONTROL_COMMANDS.labels(self.model, "ignored").inc()
            return False
        try:
            # Loading ONNX sessions takes a moment: off the loop, so scoring goes on meanwhile.
            routing = await asyncio.to_thread(build_routing, self.registry, state, self._loaded())
        except ModelError as exc:
            metrics.CONTROL_COMMANDS.labels(self.model, "refused").inc()
            log.error(
                "rollout #%d of %s refused, still serving %s: %s",
                state.seq,
                self.model,
                self.pipeline.routing.describe(),
                exc,
            )
            self.refused.append((state, str(exc)))
            await self._signal("rollout_refused", state, error=str(exc))
            return False
        old = self.pipeline.swap(routing)
        self._metrics(old, routing)
        delay = None
        if state.issued_at is not None:
            delay = max(0.0, (datetime.now(UTC) - state.issued_at).total_seconds())
            metrics.CONTROL_APPLY_SECONDS.observe(delay)
        metrics.CONTROL_COMMANDS.labels(self.model, "applied").inc()
        self.applied.append(state)
        log.info(
            "rollout #%d of %s applied (%s%s): %s",
            state.seq,
            self.model,
            state.action,
            f", {delay:.2f}s after it was issued" if delay is not None else "",
            routing.describe(),
        )
        await self._signal("rollout_applied", state, routing=routing.describe())
        return True

    def _metrics(self, old: RoutingTable, new: RoutingTable) -> None:
        for table, value in ((old, 0), (new, 1)):
            for variant, model in (
                ("champion", table.champion),
                ("canary", table.canary),
                ("shadow", table.shadow),
            ):
                if model is not None:
                    metrics.MODEL_LOADED.labels(
                        model.manifest.name, model.manifest.version, variant
                    ).set(value)
        metrics.ROLLOUT_SEQ.labels(self.model).set(new.state.seq if new.state else 0)
        metrics.CANARY_PERCENT.labels(self.model).set(new.canary_percent if new.canary else 0)

    async def _signal(self, event: str, state: RolloutState, **details: Any) -> None:
        if self._producer is None:
            return
        record = {
            "kind": "lifecycle",
            "event": event,
            "model": state.model,
            "seq": state.seq,
            "action": state.action,
            "worker": worker_id(),
            "issued_at": state.issued_at,
            "emitted_at": datetime.now(UTC),
            "details": details,
        }
        try:
            await self._producer.send_and_wait(
                self.settings.topic("signals"), key=LIFECYCLE_KEY, value=encode(record)
            )
        except Exception as exc:  # the acknowledgement is informative; serving goes on
            log.warning("could not publish %s signal: %r", event, exc)

    # --- Kafka ---
    async def start(self) -> None:
        """Read ``control`` to its end and apply the latest state: a restart recovers it."""
        self._producer = producer(self.settings)
        await self._producer.start()
        self._consumer, tps = await follow(
            self.settings, self.settings.topic("control"), from_end=False
        )
        latest = await _read_to_end(self._consumer, tps)
        if self.model in latest:
            await self.apply(latest[self.model])
        else:
            log.info("no rollout state for %s on control yet", self.model)

    async def follow(self) -> None:
        """Apply every new state until cancelled."""
        assert self._consumer is not None, "start() first"
        while True:
            batches = await self._consumer.getmany(
                timeout_ms=int(self.settings.control_poll_s * 1000)
            )
            states = [
                s for records in batches.values() for r in records if (s := parse_state(r.value))
            ]
            latest = {s.model: s for s in states}  # several at once: only the last counts
            if self.model in latest:
                await self.apply(latest[self.model])

    async def stop(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        self._consumer = self._producer = None


async def wait_for_acks(
    settings: Settings, model: str, seq: int, workers: int | None, timeout_s: float
) -> list[dict[str, Any]]:
    """Lifecycle signals of workers that applied (or refused) rollout ``seq`` of ``model``.

    Returns when ``workers`` answered, or after ``timeout_s``.
    """
    consumer = reader(settings, settings.topic("signals"))
    await consumer.start()
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (workers is None or len(seen) < workers):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if r.key != LIFECYCLE_KEY or r.value is None:
                        continue
                    value = decode(r.value)
                    if value.get("model") == model and value.get("seq") == seq:
                        seen[value["worker"]] = value
    finally:
        await consumer.stop()
    return list(seen.values())
