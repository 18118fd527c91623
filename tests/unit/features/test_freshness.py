"""The freshness rule: too old or stamped after the event is missing; unbounded views pass."""

from __future__ import annotations

import pytest

from features.freshness import apply_freshness, parse_max_age


def test_parse_max_age() -> None:
    assert parse_max_age("a=60, b=1.5,") == {"a": 60.0, "b": 1.5}
    assert parse_max_age("") == {}
    for bad in ("a", "a=", "a=x", "=5", "a=0", "a=-1"):
        with pytest.raises(ValueError, match="view=seconds"):
            parse_max_age(bad)


def test_old_and_future_values_of_bounded_views_become_missing() -> None:
    values = {
        "s:count": [1, 2, 3, 4],
        "s:sum": [1.0, 2.0, 3.0, 4.0],
        "daily:avg": [9.0, 9.0, 9.0, 9.0],
    }
    stamps = {"s": [100.0, 100.0, 100.5, None], "daily": [0.0, 0.0, 0.0, 0.0]}
    # row 0: 50 s old (ok), row 1: 70 s old (too old), row 2: after the event, row 3: unknown
    fresh, dropped = apply_freshness(values, stamps, [150.0, 170.0, 100.4, 100.0], {"s": 60})
    assert fresh["s:count"] == [1, None, None, 4]
    assert fresh["s:sum"] == [1.0, None, None, 4.0]
    assert fresh["daily:avg"] == values["daily:avg"]  # not bounded: served whatever its age
    assert dropped == {("s", "too_old"): 1, ("s", "future"): 1}
    assert values["s:count"] == [1, 2, 3, 4]  # the caller's values are not changed


def test_a_row_stamped_exactly_at_the_event_is_served() -> None:
    fresh, dropped = apply_freshness({"s:c": [5]}, {"s": [10.0]}, [10.0], {"s": 1})
    assert fresh == {"s:c": [5]} and not dropped


def test_whole_second_stamps_count_as_future_within_their_second() -> None:
    # SQLite keeps 100.0 for a row written at 100.4: an event at 100.2 cannot use it.
    fresh, dropped = apply_freshness(
        {"s:c": [5, 6]}, {"s": [100.0, 100.0]}, [100.2, 101.0], {"s": 60}, 1.0
    )
    assert fresh == {"s:c": [None, 6]} and dropped == {("s", "future"): 1}
