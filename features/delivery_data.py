"""Seeded generator of the delivery-ETA example (the second use case).

Out: ``deliveries.parquet`` (delivery_id, event_timestamp, courier_id, distance_km,
minutes: the label) and ``courier_stats.parquet`` (daily per-courier snapshots built
only from deliveries before each snapshot, so training is point-in-time correct).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["generate_delivery_data", "delivery_events"]


def generate_delivery_data(
    out: Path, seed: int = 3, n_couriers: int = 80, days: int = 20, end: datetime | None = None
) -> pd.DataFrame:
    """Write the parquet files to ``out``; return the deliveries."""
    rng = np.random.default_rng(seed)
    end = (end or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    speed = rng.uniform(2.0, 6.0, n_couriers)  # minutes per km: the courier's pace
    n = n_couriers * days * 6
    courier = rng.integers(0, n_couriers, n)
    ts = pd.to_datetime(start) + pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s")
    distance = rng.gamma(2.0, 1.5, n) + 0.3
    minutes = 8 + distance * speed[courier] + rng.normal(0, 2.0, n)
    deliveries = pd.DataFrame(
        {
            "delivery_id": [f"d{i:07d}" for i in range(n)],
            "event_timestamp": ts,
            "courier_id": [f"c{c:04d}" for c in courier],
            "distance_km": distance.astype(np.float32),
            "minutes": minutes.astype(np.float32),
        }
    ).sort_values("event_timestamp", ignore_index=True)
    snapshots = []
    for day in range(1, days + 1):
        at = pd.Timestamp(start + timedelta(days=day))
        past = deliveries[deliveries.event_timestamp < at]
        recent = past[past.event_timestamp >= at - pd.Timedelta(days=30)]
        pace = (recent.minutes - 8) / recent.distance_km
        grouped = recent.assign(pace=pace, late=(recent.minutes > 30).astype(np.float32))
        agg = grouped.groupby("courier_id").agg(
            avg_minutes_per_km_30d=("pace", "mean"), late_rate_30d=("late", "mean")
        )
        week = past[past.event_timestamp >= at - pd.Timedelta(days=7)]
        agg["deliveries_7d"] = week.groupby("courier_id").size().reindex(agg.index).fillna(0)
        agg = agg.reset_index()
        agg["event_timestamp"] = at
        agg["created"] = at
        snapshots.append(agg)
    stats = pd.concat(snapshots, ignore_index=True).astype(
        {
            "avg_minutes_per_km_30d": np.float32,
            "late_rate_30d": np.float32,
            "deliveries_7d": np.int64,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    stats.to_parquet(out / "courier_stats.parquet", index=False)
    deliveries.to_parquet(out / "deliveries.parquet", index=False)
    return deliveries


def delivery_events(deliveries: pd.DataFrame, n: int, seed: int = 1) -> list[dict[str, object]]:
    """Live delivery-created events for known couriers (the label is not in the event)."""
    rng = np.random.default_rng(seed)
    rows = deliveries.sample(n, random_state=seed).reset_index(drop=True)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return [
        {
            "event_id": f"live-{rng.integers(1 << 62):x}-{i}",
            "event_time": now,
            "courier_id": str(r.courier_id),
            "distance_km": float(r.distance_km),
        }
        for i, r in rows.iterrows()
    ]
