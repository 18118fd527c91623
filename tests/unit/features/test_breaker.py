"""The online store's circuit breaker: fail fast while down, probe, refuse an empty store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from features.breaker import CircuitBreaker, GuardedSource, Health, State, StoreCircuitOpen
from features.errors import FeatureStoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A fake online source that is up, down or empty, and counts what it was asked."""

    def __init__(self) -> None:
        self.down = False
        self.empty = False
        self.fetches = 0
        self.probes = 0

    def check(self, refs: Sequence[str]) -> None:
        pass

    async def fetch(
        self, refs: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        self.fetches += 1
        if self.down:
            raise FeatureStoreUnavailable("redis://test", ConnectionRefusedError())
        return {ref: [1.0] * len(entity_rows) for ref in refs}

    def probe(self) -> Health:
        self.probes += 1
        if self.down:
            raise ConnectionRefusedError("down")
        return "empty" if self.empty else "ok"


def guarded(
    store: Store, clock: Clock, probe: bool = True, **kwargs: Any
) -> tuple[GuardedSource, list[State]]:
    states: list[State] = []
    source = GuardedSource(
        store,
        CircuitBreaker(failure_threshold=2, open_s=3.0, clock=clock),
        "redis://test",
        probe=store.probe if probe else None,
        probe_every_s=10.0,
        on_state=states.append,
        **kwargs,
    )
    return source, states


async def lookup(source: GuardedSource) -> dict[str, list[Any]]:
    return await source.fetch(["v:f"], [{"id": 1}])


async def test_an_outage_opens_the_circuit_and_a_probe_closes_it_without_a_restart() -> None:
    store, clock = Store(), Clock()
    source, states = guarded(store, clock)
    store.down = True
    for _ in range(2):
        with pytest.raises(FeatureStoreUnavailable):
            await lookup(source)
    assert source.state == "open" and store.fetches == 2
    for _ in range(50):  # batches while open: answered at once, the store is not asked
        with pytest.raises(StoreCircuitOpen) as caught:
            await lookup(source)
    assert store.fetches == 2 and store.probes == 0
    assert caught.value.retryable is False and isinstance(caught.value, FeatureStoreUnavailable)

    clock.now += 3.0  # still down: one probe, and open again
    with pytest.raises(StoreCircuitOpen):
        await lookup(source)
    assert (store.probes, source.state) == (1, "open")

    store.down = False
    clock.now += 3.0
    assert await lookup(source) == {"v:f": [1.0]}
    assert source.state == "closed" and store.fetches == 3
    assert states == ["open", "closed"]


async def test_without_a_probe_one_lookup_is_the_trial() -> None:
    store, clock = Store(), Clock()
    source, _ = guarded(store, clock, probe=False)
    store.down = True
    for _ in range(2):
        with pytest.raises(FeatureStoreUnavailable):
            await lookup(source)
    clock.now += 3.0
    with pytest.raises(FeatureStoreUnavailable):
        await lookup(source)  # the trial fails: open again at once
    assert store.fetches == 3 and source.state == "open"
    with pytest.raises(StoreCircuitOpen):
        await lookup(source)
    store.down = False
    clock.now += 3.0
    await lookup(source)
    assert source.state == "closed"


async def test_an_empty_store_is_refused_and_re_materialized_then_served() -> None:
    store, clock = Store(), Clock()
    loaded = asyncio.Event()
    calls: list[str] = []

    async def on_empty() -> None:
        calls.append("rematerialize")
        await loaded.wait()
        store.empty = False

    source, states = guarded(store, clock, on_empty=on_empty)
    await lookup(source)
    store.empty = True  # Redis restarted without its data, between two batches
    clock.now += 10.0  # the periodic probe is due
    with pytest.raises(StoreCircuitOpen, match="empty"):
        await lookup(source)
    assert source.state == "empty" and states == ["empty"]
    await asyncio.sleep(0)
    assert calls == ["rematerialize"]

    store.empty = False  # half loaded: the probe sees keys, but the load is not over
    clock.now += 3.0
    with pytest.raises(StoreCircuitOpen):
        await lookup(source)
    assert source.state == "empty" and calls == ["rematerialize"], "one load at a time"

    loaded.set()
    await asyncio.sleep(0)
    clock.now += 3.0
    assert await lookup(source) == {"v:f": [1.0]}
    assert states == ["empty", "closed"]


async def test_a_healthy_store_is_probed_only_every_probe_interval() -> None:
    store, clock = Store(), Clock()
    source, states = guarded(store, clock)
    for _ in range(21):  # from t=0 to t=20 s: probes at 10 s and 20 s
        await lookup(source)
        clock.now += 1.0
    assert store.probes == 2 and states == []


async def test_a_lookup_the_store_holds_too_long_is_abandoned_and_opens_the_circuit() -> None:
    store, clock = Store(), Clock()
    source, states = guarded(store, clock, probe=False, lookup_timeout_s=0.05)
    hang = asyncio.Event()

    async def stuck(refs: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict:
        await hang.wait()
        return {}

    store.fetch = stuck  # type: ignore[method-assign,assignment]
    with pytest.raises(FeatureStoreUnavailable):
        await lookup(source)
    assert source.state == "open" and states == ["open"]
    with pytest.raises(StoreCircuitOpen):
        await lookup(source)
