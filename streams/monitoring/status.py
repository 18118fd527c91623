"""The terminal view of the key figures, for people without Grafana (`streamscore status`).

In: the Prometheus text exposition of a worker's /metrics (parsed with
``prometheus_client.parser``). Out: a few aligned lines: throughput and outcomes,
latency percentiles per stage (from the histogram buckets), consumer lag, fallbacks,
served models, drift above threshold and online quality per model version.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

_NS = "streamscore_"


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` (cumulative bucket counts)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return math.inf


def _fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return ">max"
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def render_status_figures(metrics_text: str) -> str:
    """Key figures of one worker's /metrics as text lines."""
    samples: list[Sample] = [
        s for family in text_string_to_metric_families(metrics_text) for s in family.samples
    ]

    def total(name: str, **match: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == _NS + name and all(s.labels.get(k) == v for k, v in match.items())
        )

    def by(name: str, *labels: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for s in samples:
            if s.name == _NS + name:
                out[tuple(s.labels.get(label, "") for label in labels)] += s.value
        return dict(out)

    lines = []
    consumed = total("events_consumed_total")
    predicted = by("predictions_total", "decision")
    dead = by("deadletters_total", "stage")
    lines.append(
        f"events:     {consumed:.0f} consumed, {sum(predicted.values()):.0f} predicted, "
        f"{sum(dead.values()):.0f} dead-lettered"
    )
    if predicted:
        decisions = _join(f"{k[0]} {v:.0f}" for k, v in sorted(predicted.items()))
        lines.append("decisions:  " + decisions)
    if dead:
        lines.append("deadletter: " + _join(f"{k[0]} {v:.0f}" for k, v in sorted(dead.items())))
    fallbacks = by("fallbacks_total", "reason")
    lines.append(
        "fallbacks:  " + (_join(f"{k[0]} {v:.0f}" for k, v in sorted(fallbacks.items())) or "0")
    )

    stage_buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in samples:
        if s.name == _NS + "stage_seconds_bucket":
            stage_buckets[s.labels["stage"]].append((float(s.labels["le"]), s.value))
        elif s.name == _NS + "end_to_end_seconds_bucket":
            stage_buckets["end_to_end"].append((float(s.labels["le"]), s.value))
    latency = []
    for stage, buckets in sorted(stage_buckets.items()):
        buckets.sort()
        if buckets and buckets[-1][1] > 0:
            p50, p99 = _quantile(buckets, 0.5), _quantile(buckets, 0.99)
            latency.append(f"{stage} p50 {_fmt_s(p50)} p99 {_fmt_s(p99)}")
    lines.append("latency:    " + (_join(latency) or "-"))

    lag = by("consumer_lag", "topic")
    lines.append("lag:        " + (_join(f"{k[0]} {v:.0f}" for k, v in sorted(lag.items())) or "-"))

    loaded = [k for k, v in by("model_loaded", "model", "version", "variant").items() if v > 0]
    if loaded:
        lines.append("models:     " + _join(f"{m} v{v} ({var})" for m, v, var in sorted(loaded)))

    drift = by("drift", "model", "version", "variant", "feature", "statistic")
    top = sorted(drift.items(), key=lambda kv: -kv[1])
    psi = [(k, v) for k, v in top if k[4] == "psi"]
    if psi:
        lines.append(
            "drift psi:  "
            + _join(f"{k[0]} v{k[1]} {k[3]} {v:.3f}" for k, v in psi[:5])
            + ("" if len(psi) <= 5 else f" (+{len(psi) - 5})")
        )
    quality = by("quality", "model", "version", "variant", "statistic")
    versions = sorted({k[:3] for k in quality})
    for model, version, variant in versions:
        figures = {k[3]: v for k, v in quality.items() if k[:3] == (model, version, variant)}
        lines.append(
            f"quality:    {model} v{version} ({variant}): "
            + _join(
                f"{name} {figures[name]:.3f}"
                for name in ("roc_auc", "precision", "recall", "brier", "label_coverage", "pairs")
                if name in figures and not math.isnan(figures[name])
            )
        )
    joins = by("label_joins_total", "outcome")
    if joins:
        lines.append("label join: " + _join(f"{k[0]} {v:.0f}" for k, v in sorted(joins.items())))
    return "\n".join(lines)


def _join(parts: Iterable[str]) -> str:
    return ", ".join(parts)
