"""Train, evaluate, export and register the fraud model; bootstrap the example.

In: a Feast ``FeatureStore`` (point-in-time-correct features through a feature
service, ``fraud_v2`` by default; see :mod:`features.historical`), the generated
offline data (transactions with labels) and a ``ModelRegistry``. Out: a registered
ONNX model whose manifest holds its inputs, defaults, decision thresholds, hold-out
metrics, lineage and the reference profile used for drift detection.

Deterministic: the same data, seed and code give the same model and metrics.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from features.fraud_data import OfflineData, generate_offline_data, offline_data_from_dir
from features.historical import historical_features
from features.store import OnlineStoreConfig, apply_repo, materialize, open_store
from models.errors import ModelError
from models.manifest import (
    Decision,
    FallbackPolicy,
    FallbackRule,
    Lineage,
    ModelCard,
    ModelInput,
    ModelManifest,
)
from models.registry import ModelRegistry
from models.scoring import OnnxScorer

__all__ = ["TrainingConfig", "train_model", "bootstrap_example", "reference_profile"]

# Event fields the fraud model reads straight from the event.
EVENT_NUMERIC = ("amount",)
EVENT_STRING = ("channel", "country")
ENTITY_KEYS = {"user_id": "user_id", "merchant_id": "merchant_id"}
LABEL = "is_fraud"
STRING_DEFAULT = "__missing__"
SCORE_OUTPUT = "probabilities"


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of ``train_model``; the defaults make the example model."""

    # The example model: daily stats plus the feature worker's streaming aggregates.
    feature_service: str = "fraud_v2"
    holdout_fraction: float = 0.2  # the last 20% of time is the hold-out
    review_alert_rate: float = 0.02  # share of hold-out traffic sent to review
    decline_alert_rate: float = 0.005  # share declined outright
    train_negative_fraction: float = 0.3  # share of legitimate training rows kept
    max_iter: int = 150
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    onnx_tolerance: float = 1e-5
    threads: int = 1
    profile_bins: int = 10
    code_version: str | None = None
    # A row missing more than this share of its features is decided by the fallback rule.
    max_missing_fraction: float = 0.99


@contextmanager
def _hist_gradient_boosting_export_fix() -> Iterator[None]:
    """Work around skl2onnx 1.20 + onnx 1.23 failing on HistGradientBoosting leaves.

    skl2onnx passes ``missing=False`` (a Python bool) for leaf nodes into an
    integer attribute and onnx 1.23's ``make_attribute`` now rejects bools
    ("Expected an int, got a boolean"). Coercing that one argument to int keeps
    the exported graph identical to what older onnx produced. Remove this once
    skl2onnx ships the fix.
    """
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def _input_name(ref: str) -> str:
    # ONNX input names follow Feast's full feature names: view__feature.
    return ref.replace(":", "__")


def _feature_service_refs(
    store: FeatureStore, feature_service: str
) -> tuple[list[str], dict[str, str]]:
    service = store.get_feature_service(feature_service)
    refs: list[str] = []
    dtypes: dict[str, str] = {}
    for projection in service.feature_view_projections:
        for field in projection.features:
            ref = f"{projection.name_to_use()}:{field.name}"
            refs.append(ref)
            dtypes[ref] = "string" if field.dtype.to_value_type().name == "STRING" else "float32"
    return refs, dtypes


def _select_rows(tx: pd.DataFrame, config: TrainingConfig, seed: int) -> pd.DataFrame:
    """Time split plus down-sampling of legitimate training rows (reweighted in the fit).

    Keeping all frauds, all hold-out rows and a seeded share of legitimate training
    rows keeps the join and the fit of bootstrap small without biasing the model
    (weights undo the sampling).
    """
    tx = tx.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(drop=True)
    cut_time = tx["event_timestamp"].quantile(1.0 - config.holdout_fraction)
    is_test = (tx["event_timestamp"] >= cut_time).to_numpy()
    positive = tx[LABEL].to_numpy() == 1
    rng = np.random.default_rng(seed)
    keep_negative = rng.random(len(tx)) < config.train_negative_fraction
    keep = is_test | positive | keep_negative
    out = tx.loc[keep].copy()
    out["is_holdout"] = is_test[keep]
    out["weight"] = np.where(
        out["is_holdout"] | (out[LABEL] == 1), 1.0, 1.0 / config.train_negative_fraction
    )
    return out.reset_index(drop=True)


