"""The commit rule that keeps at-least-once: never commit past an offset not acked."""

import pytest

from streams.faust_fixes import (
    UntestedFaustVersion,
    check_version,
    committable_offset,
    fetch_gaps,
)


@pytest.mark.parametrize(
    ("acked", "committed", "expected", "left"),
    [
        ([0, 1, 2], None, 3, []),
        ([0, 1, 2], 0, 3, []),
        ([4, 5, 6], 0, None, [4, 5, 6]),  # 0..3 skipped: wait (Faust committed 7 here)
        ([4, 5, 6], None, 7, []),  # nothing known: as Faust did, only with no seek position
        ([31, 32], 31, 33, []),
        ([32, 33], 31, None, [32, 33]),  # one missing at the head (Faust's off-by-one)
        ([5, 6, 8, 9], 5, 7, [8, 9]),  # a gap in the middle: commit up to it
        ([], 3, None, []),
    ],
)
def test_committable_offset(
    acked: list[int], committed: int | None, expected: int | None, left: list[int]
) -> None:
    assert committable_offset(acked, committed) == expected
    assert acked == left


@pytest.mark.parametrize(
    ("expected", "offsets", "committed", "gaps", "following"),
    [
        (10, [10, 11, 12], 10, [], 13),
        (10, [11, 12], 10, [(10, 11)], 13),  # a transaction marker at the committed offset
        (10, [40, 41], 10, [(10, 40)], 42),  # the log was truncated past the committed offset
        (10, [10, 12, 15], 10, [(11, 12), (13, 15)], 16),  # markers or compaction inside a fetch
        (20, [12, 13], 12, [], 14),  # a fetch after a seek back: nothing is a gap
        (None, [5, 6], 5, [], 7),  # position unknown: no head gap is guessed
        (8, [12], 10, [(10, 12)], 13),  # never below the committed offset
        (8, [], 10, [], 8),
    ],
)
def test_fetch_gaps(
    expected: int | None,
    offsets: list[int],
    committed: int | None,
    gaps: list[tuple[int, int]],
    following: int | None,
) -> None:
    assert fetch_gaps(expected, offsets, committed) == (gaps, following)


def test_an_untested_faust_version_is_refused_with_what_to_do() -> None:
    check_version("0.15.3")
    with pytest.raises(UntestedFaustVersion, match=r"faust-streaming 0\.16\.0: .*0\.15\.3"):
        check_version("0.16.0")


def test_the_patches_are_in_place_once_an_app_is_made() -> None:
    from faust.transport import consumer

    from streams import faust_fixes

    faust_fixes.apply()
    assert consumer.Consumer._new_offset is faust_fixes._new_offset
    assert consumer.Consumer._wait_next_records is faust_fixes._wait_next_records
    assert consumer.Consumer._add_gap is faust_fixes._add_gap


async def test_records_getmany_would_skip_are_fetched_again() -> None:
    """A partition not active yet when its records arrive (Faust's recovery) is sought
    back to its first fetched record, so the records are read again once it is active."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.faust_fixes import _refetch_inactive

    sought: list[tuple[TP, int]] = []

    class Consumer:
        _buffered_partitions: set[TP] = set()
        app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

        async def seek(self, tp: TP, offset: int) -> None:
            sought.append((tp, offset))

    active, late = TP("labels", 1), TP("labels", 0)
    records = {
        active: [SimpleNamespace(offset=7)],
        late: [SimpleNamespace(offset=115), SimpleNamespace(offset=116)],
    }
    await _refetch_inactive(Consumer(), records, {active})
    assert sought == [(late, 115)]
