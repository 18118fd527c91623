"""The feedback loop on Apache Kafka: a label join that survives a restart, online
quality equal to offline, and /metrics that promtool accepts.

A real feedback worker process (``streamscore worker --role feedback``) joins
``predictions`` with ``labels``. Before the restart it holds predictions still waiting
for their label and labels still waiting for their prediction; after it, only the
Faust table's changelog can pair them. Every wait fails loudly when its figure is not
reached, and pairs are reconciled by event id, so a lost or doubled pair fails the test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from features.fraud_data import demo_events, load_entities
from streams import stack
from streams.cli.produce import produce_records
from streams.codec import decode, encode
from streams.faust_app import ready_file
from streams.kafka import producer, reader
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def promtool_check_metrics(text: str) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def feedback_runner(tmp_path: Path) -> Iterator[Callable[[Settings], int]]:
    started: list[int] = []

    def start(settings: Settings) -> int:
        env = stack.child_env(settings)
        log = tmp_path / f"feedback-{len(started)}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--role", "feedback"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        started.append(proc.pid)
        deadline = time.monotonic() + 90
        while not ready_file(settings, proc.pid).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"feedback worker not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return proc.pid

    yield start
    for pid in started:
        stack.stop_pid(pid)


def predictions(ids: list[str], scores: np.ndarray) -> list[tuple[bytes, bytes]]:
    return [
        (
            b"u1",
            encode(
                {
                    "event_id": event_id,
                    "entity": {"user_id": "u1"},
                    "model": "fraud",
                    "version": "1",
                    "variant": "champion",
                    "score": float(score),
                    "decision": "review" if score >= 0.5 else "approve",
                    "fallback": None,
                    "features_missing": [],
                    "event_time": "2026-11-21T10:00:00.000Z",
                    "scored_at": "2026-11-21T10:00:00.010Z",
                    "latency_ms": 10.0,
                }
            ),
        )
        for event_id, score in zip(ids, scores, strict=True)
    ]


def labels(ids: list[str], truth: dict[str, int]) -> list[tuple[bytes, bytes]]:
    # keyed by another entity than the predictions: the join must not depend on keys
    return [
        (f"k{i}".encode(), encode({"event_id": e, "label": truth[e], "label_time": "x"}))
        for i, e in enumerate(ids)
    ]


async def send(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    client = producer(settings)
    await client.start()
    try:
        futures = [await client.send(settings.topic(topic), value=v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await client.stop()


async def read_all(settings: Settings, topic: str, expect: int, timeout_s: float = 60) -> list:
    """At least ``expect`` records of ``topic`` (fewer only if the timeout passed)."""
    consumer = reader(settings, settings.topic(topic))
    await consumer.start()
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(decode(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


async def read_ids(
    settings: Settings, topic: str, ids: set[str], timeout_s: float = 60, grace_s: float = 3
) -> list:
    """Every record of ``topic`` until each of ``ids`` was seen, then ``grace_s`` more, so a
    record emitted twice is read too (a count of records would stop at the first N)."""
    consumer = reader(settings, settings.topic(topic))
    await consumer.start()
    out: list = []
    deadline = time.monotonic() + timeout_s
    quiet_until: float | None = None
    try:
        while time.monotonic() < (quiet_until or deadline):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(decode(r.value) for r in records)
            if quiet_until is None and ids <= {r["event_id"] for r in out}:
                quiet_until = time.monotonic() + grace_s
    finally:
        await consumer.stop()
    return out


async def wait_for_metric(port: int, name: str, at_least: float, **labels: str) -> str:
    """The /metrics text once ``name{labels}`` reached ``at_least``; fails after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        text = scrape(port)
        value = metric(text, name, **labels)
        if value >= at_least:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} is {value} after 60 s, expected at least {at_least}")
        await asyncio.sleep(0.3)


def offline(pairs: list[tuple[float, int]]) -> dict[str, float]:
    s = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    return {
        "roc_auc": roc_auc_score(y, s),
        "brier": brier_score_loss(y, s),
        "precision": precision_score(y, s >= 0.5),
        "recall": recall_score(y, s >= 0.5),
        "pairs": float(len(y)),
    }


