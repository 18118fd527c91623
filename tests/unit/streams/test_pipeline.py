"""The pipeline stages without Faust or Kafka: one outcome per record, in order.

The model and the online store are fakes here (unit tier); the integration tier runs
the same pipeline on Kafka, Redis, Feast and ONNX Runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.store import FeatureStoreUnavailable
from models.manifest import Decision, Lineage, ModelInput, ModelManifest
from streams.codec import decode, encode
from streams.errors import DecodeError, OversizedEvent
from streams.pipeline import Inbound, PipelineConfig, ScoringPipeline, dead_letter

MANIFEST = ModelManifest(
    name="fraud",
    version="7",
    sha256="0" * 64,
    created_at=datetime(2026, 11, 1, tzinfo=UTC),
    task="binary_classification",
    inputs=[
        ModelInput(name="amount", source="event", ref="amount", dtype="float32", default=0.0),
        ModelInput(name="channel", source="event", ref="channel", dtype="string", default="web"),
        ModelInput(
            name="avg",
            source="feature",
            ref="user_stats:avg_amount_30d",
            dtype="float32",
            default=50.0,
        ),
    ],
    entity_keys={"user_id": "user_id"},
    outputs={"score": "probabilities"},
    decisions=[Decision(name="review", min_score=0.5), Decision(name="decline", min_score=0.9)],
    lineage=Lineage(
        feature_refs=["user_stats:avg_amount_30d"],
        start=datetime(2026, 9, 1, tzinfo=UTC),
        end=datetime(2026, 11, 1, tzinfo=UTC),
        rows=1,
        data_sha256="0" * 64,
    ),
)


class RatioScorer:
    """score = amount / (amount + avg): big amounts for the user score high."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[int] = []

    def score_batch(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.fail:
            raise RuntimeError("onnx exploded")
        self.calls.append(len(columns["amount"]))
        amount, avg = columns["amount"][:, 0], columns["avg"][:, 0]
        return amount / (amount + avg)


@dataclass
class FakeModel:
    manifest: ModelManifest
    path: Path
    scorer: RatioScorer


class FakeFeatures:
    """Online values per user; None for unknown users, like Feast."""

    def __init__(self, averages: dict[str, float], fail_times: int = 0) -> None:
        self.averages = averages
        self.fail_times = fail_times
        self.calls = 0

    def check(self, refs: Sequence[str]) -> None:
        pass

    async def fetch(
        self, refs: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        self.calls += 1
        if self.fail_times:
            self.fail_times -= 1
            raise FeatureStoreUnavailable("redis://test", ConnectionError("refused"))
        return {"user_stats:avg_amount_30d": [self.averages.get(r["user_id"]) for r in rows]}


def event(event_id: str, user: str = "u1", amount: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_time": "2026-11-21T10:00:00Z",
        "user_id": user,
        "merchant_id": "m1",
        "amount": amount,
        "currency": "EUR",
        "channel": "web",
        "country": "DE",
    } | extra


def inbound(values: list[bytes | None]) -> list[Inbound]:
    return [
        Inbound(b"k", v, "events", 2, 100 + i, timestamp_ms=1795255200000.0)
        for i, v in enumerate(values)
    ]


def make(
    scorer: RatioScorer | None = None, features: FakeFeatures | None = None, **config: Any
) -> ScoringPipeline:
    model = FakeModel(MANIFEST, Path("model.onnx"), scorer or RatioScorer())
    return ScoringPipeline(model, features or FakeFeatures({"u1": 90.0}), PipelineConfig(**config))  # type: ignore[arg-type]


async def test_mixed_batch_keeps_order_and_routes_each_record() -> None:
    scorer = RatioScorer()
    pipeline = make(scorer, enrich_backoff_s=0)
    batch = inbound(
        [
            encode(event("a", amount=10)),
            b"{oops",
            encode(event("b", amount=910)),
            encode(event("c", amount=-1)),
            encode(event("d", user="ghost", amount=50)),
        ]
    )
    out = await pipeline.process(batch)

    assert [o.destination for o in out] == [
        "predictions",
        "deadletter",
        "predictions",
        "deadletter",
        "predictions",
    ]
    assert scorer.calls == [3], "one model call per batch"
    a, b, d = (decode(o.value) for o in out if o.destination == "predictions")
    assert a["score"] == pytest.approx(0.1) and a["decision"] == "approve"
    assert b["score"] == pytest.approx(0.91) and b["decision"] == "decline"
    assert a["features_missing"] == [] and a["fallback"] is None
    assert d["features_missing"] == ["user_stats:avg_amount_30d"]
    assert d["score"] == pytest.approx(0.5) and d["decision"] == "review"  # default avg of 50
    assert a["entity"] == {"user_id": "u1"} and a["model"] == "fraud" and a["version"] == "7"
    assert a["event_time"] == "2026-11-21T10:00:00.000Z" and a["variant"] == "champion"
    assert a["latency_ms"] > 0

    dead = dict(out[3].headers)
    assert out[3].value == batch[3].value and out[3].key == b"k"
    assert dead == {
        "error.class": b"ContractViolation",
        "error.message": b"amount: Input should be greater than or equal to 0 (got -1)",
        "error.stage": b"validate",
        "source.topic": b"events",
        "source.partition": b"2",
        "source.offset": b"103",
    }
    assert dict(out[1].headers)["error.stage"] == b"decode"


async def test_duplicate_event_ids_are_dead_lettered_within_and_across_batches() -> None:
    pipeline = make()
    first = await pipeline.process(inbound([encode(event("a")), encode(event("a"))]))
    later = Inbound(b"k", encode(event("a")), "events", 2, 250, timestamp_ms=1795255200000.0)
    second = await pipeline.process([later])
    assert [o.destination for o in first + second] == ["predictions", "deadletter", "deadletter"]
    assert dict(second[0].headers)["error.class"] == b"DuplicateEvent"


async def test_a_redelivered_offset_gets_the_same_kind_of_outcome_again() -> None:
    """A re-seek (rebalance, a batch not acked before a stop) hands the worker offsets it
    already took. Each offset must end as the same kind of record as the first time: the
    first occurrence of an id is scored again (at-least-once; consumers dedupe on
    ``event_id``), the second occurrence stays a ``DuplicateEvent``."""
    pipeline = make()
    batch = inbound([encode(event("a")), encode(event("a")), encode(event("b"))])
    first = await pipeline.process(batch)
    again = await pipeline.process(batch)  # the same offsets, delivered again
    kinds = [o.destination for o in first]
    assert kinds == ["predictions", "deadletter", "predictions"]
    assert [o.destination for o in again] == kinds
    assert dict(again[1].headers)["error.class"] == b"DuplicateEvent"
    assert dict(again[1].headers)["source.offset"] == b"101"


async def test_online_store_blip_is_retried() -> None:
    features = FakeFeatures({"u1": 90.0}, fail_times=2)
    out = await make(features=features, enrich_retries=3, enrich_backoff_s=0).process(
        inbound([encode(event("a"))])
    )
    assert out[0].destination == "predictions" and features.calls == 3


async def test_online_store_down_dead_letters_at_enrich_and_allows_replay() -> None:
    features = FakeFeatures({"u1": 90.0}, fail_times=10)
    pipeline = make(features=features, enrich_retries=1, enrich_backoff_s=0)
    out = await pipeline.process(inbound([encode(event("a")), b"[]"]))
    assert [dict(o.headers)["error.stage"] for o in out] == [b"enrich", b"decode"]
    features.fail_times = 0
    again = await pipeline.process(inbound([encode(event("a"))]))
    assert again[0].destination == "predictions", (
        "a dead-lettered id is not a duplicate when replayed"
    )


async def test_model_failure_dead_letters_the_batch_at_score() -> None:
    out = await make(RatioScorer(fail=True)).process(
        inbound([encode(event("a")), encode(event("b"))])
    )
    assert [dict(o.headers)["error.stage"] for o in out] == [b"score", b"score"]
    assert b"onnx exploded" in dict(out[0].headers)["error.message"]


async def test_oversized_event_is_dead_lettered() -> None:
    out = await make(max_event_bytes=100).process(inbound([encode(event("a", note="x" * 200))]))
    assert dict(out[0].headers)["error.class"] == b"OversizedEvent"


def test_a_dead_letter_keeps_the_original_bytes_up_to_the_limit() -> None:
    record = inbound([b"x" * 1024])[0]
    out = dead_letter(record, DecodeError("malformed JSON"), max_value_bytes=1024)
    assert out.value == record.value
    assert "original.truncated" not in dict(out.headers)


def test_a_dead_letter_over_the_limit_is_cut_and_says_so() -> None:
    original = encode(event("big", padding="y" * 1_000_000))
    record = inbound([original])[0]
    out = dead_letter(record, OversizedEvent(len(original), 65536), max_value_bytes=262_144)
    headers = dict(out.headers)
    assert out.value == original[:262_144]
    assert headers["original.truncated"] == b"true"
    assert headers["original.size"] == str(len(original)).encode()
    assert headers["original.sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert headers["error.class"] == b"OversizedEvent" and out.key == b"k"
    # It fits the producer's max request size (Faust's default) with key and headers.
    size = len(out.value) + len(out.key or b"") + sum(len(k) + len(v) for k, v in out.headers)
    assert size < 1_000_000


async def test_the_pipeline_cuts_oversized_dead_letters_at_its_configured_limit() -> None:
    pipeline = make(max_event_bytes=65536, deadletter_max_value_bytes=100_000)
    out = await pipeline.process(inbound([b"z" * 500_000, encode(event("a"))]))
    assert [o.destination for o in out] == ["deadletter", "predictions"]
    assert len(out[0].value) == 100_000
    assert dict(out[0].headers)["original.size"] == b"500000"
