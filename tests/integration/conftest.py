"""Integration tier: a real Apache Kafka broker and a real Redis, started by `make test`.

Each test gets its own topic prefix and consumer group, so tests never see each
other's records. The feature repo is applied to Redis and the example model trained
once per session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from features.store import OnlineStoreConfig
from models.registry import ModelRegistry
from models.training import TrainingConfig, bootstrap_example
from streams import stack
from streams.settings import Settings
from tests.conftest import copy_feature_repo

pytestmark = pytest.mark.integration


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run the integration tier through `make test`", pytrace=False
        )
    return value


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    return _required_env("TEST_KAFKA_BOOTSTRAP")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _required_env("TEST_REDIS_URL")


@pytest.fixture(scope="session")
def prepared_repo(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> tuple[Path, Path]:
    """(feature repo applied to Redis and materialized, registry with the trained champion)."""
    base = tmp_path_factory.mktemp("stack")
    repo = copy_feature_repo(base / "feature_repo")
    registry = base / "registry"
    # The batch-only model: these tests check values found in Redis after materialize.
    # The example's fraud_v2 also reads the streaming views, whose materialized rows are
    # older than their freshness bound (missing) until a feature worker writes them;
    # the e2e tier (`up`) serves fraud_v2 beside a feature worker.
    manifest = bootstrap_example(
        repo,
        OnlineStoreConfig(kind="redis", redis_url=redis_url),
        ModelRegistry(registry),
        config=TrainingConfig(feature_service="fraud_v1"),
    )
    assert manifest is not None and manifest.metrics["roc_auc"] > 0.8
    return repo, registry


@pytest.fixture
def settings_factory(
    tmp_path: Path, bootstrap_servers: str, redis_url: str, prepared_repo: tuple[Path, Path]
) -> Callable[..., Settings]:
    repo, registry = prepared_repo

    def make(**overrides: object) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "home": tmp_path / "home",
            "bootstrap_servers": bootstrap_servers,
            "topic_prefix": f"it-{tag}.",
            "consumer_group": f"it-{tag}",
            "online_store": "redis",
            "redis_url": redis_url,
            "feature_repo": repo,
            "registry_root": registry,
            "metrics_port": 0,
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture
def worker_factory() -> Iterator[Callable[[Settings], stack.StackState]]:
    """Start `streamscore worker` processes as a deployment would; stop them afterwards."""
    started: list[stack.StackState] = []

    def start(settings: Settings, count: int = 1, role: str = "score") -> stack.StackState:
        state = stack.StackState("external", settings.bootstrap_servers, settings.online_store)
        stack.start_workers(settings, state, count, role=role)
        started.append(state)
        stack.wait_for_workers(settings, state, timeout_s=120)
        return state

    yield start
    for state in started:
        for worker in state.workers:
            stack.stop_pid(worker["pid"])
