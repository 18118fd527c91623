"""``streamscore bench``: five subjects on the same broker, the same online store and the
same event stream, each in its own process, in one run.

In: :class:`Settings` of a running stack (broker, online store, registry with a
champion) and a :class:`BenchConfig`. Out: per subject a :class:`SubjectResult`
(saturated events/s, latency percentiles at half of its own maximum, CPU seconds per
1,000 events and peak RSS of its own processes) and same-run ratios, because the
machine is shared and noisy and only ratios within one run compare.

Subjects (see their modules): ``ceiling`` (raw aiokafka passthrough), ``framework``
(minimal Faust forwarder), ``naive`` (per-event Faust + Feast + ONNX Runtime),
``streamscore`` (the real ``streamscore worker``, default settings) and ``quix`` (Quix
Streams doing the naive app's work). Each subject runs twice, each time as a fresh
process on a fresh topic prefix and consumer group, so no run sees another's records:

1. saturated: the event stream is written to the input topic first, then the subject
   starts and drains it; events/s is taken from the output records' timestamps over
   the middle 90 % of the drain, CPU over the same span;
2. latency: the subject starts on empty topics, probe events until one comes out
   (it is assigned and warm), then events at half of its saturated rate (or a fixed
   ``latency_rate``); latency is output record timestamp minus input record timestamp
   (both CreateTime, same machine), matched by event id.

The events are the project's demo stream (:func:`features.fraud_data.demo_stream`: recent
transactions replayed, so users and merchants recur as in real traffic). A subject
that cannot run is reported with the reason and no numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
from aiokafka.admin import AIOKafkaAdminClient

from streams.bench.report import (
    SubjectResult,
    cpu_between,
    latencies_ms,
    not_run,
    percentiles,
    ratios,
    sustained_rate,
    worst_seconds,
)
from streams.codec import decode, encode
from streams.kafka import client_kwargs, ensure_topics, reader, send_records
from streams.settings import Settings

SUBJECTS = ("ceiling", "framework", "naive", "streamscore", "quix")
ROOT = Path(__file__).resolve().parents[2]
QUIX_PYTHON = ROOT / ".venv" / "quix" / "bin" / "python"

Records = list[tuple[bytes | None, bytes]]


class SubjectFailed(RuntimeError):
    """A subject process died or produced nothing in time; the message says which and why."""


@dataclass(frozen=True)
class BenchConfig:
    n: int = 30_000
    """Events of the saturated run's backlog (the same stream for every subject)."""
    saturated_max_s: float = 30.0
    """A saturated run stops this long after the first output even if the backlog is left."""
    latency_s: float = 15.0
    """How long the latency run offers events."""
    latency_rate: float | None = None
    """Offered events/s of the latency run; None: half of the subject's saturated rate."""
    latency_max_events: int = 20_000
    latency_lead_in_s: float = 5.0
    """Events offered at the latency run's rate just before the measured ones, not
    measured (at most ``latency_lead_in_max_events``, the stream's events that precede the
    measured ones): a running worker has met the stream's recurring entities already, so
    without a lead-in the first second measured a fresh process's empty feature cache
    (its misses all looked up at once: p50 158 ms in that second, the whole p99 of the
    run), not its latency at that load."""
    latency_lead_in_max_events: int = 10_000
    startup_timeout_s: float = 120.0
    """How long a subject may take to produce its first output."""
    idle_s: float = 8.0
    """A run ends when no new output came for this long."""
    workers: int = 1
    """With 2 or more, an extra row ``streamscore_<N>w``: N workers on N partitions."""
    seed: int = 5
    quix_python: Path = QUIX_PYTHON
    worker_python: Path | None = None
    """Python of the ``streamscore`` subject (default: this one); another checkout's venv
    runs that checkout's worker against the same peers, e.g. before and after a change."""

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """Small enough for CI (about a minute per two subjects), still saturating."""
        return replace(
            cls(
                n=4000,
                saturated_max_s=10.0,
                latency_s=6.0,
                latency_lead_in_s=2.0,
                idle_s=5.0,
                startup_timeout_s=90.0,
            ),
            **overrides,
        )


def bench_records(settings: Settings, n: int, seed: int) -> Records:
    """The demo event stream (same seed, same events) for every subject."""
    from features.fraud_data import demo_stream
    from streams.kafka import keyed_records

    events, _labels = demo_stream(settings.data_dir, n, seed)
    return keyed_records(events, "user_id")


