"""The freshness rule inside the pipeline: a stale or future value is missing, counted, listed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from streams import metrics
from streams.codec import decode, encode
from streams.pipeline import PipelineConfig, ScoringPipeline
from tests.unit.streams.test_pipeline import MANIFEST, FakeModel, RatioScorer, event, inbound

EVENT_TIME = datetime.fromisoformat("2026-11-21T10:00:00+00:00").timestamp()


class StampedFeatures:
    """Online values with their row timestamps, like FeastOnlineSource."""

    timestamp_resolution_s = 0.0

    def __init__(self, stamps: dict[str, float]) -> None:
        self.stamps = stamps
        self._last: dict[str, list[float | None]] = {}

    def check(self, refs: Sequence[str]) -> None:
        pass

    async def fetch(
        self, refs: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        self._last = {"user_stats": [self.stamps.get(r["user_id"]) for r in rows]}
        return {"user_stats:avg_amount_30d": [90.0 for _ in rows]}

    def last_event_timestamps(self) -> dict[str, list[float | None]]:
        return self._last


def stale() -> float:
    return sum(
        metrics.FEATURES_STALE.labels("user_stats", reason)._value.get()
        for reason in ("too_old", "future")
    )


async def test_old_and_future_values_are_missing_and_listed() -> None:
    source = StampedFeatures(
        {"fresh": EVENT_TIME - 30, "old": EVENT_TIME - 7200, "ahead": EVENT_TIME + 0.5}
    )
    model = FakeModel(MANIFEST, Path("model.onnx"), RatioScorer())
    pipeline = ScoringPipeline(
        model,  # type: ignore[arg-type]
        source,
        PipelineConfig(feature_max_age={"user_stats": 3600.0}),
    )
    before = stale()
    out = await pipeline.process(
        inbound([encode(event(f"e-{u}", user=u)) for u in ("fresh", "old", "ahead")])
    )
    missing = [decode(o.value)["features_missing"] for o in out]
    assert missing == [[], ["user_stats:avg_amount_30d"], ["user_stats:avg_amount_30d"]]
    assert stale() - before == 2
    # Without a bound for the view, the same values are served.
    unbounded = ScoringPipeline(model, source, PipelineConfig())  # type: ignore[arg-type]
    out = await unbounded.process(inbound([encode(event("e-old2", user="old"))]))
    assert decode(out[0].value)["features_missing"] == []