def _training_frame(store: FeatureStore, rows: pd.DataFrame, feature_service: str) -> pd.DataFrame:
    """``rows`` joined point-in-time with the feature service, in the order of ``rows``.

    Every row is kept, a view without a row for it gives missing features (what
    serving sees for a new entity); see :mod:`features.historical` for the join.
    """
    entity_df = rows[["event_timestamp", *ENTITY_KEYS]]
    joined = historical_features(store, entity_df, feature_service)
    return rows.join(joined.drop(columns=["event_timestamp", *ENTITY_KEYS]), how="left")


def _inputs(frame: pd.DataFrame, refs: list[str], dtypes: dict[str, str]) -> list[ModelInput]:
    """Model inputs with their defaults (training medians: a missing value looks typical)."""
    inputs: list[ModelInput] = []
    for name in EVENT_NUMERIC:
        inputs.append(
            ModelInput(
                name=name,
                source="event",
                ref=name,
                dtype="float32",
                default=float(frame[name].median()),
            )
        )
    for name in EVENT_STRING:
        inputs.append(
            ModelInput(name=name, source="event", ref=name, dtype="string", default=STRING_DEFAULT)
        )
    for ref in refs:
        col = frame[_input_name(ref)]
        if dtypes[ref] == "string":
            inputs.append(
                ModelInput(
                    name=_input_name(ref),
                    source="feature",
                    ref=ref,
                    dtype="string",
                    default=STRING_DEFAULT,
                )
            )
        else:
            median = pd.to_numeric(col, errors="coerce").median()
            inputs.append(
                ModelInput(
                    name=_input_name(ref),
                    source="feature",
                    ref=ref,
                    dtype="float32",
                    default=float(median) if pd.notna(median) else 0.0,
                )
            )
    return inputs


def _model_matrix(frame: pd.DataFrame, inputs: list[ModelInput]) -> pd.DataFrame:
    """Exactly what serving feeds: float32 / str, missing replaced by the manifest default."""
    out: dict[str, Any] = {}
    for spec in inputs:
        col = frame[spec.name]
        if spec.dtype == "float32":
            out[spec.name] = (
                pd.to_numeric(col, errors="coerce").fillna(float(spec.default)).astype(np.float32)
            )
        else:
            out[spec.name] = col.astype(object).where(col.notna(), str(spec.default)).astype(str)
    return pd.DataFrame(out)


def _onnx_columns(matrix: pd.DataFrame, inputs: list[ModelInput]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for spec in inputs:
        values = matrix[spec.name].to_numpy()
        cols[spec.name] = (
            values.astype(np.float32).reshape(-1, 1)
            if spec.dtype == "float32"
            else values.astype(object).reshape(-1, 1)
        )
    return cols


def reference_profile(
    matrix: pd.DataFrame, inputs: list[ModelInput], scores: np.ndarray, bins: int
) -> dict[str, Any]:
    """Reference distributions for drift: quantile bins for numerics, frequencies for strings."""

    def numeric(values: np.ndarray) -> dict[str, Any]:
        values = values[np.isfinite(values)]
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
        if edges.size < 2:
            edges = np.array([values.min(), values.min() + 1.0])
        # open-ended outer bins so serving values outside the training range still count
        inner = edges[1:-1]
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=inner.size + 1)
        return {
            "kind": "numeric",
            "edges": [float(e) for e in edges],
            "proportions": [float(c) for c in counts / counts.sum()],
            "mean": float(values.mean()),
            "std": float(values.std()),
        }

    inputs_profile: dict[str, Any] = {}
    for spec in inputs:
        col = matrix[spec.name]
        if spec.dtype == "float32":
            inputs_profile[spec.ref] = numeric(col.to_numpy(dtype=np.float64))
        else:
            freq = col.value_counts(normalize=True, sort=True)
            top = freq.iloc[:30]
            categories = {str(k): float(v) for k, v in top.items()}
            other = float(1.0 - top.sum())
            if other > 0:
                categories["__other__"] = other
            inputs_profile[spec.ref] = {"kind": "categorical", "frequencies": categories}
    return {
        "inputs": inputs_profile,
        "score": numeric(np.asarray(scores, dtype=np.float64)),
        "rows": int(len(matrix)),
    }


def _frame_sha256(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(frame.columns).encode())
    return digest.hexdigest()


TRAIN_STEPS = ("training set", "fit", "export and check", "register")
"""What :func:`train_model` reports through ``progress``, in order (one call as each begins)."""


