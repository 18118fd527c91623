"""A circuit breaker in front of the online store, and the check that it is not empty.

In: an :class:`~features.online.OnlineFeatureSource` and, optionally, a probe of the
store (``"ok"`` / ``"empty"``, raising when unreachable). Out: :class:`GuardedSource`, an
``OnlineFeatureSource`` that

- gives up on a lookup after ``lookup_timeout_s`` and opens the circuit at once;
- fails fast with :class:`StoreCircuitOpen` (a ``FeatureStoreUnavailable``, so the
  pipeline's fallback policy answers ``features_unavailable``) while the store is
  known down, instead of every batch waiting on connect timeouts and retries: after
  ``failure_threshold`` failed lookups in a row the circuit opens for ``open_s``; then
  one probe (or one lookup, without a probe) decides whether it closes again. Recovery
  needs no restart.
- refuses to serve from an *empty* store: a Redis restarted without persistence
  answers every lookup with "unknown entity", and every event would be scored on the
  manifest's defaults (``features_missing``) with nothing said. The probe runs every
  ``probe_every_s`` and when the circuit half-opens; an empty store keeps the circuit
  open (``state == "empty"``), calls ``on_empty`` once (the worker signals and
  re-materializes), and closes once the probe finds data again.

Why not a library: pybreaker, the maintained Python breaker, wraps synchronous calls
(its async support is Tornado's); the state machine here is some 40 lines and knows the
"empty" state a generic breaker does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, cast

from feast import FeatureStore

from features.errors import FeatureStoreUnavailable
from features.online import OnlineFeatureSource
from features.store import OnlineStoreConfig, redis_client

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open", "empty"]
Health = Literal["ok", "empty"]


class StoreCircuitOpen(FeatureStoreUnavailable):
    """The circuit is open: the online store was not asked."""

    retryable = False  # the pipeline answers at once instead of retrying a known outage

    def __init__(self, store: str, state: State, retry_in_s: float) -> None:
        self.state = state
        why = "is empty (restarted without its data?)" if state == "empty" else "is down"
        super().__init__(store, RuntimeError(f"circuit open: the store {why}"))
        self.retry_in_s = retry_in_s


class CircuitBreaker:
    """closed -> open after ``failure_threshold`` failures in a row; open for ``open_s``;
    then half-open: one trial call, whose outcome closes or re-opens the circuit.
    ``empty`` is open for a reason the trial must clear too (see :class:`GuardedSource`)."""

    def __init__(
        self, failure_threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.open_s = open_s
        self.clock = clock
        self.state: State = "closed"
        self._failures = 0
        self._until = 0.0

    def allow(self) -> bool:
        """May a call go to the store now? In the open states, once ``open_s`` passed, one
        caller gets True (the trial) and the state becomes half-open."""
        if self.state == "closed":
            return True
        if self.state == "half_open" or self.clock() < self._until:
            return False
        self.state = "half_open"
        return True

    def retry_in_s(self) -> float:
        return max(0.0, self._until - self.clock())

    def succeeded(self) -> None:
        self.state, self._failures = "closed", 0

    def failed(self) -> None:
        self._failures += 1
        if self.state == "half_open" or self._failures >= self.failure_threshold:
            self.trip("open")

    def trip(self, state: Literal["open", "empty"]) -> None:
        self.state = state
        self._until = self.clock() + self.open_s


class GuardedSource:
    """An ``OnlineFeatureSource`` behind a :class:`CircuitBreaker` and an emptiness probe."""

    def __init__(
        self,
        inner: OnlineFeatureSource,
        breaker: CircuitBreaker,
        describe: str,
        probe: Callable[[], Health] | None = None,
        probe_every_s: float = 10.0,
        lookup_timeout_s: float = 3.0,
        on_state: Callable[[State], None] | None = None,
        on_empty: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.breaker = breaker
        self.describe = describe
        self.probe = probe
        self.probe_every_s = probe_every_s
        self.lookup_timeout_s = lookup_timeout_s
        self.on_state = on_state
        self.on_empty = on_empty
        self._last_probe = breaker.clock()
        self._recovering: asyncio.Task[None] | None = None
        self._state: State = breaker.state

    @property
    def state(self) -> State:
        return self.breaker.state

    def check(self, refs: Sequence[str]) -> None:
        self.inner.check(refs)

    def last_event_timestamps(self) -> dict[str, list[float | None]]:
        inner = getattr(self.inner, "last_event_timestamps", None)
        return inner() if inner is not None else {}

    async def fetch(
        self, refs: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        breaker = self.breaker
        due = self.probe is not None and (breaker.clock() - self._last_probe >= self.probe_every_s)
        if breaker.state == "closed" and due:
            await self._run_probe()
        if not breaker.allow():
            self._report()
            raise StoreCircuitOpen(self.describe, breaker.state, breaker.retry_in_s())
        if breaker.state == "half_open" and self.probe is not None:
            await self._run_probe()  # the trial: cheap, and it sees an empty store
            if breaker.state != "closed":
                self._report()
                raise StoreCircuitOpen(self.describe, breaker.state, breaker.retry_in_s())
        try:
            values = await asyncio.wait_for(
                self.inner.fetch(refs, entity_rows), self.lookup_timeout_s
            )
        except TimeoutError as exc:
            # A store that holds a lookup this long (a paused or overloaded Redis; Feast's
            # client does not always honour its socket timeout) is as good as down: open
            # at once. The abandoned lookup finishes in its thread; none is queued behind
            # it while the circuit is open.
            self.breaker.trip("open")
            self._report()
            raise FeatureStoreUnavailable(self.describe, exc) from exc
        except FeatureStoreUnavailable:
            breaker.failed()
            self._report()
            raise
        breaker.succeeded()
        self._report()
        return values

    async def _run_probe(self) -> None:
        assert self.probe is not None
        self._last_probe = self.breaker.clock()
        try:
            health = await asyncio.wait_for(asyncio.to_thread(self.probe), self.lookup_timeout_s)
        except Exception as exc:  # unreachable, or any error of the probe: the store is down
            log.warning("online store %s: probe failed: %s", self.describe, exc)
            self.breaker.failed()
            return
        recovering = self._recovering is not None and not self._recovering.done()
        if health == "empty" or recovering:  # half-loaded while re-materializing: wait
            if self.breaker.state != "empty" and not recovering:
                log.error(
                    "online store %s is empty (restarted without its data?): serving the "
                    "fallback (features_unavailable) until it is re-materialized",
                    self.describe,
                )
            self.breaker.trip("empty")
            self._start_recovery()
        else:
            self.breaker.succeeded()

    def _start_recovery(self) -> None:
        if self.on_empty is None or (self._recovering and not self._recovering.done()):
            return
        self._recovering = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        assert self.on_empty is not None
        try:
            await self.on_empty()
        except Exception:
            log.exception("re-materializing the online store %s failed", self.describe)

    def _report(self) -> None:
        state = self.breaker.state
        if state != self._state:
            log.warning("online store %s: circuit %s -> %s", self.describe, self._state, state)
            self._state = state
            if self.on_state is not None:
                self.on_state(state)


def redis_probe(online: OnlineStoreConfig, timeout_s: float) -> Callable[[], Health]:
    """A probe of a Redis online store: ``empty`` when its database holds no key."""
    client = redis_client(online, timeout_s)

    def probe() -> Health:
        keys = cast(int, client.dbsize())  # the sync client: an int, not an awaitable
        return "ok" if keys > 0 else "empty"

    return probe


def rematerialize(store: FeatureStore) -> int:
    """Load every feature view's recorded materialization range again (an online store
    restarted empty gets back what it held); return how many views were loaded.

    Feast's incremental materialization would start after the last recorded interval
    and load nothing, so the recorded intervals are replayed explicitly.
    """
    loaded = 0
    for view in store.list_feature_views() + store.list_stream_feature_views():
        intervals = view.materialization_intervals
        if not intervals:
            continue
        start = min(s for s, _ in intervals)
        end = max(max(e for _, e in intervals), datetime.now(UTC))
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        loaded += 1
    return loaded
