"""``streamscore models init``: a manifest skeleton from an ONNX file and its input refs.

In: the ONNX bytes, the model's name, the input refs in column order (``distance_km``,
``zone_stats:avg_minutes_7d``, optionally ``ref=default``), the entity keys, and
optionally the training data (CSV or Parquet) for the lineage and the defaults.
Out: a manifest dict for ``streamscore models register`` plus the list of what is left
for the author to fill in or review. The graph decides the form: one 2-D float input
becomes ``input_tensor``; otherwise one graph input per ref, matched by name.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from models.errors import ModelError

__all__ = ["Skeleton", "manifest_skeleton", "parse_ref_default"]

_FLOAT = "tensor(float)"
_STRING = "tensor(string)"
_ZIPMAP = "seq(map(int64,tensor(float)))"


class SkeletonError(ModelError):
    """The ONNX file and the given refs cannot make a manifest; the message says why."""


@dataclass
class Skeleton:
    manifest: dict[str, Any]
    # what the author still has to fill in or review, one line each
    todo: list[str] = field(default_factory=list)


def parse_ref_default(spec: str) -> tuple[str, float | str | None]:
    """``"distance_km=1.5"`` -> ``("distance_km", 1.5)``; ``"zone"`` -> ``("zone", None)``."""
    ref, sep, default = spec.partition("=")
    ref = ref.strip()
    if not ref:
        raise SkeletonError(f"input {spec!r}: expected REF or REF=DEFAULT")
    if not sep:
        return ref, None
    try:
        return ref, float(default)
    except ValueError:
        return ref, default


def _column_name(ref: str) -> str:
    return ref.replace(":", "__")


def _training_frame(path: Path) -> Any:
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise SkeletonError(f"--training-data {path}: expected a .parquet or .csv file")


def _score_output(session: ort.InferenceSession, task: str | None) -> tuple[str, str]:
    """(task, score output): a classifier's probabilities, else a regressor's prediction."""
    outputs = session.get_outputs()
    for out in outputs:
        if out.type == _ZIPMAP:
            raise SkeletonError(
                f"output {out.name!r} is a ZipMap (a list of dicts): export the classifier "
                "with skl2onnx options={id(model): {'zipmap': False}}"
            )
    floats = [o for o in outputs if o.type == _FLOAT]
    probabilities = [o for o in floats if len(o.shape) == 2 and o.shape[1] == 2]
    by_name = [o for o in floats if o.name in ("probabilities", "probability")]
    if task in (None, "binary_classification") and (by_name or probabilities):
        return "binary_classification", (by_name or probabilities)[0].name
    if task == "binary_classification":
        raise SkeletonError(
            f"no [N, 2] probability output among {[o.name for o in outputs]}: "
            "export the classifier's probabilities (skl2onnx zipmap=False)"
        )
    if not floats:
        raise SkeletonError(
            f"no float output among {[(o.name, o.type) for o in outputs]} to use as the score"
        )
    return "regression", floats[0].name


def manifest_skeleton(
    onnx_bytes: bytes,
    name: str,
    inputs: Sequence[str],
    entity_keys: Sequence[str] = (),
    task: str | None = None,
    training_data: Path | None = None,
    time_column: str = "event_timestamp",
) -> Skeleton:
    """A manifest for ``onnx_bytes`` fed by ``inputs`` (``ref`` or ``ref=default``)."""
    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise SkeletonError(f"ONNX Runtime cannot load the model: {exc}") from exc
    specs = [parse_ref_default(part) for spec in inputs for part in spec.split(",") if part]
    if not specs:
        raise SkeletonError("no inputs: pass --input REF for each model input, in column order")
    refs = [ref for ref, _ in specs]
    todo: list[str] = []
    graph_inputs = session.get_inputs()
    input_tensor: str | None = None
    dtypes: dict[str, str] = {}
    if (
        len(graph_inputs) == 1
        and graph_inputs[0].type == _FLOAT
        and len(graph_inputs[0].shape) == 2
    ):
        only = graph_inputs[0]
        width = only.shape[1]
        if isinstance(width, int) and width != len(refs) and not (width == 1 == len(refs)):
            raise SkeletonError(
                f"the graph's input {only.name!r} has {width} columns but {len(refs)} inputs "
                f"were given ({', '.join(refs)}): give one per column, in training order"
            )
        if len(refs) > 1 or only.name != _column_name(refs[0]):
            input_tensor = only.name
        dtypes = dict.fromkeys(refs, "float32")
    else:
        by_name = {i.name: i for i in graph_inputs}
        missing = [r for r in refs if _column_name(r) not in by_name]
        if missing:
            raise SkeletonError(
                f"graph inputs are {sorted(by_name)}; no input named after "
                f"{[_column_name(r) for r in missing]} (a ref 'view:feature' feeds the input "
                "'view__feature'). Name the inputs so at export, or export one [N, k] float input"
            )
        extra = sorted(set(by_name) - {_column_name(r) for r in refs})
        if extra:
            raise SkeletonError(f"graph inputs {extra} are fed by no --input")
        for ref in refs:
            kind = by_name[_column_name(ref)].type
            if kind not in (_FLOAT, _STRING):
                raise SkeletonError(
                    f"graph input {_column_name(ref)!r} is {kind}: inputs must be float or string"
                )
            dtypes[ref] = "float32" if kind == _FLOAT else "string"
    task, score_output = _score_output(session, task)

    frame = _training_frame(training_data) if training_data is not None else None
    manifest_inputs: list[dict[str, Any]] = []
    for ref, default in specs:
        entry: dict[str, Any] = {"ref": ref}
        if input_tensor is None:
            entry |= {"name": _column_name(ref), "dtype": dtypes[ref]}
        if default is None:
            default = _default(ref, dtypes[ref], frame)
            if default is None:
                default = 0.0
                todo.append(f"inputs: review the default of {ref!r} (0.0 was written)")
        entry["default"] = default
        manifest_inputs.append(entry)

    feature_refs = [r for r in refs if ":" in r]
    keys: dict[str, str] = {}
    for spec in entity_keys:
        join_key, _, event_field = spec.partition("=")
        keys[join_key.strip()] = (event_field or join_key).strip()
    if feature_refs and not keys:
        raise SkeletonError(
            f"feature refs {feature_refs} need the entity they are looked up by: "
            "--entity-key JOIN_KEY (or JOIN_KEY=EVENT_FIELD when the event names it otherwise)"
        )
    event_schema = dict.fromkeys(keys.values(), "string") | {
        r: "number" if dtypes[r] == "float32" else "string" for r in refs if ":" not in r
    }

    lineage: dict[str, Any] = {"feature_refs": feature_refs}
    if frame is not None:
        assert training_data is not None
        lineage["rows"] = len(frame)
        lineage["data_sha256"] = hashlib.sha256(training_data.read_bytes()).hexdigest()
        if time_column in frame:
            times = frame[time_column]
            lineage["start"] = _rfc3339(times.min())
            lineage["end"] = _rfc3339(times.max())
        else:
            todo.append(
                f"lineage.start/end: the training data has no {time_column!r} column "
                "(--time-column)"
            )
    else:
        todo.append(
            "lineage.start, lineage.end, lineage.rows, lineage.data_sha256: "
            "pass --training-data FILE, or fill them in"
        )
    manifest: dict[str, Any] = {"name": name, "task": task}
    if input_tensor is not None:
        manifest["input_tensor"] = input_tensor
    manifest |= {
        "inputs": manifest_inputs,
        "entity_keys": keys,
        "outputs": {"score": score_output},
        "event_schema": event_schema,
    }
    if task == "binary_classification":
        manifest |= {"decisions": [{"name": "positive", "min_score": 0.5}]}
        manifest |= {"default_decision": "negative"}
        todo.append("decisions: review the 0.5 threshold and the decision names")
    else:
        manifest |= {"default_decision": "scored"}
    manifest |= {
        "lineage": lineage,
        "metrics": {},
        "card": {"intended_use": "", "known_limits": []},
    }
    todo.append("metrics: add the hold-out metrics (the promotion gate compares them)")
    todo.append("card.intended_use, card.known_limits: say what the model is for")
    return Skeleton(manifest, todo)


def _default(ref: str, dtype: str, frame: Any) -> float | str | None:
    """A missing value's stand-in: the training median of its column (None: unknown)."""
    if dtype == "string":
        return "__missing__"
    if frame is None:
        return None
    for column in (_column_name(ref), ref):
        if column in frame:
            median = float(frame[column].median())
            return round(median, 6) if math.isfinite(median) else None
    return None


def _rfc3339(value: Any) -> str:
    import pandas as pd

    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return str(stamp.tz_convert("UTC").isoformat()).replace("+00:00", "Z")
