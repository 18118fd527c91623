"""Canary, shadow, fallback and parity in the pipeline, with real ONNX Runtime models.

No Kafka: the control follower's ``apply`` is exercised directly (the integration tier
runs it against a broker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from models.manifest import FallbackPolicy, FallbackRule
from models.registry import ModelRegistry
from models.rollout import RolloutState, apply_command
from models.routing import build_routing
from streams.codec import decode, encode
from streams.control import ControlFollower
from streams.pipeline import Inbound, PipelineConfig, ScoringPipeline
from streams.settings import Settings
from tests.unit.models.conftest import tiny_model  # noqa: F401  (fixture)

AVG = {f"u{i:05d}": 20.0 + (i % 50) for i in range(2000)}
COUNTRY = {u: ("US" if i % 3 else "GB") for i, u in enumerate(AVG)}


class TinyFeatures:
    def __init__(self) -> None:
        self.down = False

    def check(self, refs: Sequence[str]) -> None:
        pass

    async def fetch(
        self, refs: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        if self.down:
            from features.store import FeatureStoreUnavailable

            raise FeatureStoreUnavailable("redis://test", ConnectionError("refused"))
        table = {
            "user_stats:avg_amount_30d": AVG,
            "user_stats:home_country": COUNTRY,
        }
        return {ref: [table[ref].get(r["user_id"]) for r in rows] for ref in refs}


def events(n: int, users: int = 2000, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"e{start + i}",
            "event_time": "2026-11-21T10:00:00Z",
            "user_id": f"u{(i * 7) % users:05d}",
            "merchant_id": "m1",
            "amount": float(5 + (i * 13) % 400),
            "currency": "EUR",
            "channel": ("pos", "app", "web")[i % 3],
            "country": "DE",
        }
        for i in range(n)
    ]


def inbound(evts: list[dict[str, Any]]) -> list[Inbound]:
    return [
        Inbound(e["user_id"].encode(), encode(e), "events", 0, i, timestamp_ms=None)
        for i, e in enumerate(evts)
    ]


@pytest.fixture
def registry(tmp_path: Path, tiny_model: Any) -> ModelRegistry:  # noqa: F811
    registry = ModelRegistry(tmp_path / "registry")
    for _ in range(3):
        registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    return registry


async def run(pipeline: ScoringPipeline, evts: list[dict[str, Any]], batch: int = 256) -> list[Any]:
    out = []
    for i in range(0, len(evts), batch):
        out.extend(await pipeline.process(inbound(evts[i : i + batch])))
    return out


async def test_canary_share_within_two_points_and_sticky_per_entity(
    registry: ModelRegistry,
) -> None:
    state = apply_command(RolloutState(model="fraud", champion="1"), "canary", "2", percent=10)
    pipeline = ScoringPipeline(build_routing(registry, state), TinyFeatures(), PipelineConfig())
    out = await run(pipeline, events(10_000, users=10_000))
    records = [decode(o.value) for o in out]
    assert len(records) == 10_000 and {o.destination for o in out} == {"predictions"}
    canary = [r for r in records if r["variant"] == "canary"]
    assert abs(len(canary) / len(records) * 100 - 10) <= 2, len(canary)
    assert {r["version"] for r in canary} == {"2"}
    # sticky: a second pass over the same entities (new event ids) routes each the same way
    again = [decode(o.value) for o in await run(pipeline, events(10_000, 10_000, start=10_000))]
    first = {r["entity"]["user_id"]: r["variant"] for r in records}
    assert all(first[r["entity"]["user_id"]] == r["variant"] for r in again)


async def test_shadow_scores_every_event_and_never_changes_the_main_record(
    registry: ModelRegistry,
) -> None:
    plain = ScoringPipeline(
        build_routing(registry, RolloutState(model="fraud", champion="1")), TinyFeatures()
    )
    state = apply_command(RolloutState(model="fraud", champion="1"), "shadow", "3")
    shadowed = ScoringPipeline(build_routing(registry, state), TinyFeatures())
    evts = events(600)
    baseline = [decode(o.value) for o in await run(plain, evts)]
    out = await run(shadowed, evts)
    main = [decode(o.value) for o in out if o.destination == "predictions"]
    shadow = [decode(o.value) for o in out if o.destination == "predictions-shadow"]
    assert [r["event_id"] for r in shadow] == [e["event_id"] for e in evts]
    assert {(r["variant"], r["version"]) for r in shadow} == {("shadow", "3")}
    strip = ("scored_at", "latency_ms")
    assert [{k: v for k, v in r.items() if k not in strip} for r in main] == [
        {k: v for k, v in r.items() if k not in strip} for r in baseline
    ]


async def test_swap_applies_between_batches(registry: ModelRegistry) -> None:
    pipeline = ScoringPipeline(
        build_routing(registry, RolloutState(model="fraud", champion="1")), TinyFeatures()
    )
    first = await pipeline.process(inbound(events(10)))
    promoted = apply_command(RolloutState(model="fraud", champion="1"), "promote", "2")
    pipeline.swap(build_routing(registry, promoted))
    second = await pipeline.process(inbound(events(10, start=10)))
    assert {decode(o.value)["version"] for o in first} == {"1"}
    assert {decode(o.value)["version"] for o in second} == {"2"}


async def test_stream_scores_equal_offline_onnx_runtime(
    registry: ModelRegistry,
    tiny_model: Any,  # noqa: F811
) -> None:
    """Parity: the stream's score for an event equals ORT run offline on its feature vector."""
    pipeline = ScoringPipeline(
        build_routing(registry, RolloutState(model="fraud", champion="1")), TinyFeatures()
    )
    evts = events(500)
    records = [decode(o.value) for o in await run(pipeline, evts, batch=37)]
    session = ort.InferenceSession(tiny_model.onnx_bytes, providers=["CPUExecutionProvider"])
    feeds = {
        "amount": np.array([[e["amount"]] for e in evts], dtype=np.float32),
        "channel": np.array([[e["channel"]] for e in evts], dtype=object),
        "user_stats__avg_amount_30d": np.array([[AVG[e["user_id"]]] for e in evts], np.float32),
        "user_stats__home_country": np.array([[COUNTRY[e["user_id"]]] for e in evts], object),
    }
    (probabilities,) = session.run(["probabilities"], feeds)
    stream = np.array([r["score"] for r in records])
    assert [r["event_id"] for r in records] == [e["event_id"] for e in evts]
    np.testing.assert_allclose(stream, probabilities[:, 1], rtol=0, atol=1e-6)
    assert np.std(stream) > 0.01, "a constant score would make parity meaningless"


