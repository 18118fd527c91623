"""End to end: a new use case onboarded exactly as README's "Bring your own model" says.

The support-ticket example (examples/tickets: its own generated data and Feast repo, a
plain scikit-learn regressor exported by skl2onnx with one [N, 4] input) goes through
the README's commands, run as a user runs them: `python make_data.py`, `streamscore features apply`,
`streamscore features materialize`, `python train.py`, `streamscore models init`,
`models register`, a stock `streamscore worker` configured by settings, `/ready`,
`produce --file`, `tail predictions`. Every prediction is then checked against offline
ONNX Runtime on the online features Feast serves for the same entities. It reuses the
session's broker (a cluster, as far as the use case is concerned): its own topic prefix
keeps its topics and consumer group apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import free_port, kcat

pytestmark = pytest.mark.e2e

COLUMNS = ["priority", "words", "team_stats:open_tickets", "team_stats:avg_resolution_h_7d"]
INIT = (
    "streamscore models init model.onnx --name tickets \\\n"
    "    --input priority,words,team_stats:open_tickets,team_stats:avg_resolution_h_7d \\\n"
    "    --entity-key team_id --training-data train.parquet -o manifest.json"
)
# The README's commands, verbatim (checked below), in the order the test runs them.
README_COMMANDS = [
    "cp -r examples/tickets ~/tickets && cd ~/tickets",
    "python make_data.py",
    "streamscore features apply --repo feature_repo",
    "streamscore features materialize --repo feature_repo",
    "python train.py",
    INIT,
    "streamscore models register --onnx model.onnx --manifest manifest.json",
    "export STREAMSCORE_MODEL_NAME=tickets STREAMSCORE_FEATURE_REPO=$PWD/feature_repo",
    "export STREAMSCORE_TOPIC_PREFIX=tickets. STREAMSCORE_METRICS_PORT=9200",
    "streamscore worker > worker.log 2>&1 &",
    "curl -s 127.0.0.1:9200/ready",
    "streamscore produce --file events.jsonl",
    "streamscore tail predictions --n 5 --idle 10",
]


def test_the_readme_shows_these_commands(root: Path) -> None:
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Bring your own model") :]
    section = section[: section.index("\n## ")]
    missing = [c for c in README_COMMANDS if c not in section]
    assert not missing, f"README's walk-through no longer shows: {missing}"


def test_a_new_use_case_from_the_readme_alone(root: Path, tmp_path: Path) -> None:
    bootstrap = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.fail("TEST_KAFKA_BOOTSTRAP is not set: run through `make test`", pytrace=False)
    work = Path(shutil.copytree(root / "examples" / "tickets", tmp_path / "tickets"))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "STREAMSCORE_HOME": str(tmp_path / "home"),
        "STREAMSCORE_BOOTSTRAP_SERVERS": bootstrap,
    }

    def run(*argv: str, cwd: Path = work, timeout: float = 180) -> str:
        result = subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, (
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    run("python", "make_data.py")
    run("streamscore", "features", "apply", "--repo", "feature_repo")
    run("streamscore", "features", "materialize", "--repo", "feature_repo")
    run("python", "train.py")
    run(
        "streamscore", "models", "init", "model.onnx", "--name", "tickets",
        "--input", ",".join(COLUMNS), "--entity-key", "team_id",
        "--training-data", "train.parquet", "-o", "manifest.json",
    )  # fmt: skip
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["input_tensor"] == "X" and [i["ref"] for i in manifest["inputs"]] == COLUMNS
    out = run(
        "streamscore", "models", "register", "--onnx", "model.onnx", "--manifest", "manifest.json"
    )
    assert out.startswith("registered tickets v1")

    port = free_port()
    prefix = f"tickets-{uuid.uuid4().hex[:6]}."
    env |= {
        "STREAMSCORE_MODEL_NAME": "tickets",
        "STREAMSCORE_FEATURE_REPO": str(work / "feature_repo"),
        "STREAMSCORE_TOPIC_PREFIX": prefix,
        "STREAMSCORE_METRICS_PORT": str(port),
    }
    with (work / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            ["streamscore", "worker"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        ready = wait_ready(port, worker, work / "worker.log")
        assert ready["checks"]["model"]["detail"] == "tickets v1 loaded", ready
        assert ready["checks"]["online_store"]["ok"], ready

        run("streamscore", "produce", "--file", "events.jsonl")
        events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
        tail = run("streamscore", "tail", "predictions", "--n", str(len(events)), "--idle", "60")
        predictions = {p["event_id"]: p for p in map(json.loads, tail.splitlines())}
        assert set(predictions) == {e["event_id"] for e in events}
        assert {p["model"] for p in predictions.values()} == {"tickets"}
        assert all(p["entity"] == {"team_id": e["team_id"]} for e, p in _pairs(events, predictions))
        # produce keyed each event by the model's entity key (read back with kcat)
        keyed = kcat(
            "-b", bootstrap, "-C", "-t", f"{prefix}events", "-o", "beginning", "-e", "-q",
            "-f", "%k %s\n",
        )  # fmt: skip
        keys = {json.loads(value)["event_id"]: key for key, value in _split(keyed)}
        assert keys == {e["event_id"]: e["team_id"] for e in events}
        audit = json.loads(run("streamscore", "audit", "--json", "--idle", "3"))
        assert audit["reconciled"] and audit["predictions"] == len(events), audit
    finally:
        worker.terminate()
        worker.wait(30)

    # Offline ONNX Runtime on the features Feast serves online for the same teams.
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(work / "feature_repo"))
    online = store.get_online_features(
        features=COLUMNS[2:],
        entity_rows=[{"team_id": e["team_id"]} for e in events],
        full_feature_names=True,
    ).to_dict()
    x = np.array(
        [
            [e["priority"], e["words"], open_, pace]
            for e, open_, pace in zip(
                events,
                online["team_stats__open_tickets"],
                online["team_stats__avg_resolution_h_7d"],
                strict=True,
            )
        ],
        dtype=np.float32,
    )
    session = ort.InferenceSession((work / "model.onnx").read_bytes())
    (expected,) = session.run(None, {"X": x})
    got = np.array([predictions[e["event_id"]]["score"] for e in events])
    np.testing.assert_allclose(got, expected.reshape(-1), rtol=1e-6, atol=1e-5)
    assert all(p["features_missing"] == [] for p in predictions.values())


def _split(lines: str) -> list[tuple[str, str]]:
    """kcat's ``%k %s`` lines -> (key, value)."""
    return [(line.partition(" ")[0], line.partition(" ")[2]) for line in lines.splitlines() if line]


def _pairs(events: list[dict], predictions: dict[str, dict]) -> list[tuple[dict, dict]]:
    return [(e, predictions[e["event_id"]]) for e in events]


def wait_ready(
    port: int, worker: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> dict:
    """/ready's body once it answers 200; the worker's log if it exits or never gets there."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited {worker.returncode}:\n{log.read_text()}")
        result = subprocess.run(
            ["curl", "-s", f"127.0.0.1:{port}/ready"], capture_output=True, text=True
        )
        if result.stdout:
            body = json.loads(result.stdout)
            if body.get("ready"):
                return body
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout_s}s: {body}\n{log.read_text()[-3000:]}")