def train_model(
    store: FeatureStore,
    data: OfflineData | Path,
    registry: ModelRegistry,
    name: str = "fraud",
    seed: int = 7,
    config: TrainingConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelManifest:
    """Train on point-in-time features, check the ONNX export, register a new version.

    ``data`` is the ``OfflineData`` of the generator or the directory it wrote to;
    ``progress`` hears each of :data:`TRAIN_STEPS` as it begins.
    """
    step = progress or (lambda _: None)
    config = config or TrainingConfig()
    if isinstance(data, Path):
        data = offline_data_from_dir(data)
    columns = [
        "event_id",
        "event_timestamp",
        *ENTITY_KEYS.values(),
        *EVENT_NUMERIC,
        *EVENT_STRING,
        LABEL,
    ]
    tx = pd.read_parquet(data.transactions, columns=columns)
    if tx.empty:
        raise ModelError(f"no transactions to train {name!r} on in {data.transactions}")
    refs, dtypes = _feature_service_refs(store, config.feature_service)
    step(TRAIN_STEPS[0])
    frame = _training_frame(store, _select_rows(tx, config, seed), config.feature_service)

    is_test = frame["is_holdout"].to_numpy()
    y = frame[LABEL].to_numpy().astype(np.int64)
    weights = frame["weight"].to_numpy()
    if y[~is_test].sum() == 0 or y[is_test].sum() == 0:
        raise ModelError(f"training data for {name!r} has no positives in train or hold-out")

    # Defaults: medians of legitimate training rows (over-represented frauds would skew them).
    inputs = _inputs(frame.loc[~is_test & (y == 0)], refs, dtypes)
    matrix = _model_matrix(frame, inputs)
    string_cols = [i.name for i in inputs if i.dtype == "string"]
    numeric_cols = [i.name for i in inputs if i.dtype == "float32"]

    classifier = HistGradientBoostingClassifier(
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        max_leaf_nodes=config.max_leaf_nodes,
        early_stopping=False,  # no random validation split: reproducible
        random_state=seed,
    )
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        (
                            "onehot",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            string_cols,
                        ),
                        ("numeric", "passthrough", numeric_cols),
                    ]
                ),
            ),
            ("classifier", classifier),
        ]
    )
    train_x, test_x = matrix.loc[~is_test], matrix.loc[is_test]
    step(TRAIN_STEPS[1])
    # One OpenMP thread: on a busy 2-core box HistGradientBoosting's spinning
    # threads slow the fit down by an order of magnitude, and the model is small.
    with threadpool_limits(limits=config.threads):
        pipeline.fit(train_x, y[~is_test], classifier__sample_weight=weights[~is_test])
        sk_scores = pipeline.predict_proba(test_x)[:, 1]

    step(TRAIN_STEPS[2])
    initial_types: list[tuple[str, Any]] = [
        (
            i.name,
            FloatTensorType([None, 1]) if i.dtype == "float32" else StringTensorType([None, 1]),
        )
        for i in inputs
    ]
    with _hist_gradient_boosting_export_fix():
        onnx_model = convert_sklearn(
            pipeline,
            initial_types=initial_types,
            options={id(classifier): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    # skl2onnx names the graph with a random uuid; a fixed name keeps the file reproducible.
    onnx_model.graph.name = f"{name}_pipeline"
    onnx_bytes = onnx_model.SerializeToString()
    output_names = [o.name for o in onnx_model.graph.output]
    if SCORE_OUTPUT not in output_names:
        raise ModelError(f"ONNX export has outputs {output_names}, expected {SCORE_OUTPUT!r}")

    # Check the export with the exact columns serving builds.
    test_y = y[is_test]
    metrics: dict[str, float] = {
        "roc_auc": float(roc_auc_score(test_y, sk_scores)),
        "pr_auc": float(average_precision_score(test_y, sk_scores)),
        "rows_train": float((~is_test).sum()),
        "rows_holdout": float(is_test.sum()),
        "positives_train": float(y[~is_test].sum()),
        "positives_holdout": float(test_y.sum()),
    }
    review_at = float(np.quantile(sk_scores, 1.0 - config.review_alert_rate))
    decline_at = float(np.quantile(sk_scores, 1.0 - config.decline_alert_rate))
    decline_at = max(decline_at, review_at + 1e-6)
    for label, threshold in (("review", review_at), ("decline", decline_at)):
        flagged = sk_scores >= threshold
        metrics[f"{label}_alert_rate"] = float(flagged.mean())
        metrics[f"{label}_precision"] = float(test_y[flagged].mean()) if flagged.any() else 0.0
        metrics[f"{label}_recall"] = float(test_y[flagged].sum() / test_y.sum())

    lineage = Lineage(
        feature_refs=refs,
        feature_service=config.feature_service,
        start=frame["event_timestamp"].min().to_pydatetime(),
        end=frame["event_timestamp"].max().to_pydatetime(),
        rows=int(len(frame)),  # rows actually used (after down-sampling)
        data_sha256=_frame_sha256(frame),
        seed=seed,
        code_version=config.code_version,
    )
    fields: dict[str, Any] = {
        "task": "binary_classification",
        "inputs": inputs,
        "entity_keys": ENTITY_KEYS,
        "outputs": {"score": SCORE_OUTPUT, "label": "label"},
        "decisions": [
            Decision(name="review", min_score=review_at),
            Decision(name="decline", min_score=decline_at),
        ],
        "default_decision": "approve",
        "lineage": lineage,
        "metrics": metrics,
        # The hold-out is the newest, unsampled traffic: the reference for drift.
        "profile": reference_profile(test_x, inputs, sk_scores, config.profile_bins),
        # When the model or the online store fails: review what is far above a typical
        # ticket, approve the rest (the business's pre-model rule).
        "fallback": FallbackPolicy(
            rules=[
                FallbackRule(
                    field="amount",
                    min=float(np.quantile(frame.loc[~is_test, "amount"], 0.99)),
                    score=review_at,
                    decision="review",
                )
            ],
            default_score=0.0,
            default_decision="approve",
            max_missing_fraction=config.max_missing_fraction,
        ),
        "card": ModelCard(
            intended_use="Score card transactions for fraud in real time: approve, send to "
            "manual review or decline. Decision support for the fraud team, not a sole "
            "basis for action against a card holder.",
            known_limits=[
                "Trained on synthetic transactions of the example generator.",
                "New users and merchants get training-median features (features_missing).",
                "Streaming aggregates count only the events the feature worker consumed: "
                "on a new stack a user's windows start empty (the offline history does not seed "
                "the worker's state).",
                "Thresholds target alert rates on the hold-out; re-check after drift.",
            ],
            owner="fraud",
        ),
    }
    _check_onnx_matches(onnx_bytes, fields, _onnx_columns(test_x, inputs), sk_scores, config)
    step(TRAIN_STEPS[3])
    return registry.register(name, onnx_bytes, **fields)


def _check_onnx_matches(
    onnx_bytes: bytes,
    fields: dict[str, Any],
    columns: dict[str, np.ndarray],
    expected: np.ndarray,
    config: TrainingConfig,
) -> None:
    draft = ModelManifest.model_validate(
        {
            **fields,
            "name": "candidate",
            "version": "0",
            "sha256": "",
            "created_at": datetime.now(UTC),
        }
    )
    scorer = OnnxScorer(Path("candidate.onnx"), draft, model_bytes=onnx_bytes)
    got = scorer.score_batch(columns)
    worst = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    if worst > config.onnx_tolerance:
        raise ModelError(
            f"ONNX export disagrees with scikit-learn by {worst:.2e} "
            f"(tolerance {config.onnx_tolerance:.0e}); not registering it"
        )


def bootstrap_example(
    repo_path: Path,
    online: OnlineStoreConfig,
    registry: ModelRegistry,
    seed: int = 7,
    config: TrainingConfig | None = None,
) -> ModelManifest | None:
    """Make the example usable from scratch; idempotent, safe to call on every ``up``.

    Generates the data into ``repo_path/data`` if missing, applies the repo,
    materializes everything up to now (so the online store serves the latest
    snapshot), and trains + registers ``fraud`` (on ``config``, by default the example's
    ``fraud_v2``) only if the registry has no such model. Returns the new manifest, or
    None when a model already existed.

    One bootstrap at a time per repo (an exclusive lock in ``repo_path/data``): scoring
    workers started together on a shared data volume (compose's ``--scale worker=N``)
    would otherwise generate, apply and train over each other; the later ones wait, then
    find the data and the model there.
    """
    repo_path = Path(repo_path).resolve()
    data_dir = repo_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".bootstrap.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        try:
            data = offline_data_from_dir(data_dir)
        except FileNotFoundError:
            data = generate_offline_data(data_dir, seed=seed)
        apply_repo(repo_path, online)
        store = open_store(repo_path, online)
        materialize(store, end=max(datetime.now(UTC), data.end), start=data.start)
        if "fraud" in registry.list_models():
            return None
        return train_model(store, data, registry, name="fraud", seed=seed, config=config)
