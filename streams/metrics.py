"""Every Prometheus metric of streamscore, declared once, namespaced ``streamscore_``.

Labels stay low-cardinality: stage, model, version, variant, decision, outcome.
The worker serves them on ``metrics_host:metrics_port`` (:mod:`streams.health`).
"""

from __future__ import annotations

from importlib.metadata import version

from prometheus_client import Counter, Gauge, Histogram, values

# Importing Feast sets PROMETHEUS_MULTIPROCESS_DIR (feast/metrics.py, for its gunicorn
# feature server) and child processes inherit it; prometheus_client then keeps every
# value in an mmap file behind a lock and a pid check: 5 % of the scoring loop at
# saturation (py-spy; issue 8's note). A worker is one process: in-memory values, always.
# prometheus_client picks the class once, in ``values.ValueClass``, and offers no setting
# for it; the assignment is guarded to the versions it was tested with (pyproject's pin),
# and tests/unit/streams/test_metrics.py checks it through Feast's import.
_PROMETHEUS_TESTED = ("0.24.", "0.25.", "0.26.")
if not version("prometheus_client").startswith(_PROMETHEUS_TESTED) or not hasattr(
    values, "MutexValue"
):
    raise RuntimeError(
        f"prometheus_client {version('prometheus_client')} is untested with streams/metrics.py's "
        f"in-memory value override (tested: {', '.join(_PROMETHEUS_TESTED)}x)"
    )
values.ValueClass = values.MutexValue

_NS = "streamscore"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EVENTS_CONSUMED = Counter("events_consumed", "Events taken from the events topic.", namespace=_NS)
PREDICTIONS = Counter(
    "predictions",
    "Prediction records published.",
    ["model", "version", "variant", "decision"],
    namespace=_NS,
)
DEADLETTERS = Counter(
    "deadletters", "Events routed to the dead-letter topic.", ["stage"], namespace=_NS
)
FEATURES_MISSING = Counter(
    "features_missing",
    "Feature values that were missing and replaced by the manifest default.",
    ["model"],
    namespace=_NS,
)
PUBLISH_RETRIES = Counter(
    "publish_retries", "Publish attempts that failed and were retried.", namespace=_NS
)
PUBLISH_IN_FLIGHT = Gauge(
    "publish_batches_in_flight",
    "Micro-batches published whose outcomes the broker has not acknowledged yet.",
    namespace=_NS,
)
STAGE_SECONDS = Histogram(
    "stage_seconds",
    "Time per micro-batch spent in each pipeline stage.",
    ["stage"],
    namespace=_NS,
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "end_to_end_seconds",
    "From the event's Kafka timestamp to its prediction being scored.",
    namespace=_NS,
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "batch_size",
    "Events per micro-batch.",
    namespace=_NS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
WORKER_READY = Gauge(
    "worker_ready", "1 once the worker has joined its consumer group.", namespace=_NS
)


# --- issue 4: feedback loop and observability -------------------------------------------
# Labels stay bounded: `feature` is bounded by the model manifest's inputs, `statistic` by
# the monitoring code, `slice`/`value` by the configured slice fields and a per-field cap
# (streams.monitoring.quality.MAX_SLICE_VALUES), `topic`/`partition` by the topics we own.

CONSUMER_LAG = Gauge(
    "consumer_lag",
    "Records between a partition's high watermark and this worker's position in it, per "
    "consumer group (scoring <group>, <group>-feedback, <group>-features).",
    ["group", "topic", "partition"],
    namespace=_NS,
)
FEATURE_ROWS = Counter(
    "feature_rows",
    "Rows assembled for a model (the denominator of the missing-feature rate).",
    ["model"],
    namespace=_NS,
)
FEATURE_MISSING_BY_FEATURE = Counter(
    "feature_missing_by_feature",
    "Rows whose input was missing and replaced by the manifest default, per input reference.",
    ["model", "feature"],
    namespace=_NS,
)
FEATURE_AGE_SECONDS = Histogram(
    "feature_age_seconds",
    "Age of a served online feature value (event time minus the feature's timestamp).",
    ["view"],
    namespace=_NS,
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400),
)
MODEL_LOADED = Gauge(
    "model_loaded",
    "1 for each model version and variant this worker serves (0 once unloaded).",
    ["model", "version", "variant"],
    namespace=_NS,
)
DRIFT = Gauge(
    "drift",
    "Drift of an input (or 'score') against the reference profile, last closed window.",
    ["model", "version", "variant", "feature", "statistic"],
    namespace=_NS,
)
DRIFT_WINDOWS = Counter(
    "drift_windows",
    "Tumbling drift windows closed, by outcome (drift: a threshold was crossed).",
    ["model", "version", "variant", "outcome"],
    namespace=_NS,
)
QUALITY = Gauge(
    "quality",
    "Online quality over the sliding window of labelled predictions.",
    ["model", "version", "variant", "statistic"],
    namespace=_NS,
)
QUALITY_SLICE = Gauge(
    "quality_slice",
    "Online quality over the sliding window, per value of a configured event field.",
    ["model", "version", "variant", "slice", "value", "statistic"],
    namespace=_NS,
)
LABEL_JOINS = Counter(
    "label_joins",
    "Label-join outcomes: joined (a pair), waiting_label/waiting_prediction (kept for later), "
    "duplicate, expired_unlabelled, expired_label_only.",
    ["outcome"],
    namespace=_NS,
)
LABELLED_PREDICTIONS = Counter(
    "labelled_predictions",
    "Predictions joined with their label, per model version and variant.",
    ["model", "version", "variant"],
    namespace=_NS,
)
PREDICTIONS_AWAITING_LABEL = Gauge(
    "predictions_awaiting_label",
    "Entries in the label-join table of this worker's partitions.",
    namespace=_NS,
)
SIGNALS = Counter(
    "signals", "Records published to the signals topic, by kind.", ["kind"], namespace=_NS
)
FALLBACKS = Counter(
    "fallbacks",
    "Predictions decided by the fallback policy instead of the model, by reason.",
    ["model", "reason"],
    namespace=_NS,
)

