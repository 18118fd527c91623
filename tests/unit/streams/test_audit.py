"""Reconciliation: every event must be matched by a prediction or a dead letter."""

from streams.audit import TopicRecord, reconcile
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
