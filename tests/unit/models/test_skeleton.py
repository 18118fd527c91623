"""`models schema` and `models init`: the manifest documented and checkable, a skeleton
from an ONNX file that registers as written, and errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from skl2onnx import convert_sklearn, to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from models.manifest import ASSIGNED_FIELDS, ModelManifest, registration_schema
from models.registry import ModelRegistry
from models.skeleton import SkeletonError, manifest_skeleton
from streams.cli import main
from streams.cli.produce import served_entity_field
from streams.settings import Settings


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path, Any]:
    rng = np.random.default_rng(4)
    n = 200
    frame = pd.DataFrame(
        {
            "event_timestamp": pd.date_range("2026-03-01", periods=n, freq="h", tz="UTC"),
            "team_id": [f"t{i % 7}" for i in range(n)],
            "priority": rng.integers(1, 5, n).astype(float),
            "team_stats__open_tickets": rng.integers(0, 40, n).astype(float),
        }
    )
    frame["hours"] = 2 + 0.3 * frame.team_stats__open_tickets - frame.priority
    x = frame[["priority", "team_stats__open_tickets"]].to_numpy(np.float32)
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(x, frame.hours)
    path = tmp_path_factory.mktemp("train") / "train.parquet"
    frame.to_parquet(path)
    return to_onnx(model, x[:1]).SerializeToString(), path, model


def test_the_schema_is_the_manifest_file_without_what_registration_assigns() -> None:
    schema = registration_schema()
    assert schema["required"] == ["name", "task", "inputs", "entity_keys", "outputs", "lineage"]
    assert not set(ASSIGNED_FIELDS) & set(schema["properties"])
    assert schema["additionalProperties"] is False  # a typo fails loudly
    assert schema["$defs"]["ModelInput"]["additionalProperties"] is False
    assert schema["$defs"]["ModelInput"]["required"] == ["ref", "default"]
    assert "HistoryEntry" not in schema["$defs"]
    assert "2-D float input" in schema["properties"]["input_tensor"]["description"]
    undocumented = [k for k, v in schema["properties"].items() if not v.get("description")]
    assert undocumented == [], undocumented


def test_models_schema_prints_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["models", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == registration_schema()
    assert main(["models", "schema", "-o", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == registration_schema()


def test_init_writes_a_manifest_that_registers_and_scores(
    regression: tuple[bytes, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_bytes, data, model = regression
    (tmp_path / "model.onnx").write_bytes(onnx_bytes)
    out = tmp_path / "manifest.json"
    argv = ["models", "init", str(tmp_path / "model.onnx"), "--name", "tickets"]
    argv += ["--input", "priority,team_stats:open_tickets", "--entity-key", "team_id"]
    argv += ["--training-data", str(data), "-o", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "to review: metrics" in err and "next: streamscore models register" in err
    manifest = json.loads(out.read_text())
    frame = pd.read_parquet(data)
    assert manifest["input_tensor"] == "X" and manifest["task"] == "regression"
    assert manifest["inputs"] == [
        {"ref": "priority", "default": float(frame.priority.median())},
        {
            "ref": "team_stats:open_tickets",
            "default": float(frame.team_stats__open_tickets.median()),
        },
    ]
    assert manifest["entity_keys"] == {"team_id": "team_id"}
    assert manifest["outputs"] == {"score": "variable"}
    assert manifest["event_schema"] == {"team_id": "string", "priority": "number"}
    assert manifest["lineage"]["rows"] == 200
    assert manifest["lineage"]["start"] == "2026-03-01T00:00:00Z"
    assert manifest["lineage"]["feature_refs"] == ["team_stats:open_tickets"]

    home = tmp_path / "home"
    argv = ["models", "register", "--onnx", str(tmp_path / "model.onnx"), "--manifest", str(out)]
    assert main([*argv, "--home", str(home)]) == 0
    capsys.readouterr()
    assert main(["models", "show", "1", "--json", "--home", str(home)]) == 0  # the only model
    shown = json.loads(capsys.readouterr().out)
    assert (shown["name"], shown["version"], shown["input_tensor"]) == ("tickets", "1", "X")
    loaded = ModelRegistry(home / "registry").load("tickets", "1")
    x = np.array([[1, 30], [4, 2]], np.float32)
    columns = {"priority": x[:, :1], "team_stats__open_tickets": x[:, 1:]}
    np.testing.assert_allclose(loaded.scorer.score_batch(columns), model.predict(x), rtol=1e-5)
    # produce keys a use case's events by its served model's entity key
    settings = Settings(home=home, model_name="tickets", bootstrap_servers="127.0.0.1:1")
    assert served_entity_field(settings) == "team_id"
    assert served_entity_field(settings.model_copy(update={"model_name": "other"})) is None


def test_init_without_training_data_says_what_to_fill(regression: tuple[bytes, Path, Any]) -> None:
    skeleton = manifest_skeleton(regression[0], "tickets", ["priority=2", "items"])
    assert skeleton.manifest["inputs"] == [
        {"ref": "priority", "default": 2.0},
        {"ref": "items", "default": 0.0},
    ]
    assert skeleton.manifest["entity_keys"] == {}
    assert any("default of 'items'" in line for line in skeleton.todo)
    assert any(line.startswith("lineage.start, lineage.end") for line in skeleton.todo)
    with pytest.raises(ValueError, match="lineage.start"):
        ModelManifest.model_validate(
            skeleton.manifest | {"version": "1", "sha256": "x", "created_at": "2026-01-01T00:00Z"}
        )


def test_init_per_input_form_and_classifiers(tiny_model: Any) -> None:
    refs = ["amount", "channel", "user_stats:avg_amount_30d", "user_stats:home_country"]
    skeleton = manifest_skeleton(tiny_model.onnx_bytes, "fraud", refs, ["user_id"])
    manifest = skeleton.manifest
    assert "input_tensor" not in manifest and manifest["task"] == "binary_classification"
    assert manifest["outputs"] == {"score": "probabilities"}
    assert [(i["name"], i["dtype"], i["default"]) for i in manifest["inputs"]] == [
        ("amount", "float32", 0.0),
        ("channel", "string", "__missing__"),
        ("user_stats__avg_amount_30d", "float32", 0.0),
        ("user_stats__home_country", "string", "__missing__"),
    ]
    assert manifest["decisions"] == [{"name": "positive", "min_score": 0.5}]


def _classifier(zipmap: bool) -> bytes:
    x = np.random.default_rng(0).random((60, 3)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    options = {} if zipmap else {id(clf): {"zipmap": False}}
    return convert_sklearn(
        clf, initial_types=[("input", FloatTensorType([None, 3]))], options=options
    ).SerializeToString()


def test_init_errors_say_what_to_do(regression: tuple[bytes, Path, Any]) -> None:
    onnx_bytes = regression[0]
    with pytest.raises(SkeletonError, match=r"has 2 columns but 3 inputs were given"):
        manifest_skeleton(onnx_bytes, "t", ["a", "b", "c"])
    with pytest.raises(SkeletonError, match="--entity-key JOIN_KEY"):
        manifest_skeleton(onnx_bytes, "t", ["a", "team_stats:open_tickets"])
    with pytest.raises(SkeletonError, match="zipmap"):
        manifest_skeleton(_classifier(zipmap=True), "c", ["a", "b", "c"])
    clf = manifest_skeleton(_classifier(zipmap=False), "c", ["a", "b", "c"])
    assert clf.manifest["outputs"] == {"score": "probabilities"}
    assert clf.manifest["input_tensor"] == "input"
    with pytest.raises(SkeletonError, match="no inputs"):
        manifest_skeleton(onnx_bytes, "t", [])


def test_init_errors_reach_the_terminal_as_one_line(
    regression: tuple[bytes, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.onnx").write_bytes(regression[0])
    assert main(["models", "init", str(tmp_path / "m.onnx"), "--name", "t", "--input", "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamscore models init: the graph's input 'X' has 2 columns")
