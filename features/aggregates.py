"""Rolling per-entity aggregates of an event stream: the streaming and the batch computation.

Pure: no Kafka, no Faust, no Feast. In: a :class:`StreamingView` (a Feast feature view
fed by a push source, described by its name, join key, push source and feature names)
and observations of events (id, event time, numeric fields). Out: feature rows
``{join_key, "event_timestamp", feature: value, ...}`` for Feast's push.

Feature names say what they compute (the grammar the feature worker understands):

    txn_count_<w>            events of the entity in the window
    <field>_sum_<w>          sum of a numeric event field over the window
    <field>_max_<w>          largest value of the field in the window (None if empty)

with ``<w>`` = ``<n>s|m|h|d`` (``1h``, ``24h``, ``30m``).

Semantics (one definition for serving and training):

* A row stamped ``s`` describes the entity's events with time ``t < s``; a window
  ``w`` covers ``s - w <= t < s``.
* Rows are written at every *change point*: ``t + 1 ms`` after each event (it enters
  every window; 1 ms is the contract's resolution) and ``t + w + 1 ms`` (it leaves
  window ``w``), each once the clock has passed it. So the newest row of an entity is
  exact until its next change point, whenever it is read: a user idle for an hour is
  served "0 in the last 10 minutes", not the count of an hour ago. Online and offline
  receive the same rows.
* An event at ``t`` may only be scored with a row stamped ``<= t`` (so it never sees
  itself or later events: no leakage; :mod:`features.freshness` enforces it at
  serving); Feast's point-in-time join of training picks exactly that row, the latest
  stamped ``<= t``.
* Lateness is per entity: an event older than the newest event time the entity has
  seen minus ``lateness_s`` is too late: counted and ignored (it was still scored;
  only the aggregates leave it out). An event within the lateness is inserted where
  it belongs and every row already written that it changes is written again, with
  a newer ``created`` timestamp, so point-in-time joins prefer the corrected row.
* An event id already held in the state is a duplicate (a redelivery after a restart):
  counted, never added twice.

:func:`batch_rows` is the batch computation of the same rows (vectorised, over a whole
history); training data and the parity tests use it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "Aggregate",
    "StreamingView",
    "Observation",
    "Update",
    "parse_feature",
    "apply_observations",
    "change_points",
    "next_due",
    "row_at",
    "batch_rows",
    "ROW_OFFSET_MS",
]

#: A row is stamped this long after the events it includes (the contract's resolution).
ROW_OFFSET_MS = 1

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = r"(\d+)([smhd])"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("count", re.compile(rf"^txn_count_{_WINDOW}$")),
    ("sum", re.compile(rf"^([a-z][a-z0-9_]*?)_sum_{_WINDOW}$")),
    ("max", re.compile(rf"^([a-z][a-z0-9_]*?)_max_{_WINDOW}$")),
)
GRAMMAR = "txn_count_<w>, <field>_sum_<w>, <field>_max_<w> (<w>: 10m, 1h, 24h, ...)"

Kind = Literal["count", "sum", "max"]


@dataclass(frozen=True)
class Aggregate:
    """One streaming feature: what it computes, over which event field and window."""

    feature: str
    kind: Kind
    field: str | None = None
    window_ms: int | None = None


def parse_feature(name: str) -> Aggregate:
    """The aggregate a feature name asks for; ValueError names the feature and the grammar."""
    for kind, pattern in _PATTERNS:
        match = pattern.match(name)
        if match is None:
            continue
        groups = match.groups()
        amount, unit = int(groups[-2]), groups[-1]
        if amount <= 0:
            break
        window_ms = amount * _UNITS[unit] * 1000
        return Aggregate(name, kind, None if kind == "count" else groups[0], window_ms)  # type: ignore[arg-type]
    raise ValueError(f"streaming feature {name!r} is not computable; names follow {GRAMMAR}")


@dataclass(frozen=True)
class StreamingView:
    """A Feast feature view the feature worker keeps up to date through its push source."""

    name: str
    entity_key: str
    push_source: str
    aggregates: tuple[Aggregate, ...]

    @classmethod
    def of(
        cls, name: str, entity_key: str, push_source: str, features: Iterable[str]
    ) -> StreamingView:
        return cls(name, entity_key, push_source, tuple(parse_feature(f) for f in features))

    @property
    def fields(self) -> tuple[str, ...]:
        """Numeric event fields the aggregates read."""
        return tuple(dict.fromkeys(a.field for a in self.aggregates if a.field))

    @property
    def horizon_ms(self) -> int:
        """The longest window: how far back a row looks."""
        return max((a.window_ms or 0 for a in self.aggregates), default=0)

    @property
    def features(self) -> list[str]:
        return [a.feature for a in self.aggregates]


@dataclass(frozen=True)
class Observation:
    """One event as an aggregate sees it."""

    event_id: str
    t_ms: int
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass
class Update:
    """What applying a batch of observations to one entity's state produced."""

    state: dict[str, Any]
    rows: list[dict[str, Any]]  # offline rows (history, corrections included), by stamp
    online_row: dict[str, Any] | None  # the entity's newest row, for the online store
    accepted: int = 0
    duplicate: int = 0
    too_late: int = 0
    corrected: int = 0  # rows written again because a late event changed them


