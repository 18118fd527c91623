"""The model manifest: what a registered model consumes, emits and decides.

In: JSON (``manifest.json`` beside ``model.onnx``) or keyword fields from
training. Out: a validated, immutable ``ModelManifest`` that tells the
pipeline which event fields and Feast feature references (``view:feature``)
feed which ONNX input, how event fields map to Feast join keys, the default
used when a value is missing, and the score thresholds behind each decision.
Unknown keys are refused so a typo fails loudly.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ModelInput",
    "Decision",
    "Lineage",
    "FallbackRule",
    "FallbackPolicy",
    "HistoryEntry",
    "ModelCard",
    "ModelManifest",
    "ASSIGNED_FIELDS",
    "registration_schema",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInput(_Strict):
    """One model input, fed from an event field or a Feast feature.

    In the per-input form it names an ONNX graph input of shape ``[N, 1]``; with the
    manifest's ``input_tensor`` it is one column of that single ``[N, k]`` float input,
    in the order of ``inputs``.
    """

    name: str = Field(
        default="",
        description="ONNX graph input name (per-input form) or a label for the column "
        "(input_tensor form); defaults to the ref, ':' replaced by '__'",
    )
    source: Literal["event", "feature"] | None = Field(
        default=None,
        description="where the value comes from; default: 'feature' when the ref has a "
        "':' ('view:feature'), else 'event'",
    )
    ref: str = Field(description="event field name, or 'view:feature' for a Feast feature")
    dtype: Literal["float32", "string"] = Field(
        default="float32", description="float32, or string (per-input form only)"
    )
    default: float | str = Field(description="value used when the input is missing")

    @model_validator(mode="before")
    @classmethod
    def _infer(cls, data: Any) -> Any:
        """A bare ``{"ref": ..., "default": ...}`` is enough: name and source follow."""
        if isinstance(data, dict) and isinstance(data.get("ref"), str):
            ref = data["ref"]
            if data.get("source") is None:
                data = data | {"source": "feature" if ":" in ref else "event"}
            if not data.get("name"):
                data = data | {"name": ref.replace(":", "__")}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelInput:
        if self.source == "feature":
            view, sep, feature = self.ref.partition(":")
            if not (sep and view and feature) or ":" in feature:
                raise ValueError(
                    f"input {self.name!r}: feature ref must look like 'view:feature', "
                    f"got {self.ref!r}"
                )
        if self.dtype == "float32":
            if isinstance(self.default, str) or not math.isfinite(float(self.default)):
                raise ValueError(
                    f"input {self.name!r}: float32 input needs a finite numeric default, "
                    f"got {self.default!r}"
                )
        elif not isinstance(self.default, str):
            raise ValueError(
                f"input {self.name!r}: string input needs a string default, got {self.default!r}"
            )
        return self


class Decision(_Strict):
    """A decision taken when the score is at least ``min_score``."""

    name: str = Field(description="the decision's name, e.g. 'review'")
    min_score: float = Field(description="taken when the score is at least this")


class Lineage(_Strict):
    """Where the training data came from, enough to reproduce or audit it."""

    feature_refs: list[str] = Field(description="the 'view:feature' refs the model was trained on")
    feature_service: str | None = Field(default=None, description="Feast feature service, if any")
    start: datetime = Field(description="first event time of the training data (RFC 3339)")
    end: datetime = Field(description="last event time of the training data (RFC 3339)")
    rows: int = Field(ge=0, description="rows of the training data")
    data_sha256: str = Field(description="sha256 of the training data file (or its rows)")
    seed: int | None = Field(default=None, description="random seed of the training run")
    code_version: str | None = Field(
        default=None, description="e.g. the git commit that trained it"
    )


class FallbackRule(_Strict):
    """When ``field`` of the event is in ``[min, max)`` (or equals ``equals``): this score."""

    field: str
    min: float | None = None
    max: float | None = None
    equals: str | None = None
    score: float
    decision: str | None = Field(
        default=None, description="decision to take; the manifest thresholds decide when absent"
    )

    def matches(self, event: dict[str, Any]) -> bool:
        value = event.get(self.field)
        if self.equals is not None:
            return value is not None and str(value) == self.equals
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value >= self.max)


class FallbackPolicy(_Strict):
    """What to answer when the model cannot: rules over event fields, first match wins.

    Used when the model raises (``model_error``), the online store does not answer
    (``features_unavailable``) or a row misses more than ``max_missing_fraction`` of
    its feature references (``features_missing``). Without a policy those events are
    dead-lettered instead.
    """

    rules: list[FallbackRule] = Field(default_factory=list)
    default_score: float
    default_decision: str | None = None
    max_missing_fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="share of feature refs a row may miss before the fallback decides",
    )


class HistoryEntry(_Strict):
    """One lifecycle step of a model version: registered, promoted, forced, rolled back."""

    at: datetime
    action: str
    by: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class SignatureRecord(_Strict):
    """Who signed which files of a version, with which key (models/signing.py)."""

    signer: str
    key_id: str = Field(description="sha256 of the signing key's DER public key")
    signed_at: datetime
    files: list[str]
    method: str


class ModelCard(_Strict):
    """The human part of the model card; the rest comes from the manifest's fields."""

    intended_use: str = ""
    known_limits: list[str] = Field(default_factory=list)
    owner: str | None = None


