"""The pipeline feeds the scoring monitor: drift signals through ``drain_signals``, per
variant, and the served-feature log as outbound records acknowledged with the batch.

Fakes for the model and the online store (unit tier), as in ``test_pipeline``.
"""

from __future__ import annotations

from pathlib import Path

import faust

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


def test_worker_app_runs_scoring_feedback_and_lag_monitor() -> None:
    app = build_app(settings(served_features_log=True), pipeline(served_features=True))
    assert isinstance(app, faust.App)
    assert {"score", "feedback-forward", "feedback-join"} <= {
        agent.split(".")[-1] for agent in app.agents
    }
    assert "feedback-join" in app.tables
