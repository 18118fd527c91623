"""Reconciliation: every event must be matched by a prediction or a dead letter."""

from datetime import UTC, datetime

import pytest

from streams.audit import TopicRecord, parse_time, reconcile
from streams.codec import encode


def _event(offset: int, event_id: str, partition: int = 0) -> TopicRecord:
    return TopicRecord(partition, offset, b"k", encode({"event_id": event_id}))


def _dead(partition: int, offset: int, stage: str = "validate") -> TopicRecord:
    headers = (
        ("error.stage", stage.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    )
    return TopicRecord(0, 0, b"k", b"whatever", headers)


def test_all_accounted_for() -> None:
    events = [_event(0, "a"), _event(1, "b"), TopicRecord(0, 2, None, b"{broken")]
    report = reconcile(events, [_event(9, "a"), _event(10, "b")], [_dead(0, 2, "decode")])
    assert report.reconciled
    assert (report.events, report.predictions, report.deadletters) == (3, 2, 1)
    assert report.deadletters_by_stage == {"decode": 1}


def test_missing_and_duplicates_are_reported() -> None:
    events = [_event(0, "a"), _event(1, "b"), _event(0, "c", partition=1)]
    report = reconcile(events, [_event(5, "a"), _event(6, "a")], [_dead(0, 1)])
    assert not report.reconciled
    assert report.missing == [{"partition": 1, "offset": 0, "event_id": "c"}]
    assert report.duplicate_ids == ["a"]


def test_dead_letter_on_other_partition_does_not_count() -> None:
    report = reconcile([_event(3, "x", partition=0)], [], [_dead(1, 3)])
    assert not report.reconciled


def test_a_range_counts_only_the_outputs_of_its_own_events() -> None:
    events = [_event(5, "in-range"), TopicRecord(0, 6, None, b"{broken")]
    outputs = [_event(1, "earlier"), _event(2, "in-range")]
    dead = [_dead(0, 1), _dead(0, 6, "decode")]
    report = reconcile(events, outputs, dead, only_these_events=True)
    assert report.reconciled
    assert (report.events, report.predictions, report.deadletters) == (2, 1, 1)
    # Without the range flag the earlier event's outputs count too.
    assert reconcile(events, outputs, dead).predictions == 2


def test_audit_times_parse_and_bad_ones_say_how() -> None:
    now = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert parse_time("2026-11-21T10:00:00Z") == int(now.timestamp() * 1000)
    assert parse_time("1795255200000") == 1795255200000
    assert parse_time("15m", now=now) == int(now.timestamp() * 1000) - 15 * 60 * 1000
    assert parse_time("1.5h", now=now) == int(now.timestamp() * 1000) - 5400 * 1000
    with pytest.raises(ValueError, match="RFC 3339 with an offset"):
        parse_time("2026-11-21T10:00:00")  # no offset: ambiguous
    with pytest.raises(ValueError, match="15m, 2h, 1d"):
        parse_time("last tuesday")