# --- issue 3: model lifecycle (rollout through `control`, shadow, fallback) ---------------

SHADOW_FAILED = Counter(
    "shadow_failed",
    "Events the shadow model could not score (no shadow record; the main record is unaffected).",
    ["model"],
    namespace=_NS,
)
CONTROL_COMMANDS = Counter(
    "control_commands",
    "Rollout states read from the control topic, by outcome (applied, refused, ignored).",
    ["model", "outcome"],
    namespace=_NS,
)
CONTROL_APPLY_SECONDS = Histogram(
    "control_apply_seconds",
    "From a rollout command being issued to this worker serving it.",
    namespace=_NS,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ROLLOUT_SEQ = Gauge(
    "rollout_seq",
    "Sequence number of the rollout state this worker serves.",
    ["model"],
    namespace=_NS,
)
CANARY_PERCENT = Gauge(
    "canary_percent",
    "Share of entities routed to the canary, in percent.",
    ["model"],
    namespace=_NS,
)

# --- reliability (issue 9): the online store's circuit breaker --------------------------

ONLINE_STORE_CIRCUIT = Gauge(
    "online_store_circuit",
    "1 for the state the online store's circuit is in (closed, open, half_open, empty).",
    ["state"],
    namespace=_NS,
)
ONLINE_STORE_REMATERIALIZED = Counter(
    "online_store_rematerialized",
    "Times this worker loaded an online store found empty again, by outcome (ok, failed).",
    ["outcome"],
    namespace=_NS,
)

# --- issue 10: streaming features (the feature worker) and freshness ---------------------
# `view` is bounded by the feature repo's streaming views.

FEATURE_EVENTS = Counter(
    "feature_events",
    "Events seen by the feature worker per streaming view, by outcome: accepted, duplicate "
    "(already in the state: a redelivery), too_late (beyond the allowed lateness), invalid.",
    ["view", "outcome"],
    namespace=_NS,
)
FEATURE_ROWS_WRITTEN = Counter(
    "feature_rows_written",
    "Streaming feature rows written through the push source, by store (online, offline) and "
    "kind (new, corrected: written again because a late event changed it).",
    ["view", "store", "kind"],
    namespace=_NS,
)
FEATURE_WRITE_RETRIES = Counter(
    "feature_write_retries",
    "Failed writes to the feature store, retried with back-off.",
    ["view"],
    namespace=_NS,
)
FEATURE_WRITE_SECONDS = Histogram(
    "feature_write_seconds",
    "Time of one write (offline then online) of a batch's rows of a streaming view.",
    ["view"],
    namespace=_NS,
    buckets=_LATENCY_BUCKETS,
)
FEATURE_FRESHNESS_SECONDS = Histogram(
    "feature_freshness_seconds",
    "From an event's Kafka timestamp to its aggregates being readable in the online store.",
    ["view"],
    namespace=_NS,
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
)
FEATURES_STALE = Counter(
    "features_stale",
    "Served feature values treated as missing by the freshness rule: too_old (older than "
    "the view's max age at the event's time) or future (stamped after the event).",
    ["view", "reason"],
    namespace=_NS,
)
FEATURE_CACHE_INVALIDATIONS = Counter(
    "feature_cache_invalidations",
    "Entities dropped from the scoring worker's feature cache because the feature worker "
    "wrote them.",
    namespace=_NS,
)
