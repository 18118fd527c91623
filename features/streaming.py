"""Streaming feature views in Feast: which views the feature worker keeps, and the writes.

In: a ``feast.FeatureStore``. Out: the :class:`~features.aggregates.StreamingView`s
the registry declares (every feature view whose stream source is a ``PushSource``,
its fields parsed by :func:`features.aggregates.parse_feature`), and
:class:`FeastPushWriter`, which writes rows through Feast's ``FeatureStore.push``:
every row to the offline store (the push source's batch source, which training reads
point-in-time) and each entity's newest row to the online store.

Offline first, then online: a crash in between leaves a row offline that is pushed
again after the restart (same values, newer ``created``: harmless to a point-in-time
join), never an online value that training cannot see.

One writer per offline file: Feast's file offline store appends by reading the whole
parquet file and writing it back, so two writers lose each other's rows.
:func:`hold_offline_files` takes an exclusive lock (``flock``, beside each file) for
the writer's lifetime; a second feature worker, or a backfill while one runs, is
refused with :class:`~features.errors.OfflineFileBusy`. ``flock`` holds across the
processes and containers of one host (compose's shared volume); it is not a lock
across hosts on a network filesystem.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, PushSource
from feast.data_source import PushMode

from features.aggregates import StreamingView, batch_rows, parse_feature
from features.errors import FeatureError, FeatureStoreUnavailable, OfflineFileBusy
from features.store import describe_store, store_connection_errors

__all__ = [
    "streaming_views",
    "FeastPushWriter",
    "retry_forever",
    "backfill",
    "offline_file",
    "hold_offline_files",
    "OfflineFilesLock",
]

log = logging.getLogger(__name__)


def streaming_views(store: FeatureStore, names: Sequence[str] = ()) -> list[StreamingView]:
    """The push-fed feature views of the registry (only ``names`` when given).

    Raises FeatureError naming every view that is missing, not push-fed, keyed by more
    than one join key, or has a field whose name is not a computable aggregate.
    """
    store.refresh_registry()
    views = {v.name: v for v in store.list_feature_views()}
    problems: list[str] = []
    wanted = list(names) or sorted(
        n for n, v in views.items() if isinstance(v.stream_source, PushSource)
    )
    out: list[StreamingView] = []
    for name in wanted:
        view = views.get(name)
        if view is None:
            problems.append(f"{name}: no such feature view")
            continue
        if not isinstance(view.stream_source, PushSource):
            problems.append(f"{name}: not fed by a push source")
            continue
        if len(view.join_keys) != 1:
            problems.append(f"{name}: needs exactly one join key, has {view.join_keys}")
            continue
        bad = []
        for field in view.features:
            try:
                parse_feature(field.name)
            except ValueError as exc:
                bad.append(str(exc))
        if bad:
            problems += [f"{name}: {b}" for b in bad]
            continue
        out.append(
            StreamingView.of(
                view.name,
                view.join_keys[0],
                view.stream_source.name,
                [f.name for f in view.features],
            )
        )
    if problems:
        raise FeatureError("streaming feature views refused: " + "; ".join(problems))
    return out


def _frame(view: StreamingView, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        list(rows), columns=[view.entity_key, "event_timestamp", *view.features, "created"]
    )
    for agg in view.aggregates:
        # Counts are Int64 in the view; an empty max is missing (NaN), not 0.
        if agg.kind == "count":
            frame[agg.feature] = frame[agg.feature].astype(np.int64)
        else:
            frame[agg.feature] = pd.to_numeric(frame[agg.feature]).astype(np.float32)
    for column in ("event_timestamp", "created"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


class FeastPushWriter:
    """Writes streaming feature rows through a push source, on one thread of its own
    (the Feast client blocks; its SQLite and Redis clients are not shared across threads)."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-push")

    @property
    def store(self) -> FeatureStore:
        return self._store

    def describe(self) -> str:
        return describe_store(self._store)

    def write_blocking(
        self,
        view: StreamingView,
        offline_rows: Sequence[dict[str, Any]],
        online_rows: Sequence[dict[str, Any]],
    ) -> None:
        """Offline rows, then online rows; FeatureStoreUnavailable when a store is down."""
        try:
            if offline_rows:
                self._store.push(view.push_source, _frame(view, offline_rows), to=PushMode.OFFLINE)
            if online_rows:
                self._store.push(view.push_source, _frame(view, online_rows), to=PushMode.ONLINE)
        except store_connection_errors() as exc:
            raise FeatureStoreUnavailable(self.describe(), exc) from exc
        except OSError as exc:  # the offline file could not be read or written
            raise FeatureStoreUnavailable(f"offline store of {view.name}", exc) from exc

    async def write(
        self,
        view: StreamingView,
        offline_rows: Sequence[dict[str, Any]],
        online_rows: Sequence[dict[str, Any]],
    ) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, self.write_blocking, view, offline_rows, online_rows
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True)


