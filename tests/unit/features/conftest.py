"""Fixtures of the feature tests: a small generated data set in a tmp copy of the Feast repo."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.fraud_data import OfflineData, generate_offline_data
from features.store import OnlineStoreConfig, apply_repo, materialize, open_store

REPO = Path(__file__).resolve().parents[3] / "feature_repo"
END = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AppliedRepo:
    path: Path
    online: OnlineStoreConfig
    data: OfflineData


def _copy_repo(dest: Path) -> Path:
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return dest


@pytest.fixture
def copy_repo() -> Callable[[Path], Path]:
    """Copy the project's feature repo (definitions and yaml, no data) to a path."""
    return _copy_repo


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> OfflineData:
    out = tmp_path_factory.mktemp("fraud_data")
    return generate_offline_data(out, seed=11, n_users=300, n_merchants=50, days=30, end=END)


@pytest.fixture(scope="session")
def applied_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRepo]:
    """A repo copy with small data, applied and materialized into SQLite (once per session)."""
    repo = _copy_repo(tmp_path_factory.mktemp("feature_repo") / "repo")
    data = generate_offline_data(
        repo / "data", seed=3, n_users=200, n_merchants=40, days=20, end=END
    )
    online = OnlineStoreConfig()
    apply_repo(repo, online)
    materialize(open_store(repo, online), end=datetime.now(UTC), start=data.start)
    yield AppliedRepo(path=repo, online=online, data=data)
