"""Standard ONNX models as they are: one [N, k] float input fed by the manifest's inputs
(``input_tensor``), checked against the graph at registration, every error naming the
model, the field and the fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression

from models.assembly import assemble_inputs
from models.errors import ManifestInvalid, ModelSignatureError
from models.manifest import ModelInput, ModelManifest
from models.registry import ModelRegistry
from streams import lifecycle
from streams.settings import Settings

REFS = ["distance_km", "zone_stats:avg_minutes_7d", "items"]
DEFAULTS = [1.0, 30.0, 2.0]


def _regressor(width: int | None = 3) -> tuple[Any, bytes]:
    rng = np.random.default_rng(1)
    x = np.column_stack(
        [rng.uniform(0, 10, 300), rng.uniform(10, 60, 300), rng.integers(1, 6, 300)]
    ).astype(np.float32)
    y = 5 + 3 * x[:, 0] + 0.5 * x[:, 1] + 2 * x[:, 2]
    model = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[("X", FloatTensorType([None, width]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return model, onx.SerializeToString()


def _fields(**overrides: Any) -> dict[str, Any]:
    return {
        "task": "regression",
        "input_tensor": "X",
        "inputs": [{"ref": r, "default": d} for r, d in zip(REFS, DEFAULTS, strict=True)],
        "entity_keys": {"zone_id": "zone_id"},
        "outputs": {"score": "variable"},
        "event_schema": {"zone_id": "string", "distance_km": "number", "items": "number"},
        "lineage": {
            "feature_refs": ["zone_stats:avg_minutes_7d"],
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-02T00:00:00Z",
            "rows": 300,
            "data_sha256": "0" * 64,
        },
    } | overrides


def test_a_plain_skl2onnx_model_scores_as_sklearn_with_defaults(tmp_path: Path) -> None:
    model, onnx_bytes = _regressor()
    registry = ModelRegistry(tmp_path)
    manifest = registry.register("eta", onnx_bytes, **_fields())
    # name and source follow from the ref
    assert [(i.name, i.source, i.dtype) for i in manifest.inputs] == [
        ("distance_km", "event", "float32"),
        ("zone_stats__avg_minutes_7d", "feature", "float32"),
        ("items", "event", "float32"),
    ]
    loaded = registry.load("eta", manifest.version)
    events = [
        {"zone_id": "z1", "distance_km": 2.5, "items": 3},
        {"zone_id": "z2", "distance_km": None, "items": "x"},  # both default
        {"zone_id": "z3", "distance_km": 7.0, "items": 1},
    ]
    features = {"zone_stats:avg_minutes_7d": [20.0, 45.0, None]}
    batch = assemble_inputs(manifest, events, features)
    scores = loaded.scorer.score_batch(batch.columns)
    expected = model.predict(
        np.array([[2.5, 20.0, 3], [1.0, 45.0, 2.0], [7.0, 30.0, 1]], dtype=np.float32)
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert batch.missing == [[], ["distance_km", "items"], ["zone_stats:avg_minutes_7d"]]


def _refusal(onnx_bytes: bytes, tmp_path: Path, **overrides: Any) -> str:
    with pytest.raises(ModelSignatureError) as err:
        ModelRegistry(tmp_path).register("eta", onnx_bytes, **_fields(**overrides))
    assert not (tmp_path / "eta" / "1").exists(), "nothing is registered"
    return str(err.value)


def test_without_input_tensor_the_refusal_says_to_set_it(tmp_path: Path) -> None:
    _, onnx_bytes = _regressor()
    message = _refusal(onnx_bytes, tmp_path, input_tensor=None)
    assert message.startswith("model 'eta' (new version) does not match its manifest")
    assert "'X' [N, 3]" in message and '"input_tensor": "X"' in message


def test_input_tensor_errors_name_the_field_and_the_fix(tmp_path: Path) -> None:
    _, onnx_bytes = _regressor()
    message = _refusal(onnx_bytes, tmp_path, input_tensor="features")
    assert "input_tensor 'features' is not a graph input: set it to one of ['X']" in message
    two = [{"ref": "distance_km", "default": 1.0}, {"ref": "items", "default": 2.0}]
    message = _refusal(onnx_bytes, tmp_path, inputs=two)
    assert "has 3 columns but the manifest lists 2 inputs" in message
    assert "in the column order the model was trained on" in message
    message = _refusal(onnx_bytes, tmp_path, outputs={"score": "prediction"})
    assert "outputs.score 'prediction' is not in the graph" in message and "'variable'" in message


def test_a_double_input_is_refused_with_the_export_fix(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((50, 3))
    linear = LinearRegression().fit(x, x.sum(axis=1))
    onnx_bytes = convert_sklearn(
        linear, initial_types=[("X", DoubleTensorType([None, 3]))], target_opset={"": 17}
    ).SerializeToString()
    message = _refusal(onnx_bytes, tmp_path)
    assert "input_tensor 'X' is tensor(double), not tensor(float)" in message
    assert "FloatTensorType([None, k])" in message


def test_a_symbolic_width_is_accepted(tmp_path: Path) -> None:
    _, onnx_bytes = _regressor(width=None)
    assert ModelRegistry(tmp_path).register("eta", onnx_bytes, **_fields()).version == "1"


def test_string_inputs_cannot_feed_one_float_tensor() -> None:
    fields = _fields(
        inputs=[{"ref": "channel", "dtype": "string", "default": "?"}],
        name="eta",
        version="1",
        sha256="x",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match=r"model 'eta': input_tensor 'X' is one float tensor"):
        ModelManifest.model_validate(fields)


def test_the_per_input_form_still_needs_names_and_defaults_by_ref() -> None:
    spec = ModelInput.model_validate({"ref": "user_stats:avg", "default": 1})
    assert (spec.name, spec.source, spec.dtype) == ("user_stats__avg", "feature", "float32")
    named = ModelInput.model_validate({"name": "a", "ref": "amount", "default": 0})
    assert (named.name, named.source) == ("a", "event")


def test_registering_a_manifest_file_names_every_bad_field(tmp_path: Path) -> None:
    _, onnx_bytes = _regressor()
    (tmp_path / "model.onnx").write_bytes(onnx_bytes)
    path = tmp_path / "manifest.json"
    fields = _fields(name="eta", outputz={"score": "variable"})
    del fields["lineage"], fields["outputs"]
    fields["inputs"][1]["default"] = "fast"
    path.write_text(json.dumps(fields))
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(ManifestInvalid) as err:
        lifecycle.register(settings, tmp_path / "model.onnx", path)
    message = str(err.value)
    assert message.startswith(f"manifest {path} of model 'eta' is invalid:")
    assert "outputs: required, missing" in message
    assert "lineage: required, missing" in message
    assert "outputz: unknown key (a typo?)" in message
    assert "float32 input needs a finite numeric default, got 'fast'" in message
    assert "streamscore models schema" in message

    path.write_text(json.dumps(_fields()))  # no name
    with pytest.raises(ManifestInvalid, match="name: required, missing"):
        lifecycle.register(settings, tmp_path / "model.onnx", path)

    path.write_text(json.dumps(_fields(name="eta")))
    manifest = lifecycle.register(settings, tmp_path / "model.onnx", path)
    assert (manifest.name, manifest.version, manifest.input_tensor) == ("eta", "1", "X")


def test_a_manifest_without_input_tensor_is_written_as_before(tmp_path: Path) -> None:
    """Unset, input_tensor is left out of manifest.json: workers of the previous version
    (whose manifest model forbids unknown keys) still read what this one registers."""
    _, onnx_bytes = _regressor()
    registry = ModelRegistry(tmp_path)
    registry.register("eta", onnx_bytes, **_fields())
    written = json.loads((tmp_path / "eta" / "1" / "manifest.json").read_text())
    assert written["input_tensor"] == "X"
    fields = _fields(inputs=[{"name": "X", "ref": "x", "default": 0.0}], input_tensor=None)
    manifest = ModelManifest.model_validate(
        fields | {"name": "eta", "version": "2", "sha256": "x", "created_at": "2026-01-01T00:00Z"}
    )
    assert "input_tensor" not in json.loads(manifest.model_dump_json())
