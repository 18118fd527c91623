"""The scoring worker's online store behind a circuit breaker (:mod:`features.breaker`).

In: the settings, the worker's ``FeastOnlineSource`` and its Feast store. Out: a
:class:`~features.breaker.GuardedSource` for the pipeline whose state changes become
``streamscore_online_store_circuit`` and ``online_store`` signals, and which loads a Redis
online store found empty again (``rematerialize``) without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from feast import FeatureStore

from features.breaker import (
    CircuitBreaker,
    GuardedSource,
    State,
    redis_probe,
    rematerialize,
)
from features.online import FeastOnlineSource
from features.store import describe_store
from streams import metrics
from streams.monitoring.signals import Signal
from streams.online_store import online_store_config
from streams.settings import Settings

log = logging.getLogger(__name__)

STATES: tuple[State, ...] = ("closed", "open", "half_open", "empty")


def _set_state_metric(state: State) -> None:
    for s in STATES:
        metrics.ONLINE_STORE_CIRCUIT.labels(s).set(1 if s == state else 0)


def guard_online_source(
    settings: Settings,
    source: FeastOnlineSource,
    store: FeatureStore,
    emit: Callable[[Signal], None],
    model: tuple[str, str],
) -> GuardedSource:
    """``source`` behind a breaker; ``emit`` publishes signals (the pipeline's queue);
    ``model`` is the champion's (name, version), which the signals name."""
    name, version = model
    describe = describe_store(store)
    probe = None
    if settings.online_store == "redis" and settings.redis_url:
        probe = redis_probe(online_store_config(settings), timeout_s=1.0)

    def signal(statistic: str, value: float, **details: object) -> None:
        emit(
            Signal(
                "online_store",
                name,
                version,
                "champion",
                statistic,
                value,
                details={"store": describe, **details},
            )
        )

    def on_state(state: State) -> None:
        _set_state_metric(state)
        if state != "half_open":  # a trial in progress is no news
            signal(state, 1.0 if state == "closed" else 0.0)

    async def on_empty() -> None:
        if not settings.store_rematerialize:
            log.error("online store %s is empty; STREAMSCORE_STORE_REMATERIALIZE is off", describe)
            return
        log.warning("re-materializing the online store %s", describe)
        try:
            views = await asyncio.to_thread(rematerialize, store)
        except Exception:
            metrics.ONLINE_STORE_REMATERIALIZED.labels("failed").inc()
            raise
        metrics.ONLINE_STORE_REMATERIALIZED.labels("ok").inc()
        log.warning("online store %s re-materialized (%d feature views)", describe, views)
        signal("rematerialized", float(views))

    _set_state_metric("closed")
    return GuardedSource(
        source,
        CircuitBreaker(settings.store_breaker_failures, settings.store_breaker_open_s),
        describe,
        probe=probe,
        probe_every_s=settings.store_probe_every_s,
        lookup_timeout_s=settings.store_lookup_timeout_s,
        on_state=on_state,
        on_empty=on_empty,
    )
