"""Plain aiokafka helpers for the CLI and start-up: reach the broker, create topics,
produce and read records. The scoring path itself runs in Faust (:mod:`streams.app`).

In: :class:`Settings`. Out: aiokafka clients configured for the cluster (plaintext,
SASL or TLS, from the one mapping :func:`kafka_security`), topics that exist, or a
:class:`BrokerUnavailable` that says which address did not answer, or a
:class:`KafkaSecurityError` that says which security setting the cluster refused.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from aiokafka.structs import RecordMetadata, TopicPartition
from pydantic import SecretStr

from streams.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    def __init__(self, bootstrap: str, waited_s: float, cause: BaseException | None) -> None:
        super().__init__(
            f"no Kafka broker answered at {bootstrap} within {waited_s:.0f}s"
            + (f" (last error: {cause!r})" if cause else "")
        )


class KafkaSecurityError(BrokerUnavailable):
    """The cluster refused us, or our security settings cannot work: waiting will not help.

    The message says which setting to look at; it never carries a secret. A kind of
    :class:`BrokerUnavailable`, so every caller that reports that reports this too.
    """

    def __init__(self, message: str) -> None:
        RuntimeError.__init__(self, message)


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of streamscore connects: the one mapping from settings,
    adapted for aiokafka (:func:`aiokafka_security`) and Faust
    (:func:`streams.faust_app.faust_credentials`)."""

    protocol: str
    ssl_context: ssl.SSLContext | None
    sasl_mechanism: str | None
    username: str | None
    password: SecretStr | None = field(repr=False)


def kafka_security(settings: Settings) -> KafkaSecurity:
    """Check the security settings and build the TLS context once; fail with the setting."""
    protocol = settings.security_protocol
    sasl = protocol.startswith("SASL")
    if protocol == "SASL_PLAINTEXT" and not settings.sasl_allow_plaintext:
        raise KafkaSecurityError(
            "STREAMSCORE_SECURITY_PROTOCOL=SASL_PLAINTEXT sends SASL credentials without TLS; "
            "use SASL_SSL, or set STREAMSCORE_SASL_ALLOW_PLAINTEXT=true on a trusted network"
        )
    if sasl and (not settings.sasl_username or settings.sasl_password is None):
        raise KafkaSecurityError(
            f"STREAMSCORE_SECURITY_PROTOCOL={protocol} needs STREAMSCORE_SASL_USERNAME and "
            "STREAMSCORE_SASL_PASSWORD (or STREAMSCORE_SASL_PASSWORD_FILE)"
        )
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        if settings.ssl_cafile is not None and not settings.ssl_cafile.is_file():
            raise KafkaSecurityError(f"STREAMSCORE_SSL_CAFILE {settings.ssl_cafile} is not a file")
        context = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
        context.check_hostname = settings.ssl_check_hostname
    return KafkaSecurity(
        protocol=protocol,
        ssl_context=context,
        sasl_mechanism=settings.sasl_mechanism if sasl else None,
        username=settings.sasl_username if sasl else None,
        password=settings.sasl_password if sasl else None,
    )


