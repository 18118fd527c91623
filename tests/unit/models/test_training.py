"""Training on point-in-time Feast features: reproducible, good, registered; bootstrap."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.fraud_data import OfflineData, generate_offline_data
from features.online import FeastOnlineSource
from features.store import OnlineStoreConfig, apply_repo, open_store
from models.assembly import assemble_inputs, entity_rows
from models.registry import ModelRegistry
from models.training import TRAIN_STEPS, TrainingConfig, bootstrap_example, train_model

REPO = Path(__file__).resolve().parents[3] / "feature_repo"
END = datetime(2026, 1, 1, tzinfo=UTC)


def _repo_with_small_data(dest: Path) -> tuple[Path, OfflineData]:
    repo = shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns("data", "__pycache__"))
    data = generate_offline_data(
        repo / "data", seed=5, n_users=400, n_merchants=60, days=30, end=END
    )
    return repo, data


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OfflineData]:
    repo, data = _repo_with_small_data(tmp_path_factory.mktemp("train") / "repo")
    apply_repo(repo, OnlineStoreConfig())
    return repo, data


def test_training_is_reproducible_and_registers_versions(
    small_repo: tuple[Path, OfflineData], tmp_path: Path
) -> None:
    repo, data = small_repo
    store = open_store(repo, OnlineStoreConfig())
    registry = ModelRegistry(tmp_path / "registry")
    quick = TrainingConfig(max_iter=60)
    steps: list[str] = []
    first = train_model(store, data, registry, seed=7, config=quick, progress=steps.append)
    assert steps == list(TRAIN_STEPS)  # what `streamscore train`'s progress bar shows
    second = train_model(store, repo / "data", registry, seed=7, config=quick)
    assert (first.version, second.version) == ("1", "2")
    assert first.metrics == second.metrics
    assert first.lineage.data_sha256 == second.lineage.data_sha256
    assert first.sha256 == second.sha256
    assert [d.min_score for d in first.decisions] == [d.min_score for d in second.decisions]

    assert first.metrics["roc_auc"] > 0.85, first.metrics
    assert first.metrics["pr_auc"] > 0.3, first.metrics
    assert first.lineage.feature_service == "fraud_v2"  # the example's: + streaming
    assert "user_stream_stats:txn_count_10m" in first.feature_refs()
    assert first.lineage.seed == 7
    assert first.lineage.start >= data.start and first.lineage.end < data.end
    assert first.feature_refs() == first.lineage.feature_refs
    assert "merchant_stats:fraud_rate_90d" in first.feature_refs()
    assert first.entity_keys == {"user_id": "user_id", "merchant_id": "merchant_id"}
    assert first.decide(1.0) == "decline" and first.decide(0.0) == "approve"
    profile = first.profile
    assert set(profile["inputs"]) == {i.ref for i in first.inputs}
    assert profile["inputs"]["channel"]["kind"] == "categorical"
    amount = profile["inputs"]["amount"]
    assert amount["kind"] == "numeric" and sum(amount["proportions"]) == pytest.approx(1.0)
    assert len(amount["proportions"]) == len(amount["edges"]) - 1
    assert profile["score"]["kind"] == "numeric"

    other_seed = train_model(store, data, registry, seed=8, config=quick)
    assert other_seed.lineage.data_sha256 != first.lineage.data_sha256


def test_registered_model_scores_what_serving_assembles(
    small_repo: tuple[Path, OfflineData], tmp_path: Path
) -> None:
    repo, data = small_repo
    store = open_store(repo, OnlineStoreConfig())
    registry = ModelRegistry(tmp_path)
    manifest = train_model(store, data, registry, config=TrainingConfig(max_iter=30))
    loaded = registry.load("fraud", manifest.version)
    tx = pd.read_parquet(data.transactions).tail(50)
    events = tx.to_dict("records")
    batch = assemble_inputs(manifest, events, {})  # every feature missing -> defaults
    scores = loaded.scorer.score_batch(batch.columns)
    assert scores.shape == (50,) and np.all((scores >= 0) & (scores <= 1))
    assert entity_rows(manifest, events[:1]) == [
        {"user_id": events[0]["user_id"], "merchant_id": events[0]["merchant_id"]}
    ]


async def test_bootstrap_example_is_idempotent(tmp_path: Path) -> None:
    repo, data = _repo_with_small_data(tmp_path / "repo")
    online = OnlineStoreConfig()
    registry = ModelRegistry(tmp_path / "registry")
    manifest = bootstrap_example(repo, online, registry)
    assert manifest is not None and manifest.name == "fraud" and manifest.version == "1"
    assert registry.champion("fraud") == "1"
    assert bootstrap_example(repo, online, registry) is None
    assert registry.versions("fraud") == ["1"]

    source = FeastOnlineSource(open_store(repo, online))
    try:
        source.check(manifest.feature_refs())
        users = pd.read_parquet(data.user_stats)
        user = users.loc[users.event_timestamp == users.event_timestamp.max(), "user_id"].iloc[0]
        values = await source.fetch(
            manifest.feature_refs(), [{"user_id": user, "merchant_id": "m0001"}]
        )
        assert values["user_stats:avg_amount_30d"][0] is not None
    finally:
        source.close()


def test_bootstraps_started_together_train_once(tmp_path: Path) -> None:
    """Scoring workers started together on one data volume (compose's --scale) each run
    the bootstrap: one applies and trains, the others wait and find it done."""
    from concurrent.futures import ThreadPoolExecutor

    repo, _ = _repo_with_small_data(tmp_path / "repo")
    registry = ModelRegistry(tmp_path / "registry")
    quick = TrainingConfig(max_iter=20)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda _: bootstrap_example(repo, OnlineStoreConfig(), registry, config=quick),
                range(2),
            )
        )
    assert sorted(r is None for r in results) == [False, True]
    assert registry.versions("fraud") == ["1"]
