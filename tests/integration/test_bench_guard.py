"""CI guard: a quick ``streamscore bench`` that fails only on a gross regression.

It measures the minimal Faust forwarder (``framework``) and the real scoring worker
(``streamscore``, started as ``streamscore worker``) in the same run, on the same broker
and Redis, and judges streamscore against the forwarder and against a latency bound at
a light fixed load. The margins are wide on purpose: the machine is shared and noisy,
so only a same-run ratio or an order-of-magnitude bound says anything. The issue's
targets (0.7 x the forwarder, p99 <= 50 ms) are far tighter than this guard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.bench.harness import BenchConfig, run_bench
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.bench]

MIN_THROUGHPUT_VS_FRAMEWORK = 0.4
"""streamscore's saturated events/s must be at least this share of the forwarder's."""
LATENCY_RATE = 200.0
"""Offered events/s of the latency runs: light load for both subjects."""
MAX_P99_MS = 250.0
"""streamscore's p99 end-to-end latency at LATENCY_RATE must stay under this ..."""
MAX_P99_VS_FRAMEWORK = 3.0
"""... or, when the machine is so loaded that the forwarder itself misses that bound,
under this many times the forwarder's p99 in the same run (noise is not a regression)."""

# To judge another build of the worker by the same guard (e.g. a branch's venv).
WORKER_PYTHON = os.environ.get("BENCH_WORKER_PYTHON")


async def test_streamscore_is_not_grossly_slower_than_the_faust_forwarder(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    report = await run_bench(
        settings,
        ["framework", "streamscore"],
        BenchConfig.quick(
            latency_rate=LATENCY_RATE,
            worker_python=Path(WORKER_PYTHON) if WORKER_PYTHON else None,
        ),
        progress=print,
    )
    figures = json.dumps(report["results"], indent=1)
    print(figures)
    framework, streamscore = report["results"]["framework"], report["results"]["streamscore"]
    assert framework["status"] == "ok", f"the forwarder did not run: {framework['reason']}"
    assert streamscore["status"] == "ok", f"streamscore did not run: {streamscore['reason']}"

    ratio = streamscore["events_per_s"] / framework["events_per_s"]
    p99 = streamscore["p99_ms"]
    p99_bound = max(MAX_P99_MS, MAX_P99_VS_FRAMEWORK * (framework["p99_ms"] or 0.0))
    problems = []
    if ratio < MIN_THROUGHPUT_VS_FRAMEWORK:
        problems.append(
            f"throughput {streamscore['events_per_s']:.0f}/s is {ratio:.2f} x the forwarder's "
            f"{framework['events_per_s']:.0f}/s (at least {MIN_THROUGHPUT_VS_FRAMEWORK} x)"
        )
    if p99 is None or p99 > p99_bound:
        problems.append(
            f"p99 {p99} ms at {LATENCY_RATE:.0f} events/s (at most {p99_bound:.0f} ms; "
            f"the forwarder's p99: {framework['p99_ms']} ms)"
        )
    assert not problems, "streamscore regressed grossly: " + "; ".join(problems) + "\n" + figures
