"""End to end: the CLI driven as a user drives it, on the embedded defaults.

`streamscore up` (the embedded Apache Kafka + SQLite, in a private home and private
ports), `status --json`, `up` again (idempotent), events from kcat (Debian's
librdkafka, an outsider) and from `produce`, predictions read back with kcat, `tail`,
`down` + `up` (the broker's data survives: earlier predictions are still there), the
broker SIGKILLed and `up` again (nothing lost), and `audit` reconciling every event
of the whole run by id. `down` stops exactly what `up` started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams import stack
from tests.conftest import copy_feature_repo, free_port, kcat

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, root: Path):
    base = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= {
        "STREAMSCORE_HOME": str(base / "home"),
        "STREAMSCORE_FEATURE_REPO": str(copy_feature_repo(base / "feature_repo")),
        "STREAMSCORE_KAFKA_PORT": str(port),
        "STREAMSCORE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMSCORE_METRICS_PORT": str(free_port()),
    }
    exe = str(Path(sys.executable).with_name("streamscore"))

    def run(
        *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [exe, *args], env=env, cwd=root, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"streamscore {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    run.home = base / "home"  # type: ignore[attr-defined]
    run.bootstrap = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield run
    run("down", check=False)


def kcat_events(bootstrap: str, prefix: str, n: int) -> list[str]:
    """Send ``n`` valid events with kcat, keyed by user id; return their ids."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    ids = [f"{prefix}-{i}" for i in range(n)]
    lines = "".join(
        f"u{i % 50:05d}\t"
        + json.dumps(
            {
                "event_id": event_id,
                "event_time": stamp,
                "user_id": f"u{i % 50:05d}",
                "merchant_id": f"m{i % 20:04d}",
                "amount": 12.5 + i,
                "currency": "EUR",
                "channel": "web",
                "country": "DE",
            }
        )
        + "\n"
        for i, event_id in enumerate(ids)
    )
    kcat("-b", bootstrap, "-P", "-t", "events", "-K", "\t", stdin=lines)
    return ids


