"""What the ``naive`` and ``quix`` bench subjects do to one event: the code a user
writes first, one Feast ``get_online_features`` call and one ONNX Runtime run per event.

In: a decoded event (dict). Out: a prediction dict (event id, entity, model, version,
score, decision). The champion comes from the registry (hash-checked as the worker
loads it) and the features from the same online store as the worker's. Imports neither
Faust nor Kafka, so the Quix Streams subject runs it in its own environment
(``.venv/quix``, see ``streams/bench/quix.py``).
"""

from __future__ import annotations

from typing import Any

from features.store import OnlineStoreConfig, open_store
from models.assembly import assemble_inputs, entity_rows
from models.registry import ModelNotFound, ModelRegistry
from streams.settings import Settings


def online_store_config(settings: Settings) -> OnlineStoreConfig:
    # The same choice as streams.worker.online_store_config, which imports Faust; the
    # Quix environment has no Faust, so the lines are repeated here.
    if settings.online_store == "redis":
        return OnlineStoreConfig(kind="redis", redis_url=settings.redis_url)
    if settings.online_store == "sqlite":
        return OnlineStoreConfig(kind="sqlite", sqlite_path=settings.data_dir / "online_store.db")
    return OnlineStoreConfig(kind="repo")


class PerEventScorer:
    """Feast lookup + ONNX Runtime for one event at a time (no batching, no cache)."""

    def __init__(self, settings: Settings) -> None:
        registry = ModelRegistry(settings.registry_path)
        version = registry.champion(settings.model_name)
        if version is None:
            raise ModelNotFound(settings.model_name, "champion")
        self._model = registry.load(settings.model_name, version)
        self._manifest = self._model.manifest
        self._refs = self._manifest.feature_refs()
        self._store = open_store(settings.feature_repo, online_store_config(settings))

    def score(self, event: dict[str, Any]) -> dict[str, Any]:
        rows = entity_rows(self._manifest, [event])
        response = self._store.get_online_features(
            features=self._refs, entity_rows=rows, full_feature_names=True
        ).to_dict()
        features = {ref: response[ref.replace(":", "__")] for ref in self._refs}
        batch = assemble_inputs(self._manifest, [event], features)
        score = float(self._model.scorer.score_batch(batch.columns)[0])
        return {
            "event_id": event.get("event_id"),
            "entity": rows[0],
            "model": self._manifest.name,
            "version": self._manifest.version,
            "score": score,
            "decision": self._manifest.decide(score),
        }