async def retry_forever(
    attempt: Callable[[], Any],
    on_retry: Callable[[int, BaseException], None],
    first_s: float = 0.2,
    max_s: float = 10.0,
) -> int:
    """Await ``attempt()`` until it does not raise a retryable FeatureError; back off
    exponentially between tries (``first_s`` doubling up to ``max_s``); return how many
    retries it took. Non-retryable errors propagate."""
    retries = 0
    delay = first_s
    while True:
        try:
            await attempt()
            return retries
        except FeatureError as exc:
            if not exc.retryable:
                raise
            retries += 1
            on_retry(retries, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)


def offline_file(store: FeatureStore, view_name: str) -> Path | None:
    """The local parquet file a view's push source appends to offline (None: not a file
    of the file offline store, e.g. a warehouse table, which takes concurrent writers)."""
    from feast import FileSource
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig

    if not isinstance(store.config.offline_store, DaskOfflineStoreConfig):
        return None
    source = store.get_feature_view(view_name).batch_source
    if not isinstance(source, FileSource) or "://" in (source.path or ""):
        return None
    path = Path(source.path)
    return path if path.is_absolute() else Path(store.repo_path) / path


class OfflineFilesLock:
    """Exclusive locks on offline files, held until :meth:`release` (or the process ends:
    the kernel drops a dead holder's ``flock``, so a crash leaves nothing to clean up)."""

    def __init__(self, fds: dict[Path, int]) -> None:
        self._fds = fds

    @property
    def paths(self) -> list[Path]:
        return sorted(self._fds)

    def release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)  # closing the descriptor drops its flock
        self._fds = {}

    def __enter__(self) -> OfflineFilesLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_offline_files(
    store: FeatureStore, view_names: Sequence[str], holder: str
) -> OfflineFilesLock:
    """Lock the offline file of each view for this process (``holder`` says who, for the
    refusal a second writer sees); OfflineFileBusy names the view, file and holder."""
    fds: dict[Path, int] = {}
    try:
        for name in view_names:
            path = offline_file(store, name)
            if path is None:
                continue
            lock_path = path.with_name(path.name + ".writer.lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                current = os.pread(fd, 512, 0).decode(errors="replace").strip()
                os.close(fd)
                raise OfflineFileBusy(name, str(path), current) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder} (pid {os.getpid()} on {socket.gethostname()})".encode(), 0)
            fds[path] = fd
    except BaseException:
        OfflineFilesLock(fds).release()
        raise
    return OfflineFilesLock(fds)


def backfill(store: FeatureStore, view_name: str, events: pd.DataFrame) -> tuple[Path, int]:
    """Rewrite the offline history of a streaming view from an event history, with the
    batch computation (:func:`features.aggregates.batch_rows`): what the feature worker
    would have written. Returns the file and its row count. The push source's batch
    source must be a file (the file offline store); it is replaced whole, so its columns
    follow the view's current fields (a new field needs this before the worker can
    append to it)."""
    (view,) = streaming_views(store, [view_name])
    declared = store.get_feature_view(view_name)
    source = declared.batch_source
    path = Path(getattr(source, "path", "") or "")
    if not str(path):
        raise FeatureError(f"{view_name}: its push source's batch source is not a file")
    if not path.is_absolute():
        path = Path(store.repo_path) / path
    missing = [c for c in (view.entity_key, "event_timestamp", *view.fields) if c not in events]
    if missing:
        raise FeatureError(f"backfill of {view_name}: the events lack {', '.join(missing)}")
    # Not under a running feature worker: its next append would undo the rewrite.
    with hold_offline_files(store, [view_name], holder=f"`features backfill {view_name}`"):
        return _rewrite(view, path, events)


def _rewrite(view: StreamingView, path: Path, events: pd.DataFrame) -> tuple[Path, int]:
    computed = batch_rows(view, events)
    # Not rows stamped in the future (windows that empty later): newer than what the
    # feature worker writes meanwhile, they would win point-in-time joins and materialize.
    computed = computed[computed["event_timestamp"] <= pd.Timestamp.now(tz="UTC")]
    rows = _frame(view, computed.to_dict("records"))
    tmp = path.with_suffix(".backfill.parquet")
    rows.to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: a reader sees the old file or the new one
    return path, len(rows)