def aiokafka_security(security: KafkaSecurity) -> dict[str, Any]:
    """The aiokafka adapter of :func:`kafka_security`."""
    kwargs: dict[str, Any] = {"security_protocol": security.protocol}
    if security.ssl_context is not None:
        kwargs["ssl_context"] = security.ssl_context
    if security.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = security.sasl_mechanism
        kwargs["sasl_plain_username"] = security.username
        kwargs["sasl_plain_password"] = (
            security.password.get_secret_value() if security.password else None
        )
    return kwargs


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by every aiokafka client we create."""
    return {"bootstrap_servers": settings.bootstrap_servers} | aiokafka_security(
        kafka_security(settings)
    )


def _refusal(settings: Settings, exc: BaseException) -> KafkaSecurityError | None:
    """A connection error that waiting cannot cure, as a message that names the setting."""
    where = settings.bootstrap_servers
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KafkaSecurityError(
            f"the TLS certificate of the broker at {where} is not trusted "
            f"({exc.verify_message}); set STREAMSCORE_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return KafkaSecurityError(
            f"TLS with the broker at {where} failed ({exc.reason}); is "
            f"STREAMSCORE_SECURITY_PROTOCOL={settings.security_protocol} what its listener speaks?"
        )
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return KafkaSecurityError(
            f"the broker at {where} refused SASL {settings.sasl_mechanism} authentication of "
            f"user {settings.sasl_username!r}: check STREAMSCORE_SASL_USERNAME and the password"
        )
    if isinstance(exc, UnsupportedSaslMechanismError | IllegalSaslStateError):
        return KafkaSecurityError(
            f"the broker at {where} does not accept SASL {settings.sasl_mechanism} on this "
            f"listener: check STREAMSCORE_SASL_MECHANISM and STREAMSCORE_SECURITY_PROTOCOL"
        )
    return None


async def _diagnose(settings: Settings) -> KafkaSecurityError | None:
    """Why the first bootstrap address refused us, if it was security.

    aiokafka's bootstrap reports every failure as "Unable to bootstrap" and only logs
    the cause; one direct connection with the same settings raises the cause itself.
    """
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        conn = await create_conn(
            host.strip("[]"),
            int(port),
            request_timeout_ms=5000,
            **aiokafka_security(kafka_security(settings)),
        )
    except (KafkaError, OSError, ValueError) as exc:
        return _refusal(settings, exc)
    conn.close()
    return None


def _speaks_tls(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Does the first bootstrap address complete a TLS handshake (certificate unchecked)?

    Asked only when a plaintext client was cut off: a TLS listener closes a connection
    whose first bytes are a Kafka request, which otherwise looks like a broker still
    starting.
    """
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return tls.version() is not None
    except (OSError, ValueError):
        return False


async def wait_for_broker(settings: Settings, timeout_s: float = 60.0) -> None:
    """Return once the cluster answers a metadata request; fail fast with the address.

    Security refusals (an untrusted certificate, a wrong password, plaintext spoken to a
    TLS listener) raise :class:`KafkaSecurityError` at once instead of waiting.
    """
    kafka_security(settings)  # bad settings fail before any connection
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    # aiokafka logs every refused connection at ERROR; while we wait that is expected.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await _poll_metadata(settings, deadline)
        return
    except (KafkaError, OSError) as exc:
        last = exc
    finally:
        quiet.setLevel(level)
    raise BrokerUnavailable(settings.bootstrap_servers, timeout_s, last)