async def test_label_join_survives_a_restart_and_quality_equals_offline(
    settings_factory: Callable[..., Settings],
    feedback_runner: Callable[[Settings], int],
) -> None:
    port = free_port()
    settings = settings_factory(
        metrics_port=port,
        quality_emit_every=1,
        quality_min_pairs=10,
        quality_window_pairs=10_000,
        monitor_slice_fields="",
    )
    rng = np.random.default_rng(5)
    ids = [f"ev-{i}" for i in range(300)]
    truth = {e: int(rng.random() < 0.3) for e in ids}
    score = {e: float(np.clip(rng.normal(0.3 + 0.35 * truth[e], 0.2), 0, 1)) for e in ids}
    a, b, c = ids[:100], ids[100:220], ids[220:]  # A: both before; B: label after; C: reversed

    pid = feedback_runner(settings)
    joins = "streamscore_label_joins_total"
    await send(settings, "predictions", predictions(a + b, np.array([score[e] for e in a + b])))
    # every prediction in the table before the first label: the figures below are exact
    await wait_for_metric(port, joins, len(a + b), outcome="waiting_label")
    await send(settings, "labels", labels(a + c, truth))
    await wait_for_metric(port, joins, len(a), outcome="joined")
    text = await wait_for_metric(port, joins, len(c), outcome="waiting_prediction")
    assert metric(text, joins, outcome="joined") == len(a)
    assert metric(text, joins, outcome="waiting_label") == len(a + b)
    assert metric(text, joins, outcome="waiting_prediction") == len(c)
    assert metric(text, joins, outcome="duplicate") == 0
    assert metric(text, joins, outcome="invalid") == 0
    promtool_check_metrics(text)  # the feedback worker's /metrics, with every family in use

    stack.stop_pid(pid)  # restart: B's predictions and C's labels live only in the table
    feedback_runner(settings)
    await send(settings, "labels", labels(b, truth))
    await send(settings, "predictions", predictions(c, np.array([score[e] for e in c])))

    labelled = await read_ids(settings, "labelled", set(ids))
    assert sorted({r["event_id"] for r in labelled}) == sorted(ids), "a pair was lost"
    assert all(r["label"] == truth[r["event_id"]] for r in labelled)
    assert len(labelled) == len(ids), "a pair was emitted twice"

    signals = await read_all(settings, "signals", expect=len(a) - 9 + len(b + c) - 9)
    quality = [s for s in signals if s["kind"] == "quality"]
    before = next(s for s in quality if s["details"]["pairs"] == len(a))
    after = next(s for s in quality if s["details"]["pairs"] == len(b + c))
    for signal, part in ((before, a), (after, b + c)):
        expected = offline([(score[e], truth[e]) for e in part])
        for name, value in expected.items():
            assert signal["details"][name] == pytest.approx(value, abs=1e-12), name


async def test_scoring_worker_metrics_pass_promtool(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
) -> None:
    port = free_port()
    settings = settings_factory(metrics_port=port)
    worker_factory(settings)
    users, merchants = load_entities(settings.data_dir)
    events = demo_events(50, seed=9, users=users, merchants=merchants)
    await produce_records(settings, [(e["user_id"].encode(), encode(e)) for e in events], None)
    text = await wait_for_metric(port, "streamscore_predictions_total", len(events))
    assert metric(text, "streamscore_predictions_total") == len(events)
    promtool_check_metrics(text)


async def test_scoring_worker_monitors_drift_and_quality(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
) -> None:
    """A stock worker: drift of a shifted input within one window, none before; labels
    joined into online quality per model version and variant; the served-feature log."""
    from features.fraud_data import demo_stream
    from streams.codec import encode
    from streams.kafka import keyed_records

    port = free_port()
    window = 500
    settings = settings_factory(
        metrics_port=port,
        drift_window_events=window,
        quality_emit_every=100,
        quality_min_pairs=50,
        served_features_log=True,
    )
    worker_factory(settings)
    # the label join runs in the feedback worker, with its own /metrics
    feedback_port = free_port()
    worker_factory(settings.model_copy(update={"metrics_port": feedback_port}), role="feedback")
    events, labels = demo_stream(settings.data_dir, 2 * window, seed=3)
    normal = keyed_records(events, "user_id")
    truth = [(key, encode(label)) for (key, _), label in zip(normal, labels, strict=True)]
    drifted, _ = demo_stream(settings.data_dir, window, seed=4, drift={"amount": 3.0})
    shifted = keyed_records(drifted, "user_id")
    await produce_records(settings, normal, None)
    await produce_records(settings, truth, None, topic="labels")
    quality_text = await wait_for_metric(
        feedback_port, "streamscore_labelled_predictions_total", 2 * window
    )
    text = await wait_for_metric(port, "streamscore_drift_windows_total", 2)
    assert metric(text, "streamscore_drift_windows_total", outcome="stable") == 2
    await produce_records(settings, shifted, None)
    text = await wait_for_metric(port, "streamscore_drift_windows_total", 3)

    # 10 quality signals (every 100 of 1000 pairs) and amount and score, PSI and KS
    signals = await read_all(settings, "signals", expect=14)
    drift = [s for s in signals if s["kind"] == "drift"]
    assert drift, "no drift signal for the shifted window"
    assert {s["window"]["index"] for s in drift} == {2}, "normal windows raised drift"
    assert {s["feature"] for s in drift} == {"amount", "score"}
    assert metric(text, "streamscore_drift", feature="amount", statistic="psi") > 0.2
    quality = [s for s in signals if s["kind"] == "quality"]
    assert {(s["model"], s["version"], s["variant"]) for s in quality} == {
        ("fraud", "1", "champion")
    }
    assert quality[-1]["details"]["pairs"] == 2 * window
    assert quality[-1]["value"] > 0.75, "the example model ranks replayed traffic well"
    assert metric(quality_text, "streamscore_quality", statistic="roc_auc") == quality[-1]["value"]
    served = await read_all(settings, "features_served", expect=3 * window)
    assert len(served) == 3 * window
    promtool_check_metrics(text)
    promtool_check_metrics(quality_text)
    # the slices the feedback worker reports came in the prediction records
    slices = quality[-1]["details"]["slices"]
    assert {sl["slice"] for sl in slices} == {"channel", "country"}
    assert "__missing__" not in {sl["value"] for sl in slices}
