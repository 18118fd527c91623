"""The rolling aggregates: grammar, no leakage, lateness, duplicates, and streaming == batch."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from features.aggregates import (
    Observation,
    StreamingView,
    apply_observations,
    batch_rows,
    next_due,
    parse_feature,
)

VIEW = StreamingView.of(
    "user_stream_stats",
    "user_id",
    "user_stream_push",
    [
        "txn_count_1h",
        "amount_sum_1h",
        "txn_count_24h",
        "amount_sum_24h",
        "amount_max_1h",
        "txn_count_10m",
    ],
)
H = 3_600_000
T0 = 1_790_000_000_000  # epoch ms


def obs(i: int, t_ms: int, amount: float) -> Observation:
    return Observation(f"e{i}", t_ms, {"amount": amount})


def test_feature_names_parse_and_bad_ones_are_named() -> None:
    agg = parse_feature("amount_sum_30m")
    assert (agg.kind, agg.field, agg.window_ms) == ("sum", "amount", 30 * 60_000)
    assert parse_feature("txn_count_24h").window_ms == 86_400_000
    with pytest.raises(ValueError, match="seconds_since_last_txn"):
        parse_feature("seconds_since_last_txn")
    with pytest.raises(ValueError, match="'amount_avg_1h' is not computable"):
        parse_feature("amount_avg_1h")
    with pytest.raises(ValueError, match="txn_count_0h"):
        parse_feature("txn_count_0h")


def us(ms: int) -> int:
    return ms * 1000


def test_a_row_includes_only_events_before_its_stamp() -> None:
    first = apply_observations(VIEW, None, "u1", [obs(1, T0, 10.0)], 0, us(T0 + 5))
    assert first.accepted == 1
    (row,) = first.rows
    # The row stamped 1 ms after the event: the event is in it...
    assert row["event_timestamp"] == datetime.fromtimestamp((T0 + 1) / 1000, UTC)
    assert row["txn_count_1h"] == 1 and row["amount_sum_1h"] == 10.0
    # ...and an event at T0 may only use rows stamped <= T0, which do not contain it.
    second = apply_observations(
        VIEW, first.state, "u1", [obs(2, T0 + H // 2, 5.0)], 0, us(T0 + H // 2 + 5)
    )
    # The first event left the 10 minute window on the way: that row is written too.
    assert [r["txn_count_10m"] for r in second.rows] == [0, 1]
    assert [r["txn_count_1h"] for r in second.rows] == [1, 2]
    assert second.online_row is not None and second.online_row["amount_sum_1h"] == 15.0
    third = apply_observations(
        VIEW, second.state, "u1", [obs(3, T0 + 2 * H, 1.0)], 0, us(T0 + 2 * H + 5)
    )
    row3 = third.rows[-1]
    # Window [s - 1h, s): only the third event; the 24h window still holds all three.
    assert row3["txn_count_1h"] == 1 and row3["txn_count_24h"] == 3
    assert row3["amount_max_1h"] == 1.0
    assert third.online_row is not None and third.online_row["txn_count_24h"] == 3


def test_an_idle_entity_is_brought_up_to_date_by_the_clock_alone() -> None:
    state = apply_observations(VIEW, None, "u1", [obs(1, T0, 3.0)], 0, us(T0 + 1)).state
    assert next_due(VIEW, state) == T0 + 10 * 60_000 + 1
    nothing = apply_observations(VIEW, state, "u1", [], 0, us(T0 + 60_000))
    assert nothing.rows == [] and nothing.online_row is None
    later = apply_observations(VIEW, nothing.state, "u1", [], 0, us(T0 + 2 * H))
    # Left the 10 minute window, then the hour: two rows, the newest one online.
    assert [(r["txn_count_10m"], r["txn_count_1h"]) for r in later.rows] == [(0, 1), (0, 0)]
    assert later.online_row is not None
    assert later.online_row["txn_count_24h"] == 1 and later.online_row["amount_sum_1h"] == 0.0
    assert next_due(VIEW, later.state) == T0 + 24 * H + 1


def test_late_event_within_lateness_corrects_later_rows_and_later_ones_are_ignored() -> None:
    state = apply_observations(
        VIEW, None, "u1", [obs(1, T0, 1.0), obs(2, T0 + 60_000, 2.0)], 0, us(T0 + 60_001)
    )
    late = apply_observations(
        VIEW, state.state, "u1", [obs(3, T0 + 30_000, 4.0)], 120_000, us(T0 + 60_002)
    )
    assert (late.accepted, late.too_late) == (1, 0)
    # Its own row and the row after it (which now includes it) are written again.
    assert [r["txn_count_1h"] for r in late.rows] == [2, 3]
    assert late.corrected == 1  # the row after it; its own row is new
    assert late.online_row is not None and late.online_row["amount_sum_1h"] == 7.0
    # Written online strictly later than the row it replaces (Redis keeps newer rows only).
    assert state.online_row is not None
    assert late.online_row["event_timestamp"] > state.online_row["event_timestamp"]
    too_late = apply_observations(
        VIEW, late.state, "u1", [obs(4, T0 - 10 * 60_000, 8.0)], 120_000, us(T0 + 60_003)
    )
    assert (too_late.accepted, too_late.too_late, too_late.rows) == (0, 1, [])
    assert too_late.state["events"] == late.state["events"]


def test_a_redelivered_event_is_not_counted_twice() -> None:
    first = apply_observations(VIEW, None, "u1", [obs(1, T0, 3.0)], 0, us(T0 + 1))
    again = apply_observations(VIEW, first.state, "u1", [obs(1, T0, 3.0)], 0, us(T0 + 1))
    assert (again.accepted, again.duplicate, again.rows) == (0, 1, [])
    assert again.state == first.state


def test_state_is_bounded_by_horizon_plus_lateness() -> None:
    state = None
    for i in range(50):
        now = us(T0 + i * H + 1)
        state = apply_observations(VIEW, state, "u1", [obs(i, T0 + i * H, 1.0)], 60_000, now).state
    assert state is not None
    assert len(state["events"]) <= 26  # 24 h window (+ lateness) at one event an hour
    row = apply_observations(
        VIEW, state, "u1", [obs(99, T0 + 60 * H, 1.0)], 60_000, us(T0 + 60 * H + 1)
    ).rows[-1]
    assert (row["txn_count_1h"], row["txn_count_24h"]) == (1, 14)  # events 37..49 and it


def _history(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.choice([f"u{i}" for i in range(7)], size=n)
    # bursts: several events at the same millisecond and minutes apart, spread over 3 days
    t = T0 + np.sort(rng.integers(0, 3 * 86_400_000, size=n))
    t[5:9] = t[4]
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": users,
            "event_timestamp": pd.to_datetime(t, unit="ms", utc=True),
            "amount": np.round(rng.lognormal(3, 1, size=n), 2),
        }
    )


def _stream(history: pd.DataFrame, lateness_ms: int, seed: int) -> pd.DataFrame:
    """Feed the events shuffled within the lateness, in random batches, with the clock
    at their arrival; let time pass; keep the newest row per (entity, stamp), as Feast's
    point-in-time join does with ``created``."""
    rng = random.Random(seed)
    t_ms = history["event_timestamp"].astype("int64").to_numpy() // 1_000_000
    arrival = [t + rng.uniform(0, lateness_ms) for t in t_ms]
    order = sorted(range(len(history)), key=lambda i: arrival[i])
    states: dict[str, dict] = {}
    rows: list[dict] = []
    clock_us = 0
    i = 0
    while i < len(order):
        size = rng.randint(1, 20)
        batch = order[i : i + size]
        i += size
        by_user: dict[str, list[Observation]] = {}
        for j in batch:
            r = history.iloc[j]
            by_user.setdefault(r["user_id"], []).append(
                Observation(r["event_id"], int(t_ms[j]), {"amount": float(r["amount"])})
            )
        # The worker's clock: the arrival of the batch's last event, never backwards.
        clock_us = max(clock_us + 1, int(arrival[batch[-1]] * 1000))
        for user, observations in by_user.items():
            update = apply_observations(
                VIEW, states.get(user), user, observations, lateness_ms, clock_us
            )
            assert update.too_late == 0
            states[user] = update.state
            rows += update.rows
    for user, state in states.items():  # time passes: every change point is written
        rows += apply_observations(VIEW, state, user, [], lateness_ms, clock_us + 10**13).rows
    frame = pd.DataFrame(rows)
    frame = frame.sort_values("created", kind="stable").drop_duplicates(
        ["user_id", "event_timestamp"], keep="last"
    )
    return frame.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_with_out_of_order_events_equals_the_batch_computation(seed: int) -> None:
    history = _history(seed, 400)
    streamed = _stream(history, lateness_ms=10 * 60_000, seed=seed)
    batch = batch_rows(VIEW, history)
    assert len(streamed) == len(batch)
    assert (streamed["user_id"].to_numpy() == batch["user_id"].to_numpy()).all()
    assert (streamed["event_timestamp"] == batch["event_timestamp"]).all()
    for feature in VIEW.features:
        got = streamed[feature].astype(float).to_numpy()
        want = batch[feature].astype(float).to_numpy()
        both_nan = np.isnan(got) & np.isnan(want)
        assert np.allclose(got[~both_nan], want[~both_nan], rtol=1e-9), feature
        assert (np.isnan(got) == np.isnan(want)).all(), feature


def test_batch_rows_of_a_first_event_count_only_it() -> None:
    history = _history(5, 30)
    rows = batch_rows(VIEW, history)
    firsts = rows.groupby("user_id").head(1)
    assert (firsts["txn_count_24h"] >= 1).all()
    assert not math.isnan(rows["amount_sum_24h"].sum())
