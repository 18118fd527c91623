"""OnnxScorer: signature checks at load, one run per batch, errors that name the model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from models.assembly import assemble_inputs
from models.errors import ModelSignatureError, ScoringError
from models.manifest import ModelInput, ModelManifest
from models.scoring import OnnxScorer


def _manifest(fields: dict[str, Any], **overrides: Any) -> ModelManifest:
    return ModelManifest.model_validate(
        {
            **fields,
            "name": "fraud",
            "version": "4",
            "sha256": "x",
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            **overrides,
        }
    )


def test_scores_equal_sklearn_through_assembly(tiny_model: Any) -> None:
    manifest = _manifest(tiny_model.fields)
    scorer = OnnxScorer(Path("unused"), manifest, model_bytes=tiny_model.onnx_bytes)
    frame = tiny_model.frame
    events = frame[["amount", "channel"]].to_dict("records")
    features = {
        "user_stats:avg_amount_30d": frame["user_stats__avg_amount_30d"].tolist(),
        "user_stats:home_country": frame["user_stats__home_country"].tolist(),
    }
    scores = scorer.score_batch(assemble_inputs(manifest, events, features).columns)
    assert scores.shape == (len(frame),) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, tiny_model.pipeline.predict_proba(frame)[:, 1], atol=1e-5)


def test_scorer_loads_from_a_path(tmp_path: Path, tiny_model: Any) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_model.onnx_bytes)
    scorer = OnnxScorer(path, _manifest(tiny_model.fields), intra_op_threads=1)
    assert scorer.input_names == [i.name for i in tiny_model.fields["inputs"]]


def test_missing_and_extra_inputs_are_named(tiny_model: Any) -> None:
    inputs = list(tiny_model.fields["inputs"])
    renamed = [
        *inputs[:-1],
        ModelInput(name="country", source="event", ref="country", dtype="string", default=""),
    ]
    with pytest.raises(ModelSignatureError) as err:
        OnnxScorer(
            Path("x"),
            _manifest(tiny_model.fields, inputs=renamed),
            model_bytes=tiny_model.onnx_bytes,
        )
    message = str(err.value)
    assert "'fraud' version '4'" in message
    assert "input 'country' is not in the graph" in message
    assert "user_stats__home_country" in message


def test_zipmap_output_is_refused() -> None:
    x = np.random.default_rng(0).random((50, 1)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    with_zipmap = convert_sklearn(
        clf,
        initial_types=[("a", FloatTensorType([None, 1]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    manifest = _manifest(
        {
            "task": "binary_classification",
            "inputs": [ModelInput(name="a", source="event", ref="a", dtype="float32", default=0.0)],
            "entity_keys": {},
            "outputs": {"score": "output_probability"},
            "lineage": {
                "feature_refs": [],
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T00:00:00Z",
                "rows": 1,
                "data_sha256": "",
            },
        },
    )
    with pytest.raises(ModelSignatureError, match="ZipMap"):
        OnnxScorer(Path("x"), manifest, model_bytes=with_zipmap.SerializeToString())


def test_unloadable_bytes_are_a_model_error(tiny_model: Any) -> None:
    with pytest.raises(ModelSignatureError, match="cannot load"):
        OnnxScorer(Path("x"), _manifest(tiny_model.fields), model_bytes=b"garbage")


def test_bad_batch_raises_scoring_error(tiny_model: Any) -> None:
    manifest = _manifest(tiny_model.fields)
    scorer = OnnxScorer(Path("x"), manifest, model_bytes=tiny_model.onnx_bytes)
    columns = assemble_inputs(manifest, [{"amount": 1.0, "channel": "web"}], {}).columns
    columns["amount"] = np.array([["oops"]], dtype=object)
    with pytest.raises(ScoringError, match="'fraud' version '4'"):
        scorer.score_batch(columns)
