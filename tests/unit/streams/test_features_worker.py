"""The feature worker's stages without Kafka: observations, aggregation, retries, restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from features.aggregates import StreamingView
from features.errors import FeatureStoreUnavailable
from streams.codec import decode, encode
from streams.feature_updates import parse_update
from streams.features_worker import FeatureAggregator, observations_of

USER = StreamingView.of("u_stream", "user_id", "u_push", ["txn_count_1h", "amount_sum_1h"])
MERCHANT = StreamingView.of("m_stream", "merchant_id", "m_push", ["txn_count_1h"])
T0 = 1_790_000_000_000


def CLOCK() -> int:  # noqa: N802 - a constant clock: 10 s after T0, in microseconds
    return (T0 + 10_000) * 1000


def event(i: int, user: str = "u1", t_ms: int = T0, amount: float = 10.0) -> bytes:
    return encode(
        {
            "event_id": f"e{i}",
            "event_time": t_ms,
            "user_id": user,
            "merchant_id": "m1",
            "amount": amount,
        }
    )


class FakeWriter:
    """Records writes; fails the first ``failures`` attempts like a store that is down."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.writes: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = []

    async def write(self, view: StreamingView, offline: Any, online: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise FeatureStoreUnavailable("fake", ConnectionError("down"))
        self.writes.append((view.name, list(offline), list(online)))


def forwarded(*raw: bytes) -> list[bytes]:
    out: list[bytes] = []
    for value in raw:
        records, _ = observations_of(value, [USER, MERCHANT], 65536, 1.0)
        out += [v for _, v in records]
    return out


def test_an_event_becomes_one_observation_per_view_keyed_by_entity() -> None:
    records, invalid = observations_of(event(1, amount=3.5), [USER, MERCHANT], 65536, 123.0)
    assert [k for k, _ in records] == [b"u_stream/u1", b"m_stream/m1"]
    first = decode(records[0][1])
    assert first == {
        "view": "u_stream",
        "entity": "u1",
        "id": "e1",
        "t": T0,
        "values": {"amount": 3.5},
        "kafka_ms": 123.0,
    }
    assert invalid == []
    no_merchant = encode({"event_id": "e2", "event_time": T0, "user_id": "u1", "amount": 1})
    records, invalid = observations_of(no_merchant, [USER, MERCHANT], 65536, None)
    assert [k for k, _ in records] == [b"u_stream/u1"] and invalid == ["m_stream"]
    assert observations_of(b"{not json", [USER, MERCHANT], 65536, None) == (
        [],
        ["u_stream", "m_stream"],
    )


async def test_rows_are_written_before_the_state_and_retried_while_the_store_is_down() -> None:
    writer = FakeWriter(failures=2)
    table: dict[bytes, bytes] = {}
    aggregator = FeatureAggregator(
        [USER, MERCHANT], writer, table, 60, retry_max_s=0.01, clock_us=CLOCK
    )  # type: ignore[arg-type]
    updates = await aggregator.process(
        forwarded(*(event(i, t_ms=T0 + i * 1000, amount=float(i)) for i in range(5)))
    )
    assert len(writer.writes) == 2  # one write per view, after two failed attempts
    user_write = next(w for w in writer.writes if w[0] == "u_stream")
    assert [r["txn_count_1h"] for r in user_write[1]] == [1, 2, 3, 4, 5]
    assert [r["txn_count_1h"] for r in user_write[2]] == [5]  # only the newest row online
    assert set(table) == {b"u_stream/u1", b"m_stream/m1"}
    assert sorted(parse_update(v)[0].popitem()[1] for _, v in updates) == ["m1", "u1"]


async def test_a_state_is_not_stored_when_the_write_never_succeeds() -> None:
    writer = FakeWriter(failures=10**6)
    table: dict[bytes, bytes] = {}
    aggregator = FeatureAggregator([USER], writer, table, 60, retry_max_s=0.01, clock_us=CLOCK)  # type: ignore[arg-type]
    task = asyncio.create_task(aggregator.process(forwarded(event(1))))
    await asyncio.sleep(0.1)
    assert not task.done() and table == {}  # still retrying: nothing acked, nothing stored
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_replaying_after_a_restart_counts_nothing_twice() -> None:
    writer = FakeWriter()
    table: dict[bytes, bytes] = {}
    batch = forwarded(*(event(i, t_ms=T0 + i) for i in range(3)))
    await FeatureAggregator([USER], writer, table, 60, 0.01, CLOCK).process(batch)  # type: ignore[arg-type]
    # Crash after the state was stored but before the offsets were committed: the same
    # observations come again, to a worker whose state was recovered from the changelog.
    restarted = FeatureAggregator([USER], writer, dict(table), 60, 0.01, CLOCK)  # type: ignore[arg-type]
    updates = await restarted.process(batch + forwarded(event(9, t_ms=T0 + 10)))
    assert [r["txn_count_1h"] for r in writer.writes[-1][1]] == [4]
    assert len(updates) == 1
    # Crash after the write but before the state was stored: the same rows, same values.
    again = FeatureAggregator([USER], FakeWriter(), {}, 60, 0.01, CLOCK)  # type: ignore[arg-type]
    await again.process(batch)
    first_rows = [{k: v for k, v in r.items() if k != "created"} for r in writer.writes[0][1]]
    again_rows = [
        {k: v for k, v in r.items() if k != "created"}
        for r in again.writer.writes[0][1]  # type: ignore[attr-defined]
    ]
    assert again_rows == first_rows


async def test_the_timer_writes_the_windows_an_idle_entity_left() -> None:
    writer = FakeWriter()
    table: dict[bytes, bytes] = {}
    now = [(T0 + 10_000) * 1000]
    aggregator = FeatureAggregator([USER], writer, table, 60, 0.01, lambda: now[0])  # type: ignore[arg-type]
    await aggregator.process(forwarded(event(1, amount=4.0)))
    assert await aggregator.tick() == []  # nothing due yet
    now[0] = (T0 + 2 * 3_600_000) * 1000
    updates = await aggregator.tick()
    assert [parse_update(v) for _, v in updates] == [[{"user_id": "u1"}]]
    _, offline, online = writer.writes[-1]
    assert [r["txn_count_1h"] for r in offline] == [0]  # left the hour window
    assert online[0]["amount_sum_1h"] == 0.0
    assert await aggregator.tick() == []
