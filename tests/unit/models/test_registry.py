"""ModelRegistry: versions, champion, hash check, signature check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.errors import ModelIntegrityError, ModelNotFound, ModelSignatureError
from models.manifest import ModelInput
from models.registry import ModelRegistry, sha256_bytes


def test_register_assigns_versions_and_first_champion(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.is_empty() and registry.list_models() == []
    assert registry.champion("fraud") is None
    first = registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(tiny_model.onnx_bytes)
    second = registry.register("fraud", onnx_file, **tiny_model.fields)
    assert (first.version, second.version) == ("1", "2")
    assert first.sha256 == sha256_bytes(tiny_model.onnx_bytes)
    assert registry.versions("fraud") == ["1", "2"]
    assert registry.list_models() == ["fraud"] and not registry.is_empty()
    assert registry.champion("fraud") == "1"
    registry.set_champion("fraud", "2")
    assert registry.champion("fraud") == "2"
    assert registry.manifest("fraud", "2") == second
    assert (tmp_path / "registry/fraud/2/model.onnx").is_file()
    assert (tmp_path / "registry/fraud/2/manifest.json").is_file()
    with pytest.raises(ModelNotFound, match="'fraud' version '7'"):
        registry.set_champion("fraud", "7")


def test_load_scores_like_sklearn(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    loaded = registry.load("fraud", "1")
    frame = tiny_model.frame
    columns = {
        name: frame[name]
        .to_numpy()
        .reshape(-1, 1)
        .astype(np.float32 if frame[name].dtype.kind == "f" else object)
        for name in frame.columns
    }
    expected = tiny_model.pipeline.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(loaded.scorer.score_batch(columns), expected, atol=1e-5)


def test_tampered_model_is_refused(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path)
    manifest = registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    path = registry.model_path("fraud", "1")
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError) as err:
        registry.load("fraud", "1")
    assert err.value.expected == manifest.sha256
    assert err.value.actual == sha256_bytes(path.read_bytes())
    assert "refused" in str(err.value) and "'fraud' version '1'" in str(err.value)


def test_missing_models_are_named(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ModelNotFound, match="model 'nope' version '3' not found"):
        registry.load("nope", "3")
    assert registry.versions("nope") == []


def test_manifest_that_does_not_match_the_graph_is_refused(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path)
    inputs = list(tiny_model.fields["inputs"])
    inputs[1] = ModelInput(
        name="channel", source="event", ref="channel", dtype="float32", default=0.0
    )
    with pytest.raises(ModelSignatureError, match="'channel' is tensor\\(string\\)"):
        registry.register("fraud", tiny_model.onnx_bytes, **{**tiny_model.fields, "inputs": inputs})
    with pytest.raises(ModelSignatureError, match="not in the graph"):
        registry.register(
            "fraud",
            tiny_model.onnx_bytes,
            **{**tiny_model.fields, "outputs": {"score": "probs"}},
        )
    with pytest.raises(ModelSignatureError, match="onnx.checker"):
        registry.register("fraud", b"not a model", **tiny_model.fields)
    assert registry.is_empty()
