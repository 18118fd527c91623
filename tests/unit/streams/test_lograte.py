"""Repeated log messages are limited per period and their count is logged later."""

from __future__ import annotations

import logging

from streams.lograte import RepeatLimiter


def record(msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", level, __file__, 1, msg, args, None)


def test_repeats_beyond_the_burst_are_dropped_and_counted_with_the_next_one() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, period_s=10.0, clock=lambda: now[0])
    passed = [limiter.filter(record("Unable connect to node %s", i)) for i in range(100)]
    assert passed.count(True) == 3 and passed[:3] == [True] * 3
    assert limiter.filter(record("another message"))  # counted apart
    now[0] = 10.0
    summary = record("Unable connect to node %s", 7)
    assert limiter.filter(summary)
    assert summary.getMessage() == (
        "Unable connect to node 7 [and 97 more like it in the last 10 s, not logged]"
    )
    later = record("Unable connect to node %s", 8)
    assert limiter.filter(later) and later.getMessage() == "Unable connect to node 8"


def test_the_same_text_at_another_level_or_logger_is_its_own_message() -> None:
    limiter = RepeatLimiter(burst=1, period_s=10.0, clock=lambda: 0.0)
    assert limiter.filter(record("x"))
    assert not limiter.filter(record("x"))
    assert limiter.filter(record("x", level=logging.WARNING))
