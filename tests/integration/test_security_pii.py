"""The PII canary: personal data never leaves the pipeline raw, except where the
contract puts it (a prediction's ``entity`` and key: the product's output).

A canary value is seeded in every personal field (``user_id``, and ``email``, an extra
field the settings name) of good events and of bad ones (malformed JSON, missing and
wrongly typed fields, a ``user_id`` of the wrong type). A scoring and a feedback worker
run with dead-letter redaction on; then every output is searched for the canary:
every record of every output topic (key, value, headers; for the prediction topics
and the label join, everything but ``entity`` and the key), the workers' logs, both
``/metrics`` pages and ``status --json``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams import stack
from streams.codec import encode
from streams.kafka import existing_topics, reader, send_records
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

# Outputs that carry the entity by contract (ARCHITECTURE: prediction record, keyed by
# entity id): their keys and ``entity`` objects are exempt, everything else is searched.
ENTITY_TOPICS = ("predictions", "predictions_shadow", "labelled", "feedback_join")


def without_entity(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_entity(v) for k, v in value.items() if k != "entity"}
    if isinstance(value, list):
        return [without_entity(v) for v in value]
    return value


def canary_events(canary: str, n: int) -> list[bytes]:
    good = [
        encode(
            {
                "event_id": f"pii-{i}",
                "event_time": "2026-11-21T10:00:00Z",
                "user_id": f"{canary}-u{i}",
                "email": f"{canary}@example.org",
                "merchant_id": "m0001",
                "amount": 10.0 + i,
                "currency": "EUR",
                "channel": "web",
                "country": "DE",
            }
        )
        for i in range(n)
    ]
    bad = [
        # malformed JSON
        f'{{"event_id": "pii-bad-1", "user_id": "{canary}-b1", "email": "{canary}@x'.encode(),
        # missing amount
        encode({"event_id": "pii-bad-2", "event_time": "2026-11-21T10:00:00Z",
                "user_id": f"{canary}-b2", "email": canary, "merchant_id": "m0001",
                "currency": "EUR", "channel": "web", "country": "DE"}),
        # amount of the wrong type
        encode({"event_id": "pii-bad-3", "event_time": "2026-11-21T10:00:00Z",
                "user_id": f"{canary}-b3", "email": canary, "merchant_id": "m0001",
                "amount": canary, "currency": "EUR", "channel": "web", "country": "DE"}),
        # user_id of the wrong type
        encode({"event_id": "pii-bad-4", "event_time": "2026-11-21T10:00:00Z",
                "user_id": {"id": canary}, "email": canary, "merchant_id": "m0001",
                "amount": 3, "currency": "EUR", "channel": "web", "country": "DE"}),
    ]  # fmt: skip
    return good + bad


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        return str(page.read().decode())


async def read_topic(settings: Settings, topic: str, idle_s: float = 3) -> list[Any]:
    consumer = reader(settings, topic)
    await consumer.start()
    records: list[Any] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


async def test_canary_in_personal_fields_appears_in_no_output(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    tmp_path: Path,
) -> None:
    canary = "cnry" + secrets.token_hex(6)
    key_file = tmp_path / "pii.key"
    key_file.write_text(secrets.token_urlsafe(24))
    scoring_port, feedback_port = free_port(), free_port()
    settings = settings_factory(
        pii_fields="user_id,email",
        pii_hmac_key_file=key_file,
        deadletter_redact_value=True,
        metrics_port=scoring_port,
    )
    scoring = worker_factory(settings)
    feedback = worker_factory(
        settings.model_copy(update={"metrics_port": feedback_port}), role="feedback"
    )
    state = stack.StackState("external", settings.bootstrap_servers, settings.online_store)
    state.workers = scoring.workers + feedback.workers
    state.save(stack.state_path(settings))  # so that `status` reports these workers

    events = canary_events(canary, 40)
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b"\n".join(events) + b"\n")
    env = stack.child_env(settings)
    produced = await asyncio.to_thread(cli, env, "produce", "--file", str(lines))
    assert produced.returncode == 0, produced.stderr
    labels = [
        (None, encode({"event_id": f"pii-{i}", "label": i % 2, "label_time": "x"}))
        for i in range(40)
    ]
    await send_records(settings, settings.topic("labels"), labels)

    # Wait for every event's outcome, and for the label join.
    deadline = time.monotonic() + 120
    while True:
        outcomes = await read_topic(settings, settings.topic("predictions"), idle_s=1)
        dead = await read_topic(settings, settings.topic("deadletter"), idle_s=1)
        joined = await read_topic(settings, settings.topic("labelled"), idle_s=1)
        if (len(outcomes) + len(dead) >= len(events) and len(joined) >= 40) or (
            time.monotonic() > deadline
        ):
            break
        await asyncio.sleep(1)
    assert len(outcomes) == 40 and len(dead) == 4 and len(joined) >= 40
    # The exemption is real: the entity is there, by contract.
    assert all(canary in json.loads(r.value)["entity"]["user_id"] for r in outcomes)
    # Redacted dead letters: they still say why, and let an operator match the event.
    for letter in dead:
        headers = dict(letter.headers)
        assert letter.value == b"" and headers["original.redacted"] == b"true"
        assert headers["error.stage"] in (b"decode", b"validate")

    found: list[str] = []

    def search(where: str, text: str | bytes | None) -> None:
        if text is None:
            return
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        if canary in text:
            at = text.index(canary)
            found.append(f"{where}: ...{text[max(0, at - 80) : at + 40]}...")

    exempt = {settings.topic(t) for t in ENTITY_TOPICS} | {
        f"{settings.group_id}-feedback-feedback-join-changelog"
    }
    inputs = {settings.topic("events"), settings.topic("labels")}
    topics = [t for t in await existing_topics(settings) if t not in inputs]
    topics.append(f"{settings.group_id}-feedback-feedback-join-changelog")
    for topic in topics:
        for record in await read_topic(settings, topic):
            where = f"{topic}@{record.partition}:{record.offset}"
            for name, value in record.headers or []:
                search(f"{where} header {name}", value)
            if topic in exempt:
                try:
                    body = json.dumps(without_entity(json.loads(record.value)))
                except (ValueError, TypeError):
                    body = record.value
                search(f"{where} value", body)
            else:
                search(f"{where} key", record.key)
                search(f"{where} value", record.value)

    for worker in state.workers:
        search(f"log {worker['log']}", await asyncio.to_thread(Path(worker["log"]).read_bytes))
    for port in (scoring_port, feedback_port):
        text = await asyncio.to_thread(scrape, port)
        assert "streamscore_" in text
        search(f"/metrics :{port}", text)
    status = await asyncio.to_thread(cli, env, "status", "--json")
    report = json.loads(status.stdout)
    assert sorted(report["worker_pids"]) == [w["pid"] for w in scoring.workers]
    search("status --json", status.stdout + status.stderr)
    search("produce output", produced.stdout + produced.stderr)

    assert {settings.topic("signals"), settings.topic("deadletter")} <= set(topics)
    # The search finds what is there: the producers' own input holds the canary.
    search("input", b"".join(r.value for r in await read_topic(settings, settings.topic("events"))))
    assert found and found.pop().startswith("input")

    assert not found, "personal data leaked:\n" + "\n".join(found)
