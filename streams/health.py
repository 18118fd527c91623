"""The worker's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/ready`` on one port.

In: the worker's :class:`Health` (fed by the event loop and the rebalance hooks) and
``metrics_host:metrics_port``. Out: a daemon thread answering

- ``/metrics``: Prometheus text (:mod:`streams.metrics`);
- ``/healthz``: 200 while the process is alive and its event loop turns (a loop stuck
  for ``LOOP_STALL_S`` answers 503: restart it);
- ``/ready``: 200 once every readiness check passes, else 503; the JSON body names each
  check (``partitions``: the consumer group assigned this worker its partitions and
  recovery is over; ``model``: the served model is loaded; ``online_store``: a real
  lookup answered within the last probe), so an operator sees what is missing.

The server is a thread beside the event loop, so checks that need the loop (the
online-store probe) are handed to it with ``run_coroutine_threadsafe`` and a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

log = logging.getLogger(__name__)

LOOP_STALL_S = 30.0
"""/healthz fails when the event loop has not turned for this long."""

PROBE_EVERY_S = 5.0
"""An async readiness check (the online-store lookup) runs at most this often."""

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Health:
    """What ``/healthz`` and ``/ready`` report for one worker (thread-safe reads)."""

    def __init__(self, role: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.role = role
        self._clock = clock
        self._lock = threading.Lock()
        self._last_tick = clock()
        self._partitions: list[str] | None = None  # None: not assigned (or rebalancing)
        self._checks: dict[str, Callable[[], Check]] = {}
        # name -> (probe, [probed at, last result, lock held while probing])
        self._probes: dict[str, tuple[Callable[[], Awaitable[str]], list[Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- fed by the worker ---
    def tick(self) -> None:
        """The event loop turned (a timer calls this every second)."""
        self._last_tick = self._clock()

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def assigned(self, partitions: Iterable[str]) -> None:
        with self._lock:
            self._partitions = sorted(partitions)

    def rebalancing(self) -> None:
        with self._lock:
            self._partitions = None

    def add_check(self, name: str, check: Callable[[], Check]) -> None:
        """A synchronous readiness check (cheap, no I/O)."""
        self._checks[name] = check

    def add_probe(self, name: str, probe: Callable[[], Awaitable[str]]) -> None:
        """An async readiness check run on the worker's loop at most every
        ``PROBE_EVERY_S``: it returns a detail, or raises to fail."""
        self._probes[name] = (probe, [None, Check(False, "not probed yet"), threading.Lock()])

    # --- read by the HTTP thread ---
    def alive(self) -> tuple[bool, dict[str, Any]]:
        stalled = self._clock() - self._last_tick
        ok = stalled < LOOP_STALL_S
        return ok, {"alive": ok, "role": self.role, "loop_stalled_s": round(stalled, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Check] = {}
        with self._lock:
            partitions = self._partitions
        checks["partitions"] = (
            Check(False, "not assigned yet (joining the consumer group or rebalancing)")
            if partitions is None
            else Check(True, f"{len(partitions)} assigned: {_by_topic(partitions) or 'none'}")
        )
        for name, check in self._checks.items():
            checks[name] = check()
        for name in self._probes:
            checks[name] = self._probe(name)
        ok = all(c.ok for c in checks.values())
        body = {
            "ready": ok,
            "role": self.role,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }
        return ok, body

    def _probe(self, name: str) -> Check:
        probe, cached = self._probes[name]
        at, last, running = cached
        now = self._clock()
        if at is not None and now - at < PROBE_EVERY_S:
            return last
        if not running.acquire(blocking=False):
            return last  # another request is probing right now
        try:
            result = self._run_probe(probe)
        finally:
            running.release()
        cached[:2] = [now, result]
        return result

    def _run_probe(self, probe: Callable[[], Awaitable[str]]) -> Check:
        if self._loop is None or not self._loop.is_running():
            return Check(False, "the worker's event loop is not running")
        future = asyncio.run_coroutine_threadsafe(_awaited(probe), self._loop)
        try:
            return Check(True, future.result(timeout=PROBE_TIMEOUT_S))
        except TimeoutError:
            future.cancel()
            return Check(False, f"no answer within {PROBE_TIMEOUT_S:g}s")
        except Exception as exc:  # the probe's failure is the check's answer
            return Check(False, f"{type(exc).__name__}: {exc}")


def _by_topic(partitions: list[str]) -> str:
    """``["events-0", "events-1", "labels-0"]`` -> ``"events 0,1; labels 0"``."""
    topics: dict[str, list[str]] = {}
    for name in partitions:
        topic, _, number = name.rpartition("-")
        topics.setdefault(topic, []).append(number)
    return "; ".join(
        f"{topic} {','.join(sorted(numbers, key=int))}" for topic, numbers in topics.items()
    )


async def _awaited(probe: Callable[[], Awaitable[str]]) -> str:
    return await probe()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Scrapes and probes every few seconds: not worth a log line each."""


def health_app(health: Health) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: /healthz and /ready from ``health``, everything else Prometheus'."""
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/ready"):
            ok, body = health.alive() if path == "/healthz" else health.ready()
            data = json.dumps(body).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve(host: str, port: int, health: Health) -> _Server | None:
    """Serve /metrics, /healthz and /ready on ``host:port`` in a daemon thread (0: none)."""
    if not port:
        return None
    server = make_server(host, port, health_app(health), _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="http-health", daemon=True).start()
    log.info("serving /metrics, /healthz, /ready on http://%s:%d", host, port)
    return server
