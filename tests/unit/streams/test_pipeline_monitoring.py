"""The pipeline feeds the scoring monitor: drift signals through ``drain_signals``, per
variant, the served-feature log as outbound records acknowledged with the batch, and
the age of served feature values.

Fakes for the model and the online store (unit tier), as in ``test_pipeline``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from prometheus_client import REGISTRY

from models.routing import RoutingTable
from streams.app import build_app
from streams.codec import decode, encode
from streams.monitoring.monitor import ScoringMonitor
from streams.pipeline import PipelineConfig, ScoringPipeline
from streams.settings import Settings
from tests.unit.streams.test_pipeline import (
    MANIFEST,
    FakeFeatures,
    FakeModel,
    RatioScorer,
    event,
    inbound,
)

# amount in [0, 10), [10, 20), [20, inf) equally likely; avg feature always 90.
PROFILED = MANIFEST.model_copy(
    update={
        "profile": {
            "inputs": {
                "amount": {
                    "kind": "numeric",
                    "edges": [0.0, 10.0, 20.0, 30.0],
                    "proportions": [1 / 3, 1 / 3, 1 / 3],
                },
                "channel": {"kind": "categorical", "frequencies": {"web": 1.0}},
            }
        }
    }
)
WINDOW = 30
EVENT_TIME = datetime(2026, 11, 21, 10, tzinfo=UTC).timestamp()  # event()'s event_time


def settings(**overrides: object) -> Settings:
    return Settings(drift_window_events=WINDOW, **overrides)  # type: ignore[arg-type]


def pipeline(routing: RoutingTable | None = None, served_features: bool = False) -> ScoringPipeline:
    model = FakeModel(PROFILED, Path("model.onnx"), RatioScorer())
    return ScoringPipeline(
        routing or RoutingTable.single(model),  # type: ignore[arg-type]
        FakeFeatures({"u1": 90.0}),
        PipelineConfig(enrich_backoff_s=0),
        monitor=ScoringMonitor(settings()),
        served_features=served_features,
    )


def batch(prefix: str, amounts: list[float]) -> list[bytes | None]:
    return [encode(event(f"{prefix}{i}", amount=a)) for i, a in enumerate(amounts)]


async def test_drift_signal_for_the_shifted_input_only_within_one_window() -> None:
    p = pipeline()
    stable = [5.0, 15.0, 25.0] * (WINDOW // 3)
    await p.process(inbound(batch("a", stable)))
    assert p.drain_signals() == [], "a window like the reference is not drift"
    shifted = [a * 3 for a in stable]  # everything lands in the open-ended top bin
    await p.process(inbound(batch("b", shifted[: WINDOW // 2])))
    assert p.drain_signals() == [], "no signal before the window closes"
    await p.process(inbound(batch("c", shifted[WINDOW // 2 :])))
    signals = p.drain_signals()
    assert {(s.kind, s.feature, s.statistic) for s in signals} == {
        ("drift", "amount", "psi"),
        ("drift", "amount", "ks"),
    }
    assert all(s.variant == "champion" and s.window and s.window.index == 1 for s in signals)
    assert p.drain_signals() == [], "drained once"


async def test_shadow_is_monitored_as_its_own_variant() -> None:
    champion = FakeModel(PROFILED, Path("model.onnx"), RatioScorer())
    shadow = FakeModel(PROFILED.model_copy(update={"version": "8"}), Path("m8.onnx"), RatioScorer())
    routing = RoutingTable(champion=champion, shadow=shadow)  # type: ignore[arg-type]
    p = pipeline(routing)
    await p.process(inbound(batch("a", [100.0] * WINDOW)))
    flagged = {(s.version, s.variant) for s in p.drain_signals() if s.feature == "amount"}
    assert flagged == {("7", "champion"), ("8", "shadow")}


async def test_served_feature_log_follows_the_predictions() -> None:
    p = pipeline(served_features=True)
    out = await p.process(inbound([*batch("a", [5.0, 50.0]), b"not json"]))
    destinations = [o.destination for o in out]
    assert destinations == ["predictions", "predictions", "deadletter", *["features-served"] * 2]
    served = [decode(o.value) for o in out if o.destination == "features-served"]
    assert [r["event_id"] for r in served] == ["a0", "a1"]
    assert served[1]["features"] == {
        "amount": 50.0,
        "channel": "web",
        "user_stats:avg_amount_30d": 90.0,
    }
    assert served[0]["variant"] == "champion" and served[0]["scored_at"].endswith("Z")
    assert [o.destination for o in await pipeline().process(inbound(batch("b", [5.0])))] == [
        "predictions"
    ], "off by default"


class StampedFeatures(FakeFeatures):
    """Keeps its last lookup's event timestamps per view, like ``FeastOnlineSource``."""

    def __init__(self, averages: dict[str, float], stamps: dict[str, float]) -> None:
        super().__init__(averages)
        self.stamps = stamps
        self._last: dict[str, list[float | None]] = {}

    async def fetch(
        self, refs: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        self._last = {"user_stats": [self.stamps.get(r["user_id"]) for r in rows]}
        return await super().fetch(refs, rows)

    def last_event_timestamps(self) -> dict[str, list[float | None]]:
        return self._last


def age_samples(view: str) -> tuple[float, float, float]:
    """(count, sum, count in the le=300 bucket) of the feature-age histogram for ``view``."""
    name, labels = "streamscore_feature_age_seconds", {"view": view}
    return (
        REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0,
        REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0,
        REGISTRY.get_sample_value(f"{name}_bucket", labels | {"le": "300.0"}) or 0.0,
    )


async def test_age_of_served_features_is_observed_per_view() -> None:
    model = FakeModel(PROFILED, Path("model.onnx"), RatioScorer())
    features = StampedFeatures({"u1": 90.0, "u2": 40.0}, {"u1": EVENT_TIME - 120})
    p = ScoringPipeline(
        RoutingTable.single(model),  # type: ignore[arg-type]
        features,
        PipelineConfig(enrich_backoff_s=0),
        monitor=ScoringMonitor(settings()),
    )
    count, total, recent = age_samples("user_stats")
    events = [event("age0"), event("age1", user="u2"), event("age2"), event("age3", user="u9")]
    out = await p.process(inbound([encode(e) for e in events]))
    assert [o.destination for o in out] == ["predictions"] * 4
    # u1 twice (120 s old at event time); u2 (value, no timestamp) and u9 (unknown) not at all
    assert age_samples("user_stats") == (count + 2, total + 240.0, recent + 2)

    count, total, _ = age_samples("user_stats")
    await pipeline().process(inbound(batch("plain", [5.0])))
    assert age_samples("user_stats")[:2] == (count, total), "sources without timestamps: none"


def test_scoring_app_only_scores_and_feedback_app_joins() -> None:
    """Issue 8: the scoring worker carries no join, no changelog table and no second
    read of ``events``; the label join lives in the feedback worker's app."""
    from streams.monitoring.runner import build_feedback_app

    app = build_app(settings(served_features_log=True), pipeline(served_features=True))
    assert isinstance(app, faust.App)
    assert {agent.split(".")[-1] for agent in app.agents} == {"score"}
    assert len(app.tables) == 0
    feedback = build_feedback_app(settings())
    assert {agent.split(".")[-1] for agent in feedback.agents} == {
        "feedback-forward",
        "feedback-join",
    }
    assert "feedback-join" in feedback.tables
    read = {t for agent in feedback.agents.values() for t in agent.channel.topics}
    assert settings().topic("events") not in read
