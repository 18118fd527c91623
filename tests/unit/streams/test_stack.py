"""The stack's bookkeeping: a stale ``stack.json`` (dead or recycled pids) is noticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams import stack
from streams.settings import Settings


def test_a_dead_or_recycled_worker_pid_is_not_running(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not stack.worker_running({"pid": gone.pid})
    # Our own pid is alive but is no streamscore worker: a pid recycled after a crash.
    assert not stack.worker_running({"pid": os.getpid()})
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; print(1, flush=True); time.sleep(30)"]
        + ["streams.cli", "worker"],
        stdout=subprocess.PIPE,
    )
    try:
        # Right after Popen, /proc may show an empty command line (the exec is under way):
        # wait until the child runs its program.
        assert fake.stdout is not None and fake.stdout.readline() == b"1\n"
        assert stack.worker_running({"pid": fake.pid})
    finally:
        fake.kill()
        fake.wait()
        if fake.stdout is not None:
            fake.stdout.close()


def test_status_names_what_up_recorded_but_no_longer_runs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    state = stack.StackState(
        "kafka", "127.0.0.1:9092", "sqlite", workers=[{"pid": os.getpid(), "metrics_port": 0}]
    )
    assert stack.dead_parts(settings, state) == [f"worker {os.getpid()}", "broker (kafka)"]
    assert stack.dead_parts(settings, None) == []
