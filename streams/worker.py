"""One scoring worker in the foreground: what a deployment runs.

In: :class:`Settings`. Start-up fails fast, before the first message, when the broker
does not answer, the registry has no champion, the model's hash does not match, a
feature reference of a served model does not exist or has a type its input cannot read,
or the online store does not answer. It follows ``feature-updates`` to drop entities the
feature worker wrote from its feature cache.
It then reads the ``control`` topic to its end and serves the current rollout state
(champion, canary, shadow), and the Faust worker runs the scoring agent, plus the
control follower, until SIGTERM/SIGINT.
"""

from __future__ import annotations

import itertools
import logging
import time

from features.catalog import check_references
from features.freshness import parse_max_age
from features.online import FeastOnlineSource
from features.store import open_store
from models.registry import LoadedModel, ModelNotFound
from models.rollout import RolloutState
from models.routing import RoutingTable, build_routing
from streams.app import build_app
from streams.control import ControlFollower
from streams.faust_app import run_worker_app, worker_start
from streams.feature_updates import FeatureUpdatesFollower
from streams.health import Check, Health
from streams.kafka import ensure_topics, wait_for_broker
from streams.monitoring.monitor import ScoringMonitor, model_loaded
from streams.online_guard import guard_online_source
from streams.online_store import online_store_config
from streams.pii import PiiPolicy
from streams.pipeline import PipelineConfig, ScoringPipeline
from streams.registry import open_registry
from streams.settings import Settings

log = logging.getLogger(__name__)

READY_PROBE = "__ready_probe__"
"""The entity /ready looks up: unknown to the store, which must still answer."""


def load_champion(settings: Settings) -> LoadedModel:
    registry = open_registry(settings)
    version = registry.champion(settings.model_name)
    if version is None:
        raise ModelNotFound(settings.model_name, "champion")
    return registry.load(settings.model_name, version)


def initial_routing(settings: Settings) -> RoutingTable:
    """What the registry records (champion, canary, shadow); control may override it."""
    registry = open_registry(settings)
    state = registry.rollout(settings.model_name)
    if state is None:
        raise ModelNotFound(settings.model_name, "champion")
    try:
        return build_routing(registry, state)
    except ModelNotFound:
        raise
    except Exception:
        # A refused canary/shadow must not stop the champion from serving.
        log.exception("recorded rollout of %s refused; serving its champion only", state.model)
        return build_routing(registry, RolloutState(model=state.model, champion=state.champion))


def readiness(pipeline: ScoringPipeline, source: FeastOnlineSource) -> Health:
    """/ready of a scoring worker: partitions assigned, a model served, the store answers."""
    health = Health("score")

    def model() -> Check:
        manifest = pipeline.model.manifest
        return Check(True, f"{manifest.name} v{manifest.version} loaded")

    async def online_store() -> str:
        manifest = pipeline.model.manifest
        refs = manifest.feature_refs()
        if not refs:
            return "not needed (the model reads no features)"
        keys = list(manifest.entity_keys)
        # A real lookup, not the entity cache: forget the probe entity in every view.
        subsets = [c for n in range(1, len(keys) + 1) for c in itertools.combinations(keys, n)]
        source.invalidate([dict.fromkeys(c, READY_PROBE) for c in subsets])
        started = time.monotonic()
        await source.fetch(refs, [dict.fromkeys(keys, READY_PROBE)])
        return f"answered a lookup in {(time.monotonic() - started) * 1000:.0f} ms"

    health.add_check("model", model)
    health.add_probe("online_store", online_store)
    return health


async def _prepare(
    settings: Settings,
) -> tuple[ScoringPipeline, ControlFollower, FeatureUpdatesFollower, Health]:
    await wait_for_broker(settings, timeout_s=30)
    await ensure_topics(settings)
    routing = initial_routing(settings)
    model = routing.champion
    store = open_store(settings.feature_repo, online_store_config(settings))
    source = FeastOnlineSource(
        store,
        cache_ttl_s=settings.feature_cache_ttl_s,
        cache_max_entities=settings.feature_cache_max_entities,
    )
    refs = model.manifest.feature_refs()
    source.check(refs)
    # Types too, for every model served: a String feature fed to a float input would be
    # "missing" on every row, silently.
    check_references(
        store,
        {
            i.ref: i.dtype
            for served in routing.models()
            for i in served.manifest.inputs
            if i.source == "feature"
        },
    )
    # One real lookup: an unreachable online store fails here, not on the first event.
    await source.fetch(refs, [{key: "__startup_probe__" for key in model.manifest.entity_keys}])
    # Later swaps (control) set streamscore_model_loaded themselves: old 0, new 1.
    for variant, served in (
        ("champion", routing.champion),
        ("canary", routing.canary),
        ("shadow", routing.shadow),
    ):
        if served is not None:
            model_loaded(served.manifest, variant)
    log.info(
        "serving %s v%s (%d inputs, %d feature refs)",
        model.manifest.name,
        model.manifest.version,
        len(model.manifest.inputs),
        len(refs),
    )
    # Fails fast when a personal field is configured as a slice (labels, signals).
    pii = PiiPolicy.from_settings(
        settings, (f for served in routing.models() for f in served.manifest.pii_fields)
    )
    config = PipelineConfig(
        redact_dead_letter=pii.redact_dead_letter if pii.redact_deadletters else None,
        max_event_bytes=settings.max_event_bytes,
        deadletter_max_value_bytes=settings.deadletter_max_value_bytes,
        dedupe_window=settings.dedupe_window,
        enrich_retries=settings.enrich_retries,
        slice_fields=tuple(settings.slice_fields),
        feature_max_age=parse_max_age(settings.feature_max_age),
    )
    # Behind a circuit breaker: an outage answers features_unavailable at once, an empty
    # store is re-materialized (streams/online_guard.py).
    guarded = guard_online_source(
        settings,
        source,
        store,
        emit=lambda signal: pipeline.emit(signal),
        model=(model.manifest.name, model.manifest.version),
    )
    pipeline = ScoringPipeline(
        routing,
        guarded,
        config,
        monitor=ScoringMonitor(settings),
        served_features=settings.served_features_log,
    )
    follower = ControlFollower(settings, pipeline, open_registry(settings))
    # Before the first event: a restarted worker serves the current rollout at once.
    await follower.start()
    updates = FeatureUpdatesFollower(settings, source)
    await updates.start()
    return pipeline, follower, updates, readiness(pipeline, source)


def run_worker(settings: Settings) -> None:
    """Prepare (fail fast), then hand the loop to Faust until stopped."""
    loop, ready = worker_start(settings)
    pipeline, follower, updates, health = loop.run_until_complete(_prepare(settings))
    app = build_app(
        settings,
        pipeline,
        ready_file=ready,
        control=follower,
        feature_updates=updates,
        health=health,
    )
    run_worker_app(settings, app, loop, health, ready)
