"""Feast definitions of the delivery-ETA example: one entity, one view, one service.

Written by `features.delivery_data.generate_delivery_data`; served to a regressor
registered as model `eta`, whose manifest maps the event's `courier_id` to the join key.
Nothing in `streams/` or `models/` knows this use case exists.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

# The courier who carries the order.
courier = Entity(
    name="courier",
    join_keys=["courier_id"],
    value_type=ValueType.STRING,
    description="Courier, ids like c0042",
)

# Daily per-courier snapshots from deliveries completed before the snapshot.
courier_stats_source = FileSource(
    name="courier_stats_source",
    path="data/courier_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# How fast is this courier usually: the strongest signal for a delivery's duration.
courier_stats = FeatureView(
    name="courier_stats",
    entities=[courier],
    ttl=timedelta(days=2),
    schema=[
        Field(name="avg_minutes_per_km_30d", dtype=Float32),
        Field(name="deliveries_7d", dtype=Int64),
        Field(name="late_rate_30d", dtype=Float32),
    ],
    online=True,
    source=courier_stats_source,
    tags={"team": "logistics", "cadence": "daily"},
)

# The feature set of ETA model v1.
eta_v1 = FeatureService(
    name="eta_v1",
    features=[courier_stats],
    description="Features of the delivery-time model, version 1",
    tags={"model": "eta"},
)
