"""Feast at the boundary: open, apply and materialize the feature repository.

In: the path of a Feast repo (``feature_store.yaml`` plus declarative ``*.py``)
and an ``OnlineStoreConfig`` chosen by the caller's settings. Out: a
``feast.FeatureStore`` whose online store is SQLite or Redis as configured;
the YAML is never edited, only the in-memory ``RepoConfig`` is overridden, so
one repository serves a laptop (SQLite) and CI/compose (Redis).

``apply_repo`` is ``feast apply`` without the CLI's side effects (it does not
``chdir`` nor ``sys.exit``): it imports the repo's Python files by path and
hands the Feast objects to ``FeatureStore.apply``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from feast import (
    BatchFeatureView,
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    OnDemandFeatureView,
    Project,
    PushSource,
    RepoConfig,
    StreamFeatureView,
)
from feast.data_source import DataSource
from feast.diff.registry_diff import extract_objects_for_keep_delete_update_add
from feast.feature_view import DUMMY_ENTITY
from feast.infra.registry.registry import FEAST_OBJECT_TYPES
from feast.repo_contents import RepoContents

from features.errors import FeatureError, FeatureStoreUnavailable, UnknownFeatureError

__all__ = [
    "OnlineStoreConfig",
    "open_store",
    "apply_repo",
    "materialize",
    "load_repo_contents",
    "redis_connection_string",
    "describe_store",
    "store_connection_errors",
    "FeatureError",
    "UnknownFeatureError",
    "FeatureStoreUnavailable",
]

FEATURE_STORE_YAML = "feature_store.yaml"


@dataclass(frozen=True)
class OnlineStoreConfig:
    """Which online store serves features; everything else comes from feature_store.yaml.

    ``kind`` ``repo`` keeps the YAML's ``online_store`` section as it is (any store Feast
    supports); ``sqlite`` and ``redis`` replace it. ``sqlite_path`` None keeps the YAML's
    path (relative to the repo).
    ``redis_url`` is a URL such as ``redis://127.0.0.1:6379/0`` (``rediss://`` for TLS);
    ``username``/``password`` are the Redis ACL user (AUTH), ``ssl_ca_certs`` the CA
    that signs a TLS Redis's certificate. ``connect_timeout_s`` bounds how long a dead
    Redis can block a lookup before ``FeatureStoreUnavailable`` is raised.
    """

    kind: Literal["repo", "sqlite", "redis"] = "sqlite"
    sqlite_path: Path | None = None
    redis_url: str | None = None
    connect_timeout_s: float = 2.0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_ca_certs: Path | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.kind == "redis" and not self.redis_url:
            raise ValueError("OnlineStoreConfig(kind='redis') needs redis_url")
        if self.kind not in ("repo", "sqlite", "redis"):
            raise ValueError(
                f"unknown online store kind {self.kind!r}; use 'repo', 'sqlite' or 'redis'"
            )

    def describe(self) -> str:
        """A log-safe name of the store (no password)."""
        if self.kind == "redis":
            parts = urlsplit(self.redis_url or "")
            return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or ''}"
        if self.kind == "repo":
            return f"the online store of {FEATURE_STORE_YAML}"
        return f"sqlite:{self.sqlite_path or '<repo default>'}"


def redis_connection_string(
    redis_url: str,
    timeout_s: float = 2.0,
    *,
    username: str | None = None,
    password: str | None = None,
    ssl_ca_certs: Path | None = None,
    ssl_check_hostname: bool = True,
) -> str:
    """Turn ``redis[s]://[user:pass@]host[:port][/db]`` into Feast's ``host:port,db=N,...``.

    ``username``/``password`` (the settings' Redis ACL user) win over any in the URL;
    ``rediss://`` turns TLS on, checked against ``ssl_ca_certs`` (default: the system's).
    """
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        # Not the URL itself: it may carry a password.
        raise ValueError(f"redis_url must start with redis:// or rediss://, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError("redis_url has no host")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"redis_url database must be a number, got {db_text!r}")
    username = username or (unquote(parts.username) if parts.username else None)
    password = password or (unquote(parts.password) if parts.password else None)
    # Feast splits the string on ',' and '=': such characters cannot be passed through.
    for value in (username, password, str(ssl_ca_certs or "")):
        if value and ("," in value or "=" in value):
            raise ValueError("redis credentials and CA path must not contain ',' or '='")
    fields = [
        f"{parts.hostname}:{parts.port or 6379}",
        f"db={int(db_text)}",
        f"socket_connect_timeout={timeout_s}",
        f"socket_timeout={timeout_s}",
    ]
    if username:
        fields.append(f"username={username}")
    if password:
        fields.append(f"password={password}")
    if parts.scheme == "rediss":
        fields.append("ssl=true")
        fields.append(f"ssl_check_hostname={'true' if ssl_check_hostname else 'false'}")
        if ssl_ca_certs is not None:
            fields.append(f"ssl_ca_certs={ssl_ca_certs}")
    return ",".join(fields)


def redis_client(online: OnlineStoreConfig, timeout_s: float = 2.0) -> Any:
    """A plain redis-py client of the Redis online store, with the same ACL user, password
    and TLS as Feast's connection (:func:`redis_connection_string`): for the checks that
    Feast has no API for (the empty-store probe, ``status``)."""
    import redis

    if online.kind != "redis" or not online.redis_url:
        raise ValueError("redis_client needs OnlineStoreConfig(kind='redis')")
    tls: dict[str, Any] = {}
    if online.redis_url.startswith("rediss://"):
        tls = {"ssl_check_hostname": online.ssl_check_hostname}
        if online.ssl_ca_certs is not None:
            tls["ssl_ca_certs"] = str(online.ssl_ca_certs)
    return redis.Redis.from_url(
        online.redis_url,
        username=online.username,
        password=online.password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **tls,
    )


def _online_store_section(online: OnlineStoreConfig, yaml_section: Any) -> Any:
    if online.kind == "repo":
        return yaml_section
    if online.kind == "redis":
        assert online.redis_url is not None  # checked in __post_init__
        return {
            "type": "redis",
            "connection_string": redis_connection_string(
                online.redis_url,
                online.connect_timeout_s,
                username=online.username,
                password=online.password,
                ssl_ca_certs=online.ssl_ca_certs,
                ssl_check_hostname=online.ssl_check_hostname,
            ),
        }
    section: dict[str, Any] = {"type": "sqlite"}
    if isinstance(yaml_section, dict) and yaml_section.get("type", "sqlite") == "sqlite":
        section.update(yaml_section)
    if online.sqlite_path is not None:
        section["path"] = str(online.sqlite_path)
    return section


def _repo_config(
    repo_path: Path, online: OnlineStoreConfig, registry_path: Path | None
) -> RepoConfig:
    yaml_path = repo_path / FEATURE_STORE_YAML
    try:
        raw = yaml.safe_load(yaml_path.read_text())
    except FileNotFoundError as exc:
        raise FeatureError(f"no {FEATURE_STORE_YAML} in feature repo {repo_path}") from exc
    if not isinstance(raw, dict):
        raise FeatureError(f"{yaml_path} is not a mapping")
    raw["online_store"] = _online_store_section(online, raw.get("online_store"))
    if registry_path is not None:
        raw["registry"] = str(registry_path)
    # Relative paths (registry, sqlite, FileSource) resolve from repo_path, see
    # FileSource.get_uri_for_file_path and SqliteOnlineStore._get_db_path.
    raw["repo_path"] = repo_path
    return RepoConfig(**raw)


def open_store(
    repo_path: Path, online: OnlineStoreConfig, registry_path: Path | None = None
) -> FeatureStore:
    """A FeatureStore for ``repo_path`` whose online store is ``online``."""
    repo_path = Path(repo_path).resolve()
    config = _repo_config(repo_path, online, registry_path)
    return FeatureStore(repo_path=str(repo_path), config=config)


_FEAST_TYPES = (
    DataSource,
    Entity,
    FeatureView,
    OnDemandFeatureView,
    FeatureService,
    Project,
)


def _import_by_path(path: Path) -> ModuleType:
    # A unique module name per file so two repo copies (tests) never share a module.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"_streamscore_feature_repo_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FeatureError(f"cannot import feature definitions from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


def load_repo_contents(repo_path: Path, project: str) -> RepoContents:
    """Collect the Feast objects defined by the top-level ``*.py`` files of the repo."""
    contents = RepoContents(
        projects=[],
        data_sources=[],
        entities=[],
        feature_views=[],
        feature_services=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )

    def add(bucket: list[Any], obj: Any) -> None:
        if obj is not None and not any(obj is seen for seen in bucket):
            bucket.append(obj)

    files = sorted(p for p in Path(repo_path).glob("*.py") if p.name != "__init__.py")
    if not files:
        raise FeatureError(f"feature repo {repo_path} has no definition files (*.py)")
    for path in files:
        module = _import_by_path(path)
        for value in vars(module).values():
            if not isinstance(value, _FEAST_TYPES):
                continue
            if isinstance(value, DataSource):
                add(contents.data_sources, value)
                if isinstance(value, PushSource):
                    add(contents.data_sources, value.batch_source)
            elif isinstance(value, StreamFeatureView):
                add(contents.stream_feature_views, value)
                add(contents.data_sources, value.batch_source)
                add(contents.data_sources, value.stream_source)
            elif isinstance(value, FeatureView | BatchFeatureView):
                add(contents.feature_views, value)
                add(contents.data_sources, value.batch_source)
                add(contents.data_sources, value.stream_source)
            elif isinstance(value, OnDemandFeatureView):
                add(contents.on_demand_feature_views, value)
            elif isinstance(value, Entity):
                add(contents.entities, value)
            elif isinstance(value, FeatureService):
                add(contents.feature_services, value)
            elif isinstance(value, Project):
                add(contents.projects, value)
    # Feast registers this placeholder for entity-less views; keep it or the diff deletes it.
    contents.entities.append(DUMMY_ENTITY)
    if not contents.projects:
        contents.projects.append(Project(name=project, description=""))
    elif [p.name for p in contents.projects] != [project]:
        raise FeatureError(
            f"feature repo defines project(s) {[p.name for p in contents.projects]} "
            f"but {FEATURE_STORE_YAML} says {project!r}"
        )
    return contents


def apply_repo(repo_path: Path, online: OnlineStoreConfig) -> None:
    """Register the repo's objects and create the online tables, like ``feast apply``.

    Objects that were registered before but are no longer defined are deleted.
    """
    store = open_store(repo_path, online)
    contents = load_repo_contents(Path(repo_path), store.project)
    registry = store.registry
    _, to_delete, to_update, to_add = extract_objects_for_keep_delete_update_add(
        registry, store.project, contents
    )
    objects: list[Any] = []
    deletions: list[Any] = []
    for object_type in FEAST_OBJECT_TYPES:
        objects.extend(set(to_add[object_type]) | set(to_update[object_type]))
        deletions.extend(to_delete[object_type])
    try:
        store.apply(objects, objects_to_delete=deletions, partial=False)
    except store_connection_errors() as exc:
        raise FeatureStoreUnavailable(online.describe(), exc) from exc


def materialize(store: FeatureStore, end: datetime, start: datetime | None = None) -> None:
    """Load offline values up to ``end`` into the online store.

    With ``start`` the whole interval is (re)loaded; without it Feast continues
    from the last materialization (or from ``end - ttl`` the first time).
    """
    if end.tzinfo is None:
        raise ValueError("materialize needs a timezone-aware end time")
    end = end.astimezone(UTC)
    try:
        if start is None:
            store.materialize_incremental(end_date=end)
        else:
            store.materialize(start_date=start.astimezone(UTC), end_date=end)
    except store_connection_errors() as exc:
        raise FeatureStoreUnavailable(describe_store(store), exc) from exc


def describe_store(store: FeatureStore) -> str:
    online = store.config.online_store
    if getattr(online, "type", "") == "redis":
        # Only the host: the rest of the connection string may hold the password.
        host = str(getattr(online, "connection_string", "")).split(",", 1)[0]
        return f"redis://{host}"
    return f"sqlite:{getattr(online, 'path', '?')}"


def store_connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the store is unreachable right now", not "the request is wrong"."""
    import sqlite3

    import redis.exceptions

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
        sqlite3.OperationalError,
    )
