"""A second, unrelated use case served with no code change: delivery ETA per courier.

Different entity (courier), feature view (courier_stats), event shape and model type
(a regressor). Everything it needs is a Feast repo (feature_repo/delivery) and a
registered model whose manifest declares its inputs, join keys and event contract;
then a stock `streamscore worker` with STREAMSCORE_MODEL_NAME=eta serves it on Kafka.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error

from features.delivery_data import delivery_events, generate_delivery_data
from features.store import OnlineStoreConfig, apply_repo, materialize, open_store
from models.manifest import Lineage, ModelInput
from models.registry import ModelRegistry
from streams import stack
from streams.cli.produce import produce_records
from streams.codec import decode, encode
from streams.settings import Settings
from tests.integration.test_scoring_kafka import collect

pytestmark = pytest.mark.integration

REFS = [
    "courier_stats:avg_minutes_per_km_30d",
    "courier_stats:deliveries_7d",
    "courier_stats:late_rate_30d",
]


def train_eta(repo: Path, online: OnlineStoreConfig, deliveries: pd.DataFrame, root: Path) -> str:
    store = open_store(repo, online)
    frame = store.get_historical_features(
        entity_df=deliveries[["event_timestamp", "courier_id"]].assign(
            _row=np.arange(len(deliveries))
        ),
        features=REFS,
        full_feature_names=True,
    ).to_df()
    frame = deliveries.join(frame.set_index("_row").drop(columns=["event_timestamp", "courier_id"]))
    names = ["distance_km", *(r.replace(":", "__") for r in REFS)]
    defaults = {n: float(frame[n].median()) for n in names}
    x = frame[names].astype(np.float32).fillna(defaults).to_numpy()
    y = frame["minutes"].to_numpy()
    cut = int(len(frame) * 0.8)
    model = LinearRegression().fit(x[:cut], y[:cut])
    onnx_model = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, len(names)]))],
        target_opset=17,
    )
    # one input per feature, as the pipeline feeds them: a Concat in front
    from onnx import compose, helper

    concat = helper.make_graph(
        [helper.make_node("Concat", names, ["features"], axis=1)],
        "inputs",
        [helper.make_tensor_value_info(n, 1, [None, 1]) for n in names],
        [helper.make_tensor_value_info("features", 1, [None, len(names)])],
    )
    merged = compose.merge_models(
        helper.make_model(
            concat, opset_imports=onnx_model.opset_import, ir_version=onnx_model.ir_version
        ),
        onnx_model,
        io_map=[("features", "features")],
    )
    inputs = [
        ModelInput(
            name=n,
            source="event" if n == "distance_km" else "feature",
            ref=n.replace("__", ":"),
            dtype="float32",
            default=defaults[n],
        )
        for n in names
    ]
    manifest = ModelRegistry(root).register(
        "eta",
        merged.SerializeToString(),
        task="regression",
        inputs=inputs,
        entity_keys={"courier_id": "courier_id"},
        outputs={"score": "variable"},
        default_decision="on_time",
        decisions=[{"name": "late", "min_score": 30.0}],
        lineage=Lineage(
            feature_refs=REFS,
            feature_service="eta_v1",
            start=frame.event_timestamp.min(),
            end=frame.event_timestamp.max(),
            rows=len(frame),
            data_sha256="0" * 64,
            seed=0,
        ),
        metrics={"mae": float(mean_absolute_error(y[cut:], model.predict(x[cut:])))},
        event_schema={"courier_id": "string", "distance_km": "number"},
    )
    return manifest.version


async def test_delivery_eta_is_served_by_a_stock_worker(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    redis_url: str,
    root: Path,
    tmp_path: Path,
) -> None:
    repo = shutil.copytree(root / "feature_repo" / "delivery", tmp_path / "delivery")
    online = OnlineStoreConfig(kind="redis", redis_url=redis_url)
    deliveries = generate_delivery_data(repo / "data", seed=3)
    apply_repo(repo, online)
    materialize(
        open_store(repo, online), end=datetime.now(UTC), start=datetime(2020, 1, 1, tzinfo=UTC)
    )
    registry_root = tmp_path / "registry"
    version = train_eta(repo, online, deliveries, registry_root)
    assert ModelRegistry(registry_root).manifest("eta", version).metrics["mae"] < 4

    settings = settings_factory(model_name="eta", feature_repo=repo, registry_root=registry_root)
    worker_factory(settings)
    events = delivery_events(deliveries, 200)
    bad = {"event_id": "bad-1", "event_time": "2026-01-01T00:00:00Z", "courier_id": "c0001"}
    records = [(e["courier_id"].encode(), encode(e)) for e in events] + [(b"c0001", encode(bad))]
    await produce_records(settings, records, rate=None)
    predictions, dead = await collect(settings, expected=len(records))
    assert len(predictions) == 200 and len(dead) == 1
    assert dict(dead[0].headers)["error.message"].startswith(b"distance_km: required")

    values = {decode(p.value)["event_id"]: decode(p.value) for p in predictions}
    sample = values[events[0]["event_id"]]
    assert sample["model"] == "eta" and sample["entity"] == {"courier_id": events[0]["courier_id"]}
    assert sample["features_missing"] == [] and sample["decision"] in {"late", "on_time"}
    # parity with offline ONNX Runtime on the same feature vectors (online values from Feast)
    store = open_store(repo, online)
    online_values = store.get_online_features(
        features=REFS,
        entity_rows=[{"courier_id": e["courier_id"]} for e in events],
        full_feature_names=True,
    ).to_dict()
    registry = ModelRegistry(registry_root)
    session = ort.InferenceSession(registry.model_path("eta", version).read_bytes())
    feeds = {"distance_km": np.array([[e["distance_km"]] for e in events], np.float32)}
    for ref in REFS:
        name = ref.replace(":", "__")
        feeds[name] = np.array(online_values[name], np.float32).reshape(-1, 1)
    (expected,) = session.run(["variable"], feeds)
    got = np.array([values[e["event_id"]]["score"] for e in events])
    np.testing.assert_allclose(got, expected.reshape(-1), rtol=0, atol=1e-6)
    assert 5 < got.mean() < 60
