"""Every Prometheus metric of streamscore, declared once, namespaced ``streamscore_``.

Labels stay low-cardinality: stage, model, version, variant, decision, outcome.
The worker serves them on ``metrics_host:metrics_port``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

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
MODEL_INFO = Info("model", "The model this worker serves.", namespace=_NS)


def serve(host: str, port: int) -> None:
    """Expose /metrics; port 0 disables it."""
    if port:
        start_http_server(port, addr=host)
