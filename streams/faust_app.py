"""How streamscore builds a Faust app: one place for broker, credentials and group timing.

In: :class:`Settings` and an app id (the consumer group). Out: a configured
``faust.App`` (with the offset fixes of :mod:`streams.faust_fixes` applied), raw-bytes
topics, and a readiness hook. Used by the scoring worker (:mod:`streams.app`) and the
feedback worker (:mod:`streams.monitoring.runner`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TopicT

from streams import faust_fixes, metrics
from streams.health import Health
from streams.settings import Settings

log = logging.getLogger(__name__)


def credentials(settings: Settings) -> Any:
    """Faust credentials for an external cluster, or None for plaintext."""
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def make_app(settings: Settings, app_id: str) -> faust.App:
    """A Faust app on the configured cluster; at-least-once settings, short group timing."""
    faust_fixes.apply()
    return faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=credentials(settings),
        store="memory://",
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
    )


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