def _with_fallback(registry: ModelRegistry, tiny_model: Any) -> str:  # noqa: F811
    policy = FallbackPolicy(
        rules=[FallbackRule(field="amount", min=300, score=0.6, decision="review")],
        default_score=0.0,
        default_decision="approve",
        max_missing_fraction=0.9,
    )
    return registry.register(
        "fraud", tiny_model.onnx_bytes, **tiny_model.fields, fallback=policy
    ).version


async def test_fallback_policy_answers_when_store_is_down_or_model_fails(
    registry: ModelRegistry,
    tiny_model: Any,  # noqa: F811
) -> None:
    version = _with_fallback(registry, tiny_model)
    features = TinyFeatures()
    routing = build_routing(registry, RolloutState(model="fraud", champion=version))
    pipeline = ScoringPipeline(
        routing, features, PipelineConfig(enrich_retries=0, enrich_backoff_s=0)
    )
    features.down = True
    evts = [e | {"amount": a} for e, a in zip(events(2), (500.0, 10.0), strict=True)]
    out = [decode(o.value) for o in await pipeline.process(inbound(evts))]
    assert [(r["fallback"], r["decision"], r["score"]) for r in out] == [
        ("features_unavailable", "review", 0.6),
        ("features_unavailable", "approve", 0.0),
    ]
    features.down = False
    # unknown user: both refs missing (100% > 90%) -> features_missing fallback
    ghost = events(1, start=50)[0] | {"user_id": "ghost", "amount": 10.0}
    (record,) = [decode(o.value) for o in await pipeline.process(inbound([ghost]))]
    assert record["fallback"] == "features_missing" and len(record["features_missing"]) == 2

    class Broken:
        def score_batch(self, columns: Any) -> Any:
            raise RuntimeError("onnx exploded")

    class BrokenModel:
        manifest = routing.champion.manifest
        scorer = Broken()

    pipeline.swap(type(routing)(champion=BrokenModel()))
    out = [decode(o.value) for o in await pipeline.process(inbound(events(3, start=100)))]
    assert {r["fallback"] for r in out} == {"model_error"}


async def test_without_policy_store_down_still_dead_letters(registry: ModelRegistry) -> None:
    features = TinyFeatures()
    features.down = True
    pipeline = ScoringPipeline(
        build_routing(registry, RolloutState(model="fraud", champion="1")),
        features,
        PipelineConfig(enrich_retries=0),
    )
    out = await pipeline.process(inbound(events(2)))
    assert [o.destination for o in out] == ["deadletter", "deadletter"]


async def test_control_refuses_a_tampered_model_and_keeps_serving(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    base = RolloutState(model="fraud", champion="1")
    pipeline = ScoringPipeline(build_routing(registry, base), TinyFeatures())
    follower = ControlFollower(
        Settings(home=tmp_path, registry_root=registry.root, metrics_port=0), pipeline, registry
    )
    path = registry.model_path("fraud", "3")
    path.write_bytes(path.read_bytes() + b"\x00")
    assert not await follower.apply(apply_command(base, "promote", "3"))
    assert "sha256" in follower.refused[0][1]
    assert pipeline.routing.champion.manifest.version == "1"
    assert await follower.apply(apply_command(base, "canary", "2", percent=50))
    assert pipeline.routing.canary is not None
    out = [decode(o.value) for o in await pipeline.process(inbound(events(200)))]
    assert {r["variant"] for r in out} == {"champion", "canary"}