def empty_state() -> dict[str, Any]:
    # JSON-friendly: it lives in a changelog-backed table. ``emitted_ms``: every change
    # point up to it has been written; ``online_us``: stamp of the last online row.
    return {"events": [], "watermark_ms": None, "emitted_ms": None, "online_us": 0}


def _to_datetime_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def change_points(view: StreamingView, times: Iterable[int]) -> set[int]:
    """Stamps where a row differs from the one before: just after each event (it enters
    every window) and just after it leaves each window."""
    windows = {a.window_ms for a in view.aggregates if a.window_ms}
    out: set[int] = set()
    for t in times:
        out.add(t + ROW_OFFSET_MS)
        out.update(t + w + ROW_OFFSET_MS for w in windows)
    return out


def next_due(view: StreamingView, state: Mapping[str, Any]) -> int | None:
    """The first change point of ``state`` not written yet (None: nothing pending)."""
    emitted = state.get("emitted_ms")
    pending = [
        c
        for c in change_points(view, (e[0] for e in state["events"]))
        if emitted is None or c > emitted
    ]
    return min(pending) if pending else None


def row_at(
    view: StreamingView,
    events: Sequence[Sequence[Any]],
    stamp_ms: int,
) -> dict[str, Any]:
    """Feature values of the row stamped ``stamp_ms`` from ``events`` sorted by time
    (``[t_ms, event_id, {field: value}]``)."""
    times = [e[0] for e in events]
    end = bisect.bisect_left(times, stamp_ms)  # events with t < stamp
    out: dict[str, Any] = {}
    for agg in view.aggregates:
        assert agg.window_ms is not None
        start = bisect.bisect_left(times, stamp_ms - agg.window_ms, 0, end)
        if agg.kind == "count":
            out[agg.feature] = end - start
            continue
        values = [float(e[2].get(agg.field, 0.0) or 0.0) for e in events[start:end]]
        if agg.kind == "sum":
            out[agg.feature] = float(sum(values))
        else:
            out[agg.feature] = max(values) if values else None
    return out


def apply_observations(
    view: StreamingView,
    state: Mapping[str, Any] | None,
    entity: str,
    observations: Sequence[Observation],
    lateness_ms: int,
    now_us: int,
) -> Update:
    """Fold ``observations`` (in arrival order, possibly none) into one entity's ``state``
    and write every change point up to ``now_us`` (epoch microseconds, the clock).

    Returns the new state and the rows to write: for the offline store one row per
    change point that is new (up to now) or that a late event changed (a correction),
    for the online store the newest row when it changed. ``now_us`` is also the rows'
    ``created`` time: a correction is newer than the row it corrects.
    """
    st = dict(state) if state else empty_state()
    events: list[list[Any]] = [list(e) for e in st["events"]]
    before = [e[0] for e in events]
    ids = {e[1] for e in events}
    watermark: int | None = st["watermark_ms"]
    emitted: int | None = st.get("emitted_ms")
    update = Update(state={}, rows=[], online_row=None)
    changed_from: int | None = None
    for obs in observations:
        if obs.event_id in ids:
            update.duplicate += 1
            continue
        if watermark is not None and obs.t_ms < watermark - lateness_ms:
            update.too_late += 1
            continue
        values = {f: float(obs.values.get(f, 0.0) or 0.0) for f in view.fields}
        item = [obs.t_ms, obs.event_id, values]
        bisect.insort(events, item, key=lambda e: (e[0], e[1]))
        ids.add(obs.event_id)
        update.accepted += 1
        watermark = obs.t_ms if watermark is None else max(watermark, obs.t_ms)
        changed_from = obs.t_ms if changed_from is None else min(changed_from, obs.t_ms)

    now_ms = now_us // 1000
    points = change_points(view, (e[0] for e in events))
    new = {c for c in points if (emitted is None or c > emitted) and c <= now_ms}
    corrections: set[int] = set()
    if changed_from is not None and emitted is not None:
        # Rows already written at or after a new event's entry changed.
        first = changed_from + ROW_OFFSET_MS
        corrections = {c for c in points if first <= c <= emitted}
    created = _to_datetime_us(now_us)
    for stamp in sorted(new | corrections):
        update.rows.append(
            {
                view.entity_key: entity,
                "event_timestamp": _to_datetime_us(stamp * 1000),
                **row_at(view, events, stamp),
                "created": created,
            }
        )
    # Rows written before with other values (not a new event's own first row).
    update.corrected = len(corrections & change_points(view, before)) if corrections else 0
    online_us: int = st["online_us"]
    if update.rows:
        emitted = now_ms if emitted is None else max(emitted, now_ms)
        latest = max(c for c in points if c <= emitted)
        latest_us = latest * 1000
        if latest in new or latest in corrections:
            newest = next(
                r for r in update.rows if r["event_timestamp"] == _to_datetime_us(latest_us)
            )
            # Redis keeps a row only if it is strictly newer than the stored one: a
            # corrected newest row goes online a microsecond after the one it replaces.
            stamp_us = latest_us if latest_us > online_us else online_us + 1
            online_us = stamp_us
            update.online_row = newest | {"event_timestamp": _to_datetime_us(stamp_us)}
    elif emitted is None or now_ms > emitted:
        emitted = now_ms if emitted is None else max(emitted, now_ms)
    if watermark is not None and emitted is not None:
        # Forget what no row can need again: every change point of the event is written
        # and no event within the lateness can fall in a window that holds it.
        cut_before = min(watermark - lateness_ms, emitted) - view.horizon_ms - ROW_OFFSET_MS
        cut = bisect.bisect_left([e[0] for e in events], cut_before)
        events = events[cut:]
    update.state = {
        "events": events,
        "watermark_ms": watermark,
        "emitted_ms": emitted,
        "online_us": online_us,
    }
    return update