def tagged(records: Records, tag: str) -> Records:
    """The same events with run-unique ids: the worker dead-letters ids it has seen."""
    out: Records = []
    for key, value in records:
        event = decode(value)
        event["event_id"] = f"{tag}-{event['event_id']}"
        out.append((key, encode(event)))
    return out


# --- the subjects' processes ---


@dataclass(frozen=True)
class SubjectSpec:
    name: str
    argv: list[str]
    processes: int = 1
    partitions: int | None = None
    extra_env: dict[str, str] | None = None


def subject_spec(name: str, config: BenchConfig) -> SubjectSpec:
    python = sys.executable
    worker = [str(config.worker_python or python), "-m", "streams.cli", "worker"]
    if name in ("ceiling", "framework", "naive"):
        return SubjectSpec(name, [python, "-m", f"streams.bench.{name}"])
    if name == "streamscore":
        return SubjectSpec(name, worker)
    if name.startswith("streamscore_"):
        # N workers on N partitions, against the one-worker row.
        return SubjectSpec(
            name,
            worker,
            processes=config.workers,
            partitions=config.workers,
        )
    if name == "quix":
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return SubjectSpec(
            name,
            [str(config.quix_python), "-m", "streams.bench.quix"],
            extra_env={"PYTHONPATH": pythonpath},
        )
    raise ValueError(f"unknown bench subject {name!r}; choose from {', '.join(SUBJECTS)}")


def unavailable_reason(spec: SubjectSpec, config: BenchConfig) -> str | None:
    if spec.name == "quix" and not config.quix_python.exists():
        return (
            f"no Quix Streams environment at {config.quix_python} "
            "(quixstreams 3.28 needs pydantic < 2.14, streamscore locks 2.14: `make bench-env`)"
        )
    return None