async def _poll_metadata(settings: Settings, deadline: float) -> None:
    last: BaseException | None = None
    plaintext = settings.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT")
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            refusal = _refusal(settings, exc) or await _diagnose(settings)
            if refusal is not None:
                raise refusal from None
            # A refused TCP connection is a broker not up yet; anything else on a
            # plaintext client may be a TLS listener cutting it off.
            if plaintext and await asyncio.to_thread(_speaks_tls, settings.bootstrap_servers):
                raise KafkaSecurityError(
                    f"the broker at {settings.bootstrap_servers} speaks TLS but "
                    f"STREAMSCORE_SECURITY_PROTOCOL={settings.security_protocol}: "
                    "use SSL or SASL_SSL (and STREAMSCORE_SSL_CAFILE)"
                ) from None
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise last or TimeoutError("broker did not answer")


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the streamscore topics that do not exist yet; return all of their names."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = settings.all_topics()
        control = settings.topic("control")
        missing = [
            NewTopic(
                name,
                num_partitions=1 if name == control else settings.partitions,
                replication_factor=1,
                # Rollout commands keyed by model name: only the latest per model matters.
                topic_configs={"cleanup.policy": "compact"} if name == control else {},
            )
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            log.info("created topics %s", [t.name for t in missing])
        return wanted
    finally:
        await admin.close()


async def existing_topics(settings: Settings) -> list[str]:
    """The streamscore topics that exist on the cluster, in settings order (nothing created)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [name for name in settings.all_topics() if name in existing]


async def committed_lag(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    """Per partition of ``topic``: end offset minus the offset ``group`` committed, read
    from the broker (not from a worker's own view), so a partition whose commits are
    stuck shows its lag even while the worker reports none. ``None``: nothing committed.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    # A group-less consumer of the topic holds all of its partitions once started.
    consumer = reader(settings, topic)
    await consumer.start()
    try:
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    lag: dict[int, int | None] = {}
    for tp in tps:
        done = committed.get(tp)
        lag[tp.partition] = (
            ends[tp] - done.offset if done is not None and done.offset >= 0 else None
        )
    return lag


FOLLOW_METADATA_WAIT_S = 10.0
"""How long :func:`follow` waits for a topic's partitions to show in the metadata."""


class TopicUnreadable(RuntimeError):
    """A topic every worker must follow cannot be read: fail at start-up, not hang."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic} has no partitions this worker may see: it does not exist, or the "
            "worker's principal lacks Describe and Read on it (README, Security: ACL table)"
        )


async def follow(
    settings: Settings, topic: str, *, from_end: bool
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started group-less consumer holding every partition of ``topic`` (for readers
    every worker needs whole, like ``control`` and ``feature-updates``), positioned at
    the beginning or, with ``from_end``, at the end, resolved now: a record written after
    this returns is read. Raises :class:`TopicUnreadable` naming the topic and the ACL.

    A consumer named with the topic is assigned all of its partitions once its metadata
    arrives (``topics()`` would fetch metadata into a new object, not the client's).
    """
    # The start comes from the reset strategy, not from a seek_to_*() after start: aiokafka
    # 0.14 applies the answer of a reset already in flight (the default, earliest) to a
    # seek_to_end() made meanwhile, so the follower would replay the topic.
    consumer = reader(settings, topic, auto_offset_reset="latest" if from_end else "earliest")
    try:
        await consumer.start()
    except TopicAuthorizationFailedError as exc:
        await consumer.stop()
        raise TopicUnreadable(topic) from exc
    deadline = time.monotonic() + FOLLOW_METADATA_WAIT_S
    while not (tps := sorted(consumer.assignment(), key=lambda tp: tp.partition)):
        if time.monotonic() > deadline:
            await consumer.stop()
            raise TopicUnreadable(topic)
        await asyncio.sleep(0.2)
    # Resolve the positions now, not lazily at the first fetch, or a record that lands
    # between here and that fetch would be skipped (from the end) or counted twice.
    for tp in tps:
        await consumer.position(tp)
    return consumer, tps


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    kwargs = client_kwargs(settings) | {"acks": "all", "linger_ms": 5} | overrides
    return AIOKafkaProducer(**kwargs)


def keyed_records(
    values: Sequence[dict[str, Any]], key_field: str | None
) -> list[tuple[bytes | None, bytes]]:
    """``(key, value)`` records: each value encoded, keyed by its ``key_field`` (unkeyed
    where it is missing or ``key_field`` is None), so one entity's events share a partition."""
    from streams.codec import encode

    return [
        (
            None
            if key_field is None or value.get(key_field) is None
            else str(value[key_field]).encode(),
            encode(value),
        )
        for value in values
    ]


async def send_records(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes]],
    rate: float | None = None,
) -> list[RecordMetadata]:
    """Send ``(key, value)`` records, paced to ``rate`` per second if given; return once
    the broker acknowledged all of them, with their metadata in order."""
    client = producer(settings)
    await client.start()
    try:
        started = time.monotonic()
        futures = []
        for i, (key, value) in enumerate(records):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await client.send(topic, value=value, key=key))
        return list(await asyncio.gather(*futures))
    finally:
        await client.stop()


def reader(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A group-less consumer from the beginning: for tail, audit and tests."""
    kwargs = (
        client_kwargs(settings)
        | {"group_id": None, "auto_offset_reset": "earliest", "enable_auto_commit": False}
        | overrides
    )
    return AIOKafkaConsumer(*topics, **kwargs)
