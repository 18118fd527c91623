"""ModelManifest: validation, helpers and decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from models.manifest import ModelInput, ModelManifest


def _manifest(tiny_model: Any, **overrides: Any) -> ModelManifest:
    fields = {
        **tiny_model.fields,
        "name": "fraud",
        "version": "1",
        "sha256": "ab",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    fields.update(overrides)
    return ModelManifest.model_validate(fields)


def test_helpers_list_refs_and_fields(tiny_model: Any) -> None:
    manifest = _manifest(tiny_model)
    assert manifest.feature_refs() == ["user_stats:avg_amount_30d", "user_stats:home_country"]
    assert manifest.event_fields() == ["amount", "channel", "user_id"]
    assert manifest.score_output == "probabilities"


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "approve"),
        (0.49, "approve"),
        (0.5, "review"),
        (0.89, "review"),
        (0.9, "decline"),
        (1.0, "decline"),
        (float("nan"), "approve"),
    ],
)
def test_highest_reached_threshold_wins(tiny_model: Any, score: float, decision: str) -> None:
    assert _manifest(tiny_model).decide(score) == decision


def test_json_round_trip(tiny_model: Any) -> None:
    manifest = _manifest(tiny_model)
    assert ModelManifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_unknown_keys_are_refused(tiny_model: Any) -> None:
    with pytest.raises(ValidationError, match="extra"):
        _manifest(tiny_model, thresholds=[0.5])
    with pytest.raises(ValidationError, match="extra"):
        ModelInput.model_validate(
            {
                "name": "a",
                "source": "event",
                "ref": "a",
                "dtype": "float32",
                "default": 0.0,
                "oops": 1,
            }
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"source": "feature", "ref": "no_colon", "dtype": "float32", "default": 0.0},
            "view:feature",
        ),
        (
            {"source": "event", "ref": "amount", "dtype": "float32", "default": "x"},
            "numeric default",
        ),
        (
            {"source": "event", "ref": "amount", "dtype": "float32", "default": float("nan")},
            "numeric default",
        ),
        (
            {"source": "event", "ref": "channel", "dtype": "string", "default": 1.0},
            "string default",
        ),
    ],
)
def test_bad_inputs_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelInput.model_validate({"name": "x", **fields})


def test_manifest_level_checks(tiny_model: Any) -> None:
    inputs = tiny_model.fields["inputs"]
    with pytest.raises(ValidationError, match="duplicate input names"):
        _manifest(tiny_model, inputs=[*inputs, inputs[0]])
    with pytest.raises(ValidationError, match="'score'"):
        _manifest(tiny_model, outputs={"label": "label"})
    with pytest.raises(ValidationError, match="also a thresholded"):
        _manifest(tiny_model, default_decision="review")
