"""Fixtures of the model tests: a tiny sklearn pipeline exported to ONNX, and manifest fields."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from models.manifest import Decision, Lineage, ModelInput


@dataclass(frozen=True)
class TinyModel:
    onnx_bytes: bytes
    pipeline: Pipeline
    frame: pd.DataFrame
    fields: dict[str, Any]


def tiny_inputs() -> list[ModelInput]:
    return [
        ModelInput(name="amount", source="event", ref="amount", dtype="float32", default=30.0),
        ModelInput(
            name="channel", source="event", ref="channel", dtype="string", default="__missing__"
        ),
        ModelInput(
            name="user_stats__avg_amount_30d",
            source="feature",
            ref="user_stats:avg_amount_30d",
            dtype="float32",
            default=40.0,
        ),
        ModelInput(
            name="user_stats__home_country",
            source="feature",
            ref="user_stats:home_country",
            dtype="string",
            default="__missing__",
        ),
    ]


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 0.8, n).astype(np.float32),
            "channel": rng.choice(["pos", "app", "web"], n),
            "user_stats__avg_amount_30d": rng.lognormal(3.5, 0.3, n).astype(np.float32),
            "user_stats__home_country": rng.choice(["US", "GB"], n),
        }
    )
    y = ((frame.amount > 2 * frame.user_stats__avg_amount_30d) | (frame.channel == "web")).astype(
        int
    )
    clf = LogisticRegression(max_iter=500)
    pipeline = Pipeline(
        [
            (
                "cols",
                ColumnTransformer(
                    [
                        (
                            "oh",
                            OneHotEncoder(handle_unknown="ignore"),
                            ["channel", "user_stats__home_country"],
                        ),
                        ("num", "passthrough", ["amount", "user_stats__avg_amount_30d"]),
                    ]
                ),
            ),
            ("clf", clf),
        ]
    ).fit(frame, y)
    onnx_model = convert_sklearn(
        pipeline,
        initial_types=[
            ("amount", FloatTensorType([None, 1])),
            ("channel", StringTensorType([None, 1])),
            ("user_stats__avg_amount_30d", FloatTensorType([None, 1])),
            ("user_stats__home_country", StringTensorType([None, 1])),
        ],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    fields: dict[str, Any] = {
        "task": "binary_classification",
        "inputs": tiny_inputs(),
        "entity_keys": {"user_id": "user_id"},
        "outputs": {"score": "probabilities"},
        "decisions": [
            Decision(name="review", min_score=0.5),
            Decision(name="decline", min_score=0.9),
        ],
        "lineage": Lineage(
            feature_refs=["user_stats:avg_amount_30d", "user_stats:home_country"],
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2026, 1, 2, tzinfo=UTC),
            rows=n,
            data_sha256="0" * 64,
            seed=0,
        ),
        "metrics": {"roc_auc": 1.0},
    }
    return TinyModel(onnx_model.SerializeToString(), pipeline, frame, fields)
