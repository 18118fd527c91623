"""Drift against the manifest's reference profile: one shifted input, one drift signal."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.manifest import Lineage, ModelInput, ModelManifest
from models.training import reference_profile
from streams.monitoring.drift import DriftMonitor, ks_distance, psi

INPUTS = [
    ModelInput(name="amount", source="event", ref="amount", dtype="float32", default=0.0),
    ModelInput(name="channel", source="event", ref="channel", dtype="string", default="web"),
    ModelInput(
        name="avg", source="feature", ref="user_stats:avg_amount_30d", dtype="float32", default=1
    ),
]


def sample(n: int, seed: int, amount_scale: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 0.8, n) * amount_scale,
            "channel": rng.choice(["pos", "app", "web"], n, p=[0.5, 0.3, 0.2]),
            "avg": rng.lognormal(3.5, 0.3, n),
        }
    )
    return frame, rng.beta(1, 20, n)


def manifest() -> ModelManifest:
    frame, scores = sample(20_000, seed=1)
    return ModelManifest(
        name="fraud",
        version="2",
        sha256="0" * 64,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        task="binary_classification",
        inputs=INPUTS,
        entity_keys={"user_id": "user_id"},
        outputs={"score": "probabilities"},
        lineage=Lineage(
            feature_refs=["user_stats:avg_amount_30d"],
            start=datetime(2026, 9, 1, tzinfo=UTC),
            end=datetime(2026, 11, 1, tzinfo=UTC),
            rows=len(frame),
            data_sha256="0" * 64,
        ),
        profile=reference_profile(frame, INPUTS, scores, bins=10),
    )


def feed(monitor: DriftMonitor, m: ModelManifest, frame: pd.DataFrame, scores: np.ndarray):
    """Feed in uneven batches, as micro-batches arrive."""
    signals, start, rng = [], 0, np.random.default_rng(0)
    while start < len(frame):
        size = int(rng.integers(1, 300))
        part = frame.iloc[start : start + size]
        columns = {c: part[c].to_numpy().reshape(-1, 1) for c in part}
        signals += monitor.observe(m, "champion", columns, scores[start : start + size])
        start += size
    return signals


def test_psi_and_ks_of_identical_distributions_are_zero() -> None:
    p = np.array([0.1, 0.2, 0.7])
    assert psi(p, p) == pytest.approx(0)
    assert ks_distance(p, p * 10) == pytest.approx(0)
    assert psi(p, np.array([0.7, 0.2, 0.1])) > 1
    assert ks_distance(p, np.array([0.7, 0.2, 0.1])) == pytest.approx(0.6)


def test_same_distribution_raises_no_signal() -> None:
    m = manifest()
    monitor = DriftMonitor(
        window_events=1000, psi_threshold=0.2, ks_threshold=0.15, retrain_after=3
    )
    frame, scores = sample(5000, seed=2)
    assert feed(monitor, m, frame, scores) == []


def test_a_shifted_input_drifts_within_one_window_and_no_other() -> None:
    m = manifest()
    monitor = DriftMonitor(
        window_events=1000, psi_threshold=0.2, ks_threshold=0.15, retrain_after=3
    )
    frame, scores = sample(1000, seed=3, amount_scale=2.5)
    signals = feed(monitor, m, frame, scores)
    drifted = {(s.feature, s.statistic) for s in signals if s.kind == "drift"}
    assert drifted == {("amount", "psi"), ("amount", "ks")}
    first = signals[0]
    assert first.window is not None and first.window.index == 0 and first.window.size == 1000
    assert first.model == "fraud" and first.version == "2" and first.value > first.threshold


def test_retrain_signal_after_consecutive_drifting_windows() -> None:
    m = manifest()
    monitor = DriftMonitor(window_events=500, psi_threshold=0.2, ks_threshold=0.15, retrain_after=3)
    frame, scores = sample(1500, seed=4, amount_scale=2.5)
    signals = feed(monitor, m, frame, scores)
    retrain = [s for s in signals if s.kind == "retrain"]
    assert len(retrain) == 1
    assert retrain[0].window is not None and retrain[0].window.index == 2
    assert retrain[0].details["features"] == ["amount"]


def test_unseen_categories_count_as_other() -> None:
    m = manifest()
    monitor = DriftMonitor(
        window_events=1000, psi_threshold=0.2, ks_threshold=0.15, retrain_after=3
    )
    frame, scores = sample(1000, seed=5)
    frame["channel"] = "atm"  # never seen in training
    signals = feed(monitor, m, frame, scores)
    assert {s.feature for s in signals} == {"channel"}
