"""The freshness rule of served features: too old or from the future is missing.

In: the values of one lookup (``{ref: [value per row]}``), each row's online timestamp
per feature view (epoch seconds, ``None`` for an entity the store does not hold), each
row's event time, and the bound per view (``STREAMSCORE_FEATURE_MAX_AGE``). Out: the
values with every value of a bounded view set to ``None`` where

* ``too_old``: the event time minus the row's timestamp exceeds the view's bound, or
* ``future``: the row is stamped after the event (a streaming row written after the
  event was consumed by the feature worker may include the event itself or later
  ones; see :mod:`features.aggregates`),

and how many rows of each view were dropped for each reason. An online store that keeps
whole seconds (Feast's SQLite) makes "after the event" uncertain within a second: such
rows count as future (no leakage, at the price of missing values within a second of
the entity's previous event; Redis keeps sub-second stamps). The caller then treats
them as any missing feature (manifest default, listed in ``features_missing``).
Views without a bound are served whatever their age.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["parse_max_age", "apply_freshness"]


def parse_max_age(spec: str) -> dict[str, float]:
    """``"view=seconds,view2=seconds"`` -> ``{view: seconds}``; ValueError names a bad item."""
    out: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        view, sep, seconds = item.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if not sep or not view.strip() or value <= 0:
            raise ValueError(
                f"feature max age item {item!r} is not view=seconds with seconds > 0 "
                "(e.g. user_stream_stats=21600)"
            )
        out[view.strip()] = value
    return out


def apply_freshness(
    values: Mapping[str, Sequence[Any]],
    stamps: Mapping[str, Sequence[float | None]],
    event_times: Sequence[float],
    max_age: Mapping[str, float],
    resolution_s: float = 0.0,
) -> tuple[dict[str, list[Any]], Counter[tuple[str, str]]]:
    """``values`` with stale rows of bounded views set to None, and ``(view, reason)`` counts.

    ``resolution_s``: how much of a timestamp the online store keeps (Feast's SQLite
    store keeps whole seconds: 1; Redis keeps nanoseconds: 0). A row is from the future
    unless even its latest possible stamp is at or before the event.
    """
    dropped: dict[str, set[int]] = {}
    counts: Counter[tuple[str, str]] = Counter()
    for view, limit in max_age.items():
        view_stamps = stamps.get(view)
        if view_stamps is None:
            continue
        rows: set[int] = set()
        for i, (stamp, t) in enumerate(zip(view_stamps, event_times, strict=True)):
            if stamp is None:
                continue
            if stamp + resolution_s > t:
                counts[(view, "future")] += 1
                rows.add(i)
            elif t - stamp > limit:
                counts[(view, "too_old")] += 1
                rows.add(i)
        if rows:
            dropped[view] = rows
    out: dict[str, list[Any]] = {}
    for ref, column in values.items():
        gone = dropped.get(ref.partition(":")[0])
        out[ref] = (
            [None if i in gone else v for i, v in enumerate(column)] if gone else list(column)
        )
    return out, counts
