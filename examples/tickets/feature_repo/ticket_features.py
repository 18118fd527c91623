"""Feast definitions of the support-ticket example: one entity, one view, one service.

The data (data/team_stats.parquet) is written by ../make_data.py; the model trained by
../train.py reads `team_stats` by the event's `team_id`.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

# The support team a ticket is routed to.
team = Entity(name="team", join_keys=["team_id"], value_type=ValueType.STRING)

# Daily per-team snapshots, computed from tickets closed before the snapshot.
team_stats_source = FileSource(
    name="team_stats_source",
    path="data/team_stats.parquet",
    timestamp_field="event_timestamp",
)

# How loaded and how fast is the team: what a ticket's resolution time depends on.
team_stats = FeatureView(
    name="team_stats",
    entities=[team],
    ttl=timedelta(days=2),
    schema=[
        Field(name="open_tickets", dtype=Int64),
        Field(name="avg_resolution_h_7d", dtype=Float32),
    ],
    online=True,
    source=team_stats_source,
)

# The feature set of the resolution-time model, version 1.
tickets_v1 = FeatureService(name="tickets_v1", features=[team_stats])