def batch_rows(
    view: StreamingView,
    events: pd.DataFrame,
    time_column: str = "event_timestamp",
) -> pd.DataFrame:
    """The batch computation: the entity's row at every change point of a whole history
    (no lateness, no clock: every event counts, every change point is written). One row
    per (entity, stamp), in stamp order; ``created`` is the stamp.

    ``events`` holds the join key column, ``time_column`` (datetime) and the view's fields.
    Vectorised with sorted keys and cumulative sums, independently of the streaming code
    above, which the parity tests compare it with.
    """
    key = view.entity_key
    ts = pd.to_datetime(events[time_column], utc=True).astype("datetime64[ns, UTC]")
    t_ms = (ts.astype("int64").to_numpy() // 1_000_000).astype(np.int64)
    frame = pd.DataFrame({key: events[key].astype(str).to_numpy(), "t": t_ms})
    for f in view.fields:
        frame[f] = pd.to_numeric(events[f], errors="coerce").fillna(0.0).to_numpy(np.float64)
    frame = frame.sort_values([key, "t"], kind="stable").reset_index(drop=True)
    if frame.empty:
        return pd.DataFrame(columns=[key, "event_timestamp", *view.features, "created"])
    names, g = np.unique(frame[key].to_numpy(), return_inverse=True)
    t = frame["t"].to_numpy()
    t_min = int(t.min())
    horizon = view.horizon_ms
    span = int(t.max()) - t_min + 2 * horizon + 4 * ROW_OFFSET_MS + 1

    def sort_key(group: np.ndarray, times: np.ndarray) -> np.ndarray:
        # Each entity's keys in a range of their own, shifted so a window start stays in it.
        return group.astype(np.int64) * span + (times - t_min) + horizon + ROW_OFFSET_MS

    event_key = sort_key(g, t)
    windows = sorted({a.window_ms for a in view.aggregates if a.window_ms})
    offsets = [ROW_OFFSET_MS] + [w + ROW_OFFSET_MS for w in windows]
    stamps = pd.DataFrame(
        {"g": np.tile(g, len(offsets)), "s": np.concatenate([t + o for o in offsets])}
    ).drop_duplicates()
    stamps = stamps.sort_values(["g", "s"], kind="stable")
    sg, s_ms = stamps["g"].to_numpy(), stamps["s"].to_numpy()
    stamp_key = sort_key(sg, s_ms)
    group_start = np.searchsorted(event_key, sg.astype(np.int64) * span, side="left")
    end = np.searchsorted(event_key, stamp_key, side="left")  # events with t < stamp
    out: dict[str, Any] = {key: names[sg]}
    out["event_timestamp"] = pd.to_datetime(s_ms * 1000, unit="us", utc=True)
    cumsums = {f: np.r_[0.0, np.cumsum(frame[f].to_numpy())] for f in view.fields}
    for agg in view.aggregates:
        assert agg.window_ms is not None
        start = np.searchsorted(event_key, stamp_key - agg.window_ms, side="left")
        start = np.maximum(start, group_start)
        if agg.kind == "count":
            out[agg.feature] = (end - start).astype(np.int64)
        elif agg.kind == "sum":
            cs = cumsums[agg.field or ""]
            out[agg.feature] = cs[end] - cs[start]
        else:
            column = frame[agg.field].to_numpy()
            out[agg.feature] = np.array(
                [column[a:b].max() if b > a else np.nan for a, b in zip(start, end, strict=True)]
            )
    rows = pd.DataFrame(out)
    rows["created"] = rows["event_timestamp"]
    return rows.sort_values(["event_timestamp", key], kind="stable").reset_index(drop=True)
