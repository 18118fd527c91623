"""assemble_inputs / entity_rows: columns, defaults and the per-row missing lists."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from models.assembly import assemble_inputs, entity_rows
from models.manifest import ModelManifest


@pytest.fixture
def manifest(tiny_model: Any) -> ModelManifest:
    return ModelManifest.model_validate(
        {
            **tiny_model.fields,
            "name": "fraud",
            "version": "1",
            "sha256": "x",
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
    )


def test_values_defaults_and_missing(manifest: ModelManifest) -> None:
    events = [
        {"user_id": "u1", "amount": 12.5, "channel": "web"},
        {"user_id": "u2", "amount": None, "channel": "pos"},
        {"user_id": "u3"},
    ]
    features = {
        "user_stats:avg_amount_30d": [20.0, None, float("nan")],
        "user_stats:home_country": ["US", None, "GB"],
    }
    batch = assemble_inputs(manifest, events, features)
    assert set(batch.columns) == {i.name for i in manifest.inputs}
    amount = batch.columns["amount"]
    assert amount.dtype == np.float32 and amount.shape == (3, 1)
    np.testing.assert_array_equal(amount[:, 0], [12.5, 30.0, 30.0])
    np.testing.assert_array_equal(
        batch.columns["user_stats__avg_amount_30d"][:, 0], [20.0, 40.0, 40.0]
    )
    channel = batch.columns["channel"]
    assert channel.dtype == object and channel.shape == (3, 1)
    assert channel[:, 0].tolist() == ["web", "pos", "__missing__"]
    assert batch.columns["user_stats__home_country"][:, 0].tolist() == ["US", "__missing__", "GB"]
    assert batch.missing == [
        [],
        ["amount", "user_stats:avg_amount_30d", "user_stats:home_country"],
        ["amount", "channel", "user_stats:avg_amount_30d"],
    ]
    assert batch.features_missing(manifest) == [
        [],
        ["user_stats:avg_amount_30d", "user_stats:home_country"],
        ["user_stats:avg_amount_30d"],
    ]
    assert len(batch) == 3


def test_absent_feature_lookup_defaults_every_row(manifest: ModelManifest) -> None:
    events = [{"amount": 1.0, "channel": "app"}] * 2
    batch = assemble_inputs(manifest, events, {})
    assert batch.missing == [["user_stats:avg_amount_30d", "user_stats:home_country"]] * 2


def test_unconvertible_values_default(manifest: ModelManifest) -> None:
    batch = assemble_inputs(
        manifest,
        [{"amount": "12", "channel": b"web"}],
        {"user_stats:avg_amount_30d": [float("inf")], "user_stats:home_country": [7]},
    )
    assert batch.columns["amount"][0, 0] == 30.0
    assert batch.columns["channel"][0, 0] == "web"
    assert batch.columns["user_stats__home_country"][0, 0] == "7"
    assert batch.missing == [["amount", "user_stats:avg_amount_30d"]]


def test_wrong_feature_length_is_an_error(manifest: ModelManifest) -> None:
    with pytest.raises(ValueError, match="2 values for a batch of 1"):
        assemble_inputs(manifest, [{}], {"user_stats:avg_amount_30d": [1.0, 2.0]})


def test_empty_batch(manifest: ModelManifest) -> None:
    batch = assemble_inputs(manifest, [], {})
    assert batch.missing == [] and batch.columns["amount"].shape == (0, 1)


def test_entity_rows_map_join_keys(manifest: ModelManifest) -> None:
    two_keys = manifest.model_copy(
        update={"entity_keys": {"user_id": "card_holder", "merchant_id": "merchant_id"}}
    )
    rows = entity_rows(two_keys, [{"card_holder": "u1", "merchant_id": "m1", "x": 1}, {}])
    assert rows == [{"user_id": "u1", "merchant_id": "m1"}, {"user_id": None, "merchant_id": None}]
