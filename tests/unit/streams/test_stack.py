"""The stack's bookkeeping: a stale ``stack.json`` (dead or recycled pids) is noticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _fake_worker() -> subprocess.Popen[bytes]:
    """A process whose command line says it is a streamscore worker."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print(1, flush=True); time.sleep(60)"]
        + ["streams.cli", "worker"],
        stdout=subprocess.PIPE,
        start_new_session=True,  # as `up` starts workers: stop_pid signals the group
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"1\n"
    return proc


def test_up_refuses_workers_that_stack_json_does_not_record(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    fake = _fake_worker()
    try:
        (settings.home / "run").mkdir(parents=True)
        (settings.home / "run" / f"worker-{fake.pid}.ready").write_text("ready\n")
        assert stack.unrecorded_workers(settings, None) == [fake.pid]
        with pytest.raises(stack.StackError, match=rf"does not record \(pids \[{fake.pid}\]\)"):
            stack.check_up_is_safe(settings, None)
        # down stops what this home runs, recorded or not
        assert stack.down(settings) == [f"worker {fake.pid} (not in stack.json)"]
        fake.wait(10)
        stack.check_up_is_safe(settings, None)
    finally:
        fake.kill()
        fake.wait()
        if fake.stdout is not None:
            fake.stdout.close()


def test_up_refuses_to_overwrite_a_running_stack_started_otherwise(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", kafka_port=25092)
    fake = _fake_worker()
    try:
        env = {k: v for k, v in stack.child_env(settings).items() if k.startswith("STREAMSCORE_")}
        state = stack.StackState(
            "kafka", "127.0.0.1:25092", "sqlite", workers=[{"pid": fake.pid}], env=env
        )
        stack.check_up_is_safe(settings, state)  # the same settings: up keeps what runs
        other = settings.model_copy(update={"kafka_port": 9092, "topic_prefix": "x."})
        with pytest.raises(stack.StackError) as err:
            stack.check_up_is_safe(other, state)
        message = str(err.value)
        assert f"runs (worker {fake.pid}) with other settings" in message
        assert "STREAMSCORE_KAFKA_PORT=25092 (now 9092)" in message
        assert "STREAMSCORE_TOPIC_PREFIX= (now x.)" in message
        assert "another STREAMSCORE_HOME" in message
        with pytest.raises(stack.StackError, match="is up with broker kafka"):
            stack.check_up_is_safe(settings.model_copy(update={"broker": "external"}), state)
    finally:
        fake.kill()
        fake.wait()
        if fake.stdout is not None:
            fake.stdout.close()
    stack.check_up_is_safe(other, state)  # nothing runs any more: up may start afresh


def test_one_up_or_down_at_a_time_per_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with stack.stack_lock(settings):
        with pytest.raises(stack.StackError, match="another `streamscore up` or `down`"):
            stack.down(settings)
    assert stack.down(settings) == []