class SubjectProcesses:
    """The subject's OS processes, started as a deployment would, stopped by SIGTERM."""

    def __init__(self, spec: SubjectSpec, settings: Settings, log_dir: Path, phase: str) -> None:
        from streams.stack import child_env

        env = child_env(settings) | (spec.extra_env or {})
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"{spec.name}-{phase}-{i}.log" for i in range(spec.processes)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for log_path in self.logs:
            with log_path.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        spec.argv,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        # Not the repo: `-m streams...` then resolves through the
                        # interpreter's own install (its checkout), not the cwd.
                        cwd=log_dir,
                    )
                )
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def check_alive(self) -> None:
        for proc, log_path in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
                raise SubjectFailed(
                    f"process exited with {proc.returncode}; {log_path} ends: " + " | ".join(tail)
                )

    def sample(self) -> tuple[float, float, float]:
        """(wall s, CPU s of the processes and their children, RSS bytes) now."""
        cpu = rss = 0.0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                for q in [p, *p.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = q.cpu_times()
                        cpu += t.user + t.system
                        rss += q.memory_info().rss
        return time.time(), cpu, rss

    def peak_rss(self) -> float:
        """Sum of the processes' high-water marks (VmHWM), bytes; 0 where unknown."""
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += float(line.split()[1]) * 1024
        return total

    def stop(self, timeout_s: float = 20.0) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Sampler:
    """CPU and RSS of a subject's processes, ten times a second, while a run lasts."""

    def __init__(self, procs: SubjectProcesses) -> None:
        self._procs = procs
        self.samples: list[tuple[float, float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.samples.append(self._procs.sample())
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append(self._procs.sample())

    def cpu_between(self, t0: float, t1: float) -> float | None:
        return cpu_between([(w, c) for w, c, _ in self.samples], t0, t1)

    def peak_rss(self) -> float:
        return max((r for _, _, r in self.samples), default=0.0)


class OutputCollector:
    """Reads a run's output topics from the beginning: (event id, record timestamp ms)."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        self._consumer = reader(settings, *topics)
        self.received: list[tuple[str, float]] = []
        self.last_arrival = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for r in records:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self.received.append((str(decode(r.value)["event_id"]), float(r.timestamp)))
                if records:
                    self.last_arrival = time.monotonic()

    def count_of(self, ids: set[str]) -> int:
        return sum(1 for i, _ in self.received if i in ids)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def _wait_until(
    done: Callable[[], bool], procs: SubjectProcesses, timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        procs.check_alive()
        if time.monotonic() > deadline:
            raise SubjectFailed(f"{what} within {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


async def _prepare_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the run's topics and wait until every partition has a leader: a fresh
    topic's first produce otherwise meets NotLeaderForPartition and retries."""
    topics = await ensure_topics(settings)
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            described = await admin.describe_topics(topics)
            if all(
                t.get("error_code", 0) == 0
                and t.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                # Leaders are named before their logs are ready to serve a fetch.
                await asyncio.sleep(1.0)
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Faust names its changelog topics after the app id (our consumer group).
        prefixes = (settings.topic_prefix, f"{settings.group_id}-")
        mine = [t for t in existing if t.startswith(prefixes)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@dataclass
class RunFigures:
    events_per_s: float | None = None
    outcomes: int = 0
    cpu_s_per_1k: float | None = None
    latency: dict[str, float | None] | None = None
    latency_rate: float | None = None
    latency_achieved_rate: float | None = None
    latency_events: int = 0
    latency_outcomes: int = 0
    latency_worst_s: list[list[float]] = field(default_factory=list)
    ended_idle: bool = False


def _ids(records: Records) -> set[str]:
    return {str(decode(value)["event_id"]) for _, value in records}


class Run:
    """One process lifetime of one subject on its own topics and consumer group.

    ``async with run:`` creates the topics, starts the collector, the subject's
    processes and the sampler, and stops and deletes them all on the way out.
    """

    def __init__(
        self, base: Settings, spec: SubjectSpec, tag: str, phase: str, config: BenchConfig
    ) -> None:
        update: dict[str, Any] = {
            "topic_prefix": f"{base.topic_prefix}bench-{tag}-{spec.name}-{phase}.",
            "consumer_group": f"bench-{tag}-{spec.name}-{phase}",
            "metrics_port": 0,
            "registry_root": base.registry_path.resolve(),
            "feature_repo": base.feature_repo.resolve(),
        }
        if spec.partitions is not None:
            update["partitions"] = spec.partitions
        self.settings = base.model_copy(update=update)
        self.spec = spec
        self.phase = phase
        self.config = config
        self.log_dir = base.home / "bench" / tag
        self.events = self.settings.topic("events")
        self.collector = OutputCollector(
            self.settings, [self.settings.topic("predictions"), self.settings.topic("deadletter")]
        )
        self.procs: SubjectProcesses | None = None
        self.sampler: Sampler | None = None
        self.peak_rss = 0.0

    async def prepare(self, backlog: Records | None = None) -> None:
        """Topics, and a backlog written before the subject starts (saturated runs)."""
        await _prepare_topics(self.settings)
        if backlog:
            await send_records(self.settings, self.events, backlog)

    async def __aenter__(self) -> Run:
        await self.collector.start()
        self.procs = SubjectProcesses(self.spec, self.settings, self.log_dir, self.phase)
        self.sampler = Sampler(self.procs)
        self.sampler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.procs is not None and self.sampler is not None
        self.peak_rss = self.procs.peak_rss()
        await self.sampler.stop()
        self.peak_rss = max(self.peak_rss, self.sampler.peak_rss())
        await self.collector.stop()
        self.procs.stop()
        with contextlib.suppress(Exception):
            await _delete_topics(self.settings)

    async def _check(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        assert self.procs is not None
        await _wait_until(done, self.procs, timeout_s, what)

    async def drain(self, ids: set[str], figures: RunFigures) -> None:
        """Wait while the subject works through ``ids`` (already sent or being sent);
        events/s over the middle of the drain and CPU per 1,000 events over all of it."""
        cfg = self.config
        received = self.collector.received
        await self._check(
            lambda: any(i in ids for i, _ in received), cfg.startup_timeout_s, "no output"
        )
        first = time.monotonic()
        await self._check(
            lambda: (
                self.collector.count_of(ids) >= len(ids)
                or time.monotonic() - first > cfg.saturated_max_s
                or time.monotonic() - self.collector.last_arrival > cfg.idle_s
            ),
            cfg.saturated_max_s + cfg.idle_s + 5,
            "saturated run did not end",
        )
        ts = [t for i, t in received if i in ids]
        figures.outcomes = len(ts)
        figures.ended_idle = len(ts) < len(ids) and time.monotonic() - first <= cfg.saturated_max_s
        figures.events_per_s = sustained_rate(ts)
        assert self.sampler is not None and self.procs is not None
        self.sampler.samples.append(self.procs.sample())  # covers the last output
        if len(ts) >= 2:
            cpu = self.sampler.cpu_between(min(ts) / 1000.0, max(ts) / 1000.0)
            if cpu is not None:
                figures.cpu_s_per_1k = round(cpu / (len(ts) - 1) * 1000.0, 4)

    async def wait_ready(self) -> None:
        """Every worker process has completed a rebalance (its ready file, as ``up``
        waits for it): N workers share the partitions before the load starts, rather
        than rebalancing in the middle of it."""
        from streams.faust_app import ready_file

        assert self.procs is not None
        files = [ready_file(self.settings, p.pid) for p in self.procs.procs]
        await self._check(
            lambda: all(f.exists() for f in files),
            self.config.startup_timeout_s,
            "workers not ready",
        )
        await asyncio.sleep(1.0)

    async def burst(self, records: Records, figures: RunFigures) -> None:
        """Records sent as fast as this process can, drained by the running subject: a
        backlog for any subject slower than the producer (the ceiling is not; it is
        measured on a backlog written before it starts)."""
        sender = asyncio.create_task(send_records(self.settings, self.events, records))
        try:
            await self.drain(_ids(records), figures)
        finally:
            await sender

    async def warm(self, probes: Records) -> None:
        """Probe until the subject answers: it has its partitions, and its first lookups
        and model runs are behind it; then a few more at a gentle pace."""
        if self.spec.processes > 1:
            await self.wait_ready()
        deadline = time.monotonic() + self.config.startup_timeout_s
        for probe in probes:
            await send_records(self.settings, self.events, [probe])
            with contextlib.suppress(SubjectFailed):
                await self._check(lambda: bool(self.collector.received), 0.5, "probe")
            if self.collector.received:
                break
            if time.monotonic() > deadline:
                raise SubjectFailed(f"no output within {self.config.startup_timeout_s:.0f}s")
        await self._check(lambda: bool(self.collector.received), 30, "no probe output")
        await send_records(self.settings, self.events, probes[-50:], rate=50)
        await asyncio.sleep(1.0)

    async def offer(
        self, records: Records, rate: float, figures: RunFigures, lead_in: Records
    ) -> None:
        """Events at ``rate``, after ``lead_in`` at the same rate with no pause between
        them; latency per event id of ``records`` once their outcomes are in."""
        started = time.monotonic()
        metadata = await send_records(self.settings, self.events, [*lead_in, *records], rate=rate)
        send_s = time.monotonic() - started
        sent_ms = {
            str(decode(value)["event_id"]): float(meta.timestamp)
            for (_, value), meta in zip(records, metadata[len(lead_in) :], strict=True)
        }
        ids = set(sent_ms)
        await self._check(
            lambda: (
                self.collector.count_of(ids) >= len(ids)
                or time.monotonic() - self.collector.last_arrival > self.config.idle_s
            ),
            self.config.startup_timeout_s,
            "latency run did not end",
        )
        lat = latencies_ms(sent_ms, self.collector.received)
        figures.latency = percentiles(lat)
        figures.latency_worst_s = worst_seconds(sent_ms, self.collector.received)
        figures.latency_rate = round(rate, 1)
        sent = len(lead_in) + len(records)
        figures.latency_achieved_rate = round(sent / send_s, 1) if send_s > 0 else None
        figures.latency_events = len(records)
        figures.latency_outcomes = len(lat)


async def measure_subject(
    base: Settings, name: str, records: Records, config: BenchConfig, tag: str
) -> SubjectResult:
    """Half-of-maximum latency: two runs (saturated, then latency) on fresh processes.
    A fixed ``latency_rate`` needs no maximum first: one run, latency then a burst."""
    spec = subject_spec(name, config)
    reason = unavailable_reason(spec, config)
    if reason:
        return not_run(name, "unavailable", reason)
    probes = tagged(records[-200:], f"{tag}-{name}-probe")
    sat, lat = RunFigures(), RunFigures()
    peak_rss = 0.0
    notes: list[str] = []

    def latency_records(rate: float, label: str) -> tuple[Records, Records]:
        """(lead-in, measured): consecutive events of the stream, each run-tagged."""
        lead = int(min(rate * config.latency_lead_in_s, config.latency_lead_in_max_events))
        lead = min(lead, len(records) // 3)
        count = int(min(max(rate * config.latency_s, 200), config.latency_max_events))
        count = min(count, len(records) - lead)
        return (
            tagged(records[:lead], f"{tag}-{name}-{label}-lead"),
            tagged(records[lead : lead + count], f"{tag}-{name}-{label}"),
        )

    try:
        if config.latency_rate is not None:
            run = Run(base, spec, tag, "run", config)
            await run.prepare()
            async with run:
                await run.warm(probes)
                lead_in, measured = latency_records(config.latency_rate, "lat")
                await run.offer(measured, config.latency_rate, lat, lead_in)
                # The burst is sent as fast as this process can: a backlog for any subject
                # slower than the producer (the ceiling is not; it is measured by preload).
                burst = tagged(records, f"{tag}-{name}-sat")
                sender = asyncio.create_task(send_records(run.settings, run.events, burst))
                await run.drain(_ids(burst), sat)
                await sender
            peak_rss = run.peak_rss
        else:
            run = Run(base, spec, tag, "sat", config)
            backlog = tagged(records, f"{tag}-{name}-sat")
            await run.prepare(backlog)
            async with run:
                await run.drain(_ids(backlog), sat)
            peak_rss = run.peak_rss
            if sat.events_per_s is None:
                raise SubjectFailed(f"only {sat.outcomes} outcomes")
            rate = sat.events_per_s / 2
            run = Run(base, spec, tag, "lat", config)
            await run.prepare()
            try:
                async with run:
                    await run.warm(probes)
                    lead_in, measured = latency_records(rate, "lat")
                    await run.offer(measured, rate, lat, lead_in)
            except SubjectFailed as exc:
                notes.append(f"latency run failed: {exc}")
            peak_rss = max(peak_rss, run.peak_rss)
    except SubjectFailed as exc:
        return not_run(name, "failed", str(exc))
    if sat.events_per_s is None:
        return not_run(name, "failed", f"saturated: only {sat.outcomes} outcomes")
    if sat.ended_idle:
        notes.append(f"saturated run ended idle after {sat.outcomes} of {len(records)} outcomes")
    if lat.latency_outcomes < lat.latency_events:
        notes.append(f"latency: {lat.latency_events - lat.latency_outcomes} events without outcome")
    result = SubjectResult(
        subject=name,
        processes=spec.processes,
        events_per_s=round(sat.events_per_s, 1),
        saturated_outcomes=sat.outcomes,
        cpu_s_per_1k=sat.cpu_s_per_1k,
        latency_rate=lat.latency_rate,
        latency_achieved_rate=lat.latency_achieved_rate,
        latency_events=lat.latency_events or None,
        latency_outcomes=lat.latency_outcomes or None,
        rss_mb=round(peak_rss / 2**20, 1),
        latency_worst_s=lat.latency_worst_s,
        notes=notes,
    )
    for key, value in (lat.latency or {}).items():
        setattr(result, key, value)
    return result


def stack_settings(settings: Settings) -> Settings:
    """The settings of the stack ``up`` started (online store, Redis), where one is up."""
    from streams.stack import StackState, state_path

    state = StackState.load(state_path(settings))
    if state is None:
        return settings
    update: dict[str, Any] = {"online_store": state.online_store}
    if state.env.get("STREAMSCORE_REDIS_URL"):
        update["redis_url"] = state.env["STREAMSCORE_REDIS_URL"]
    return settings.model_copy(update=update)


async def run_bench(
    settings: Settings,
    subjects: Sequence[str] = SUBJECTS,
    config: BenchConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure each subject in turn; the report the CLI prints and ``--json`` writes."""
    config = config or BenchConfig()
    for name in subjects:
        subject_spec(name, config)  # an unknown name fails before anything runs
    started = time.monotonic()
    load_before = os.getloadavg()
    tag = uuid.uuid4().hex[:6]
    records = bench_records(settings, config.n, config.seed)
    names = list(subjects)
    if config.workers > 1 and "streamscore" in names:
        names.insert(names.index("streamscore") + 1, f"streamscore_{config.workers}w")
    results: dict[str, SubjectResult] = {}
    for name in names:
        if progress:
            progress(f"bench: {name} ...")
        t0 = time.monotonic()
        results[name] = await measure_subject(settings, name, records, config, tag)
        if progress:
            r = results[name]
            progress(
                f"bench: {name} {r.status} in {time.monotonic() - t0:.0f}s"
                + (f": {r.reason}" if r.reason else "")
            )
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "online_store": settings.online_store,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "duration_s": round(time.monotonic() - started, 1),
        "results": {name: r.as_dict() for name, r in results.items()},
        "ratios": ratios(results),
    }
