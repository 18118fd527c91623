"""A running worker refuses a rollout to a model whose signature does not verify and
keeps serving what it had; the worker opens its registry from settings (signer, keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.registry import ModelRegistry
from models.rollout import RolloutState, apply_command
from models.routing import build_routing
from streams.codec import decode
from streams.control import ControlFollower
from streams.pipeline import ScoringPipeline
from streams.registry import open_registry
from streams.settings import Settings
from tests.unit.models.conftest import tiny_model  # noqa: F401  (fixture)
from tests.unit.models.test_signing import _key_pair
from tests.unit.streams.test_rollout_pipeline import TinyFeatures, events, inbound


async def test_unsigned_rollout_is_refused_and_the_champion_keeps_serving(
    tmp_path: Path,
    tiny_model: Any,  # noqa: F811
) -> None:
    private, public = _key_pair(tmp_path, "release")
    settings = Settings(
        home=tmp_path,
        registry_root=tmp_path / "registry",
        metrics_port=0,
        model_signing_key_file=private,
        model_signer="release-job",
        model_trusted_keys=str(public),
    )
    registry = open_registry(settings)
    assert registry.signer is not None and registry.trust.enabled
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)  # v1, signed
    # v2 registered by someone without the key (straight into the registry folder)
    ModelRegistry(settings.registry_path).register(
        "fraud", tiny_model.onnx_bytes, **tiny_model.fields
    )
    base = RolloutState(model="fraud", champion="1")
    pipeline = ScoringPipeline(build_routing(registry, base), TinyFeatures())
    follower = ControlFollower(settings, pipeline, registry)
    assert not await follower.apply(apply_command(base, "promote", "2"))
    assert "not signed" in follower.refused[0][1]
    assert pipeline.routing.champion.manifest.version == "1"
    out = [decode(o.value) for o in await pipeline.process(inbound(events(20)))]
    assert {r["version"] for r in out} == {"1"}
    assert registry.manifest("fraud", "1").signature is not None
    assert registry.manifest("fraud", "1").signature.signer == "release-job"  # type: ignore[union-attr]
