"""Drift of each model input and of the score against the model's reference profile.

In: scored micro-batches (the model-ready input columns, as ``models.assembly`` builds
them, and the scores) for a model version and variant. Out: per closed tumbling window
of ``window_events`` rows, PSI for every input and the score and a KS distance for the
numeric ones, set on ``streamscore_drift``; a ``drift`` :class:`Signal` for each
statistic above its threshold, and a ``retrain`` signal once ``retrain_after`` windows
in a row drifted.

The reference is the manifest's ``profile`` (see ``models.training.reference_profile``):
quantile bin edges and proportions for numerics (outer bins open-ended), category
frequencies (plus ``__other__``) for strings. Live values are binned the same way, so
PSI compares like with like. The KS distance here is the largest gap between the two
cumulative distributions at the reference bin edges (the profile keeps bins, not the
training sample): a lower bound of the two-sample KS statistic, exact at those quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from models.manifest import ModelManifest
from streams import metrics
from streams.monitoring.signals import Signal, Window, retrain_if_due, utcnow

SCORE = "score"
OTHER = "__other__"
# Empty bins would make PSI infinite; this floor is the usual choice (about 1 in 10k).
_EPS = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of ``actual`` against ``expected`` (both proportions)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def ks_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest gap between the cumulative distributions of two binned proportions."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    return float(np.max(np.abs(np.cumsum(e / e.sum()) - np.cumsum(a / a.sum()))))


@dataclass(frozen=True)
class Reference:
    """One input's (or the score's) reference distribution, and how to bin live values."""

    kind: str  # "numeric" | "categorical"
    proportions: np.ndarray
    edges: np.ndarray | None = None  # inner edges, numeric only
    categories: dict[str, int] | None = None  # category -> bin, categorical only

    @classmethod
    def from_profile(cls, entry: Mapping[str, Any]) -> Reference:
        if entry["kind"] == "numeric":
            edges = np.asarray(entry["edges"], dtype=np.float64)
            return cls("numeric", np.asarray(entry["proportions"]), edges=edges[1:-1])
        frequencies = dict(entry["frequencies"])
        frequencies.setdefault(OTHER, 0.0)
        categories = {name: i for i, name in enumerate(frequencies)}
        return cls("categorical", np.asarray(list(frequencies.values())), categories=categories)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Live values binned like the reference."""
        size = len(self.proportions)
        if self.kind == "numeric":
            assert self.edges is not None
            floats = np.asarray(values, dtype=np.float64).ravel()
            floats = floats[np.isfinite(floats)]
            bins = np.searchsorted(self.edges, floats, side="right")
            return np.bincount(bins, minlength=size)[:size]
        assert self.categories is not None
        other = self.categories[OTHER]
        bins = np.fromiter(
            (self.categories.get(str(v), other) for v in np.asarray(values).ravel()),
            dtype=np.int64,
        )
        return np.bincount(bins, minlength=size)[:size]

    def statistics(self, counts: np.ndarray) -> dict[str, float]:
        if counts.sum() == 0:
            return {}
        stats = {"psi": psi(self.proportions, counts)}
        if self.kind == "numeric":
            stats["ks"] = ks_distance(self.proportions, counts)
        return stats


@dataclass
class _OpenWindow:
    references: dict[str, Reference]  # input ref (or "score") -> reference
    columns: dict[str, str]  # input ref -> the model input (column) it is read from
    index: int = 0
    rows: int = 0
    start: datetime | None = None
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    drifting_in_a_row: int = 0

    def reset(self) -> None:
        self.rows = 0
        self.start = None
        self.counts = {ref: np.zeros(len(r.proportions)) for ref, r in self.references.items()}


def references_of(manifest: ModelManifest) -> tuple[dict[str, Reference], dict[str, str]]:
    """(ref -> Reference, ref -> input column) for every profiled input, plus the score."""
    profile = manifest.profile or {}
    inputs = profile.get("inputs", {})
    references: dict[str, Reference] = {}
    columns: dict[str, str] = {}
    for spec in manifest.inputs:
        if spec.ref in inputs and spec.ref not in references:
            references[spec.ref] = Reference.from_profile(inputs[spec.ref])
            columns[spec.ref] = spec.name
    if "score" in profile:
        references[SCORE] = Reference.from_profile(profile["score"])
    return references, columns


class DriftMonitor:
    """Tumbling windows of ``window_events`` scored rows per model version and variant."""

    def __init__(
        self,
        window_events: int,
        psi_threshold: float,
        ks_threshold: float,
        retrain_after: int,
    ) -> None:
        self.window_events = window_events
        self.thresholds = {"psi": psi_threshold, "ks": ks_threshold}
        self.retrain_after = retrain_after
        self._windows: dict[tuple[str, str, str], _OpenWindow] = {}

    def observe(
        self,
        manifest: ModelManifest,
        variant: str,
        columns: Mapping[str, np.ndarray],
        scores: np.ndarray,
        now: datetime | None = None,
    ) -> list[Signal]:
        """Add a scored batch; return the signals of every window it closed."""
        key = (manifest.name, manifest.version, variant)
        window = self._windows.get(key)
        if window is None:
            references, input_columns = references_of(manifest)
            window = self._windows[key] = _OpenWindow(references, input_columns)
            window.reset()
        if not window.references:
            return []  # a model registered without a profile: nothing to compare with
        now = now or utcnow()
        scores = np.asarray(scores).ravel()
        signals: list[Signal] = []
        offset, n = 0, len(scores)
        while offset < n:
            take = min(self.window_events - window.rows, n - offset)
            rows = slice(offset, offset + take)
            for ref, reference in window.references.items():
                values = scores if ref == SCORE else np.asarray(columns[window.columns[ref]])
                window.counts[ref] += reference.counts(values.ravel()[rows])
            window.start = window.start or now
            window.rows += take
            offset += take
            if window.rows >= self.window_events:
                signals += self._close(key, window, now)
        return signals

    def _close(self, key: tuple[str, str, str], w: _OpenWindow, now: datetime) -> list[Signal]:
        model, version, variant = key
        span = Window(index=w.index, size=w.rows, start=w.start, end=now)
        signals: list[Signal] = []
        for ref, reference in w.references.items():
            for statistic, value in reference.statistics(w.counts[ref]).items():
                metrics.DRIFT.labels(model, version, variant, ref, statistic).set(value)
                threshold = self.thresholds[statistic]
                if value > threshold:
                    signals.append(
                        Signal(
                            "drift", model, version, variant, statistic, value, threshold, ref, span
                        )
                    )
        drifted = bool(signals)
        outcome = "drift" if drifted else "stable"
        metrics.DRIFT_WINDOWS.labels(model, version, variant, outcome).inc()
        w.drifting_in_a_row = w.drifting_in_a_row + 1 if drifted else 0
        features = sorted({s.feature for s in signals if s.feature})
        retrain = retrain_if_due(
            w.drifting_in_a_row,
            self.retrain_after,
            (model, version, variant),
            "drift_windows",
            span,
            {"reason": "drift", "features": features},
        )
        if retrain is not None:
            signals.append(retrain)
            w.drifting_in_a_row = 0
        w.index += 1
        w.reset()
        return signals


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
