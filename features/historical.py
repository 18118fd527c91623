"""Point-in-time training sets from Feast: the features each entity row had at its time.

In: a ``feast.FeatureStore``, a feature service name and an entity frame (join key
columns plus an ``event_timestamp`` column). Out: the entity frame, in its own order and
index, with one ``view__feature`` column per feature of the service (NaN where the
view had no row for that entity within its TTL).

Semantics are Feast's point-in-time join, per feature view: the view's row with the
same join keys whose timestamp ``s`` satisfies ``t - ttl <= s <= t`` (``s <= t`` when
the view has no TTL), the latest ``s`` winning and, among rows with the same ``s``, the
latest ``created`` (a corrected row of the feature worker wins over the row it corrects).

Why not always ``FeatureStore.get_historical_features``: Feast's file offline store
(Dask) merges every entity row with *every* row of its entity before filtering by time.
The streaming views hold a row per change point (four per event), so the example's
training set (36 k entity rows) became a 5.8 M-row intermediate: 60-130 s and 4.5 GB
RSS, most of it in Dask tokenising and persisting that frame (profiled with
pyinstrument). When every view of the service reads a plain parquet ``FileSource``
(the file offline store, push sources' batch sources included), the same join is one
``pandas.merge_asof`` per view over the file Feast reads: about a second. Anything
else (another offline store, a source with a field mapping) goes through Feast's own
API. ``tests/unit/features/test_historical.py`` checks both paths give the same values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView, FileSource
from feast.infra.offline_stores.dask import DaskOfflineStoreConfig

__all__ = ["historical_features", "feast_historical_features", "ENTITY_TIMESTAMP"]

#: The entity frame's time column (Feast's convention).
ENTITY_TIMESTAMP = "event_timestamp"

_ROW = "__row"


@dataclass(frozen=True)
class _ViewRead:
    """Where one feature view of a service is read from, and under which names."""

    prefix: str  # the projection's name in full feature names (view__feature)
    path: str
    keys: dict[str, str]  # the view's join key -> the entity frame's column
    timestamp_field: str
    created_field: str | None
    features: list[str]
    ttl: timedelta | None


def _view_reads(store: FeatureStore, feature_service: str) -> list[_ViewRead] | None:
    """How to read each view of the service from its parquet file, or None when some
    view is not a plain file the join can read the way Feast would."""
    if not isinstance(store.config.offline_store, DaskOfflineStoreConfig):
        return None
    service = store.get_feature_service(feature_service)
    reads: list[_ViewRead] = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except Exception:  # an on-demand or stream view: Feast's own path handles those
            return None
        source = view.batch_source
        if not isinstance(view, FeatureView) or type(source) is not FileSource:
            return None
        if source.field_mapping or source.file_options.s3_endpoint_override:
            return None
        keys = {
            column.name: projection.join_key_map.get(column.name, column.name)
            for column in view.entity_columns
        }
        reads.append(
            _ViewRead(
                prefix=projection.name_to_use(),
                path=FileSource.get_uri_for_file_path(store.repo_path, source.file_options.uri),
                keys=keys,
                timestamp_field=source.timestamp_field,
                created_field=source.created_timestamp_column or None,
                features=[f.name for f in projection.features],
                ttl=view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None,
            )
        )
    return reads


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")


def _read_parquet(path: str, columns: list[str], attempts: int = 5) -> pd.DataFrame:
    """The file as it is between two writes: Feast's file store rewrites it in place (not
    atomically) on every push of a running feature worker, so a read that meets a write
    half done is tried again."""
    import pyarrow

    for attempt in range(attempts):
        try:
            return pd.read_parquet(path, columns=columns)
        except (pyarrow.ArrowInvalid, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _join_view(entities: pd.DataFrame, read: _ViewRead) -> pd.DataFrame:
    """``entities`` (sorted by time, with ``_ROW``) as-of joined with one view's rows."""
    stamp, created = "__stamp", "__created"
    columns = [*read.keys, read.timestamp_field, *read.features]
    if read.created_field:
        columns.append(read.created_field)
    rows = _read_parquet(read.path, list(dict.fromkeys(columns)))
    rows = rows.rename(columns={read.timestamp_field: stamp, **read.keys})
    rows[stamp] = _utc(rows[stamp])
    rows = rows.dropna(subset=[stamp])
    if read.created_field:
        rows[created] = _utc(rows[read.created_field])
        order = [stamp, created]
    else:
        order = [stamp]
    keys = list(read.keys.values())
    # The latest created of each (keys, stamp) wins, as in Feast's deduplication.
    rows = rows.sort_values([*keys, *order], kind="stable", na_position="first")
    rows = rows.drop_duplicates([*keys, stamp], keep="last").sort_values(stamp, kind="stable")
    features = rows[[*keys, stamp, *read.features]].rename(
        columns={f: f"{read.prefix}__{f}" for f in read.features}
    )
    for key in keys:
        # merge_asof's `by` needs one dtype on both sides (ids are strings here).
        features[key] = features[key].astype(entities[key].dtype)
    return pd.merge_asof(
        entities[[_ROW, ENTITY_TIMESTAMP, *keys]],
        features,
        left_on=ENTITY_TIMESTAMP,
        right_on=stamp,
        by=keys,
        direction="backward",
        allow_exact_matches=True,  # a row stamped exactly t is known at t
        tolerance=pd.Timedelta(read.ttl) if read.ttl else None,
    ).drop(columns=[stamp, ENTITY_TIMESTAMP, *keys])


def historical_features(
    store: FeatureStore, entity_df: pd.DataFrame, feature_service: str
) -> pd.DataFrame:
    """``entity_df`` with the service's features as of each row's ``event_timestamp``.

    Every entity row is kept, in order; each view is joined on its own (a row that one
    view knows nothing of still gets the other views' values, as serving does).
    """
    reads = _view_reads(store, feature_service)
    if reads is None:
        return feast_historical_features(store, entity_df, feature_service)
    entities = entity_df.copy()
    entities[ENTITY_TIMESTAMP] = _utc(entities[ENTITY_TIMESTAMP])
    entities[_ROW] = np.arange(len(entities), dtype=np.int64)
    entities = entities.sort_values(ENTITY_TIMESTAMP, kind="stable")
    out = entity_df.copy()
    for read in reads:
        joined = _join_view(entities, read).set_index(_ROW).sort_index()
        for column in joined.columns:
            out[column] = joined[column].to_numpy()
    return out


def feast_historical_features(
    store: FeatureStore, entity_df: pd.DataFrame, feature_service: str
) -> pd.DataFrame:
    """The same through ``FeatureStore.get_historical_features`` (any offline store).

    Feast's Dask store leaves out entity rows that some view has no row for yet (a
    user's first transactions); they come back here with NaN features.
    """
    keys = [c for c in entity_df.columns if c != ENTITY_TIMESTAMP]
    entities = entity_df[[ENTITY_TIMESTAMP, *keys]].copy()
    entities[_ROW] = np.arange(len(entities), dtype=np.int64)
    joined = store.get_historical_features(
        entity_df=entities,
        features=store.get_feature_service(feature_service),
        full_feature_names=True,
    ).to_df()
    joined = joined.drop(columns=[ENTITY_TIMESTAMP, *keys]).set_index(_ROW)
    out = entity_df.copy()
    out[_ROW] = np.arange(len(out), dtype=np.int64)
    out = out.join(joined, on=_ROW, how="left").drop(columns=[_ROW])
    return out
