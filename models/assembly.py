"""Assemble ONNX input columns from events and fetched features.

In: a ``ModelManifest``, a micro-batch of validated events (dicts) and the
features fetched for it (``{ref: [value per row]}``, as
``features.online.OnlineFeatureSource.fetch`` returns). Out: an
``AssembledBatch`` with one ``[N, 1]`` array per ONNX input (float32 or
object-dtype strings) and, per row, which inputs were missing and replaced by
the manifest default. Also the Feast entity rows for a batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.manifest import ModelInput, ModelManifest

__all__ = ["AssembledBatch", "assemble_inputs", "entity_rows"]


@dataclass(frozen=True)
class AssembledBatch:
    """Model-ready columns plus the inputs each row had to default."""

    columns: dict[str, np.ndarray]
    # per row: refs (event field names or "view:feature") replaced by their default
    missing: list[list[str]]

    def __len__(self) -> int:
        return len(self.missing)

    def features_missing(self, manifest: ModelManifest) -> list[list[str]]:
        """Only the Feast references among ``missing``, per row."""
        refs = set(manifest.feature_refs())
        return [[r for r in row if r in refs] for row in self.missing]


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _as_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _column(spec: ModelInput, values: Sequence[Any], missing: list[list[str]]) -> np.ndarray:
    # Plain Python per cell, one numpy conversion per column: writing numpy cells one by
    # one costs more than the list it replaces.
    if spec.dtype == "float32":
        default_f = float(spec.default)
        floats: list[float] = []
        for i, value in enumerate(values):
            f = _as_float(value)
            if f is None:
                f = default_f
                missing[i].append(spec.ref)
            floats.append(f)
        return np.array(floats, dtype=np.float32).reshape(-1, 1)
    default_s = str(spec.default)
    strings = np.empty((len(missing), 1), dtype=object)
    column: list[str] = []
    for i, value in enumerate(values):
        s = _as_string(value)
        if s is None:
            s = default_s
            missing[i].append(spec.ref)
        column.append(s)
    strings[:, 0] = column  # an object array from a list of str, without per-cell writes
    return strings


def assemble_inputs(
    manifest: ModelManifest,
    events: Sequence[Mapping[str, Any]],
    features: Mapping[str, Sequence[Any]],
) -> AssembledBatch:
    """Columns for ``manifest.inputs``; None/NaN/absent/unconvertible values become defaults.

    A feature reference absent from ``features`` (e.g. the lookup was skipped)
    counts as missing for every row.
    """
    n = len(events)
    missing: list[list[str]] = [[] for _ in range(n)]
    columns: dict[str, np.ndarray] = {}
    for spec in manifest.inputs:
        if spec.source == "event":
            values: Sequence[Any] = [event.get(spec.ref) for event in events]
        else:
            fetched = features.get(spec.ref)
            if fetched is None:
                values = [None] * n
            elif len(fetched) != n:
                raise ValueError(
                    f"feature {spec.ref!r} has {len(fetched)} values for a batch of {n} events"
                )
            else:
                values = fetched
        columns[spec.name] = _column(spec, values, missing)
    # one ref can feed two inputs; report it once per row
    missing = [list(dict.fromkeys(row)) for row in missing]
    return AssembledBatch(columns=columns, missing=missing)


def entity_rows(
    manifest: ModelManifest, events: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Feast entity rows (join key -> value) taken from the events' fields."""
    return [
        {join_key: event.get(field) for join_key, field in manifest.entity_keys.items()}
        for event in events
    ]