def kcat_predicted_ids(bootstrap: str, wanted: set[str], timeout_s: float = 90) -> set[str]:
    """Event ids on ``predictions``, read with kcat, once every wanted id is there."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        out = kcat("-b", bootstrap, "-C", "-t", "predictions", "-o", "beginning", "-e", "-q")
        seen = {json.loads(line)["event_id"] for line in out.splitlines() if line.strip()}
        if wanted <= seen:
            return seen
        time.sleep(1)
    raise AssertionError(f"{len(wanted - seen)} of {len(wanted)} ids never got a prediction")


def curl(url: str) -> str:
    """GET ``url``; fail unless it answers 200."""
    result = subprocess.run(["curl", "-sf", url], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{url}: curl exit {result.returncode}"
    return result.stdout


def status(cli) -> dict:
    return json.loads(cli("status", "--json", check=False).stdout)


def test_default_stack_durable_and_open_to_every_client(cli, root: Path) -> None:
    up = cli("up")
    assert "streamscore is up" in up.stdout

    report = status(cli)
    assert report["up"] and report["broker"] == "kafka"
    assert report["bootstrap_servers"] == cli.bootstrap
    assert {"events", "predictions", "deadletter", "control"} <= set(report["topics"])
    assert report["models"] == [{"name": "fraud", "version": "1", "variant": "champion"}]
    pids = report["worker_pids"] + report["feedback_worker_pids"] + report["features_worker_pids"]
    assert len(report["worker_pids"]) == 1 and len(report["feedback_worker_pids"]) == 1
    assert len(report["features_worker_pids"]) == 1
    assert all(stack.alive(p) for p in pids)
    metrics = subprocess.run(["curl", "-sf", report["metrics_url"]], capture_output=True, text=True)
    assert "streamscore_worker_ready 1.0" in metrics.stdout
    # /healthz and /ready on the same port, for the scoring and the feedback worker.
    for url in report["metrics_urls"] + report["feedback_metrics_urls"]:
        alive = json.loads(curl(url.replace("/metrics", "/healthz")))
        ready = json.loads(curl(url.replace("/metrics", "/ready")))
        assert alive["alive"] and ready["ready"], (alive, ready)
        assert ready["checks"]["partitions"]["ok"]
    ready = json.loads(curl(report["metrics_url"].replace("/metrics", "/ready")))
    assert set(ready["checks"]) == {"partitions", "model", "online_store"}, ready
    assert ready["checks"]["model"]["detail"] == "fraud v1 loaded", ready

    # Idempotent: a second up starts nothing new.
    cli("up")
    again = status(cli)
    assert (
        again["worker_pids"] + again["feedback_worker_pids"] + again["features_worker_pids"] == pids
    )

    # An outsider (librdkafka 2.0.2) produces events and reads their predictions.
    first = set(kcat_events(cli.bootstrap, "kc1", 40))
    kcat_predicted_ids(cli.bootstrap, first)
    cli("produce", "--n", "300", "--rate", "1000")
    cli("produce", "--file", str(root / "deploy" / "demo" / "bad-events.jsonl"))
    tail = cli("tail", "predictions", "--n", "5", "--idle", "30")
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(lines) == 5 and all(rec["model"] == "fraud" for rec in lines)
    dead = cli("tail", "deadletter", "--n", "7", "--idle", "30")
    letters = [json.loads(line) for line in dead.stdout.splitlines()]
    assert len(letters) == 7
    assert all(letter["headers"]["error.stage"] in {"decode", "validate"} for letter in letters)
    audit = json.loads(cli("audit", "--json", "--idle", "3").stdout)
    # 40 from kcat, 300 demo, and the 9 lines of bad-events.jsonl (2 of them valid).
    assert audit["reconciled"] and audit["events"] == 349, audit
    assert audit["predictions"] == 342 and audit["deadletters"] == 7, audit
    # The feature worker kept the streaming views of the same events: a user's row online.
    user = lines[0]["entity"]["user_id"]
    shown = cli("features", "get", "user_stream_stats", "--entity", f"user_id={user}", "--json")
    assert json.loads(shown.stdout)["features"]["txn_count_24h"] >= 1

    # down + up: the broker's data is on disk, so the earlier predictions are still there.
    cli("down")
    assert not any(stack.alive(p) for p in pids)
    assert cli("status", check=False).returncode != 0
    cli("up")
    report = status(cli)
    assert report["up"] and set(report["worker_pids"]).isdisjoint(pids)
    kcat_predicted_ids(cli.bootstrap, first, timeout_s=10)
    second = set(kcat_events(cli.bootstrap, "kc2", 40))
    kcat_predicted_ids(cli.bootstrap, first | second)

    # The broker SIGKILLed mid-run; up notices and restarts it; nothing acked is lost.
    broker_pid = int((cli.home / "kafka" / "kafka.pid").read_text())
    os.kill(broker_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while stack.alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(cli)["broker_reachable"] is False
    cli("up")
    since = datetime.now(UTC).isoformat()
    third = set(kcat_events(cli.bootstrap, "kc3", 40))
    cli("produce", "--n", "200", "--rate", "1000")
    kcat_predicted_ids(cli.bootstrap, first | second | third)

    audit = json.loads(cli("audit", "--json", "--idle", "5").stdout)
    assert audit["events"] == 349 + 40 + 40 + 200, audit
    assert audit["missing"] == 0 and audit["reconciled"], audit
    assert audit["deadletters"] == 7, audit
    # Every valid event has a prediction (the audit saw them all, so kcat does too);
    # at-least-once may add a replayed duplicate, never a missing one.
    out = kcat("-b", cli.bootstrap, "-C", "-t", "predictions", "-o", "beginning", "-e", "-q")
    predicted = [json.loads(line)["event_id"] for line in out.splitlines() if line.strip()]
    assert len(set(predicted)) == 342 + 40 + 40 + 200
    # An operator's audit of the last stretch only: the events since the broker restart.
    ranged = json.loads(cli("audit", "--json", "--idle", "3", "--since", since).stdout)
    assert ranged["events"] == 240 and ranged["reconciled"], ranged
    assert ranged["predictions"] >= 240 and ranged["deadletters"] == 0, ranged
    # Every outcome is acked, so the group's commits (read from the broker) reach the end
    # of each partition within a few commit intervals.
    deadline = time.monotonic() + 20
    while (lag := status(cli)["events_lag"]) and any(n != 0 for n in lag.values()):
        assert time.monotonic() < deadline, f"committed offsets stuck behind the end: {lag}"
        time.sleep(1)
    assert len(lag) == 3, lag

    cli("down")
    assert not (cli.home / "kafka" / "kafka.pid").exists()
    assert cli("status", check=False).returncode != 0
