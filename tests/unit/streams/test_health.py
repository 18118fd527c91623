"""/healthz and /ready: what each check reports, over real HTTP beside /metrics."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from streams import health as health_module
from streams import metrics  # noqa: F401  (declares the metrics /metrics serves)
from streams.health import LOOP_STALL_S, PROBE_EVERY_S, Check, Health, serve
from tests.conftest import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A running event loop in a thread, as the worker's loop is beside the HTTP thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop

    async def settle() -> None:  # let cancelled probes finish before the loop closes
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*others, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(settle(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_alive_while_the_loop_turns() -> None:
    clock = Clock()
    health = Health("score", clock)
    assert health.alive()[0]
    clock.now += LOOP_STALL_S + 1
    ok, body = health.alive()
    assert not ok and body["loop_stalled_s"] > LOOP_STALL_S
    health.tick()
    assert health.alive()[0]


def test_ready_needs_partitions_and_every_check(loop: asyncio.AbstractEventLoop) -> None:
    clock = Clock()
    health = Health("score", clock)
    health.attach_loop(loop)
    model = Check(True, "eta v1 loaded")
    health.add_check("model", lambda: model)
    answers = ["answered a lookup in 2 ms"]

    async def probe() -> str:
        answer = answers[-1]
        if answer.startswith("!"):
            raise ConnectionError(answer[1:])
        return answer

    health.add_probe("online_store", probe)
    ok, body = health.ready()
    assert not ok and body["checks"]["partitions"]["ok"] is False
    assert "not assigned yet" in body["checks"]["partitions"]["detail"]
    assert body["checks"]["online_store"] == {"ok": True, "detail": "answered a lookup in 2 ms"}

    health.assigned(["events-1", "events-0"])
    ok, body = health.ready()
    assert ok and body["checks"]["partitions"]["detail"] == "2 assigned: events 0,1"
    health.assigned(["labels-0", "events-10", "events-2", "feedback-join-1"])
    detail = health.ready()[1]["checks"]["partitions"]["detail"]
    assert detail == "4 assigned: events 2,10; feedback-join 1; labels 0"

    # The probe runs at most every PROBE_EVERY_S; its failure names the error.
    answers.append("!redis at 127.0.0.1:1 refused")
    assert health.ready()[0]
    clock.now += PROBE_EVERY_S
    ok, body = health.ready()
    assert not ok
    assert body["checks"]["online_store"] == {
        "ok": False,
        "detail": "ConnectionError: redis at 127.0.0.1:1 refused",
    }
    health.rebalancing()
    assert health.ready()[1]["checks"]["partitions"]["ok"] is False


def test_a_probe_that_hangs_fails_within_its_timeout(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_module, "PROBE_TIMEOUT_S", 0.2)
    health = Health("score")
    health.attach_loop(loop)

    async def hangs() -> str:
        await asyncio.sleep(60)
        return "never"

    health.add_probe("online_store", hangs)
    health.assigned([])
    ok, body = health.ready()
    assert not ok and body["checks"]["online_store"]["detail"] == "no answer within 0.2s"


def test_without_a_running_loop_a_probe_fails() -> None:
    health = Health("score")

    async def probe() -> str:
        return "ok"

    health.add_probe("online_store", probe)
    health.assigned([])
    ok, body = health.ready()
    assert not ok and "event loop is not running" in body["checks"]["online_store"]["detail"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_one_port_serves_metrics_healthz_and_ready() -> None:
    health = Health("feedback")
    port = free_port()
    server = serve("127.0.0.1", port, health)
    assert server is not None
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True
        status, body = _get(base + "/ready")
        assert status == 503 and json.loads(body)["ready"] is False
        health.assigned(["labels-0"])
        status, body = _get(base + "/ready")
        assert status == 200 and json.loads(body)["checks"]["partitions"]["ok"]
        status, body = _get(base + "/metrics")
        assert status == 200 and b"streamscore_worker_ready" in body
    finally:
        server.shutdown()
        server.server_close()
    assert serve("127.0.0.1", 0, health) is None
