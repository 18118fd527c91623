"""The scoring-side monitor: what the pipeline hands over after scoring a micro-batch.

In: the model's manifest, its variant, the model-ready input columns (the ``columns``
of ``models.assembly.AssembledBatch``, defaults already filled in, exactly what the
reference profile was computed on), the scores and, per row, the input references that
were missing. Out: drift windows fed (signals returned for the caller to publish on
``signals`` by the scoring agent), the missing-feature
rate per feature, the served-feature log records, and the consumer-lag gauge.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import faust
import numpy as np

from models.manifest import ModelManifest
from streams import metrics
from streams.codec import encode
from streams.monitoring.drift import DriftMonitor
from streams.monitoring.signals import Signal
from streams.settings import Settings

log = logging.getLogger(__name__)


class ScoringMonitor:
    """One per worker; call :meth:`observe_batch` after every scored batch."""

    def __init__(self, settings: Settings) -> None:
        self.drift = DriftMonitor(
            window_events=settings.drift_window_events,
            psi_threshold=settings.drift_psi_threshold,
            ks_threshold=settings.drift_ks_threshold,
            retrain_after=settings.retrain_after_windows,
        )

    def observe_batch(
        self,
        manifest: ModelManifest,
        variant: str,
        columns: Mapping[str, np.ndarray],
        scores: Sequence[float] | np.ndarray,
        missing: Sequence[Sequence[str]] | None = None,
    ) -> list[Signal]:
        """Feed one scored batch; return the drift/retrain signals of windows it closed."""
        rows = len(scores)
        metrics.FEATURE_ROWS.labels(manifest.name).inc(rows)
        # one increment per feature and batch, not per row
        for ref, n in Counter(ref for row in missing or () for ref in row).items():
            metrics.FEATURE_MISSING_BY_FEATURE.labels(manifest.name, ref).inc(n)
        return self.drift.observe(manifest, variant, columns, np.asarray(scores))


def model_loaded(manifest: ModelManifest, variant: str, loaded: bool = True) -> None:
    """Mark a model version as served (or no longer served) by this worker."""
    metrics.MODEL_LOADED.labels(manifest.name, manifest.version, variant).set(int(loaded))


def observe_feature_age(view: str, ages_s: Sequence[float]) -> None:
    """Ages of served feature values of one view (event time minus the value's timestamp)."""
    histogram = metrics.FEATURE_AGE_SECONDS.labels(view)  # the child bound once per batch
    for age in ages_s:
        histogram.observe(max(age, 0.0))


def served_feature_records(
    manifest: ModelManifest,
    predictions: Sequence[Mapping[str, Any]],
    columns: Mapping[str, np.ndarray],
) -> list[tuple[bytes, bytes]]:
    """(key, value) records of the served-feature log: the vector each prediction used.

    ``predictions`` are the batch's prediction records (row order of ``columns``); the
    key is the event id, the value names every input by its reference with the value
    served (defaults included; ``features_missing`` says which were defaults).
    """
    out = []
    for row, prediction in enumerate(predictions):
        values: dict[str, Any] = {}
        for spec in manifest.inputs:
            value = np.asarray(columns[spec.name]).ravel()[row]
            values[spec.ref] = float(value) if spec.dtype == "float32" else str(value)
        record = {
            "event_id": prediction["event_id"],
            "model": manifest.name,
            "version": manifest.version,
            "variant": prediction.get("variant"),
            "entity": prediction.get("entity"),
            "event_time": prediction.get("event_time"),
            "scored_at": prediction.get("scored_at"),
            "features": values,
            "features_missing": prediction.get("features_missing", []),
        }
        out.append((str(prediction["event_id"]).encode(), encode(record)))
    return out


def partition_lag(highwater: int | None, position: int | None) -> int | None:
    """Records not yet read: high watermark (next offset to be written) minus position."""
    if highwater is None:
        return None
    return max(highwater - (position or 0), 0)


def register_lag_monitor(app: faust.App, interval_s: float = 5.0) -> None:
    """Every ``interval_s``, set ``streamscore_consumer_lag`` for each assigned partition,
    labelled with the app's consumer group (alerts tell the roles apart by it)."""
    group = str(app.conf.id)

    @app.timer(interval=interval_s)
    async def consumer_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            try:
                position = await consumer.position(tp)
                lag = partition_lag(consumer.highwater(tp), position)
            except Exception as exc:  # a partition moving away mid-rebalance is routine
                log.debug("no lag for %s: %r", tp, exc)
                continue
            if lag is not None:
                metrics.CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(lag)