EventFieldType = Literal["string", "number", "timestamp"]


class ModelManifest(_Strict):
    """Everything the pipeline needs to know about one registered model version."""

    name: str = Field(description="the model's name in the registry, e.g. 'eta'")
    version: str = Field(description="assigned at registration: 1, 2, ...")
    sha256: str = Field(description="assigned at registration: sha256 of model.onnx")
    created_at: datetime = Field(description="assigned at registration")
    task: Literal["binary_classification", "regression"] = Field(
        description="binary_classification: the score is P(class 1); regression: the prediction"
    )
    inputs: list[ModelInput] = Field(
        description="what feeds the model, in order: ONNX inputs (per-input form) or the "
        "columns of input_tensor"
    )
    input_tensor: str | None = Field(
        default=None,
        # Unset, it is left out of manifest.json, so a registry written by this version is
        # still read by workers of the previous one (a rolling upgrade).
        exclude_if=lambda value: value is None,
        description="name of the graph's one 2-D float input [N, k] whose columns are "
        "'inputs' in their order (what skl2onnx, XGBoost, LightGBM and PyTorch exports "
        "have); unset: one [N, 1] graph input per manifest input, named after it",
    )
    entity_keys: dict[str, str] = Field(
        description="Feast join key -> event field, e.g. {'user_id': 'user_id'}"
    )
    outputs: dict[str, str] = Field(
        description="role -> ONNX output name; 'score' is required, e.g. {'score': 'probabilities'}"
    )
    decisions: list[Decision] = Field(
        default_factory=list,
        description="thresholds on the score: the highest min_score reached decides",
    )
    default_decision: str = Field(
        default="approve", description="the decision when no threshold is reached"
    )
    lineage: Lineage = Field(description="where the training data came from")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="hold-out metrics; the promotion gate compares roc_auc/pr_auc "
        "(classification) or mae/rmse (regression)",
    )
    profile: dict[str, Any] = Field(
        default_factory=dict,
        description="reference distributions for drift detection (written by training)",
    )
    fallback: FallbackPolicy | None = Field(
        default=None,
        description="what to answer when the model or the online store cannot; "
        "none: those events are dead-lettered",
    )
    event_schema: dict[str, EventFieldType] | None = Field(
        default=None,
        description="required event fields and their types; None: the card-transaction "
        "contract of the example (streams.contract)",
    )
    card: ModelCard = Field(
        default_factory=ModelCard, description="the human part of the model card"
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, description="assigned: lifecycle steps (registered, promoted...)"
    )
    signature: SignatureRecord | None = Field(
        default=None, description="assigned at registration: who signed which files with which key"
    )
    pii_fields: list[str] = Field(
        default_factory=list,
        description="event fields this use case holds as personal data (beyond the "
        "settings' STREAMSCORE_PII_FIELDS): kept out of logs, signals and metric labels",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelManifest:
        names = [i.name for i in self.inputs]
        if not names:
            raise ValueError(f"model {self.name!r}: manifest declares no inputs")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model {self.name!r}: duplicate input names {dupes}")
        if self.input_tensor is not None:
            strings = [i.name for i in self.inputs if i.dtype != "float32"]
            if strings:
                raise ValueError(
                    f"model {self.name!r}: input_tensor {self.input_tensor!r} is one float "
                    f"tensor, but inputs {strings} are strings: encode them in the graph "
                    "and use the per-input form (no input_tensor), or feed numeric inputs"
                )
        if "score" not in self.outputs:
            raise ValueError(f"model {self.name!r}: outputs must name the 'score' output")
        decision_names = [d.name for d in self.decisions]
        if len(set(decision_names)) != len(decision_names):
            raise ValueError(f"model {self.name!r}: duplicate decision names {decision_names}")
        if self.default_decision in decision_names:
            raise ValueError(
                f"model {self.name!r}: default_decision {self.default_decision!r} "
                "is also a thresholded decision"
            )
        return self

    def fallback_score(self, event: dict[str, Any]) -> tuple[float, str]:
        """Score and decision of the fallback policy for one event (policy required)."""
        policy = self.fallback
        if policy is None:
            raise ValueError(f"model {self.name!r} v{self.version} has no fallback policy")
        for rule in policy.rules:
            if rule.matches(event):
                return rule.score, rule.decision or self.decide(rule.score)
        return policy.default_score, policy.default_decision or self.decide(policy.default_score)

    def feature_refs(self) -> list[str]:
        """Feast references the model reads, in input order, without duplicates."""
        return list(dict.fromkeys(i.ref for i in self.inputs if i.source == "feature"))

    def event_fields(self) -> list[str]:
        """Event fields the model reads (inputs and join keys), without duplicates."""
        fields = [i.ref for i in self.inputs if i.source == "event"]
        return list(dict.fromkeys(fields + list(self.entity_keys.values())))

    def decide(self, score: float) -> str:
        """The decision with the highest ``min_score`` that ``score`` reaches, else the default."""
        best: Decision | None = None
        for decision in self.decisions:
            if score >= decision.min_score and (
                best is None or decision.min_score > best.min_score
            ):
                best = decision
        return best.name if best is not None else self.default_decision

    @property
    def score_output(self) -> str:
        return self.outputs["score"]


ASSIGNED_FIELDS = ("version", "sha256", "created_at", "history")
"""Manifest fields the registry fills in at registration; a manifest file leaves them out."""


def registration_schema() -> dict[str, Any]:
    """JSON Schema of a manifest file as ``streamscore models register`` takes it.

    Generated from :class:`ModelManifest`, so it cannot drift from what registration
    validates; the fields the registry assigns (:data:`ASSIGNED_FIELDS`) are left out.
    """
    schema = ModelManifest.model_json_schema()
    for name in ASSIGNED_FIELDS:
        schema["properties"].pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in ASSIGNED_FIELDS]
    defs = schema.get("$defs", {})
    while unused := [n for n in defs if f'"#/$defs/{n}"' not in json.dumps(schema)]:
        for name in unused:
            del defs[name]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "streamscore model manifest",
        "description": (
            "What a registered model consumes, emits and decides: "
            "`streamscore models register --onnx model.onnx --manifest manifest.json`. "
            "Unknown keys are refused. " + (ModelManifest.__doc__ or "")
        ),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
