"""Online quality of each model version and variant, from predictions joined with labels.

In: :class:`Pair` records (score, decision, label and the configured slice fields of the
event) as the label join completes them, and a count of predictions seen (for label
coverage). Out: every ``emit_every`` pairs, the figures of a sliding window of the last
``window_pairs`` pairs per model version and variant, overall and per value of each slice
field: precision and recall at the decision threshold (a prediction is positive when
its decision is one of ``positive_decisions``), ROC AUC, Brier score, the positive rate
and the label coverage. They are set on ``streamscore_quality`` /
``streamscore_quality_slice`` and returned as one ``quality`` :class:`Signal`; a
``retrain`` signal follows ``retrain_after`` consecutive windows below ``min_roc_auc``.

ROC AUC is scikit-learn's; the tests check every figure against scikit-learn's on the
same pairs computed offline.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from streams import metrics
from streams.monitoring.signals import Signal, Window, retrain_if_due

# Per slice field, values beyond this many distinct ones are pooled, keeping labels bounded.
MAX_SLICE_VALUES = 20
OTHER = "__other__"


@dataclass(frozen=True)
class Pair:
    """A prediction joined with its ground truth."""

    event_id: str
    model: str
    version: str
    variant: str
    score: float
    decision: str
    label: int
    slices: dict[str, str] = field(default_factory=dict)


def quality_statistics(
    scores: Sequence[float], labels: Sequence[int], positives: Sequence[int]
) -> dict[str, float]:
    """The window's figures; ROC AUC is NaN while the window holds a single class."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(positives, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    two_classes = 0 < y.sum() < len(y)
    true_positives = int(np.sum(p & y))
    # Precision, recall and Brier are one line each; scikit-learn's versions cost a few
    # milliseconds of input validation per call, which adds up at one call per slice per
    # emitted window. The tests check them against scikit-learn.
    return {
        "pairs": float(len(y)),
        "label_positive_rate": float(y.mean()) if len(y) else math.nan,
        "precision": true_positives / int(p.sum()) if p.sum() else 0.0,
        "recall": true_positives / int(y.sum()) if y.sum() else 0.0,
        "roc_auc": float(roc_auc_score(y, s)) if two_classes else math.nan,
        "brier": float(np.mean((s - y) ** 2)) if len(y) else math.nan,
    }


def _finite(stats: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in stats.items()}


@dataclass
class _Window:
    pairs: deque[tuple[float, int, int]]
    slices: dict[tuple[str, str], deque[tuple[float, int, int]]] = field(default_factory=dict)
    since_emit: int = 0
    index: int = 0
    predictions_seen: int = 0
    pairs_total: int = 0
    breaching_in_a_row: int = 0


class QualityMonitor:
    """Sliding windows of labelled predictions; quality signals every ``emit_every`` pairs."""

    def __init__(
        self,
        window_pairs: int,
        emit_every: int,
        min_pairs: int,
        positive_decisions: Iterable[str],
        slice_fields: Iterable[str],
        min_roc_auc: float,
        retrain_after: int,
    ) -> None:
        self.window_pairs = window_pairs
        self.emit_every = emit_every
        self.min_pairs = min_pairs
        self.positive_decisions = frozenset(positive_decisions)
        self.slice_fields = list(slice_fields)
        self.min_roc_auc = min_roc_auc
        self.retrain_after = retrain_after
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._slice_values: dict[str, set[str]] = {f: set() for f in self.slice_fields}

    def _window(self, key: tuple[str, str, str]) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(deque(maxlen=self.window_pairs))
        return window

    def prediction_seen(self, model: str, version: str, variant: str) -> None:
        """A prediction entered the join (the denominator of label coverage)."""
        self._window((model, version, variant)).predictions_seen += 1

    def _slice_value(self, name: str, value: str | None) -> str:
        value = "__missing__" if value is None else str(value)
        seen = self._slice_values[name]
        if value in seen or len(seen) < MAX_SLICE_VALUES:
            seen.add(value)
            return value
        return OTHER

    def add(self, pair: Pair) -> list[Signal]:
        """Add a pair; return the signals due (a quality signal every ``emit_every``)."""
        key = (pair.model, pair.version, pair.variant)
        window = self._window(key)
        item = (float(pair.score), int(pair.label), int(pair.decision in self.positive_decisions))
        window.pairs.append(item)
        for name in self.slice_fields:
            value = self._slice_value(name, pair.slices.get(name))
            window.slices.setdefault((name, value), deque(maxlen=self.window_pairs)).append(item)
        window.pairs_total += 1
        window.since_emit += 1
        metrics.LABELLED_PREDICTIONS.labels(*key).inc()
        if window.since_emit < self.emit_every:
            return []
        return self.emit(key)

    def emit(self, key: tuple[str, str, str]) -> list[Signal]:
        """The current figures of one window as signals (none while it is too small)."""
        window = self._window(key)
        if len(window.pairs) < self.min_pairs:
            return []
        window.since_emit = 0
        model, version, variant = key
        overall = quality_statistics(*zip(*window.pairs, strict=True))
        coverage = (
            min(window.pairs_total / window.predictions_seen, 1.0)
            if window.predictions_seen
            else math.nan
        )
        overall["label_coverage"] = coverage
        for statistic, value in overall.items():
            metrics.QUALITY.labels(model, version, variant, statistic).set(value)
        slices: list[dict[str, Any]] = []
        for (name, slice_value), pairs in sorted(window.slices.items()):
            if len(pairs) < self.min_pairs:
                continue
            stats = quality_statistics(*zip(*pairs, strict=True))
            for statistic, figure in stats.items():
                metrics.QUALITY_SLICE.labels(
                    model, version, variant, name, slice_value, statistic
                ).set(figure)
            slices.append({"slice": name, "value": slice_value, **_finite(stats)})
        span = Window(index=window.index, size=len(window.pairs))
        window.index += 1
        auc = overall["roc_auc"]
        signals = [
            Signal(
                "quality",
                model,
                version,
                variant,
                "roc_auc",
                auc,
                self.min_roc_auc,
                window=span,
                details={**_finite(overall), "slices": slices},
            )
        ]
        breached = math.isfinite(auc) and auc < self.min_roc_auc
        window.breaching_in_a_row = window.breaching_in_a_row + 1 if breached else 0
        retrain = retrain_if_due(
            window.breaching_in_a_row,
            self.retrain_after,
            (model, version, variant),
            "quality_windows",
            span,
            {"reason": "quality", "roc_auc": auc},
        )
        if retrain is not None:
            signals.append(retrain)
            window.breaching_in_a_row = 0
        return signals
