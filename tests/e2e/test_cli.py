"""End to end: the CLI driven as a user drives it, on the embedded defaults.

`streamscore up` (Tansu + SQLite, in a private home and port), `produce`, `tail`,
`audit`, `status --json`, `up` again (idempotent), `down` (stops exactly what up
started). kcat, an independent Kafka client, produces an event and reads its
prediction.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams import stack
from tests.conftest import copy_feature_repo

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, root: Path):
    base = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= {
        "STREAMSCORE_HOME": str(base / "home"),
        "STREAMSCORE_FEATURE_REPO": str(copy_feature_repo(base / "feature_repo")),
        "STREAMSCORE_TANSU_PORT": str(port),
        "STREAMSCORE_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
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

    run.env = env  # type: ignore[attr-defined]
    run.port = port  # type: ignore[attr-defined]
    yield run
    run("down", check=False)


def test_up_produce_tail_audit_down(cli, root: Path) -> None:
    up = cli("up")
    assert "streamscore is up" in up.stdout

    status = json.loads(cli("status", "--json").stdout)
    assert status["up"] and status["broker"] == "tansu"
    assert status["bootstrap_servers"] == f"127.0.0.1:{cli.port}"
    assert {"events", "predictions", "deadletter"} <= set(status["topics"])
    assert status["models"] == [{"name": "fraud", "version": "1", "variant": "champion"}]
    pids = status["worker_pids"]
    assert len(pids) == 1 and all(stack.alive(p) for p in pids)
    metrics = subprocess.run(["curl", "-sf", status["metrics_url"]], capture_output=True, text=True)
    assert "streamscore_worker_ready 1.0" in metrics.stdout

    # Idempotent: a second up starts nothing new.
    cli("up")
    assert json.loads(cli("status", "--json").stdout)["worker_pids"] == pids

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
    assert audit["reconciled"] and audit["events"] == 309
    assert audit["predictions"] == 302 and audit["deadletters"] == 7

    cli("down")
    assert not any(stack.alive(p) for p in pids)
    assert cli("status", check=False).returncode != 0
