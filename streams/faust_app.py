"""How streamscore builds a Faust app: one place for broker, credentials and group timing.

In: :class:`Settings` and an app id (the consumer group). Out: a configured
``faust.App`` (with the offset fixes of :mod:`streams.faust_fixes` applied), raw-bytes
topics, and a readiness hook. Used by every worker role: scoring (:mod:`streams.app`), feedback
(:mod:`streams.monitoring.runner`) and features (:mod:`streams.features_worker`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TopicT

from streams import faust_fixes, metrics
from streams.health import Health
from streams.kafka import KafkaSecurity, kafka_security
from streams.settings import Settings

log = logging.getLogger(__name__)


def faust_credentials(security: KafkaSecurity) -> Any:
    """The Faust adapter of :func:`streams.kafka.kafka_security` (None: plaintext)."""
    if security.sasl_mechanism is not None:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password.get_secret_value() if security.password else "",
            ssl_context=security.ssl_context,  # None: SASL_PLAINTEXT, if explicitly allowed
            mechanism=security.sasl_mechanism,
        )
    if security.ssl_context is not None:
        return faust.SSLCredentials(security.ssl_context)
    return None


def make_app(settings: Settings, app_id: str, table_store: str | None = None) -> faust.App:
    """A Faust app on the configured cluster; at-least-once settings, short group timing.
    Its tables live in ``table_store`` (default: the ``table_store`` setting)."""
    faust_fixes.apply()
    # One directory per app id (a role's group): workers of a role on one host share it,
    # each opening the RocksDB of the partitions it holds (Faust retries a locked one).
    datadir = settings.home / "tables" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(kafka_security(settings)),
        store=f"{table_store or settings.table_store}://",
        datadir=datadir,
        autodiscover=False,
        web_enabled=False,
        # The assignor leader topic is a Faust-internal extra that streamscore never uses.
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        producer_compression_type=(
            None if settings.producer_compression == "none" else settings.producer_compression
        ),
        stream_publish_on_commit=False,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        processing_guarantee=settings.processing_guarantee,
    )


def changelog_topic_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of a Faust table's changelog (Faust makes it compacted): segments
    that roll, so compaction bounds what a restart replays, and tombstones kept long
    enough for any restore (``changelog_segment_s``, ``changelog_tombstone_retention_s``).
    Applied when Faust creates the topic; an existing changelog keeps its configs (alter
    it with ``kafka-configs --alter --entity-type topics``)."""
    return {
        "segment.ms": str(int(settings.changelog_segment_s * 1000)),
        "delete.retention.ms": str(int(settings.changelog_tombstone_retention_s * 1000)),
    }


def raw_topic(app: faust.App, name: str, partitions: int, internal: bool = False) -> TopicT:
    """A topic whose keys and values stay bytes: the codec is ours (streams.codec)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=internal,
    )


def ready_file(settings: Settings, pid: int | None = None) -> Path:
    """The file a worker of any role writes once ready (``up`` and the tests watch it)."""
    return settings.home / "run" / f"worker-{pid or os.getpid()}.ready"


def worker_start(settings: Settings) -> tuple[asyncio.AbstractEventLoop, Path]:
    """What every worker role does first: its log lines at ``log_level`` (the CLI set
    WARNING already; start-up lines must show), its own event loop, and its ready file,
    removed until this process is ready. Returns ``(loop, ready_file)``."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ready = ready_file(settings)
    ready.unlink(missing_ok=True)
    return loop, ready


def mark_ready_on_rebalance(
    app: faust.App, ready_file: Path | None, health: Health | None = None
) -> None:
    """Set the ready gauge and write ``ready_file`` once a rebalance's recovery is over.

    Faust sends ``on_rebalance_complete`` at the start of its recovery's last step, before
    it resumes the stream partitions and seeks them to their committed offsets; records
    produced in that window raced the seek (a restarted feedback worker lost one label
    that arrived there, tests/integration/test_feedback_kafka.py). Ready therefore waits
    for the recovery's ``completed`` event, which Faust sets after the seek.
    """
    pending: set[asyncio.Task[None]] = set()

    async def when_recovered() -> None:
        await cast(Any, app.tables).recovery.completed.wait()
        metrics.WORKER_READY.set(1)
        if health is not None:
            health.assigned(f"{tp.topic}-{tp.partition}" for tp in app.assignor.assigned_actives())
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            # A few bytes once per rebalance; not worth a thread.
            ready_file.write_text("ready\n")  # noqa: ASYNC240
        log.info("ready: assigned %s", sorted(str(tp) for tp in app.assignor.assigned_actives()))

    # mode types signal receivers more narrowly than it calls them.
    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def mark_ready(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # Not awaited here: Faust awaits this receiver before it seeks and sets completed.
        task = asyncio.ensure_future(when_recovered())
        pending.add(task)
        task.add_done_callback(pending.discard)

    if health is None:
        return

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def not_ready(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        health.rebalancing()

    @app.timer(interval=1.0)
    async def loop_turns() -> None:
        health.tick()


def run_worker_app(
    settings: Settings,
    app: faust.App,
    loop: asyncio.AbstractEventLoop,
    health: Health,
    ready_file: Path | None = None,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/ready``, then hand the loop to Faust (with
    repeated log lines rate-limited) until SIGTERM/SIGINT; every worker role ends here."""
    from streams import lograte
    from streams.health import serve

    health.attach_loop(loop)
    serve(settings.metrics_host, settings.metrics_port, health)
    worker = lograte.Worker(
        app,
        loop=loop,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        log_burst=settings.log_repeat_burst,
        log_period_s=settings.log_repeat_period_s,
    )
    try:
        worker.execute_from_commandline()
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
