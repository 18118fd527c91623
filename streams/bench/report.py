"""The bench's figures, computed from what a run observed: pure functions, no Kafka.

In: per subject, the Kafka timestamps of its output records (saturated run), the input
and output timestamps of each event id (latency run) and the CPU/RSS samples of its
process. Out: :class:`SubjectResult` (``status`` ``ok``, or ``failed`` / ``unavailable``
with the reason and no numbers), same-run ratios and the text table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# The ratios the issue asks for: streamscore against each peer measured in the same run.
RATIO_PAIRS = (("streamscore", "framework"), ("streamscore", "naive"), ("streamscore", "quix"))
RATIO_FIGURES = ("events_per_s", "p50_ms", "p99_ms", "cpu_s_per_1k", "rss_mb")


@dataclass
class SubjectResult:
    subject: str
    status: str = "ok"
    """``ok``; ``failed`` (it ran and broke) or ``unavailable`` (it could not start)."""
    reason: str | None = None
    events_per_s: float | None = None
    """Sustained rate while draining a backlog (saturated), from output record timestamps."""
    saturated_outcomes: int | None = None
    latency_rate: float | None = None
    """Offered events/s of the latency run: half of ``events_per_s`` unless fixed."""
    latency_achieved_rate: float | None = None
    latency_events: int | None = None
    latency_outcomes: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    cpu_s_per_1k: float | None = None
    """CPU seconds (user + system) of the subject's processes per 1,000 events, saturated."""
    rss_mb: float | None = None
    """Peak resident set of the subject's processes over both runs."""
    processes: int = 1
    latency_worst_s: list[list[float]] = field(default_factory=list)
    """The latency run's worst seconds, ``[second, events, p50 ms, max ms]`` each (second
    counted from the first event sent): tells a one-off stall (one second, and which:
    0 is the start, a warm-up inside the measured window) from a slow subject."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_run(subject: str, status: str, reason: str) -> SubjectResult:
    return SubjectResult(subject=subject, status=status, reason=reason)


def sustained_rate(out_ts_ms: Sequence[float], trim: float = 0.05) -> float | None:
    """Events/s over the middle of a drain: the ramp-up and the tail are cut off.

    ``out_ts_ms`` are output record timestamps; the rate is the number of records
    between the ``trim`` and ``1 - trim`` quantiles of time over that span.
    """
    if len(out_ts_ms) < 20:
        return None
    ts = np.sort(np.asarray(out_ts_ms, dtype=np.float64))
    lo, hi = np.quantile(ts, [trim, 1.0 - trim])
    span_s = (hi - lo) / 1000.0
    if span_s <= 0:
        # Everything within one millisecond: faster than the clock can tell.
        span_s = 0.001
    inside = int(np.count_nonzero((ts >= lo) & (ts <= hi)))
    return inside / span_s


def latencies_ms(
    sent_ms: Mapping[str, float], received: Sequence[tuple[str, float]]
) -> list[float]:
    """Output timestamp minus input timestamp per event id; the first outcome of an id counts."""
    seen: set[str] = set()
    out: list[float] = []
    for event_id, ts in received:
        if event_id in sent_ms and event_id not in seen:
            seen.add(event_id)
            out.append(ts - sent_ms[event_id])
    return out


def worst_seconds(
    sent_ms: Mapping[str, float], received: Sequence[tuple[str, float]], k: int = 3
) -> list[list[float]]:
    """The ``k`` seconds of sending whose events had the highest latency, worst first:
    ``[second since the first send, events, p50 ms, max ms]``."""
    if not sent_ms:
        return []
    start = min(sent_ms.values())
    by_second: dict[int, list[float]] = {}
    seen: set[str] = set()
    for event_id, ts in received:
        if event_id in sent_ms and event_id not in seen:
            seen.add(event_id)
            sent = sent_ms[event_id]
            by_second.setdefault(int((sent - start) // 1000), []).append(ts - sent)
    rows = [
        [float(second), float(len(lat)), round(float(np.median(lat)), 1), round(max(lat), 1)]
        for second, lat in by_second.items()
    ]
    return sorted(rows, key=lambda row: -row[3])[:k]


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    p50, p99, p999 = np.percentile(np.asarray(values, dtype=np.float64), [50, 99, 99.9])
    return {
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "p999_ms": round(float(p999), 1),
        "max_ms": round(float(max(values)), 1),
    }


def cpu_between(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """CPU seconds used between wall times ``t0`` and ``t1``, interpolated from
    ``(wall_s, cumulative_cpu_s)`` samples; None if the samples do not cover the span."""
    if len(samples) < 2 or t1 <= t0:
        return None
    walls = np.asarray([s[0] for s in samples])
    cpus = np.asarray([s[1] for s in samples])
    if t0 < walls[0] - 0.5 or t1 > walls[-1] + 0.5:
        return None
    return float(np.interp(t1, walls, cpus) - np.interp(t0, walls, cpus))


def ratios(results: Mapping[str, SubjectResult]) -> dict[str, dict[str, float | None]]:
    """``"a/b": {figure: a's / b's}`` for the pairs both of which ran; None where undefined."""
    out: dict[str, dict[str, float | None]] = {}
    for a, b in RATIO_PAIRS:
        ra, rb = results.get(a), results.get(b)
        if ra is None or rb is None or ra.status != "ok" or rb.status != "ok":
            continue
        figures: dict[str, float | None] = {}
        for name in RATIO_FIGURES:
            x, y = getattr(ra, name), getattr(rb, name)
            figures[name] = (
                round(x / y, 3)
                if x is not None and y is not None and y > 0 and math.isfinite(x / y)
                else None
            )
        out[f"{a}/{b}"] = figures
    return out


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(results: Sequence[SubjectResult]) -> str:
    """A Markdown table: one row per subject; a subject that did not run says why."""
    lines = [
        "| subject | events/s (saturated) | latency at events/s | p50 ms | p99 ms | p999 ms "
        "| CPU s / 1k events | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.subject} | {r.status}: {r.reason} | | | | | | |")
            continue
        lines.append(
            f"| {r.subject} | {_cell(r.events_per_s, 0)} | {_cell(r.latency_achieved_rate, 0)} "
            f"| {_cell(r.p50_ms)} | {_cell(r.p99_ms)} | {_cell(r.p999_ms)} "
            f"| {_cell(r.cpu_s_per_1k, 3)} | {_cell(r.rss_mb, 0)} |"
        )
    return "\n".join(lines)


def render_ratios(table: Mapping[str, Mapping[str, float | None]]) -> str:
    lines = []
    for pair, figures in table.items():
        cells = ", ".join(f"{k} {_cell(v, 2)}x" for k, v in figures.items())
        lines.append(f"- {pair}: {cells}")
    return "\n".join(lines)
