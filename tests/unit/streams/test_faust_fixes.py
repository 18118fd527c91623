"""The commit rule that keeps at-least-once: never commit past an offset not acked."""

import pytest

from streams.faust_fixes import committable_offset


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
