"""Feast definitions of the card-fraud example: entities, sources, views, services.

Purely declarative: `feast apply` (or `features.store.apply_repo`) registers
these objects. The parquet files under `data/` are written by
`features.fraud_data.generate_offline_data`; their paths are relative to this
repository and Feast resolves them from the repo directory.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float32, Int64, String

# The card holder. Events carry `user_id`; models map it through their manifest.
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="Card holder, ids like u00042",
)

# The acquiring merchant of a transaction.
merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.STRING,
    description="Merchant, ids like m0007",
)

# Daily per-user snapshots; every value only uses transactions before its timestamp.
user_stats_source = FileSource(
    name="user_stats_source",
    path="data/user_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# Daily per-merchant snapshots, fraud rate from labels known before the snapshot.
merchant_stats_source = FileSource(
    name="merchant_stats_source",
    path="data/merchant_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# History of the short-window user aggregates; the offline half of the push source.
user_stream_source = FileSource(
    name="user_stream_source",
    path="data/user_stream_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# Spending habits of the card holder: how unusual is this amount, this country?
user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    # Snapshots are daily; two days tolerates one missed snapshot job.
    ttl=timedelta(days=2),
    schema=[
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="avg_amount_30d", dtype=Float32),
        Field(name="std_amount_30d", dtype=Float32),
        Field(name="max_amount_30d", dtype=Float32),
        Field(name="distinct_merchants_30d", dtype=Int64),
        Field(name="home_country", dtype=String),
        Field(name="days_since_first_txn", dtype=Float32),
    ],
    online=True,
    source=user_stats_source,
    tags={"team": "fraud", "cadence": "daily"},
)

# How risky is the merchant: its volume, typical ticket and recent fraud rate.
merchant_stats = FeatureView(
    name="merchant_stats",
    entities=[merchant],
    ttl=timedelta(days=2),
    schema=[
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="avg_amount_30d", dtype=Float32),
        Field(name="fraud_rate_90d", dtype=Float32),
        Field(name="risk_tier", dtype=Int64),
        Field(name="merchant_age_days", dtype=Float32),
    ],
    online=True,
    source=merchant_stats_source,
    tags={"team": "fraud", "cadence": "daily"},
)

# History of the short-window merchant aggregates; the offline half of its push source.
merchant_stream_source = FileSource(
    name="merchant_stream_source",
    path="data/merchant_stream_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

# The feature worker (`streamscore worker --role features`) pushes fresh rolling
# aggregates here; it pushes to online and offline alike, so training reads the rows
# serving read. `created` orders a corrected row (a late event) after the original.
user_stream_push = PushSource(
    name="user_stream_push",
    batch_source=user_stream_source,
)

merchant_stream_push = PushSource(
    name="merchant_stream_push",
    batch_source=merchant_stream_source,
)

# Bursts of card testing show up within minutes, far faster than daily
# snapshots. A FeatureView over a PushSource is Feast's stream-fed view (the
# `StreamFeatureView` class is alpha and warns on import). The feature worker
# computes each field from its name (txn_count_<w>, <field>_sum_<w>,
# <field>_max_<w>; see features/aggregates.py): a new field here is a new
# streaming feature.
user_stream_stats = FeatureView(
    name="user_stream_stats",
    entities=[user],
    # A one-day window value is meaningless after a few hours without updates.
    ttl=timedelta(hours=6),
    schema=[
        Field(name="txn_count_10m", dtype=Int64),
        Field(name="txn_count_1h", dtype=Int64),
        Field(name="amount_sum_1h", dtype=Float32),
        Field(name="txn_count_24h", dtype=Int64),
        Field(name="amount_sum_24h", dtype=Float32),
    ],
    online=True,
    source=user_stream_push,
    tags={"team": "fraud", "cadence": "streaming"},
)

# A merchant suddenly hit by many card tests (a compromised terminal).
merchant_stream_stats = FeatureView(
    name="merchant_stream_stats",
    entities=[merchant],
    ttl=timedelta(hours=6),
    schema=[
        Field(name="txn_count_1h", dtype=Int64),
        Field(name="amount_sum_1h", dtype=Float32),
        Field(name="txn_count_24h", dtype=Int64),
    ],
    online=True,
    source=merchant_stream_push,
    tags={"team": "fraud", "cadence": "streaming"},
)

# The exact feature set of fraud model v1; training reads it point-in-time correct,
# so a model and its features are versioned together.
fraud_v1 = FeatureService(
    name="fraud_v1",
    features=[user_stats, merchant_stats],
    description="Features of the fraud model, version 1 (daily user and merchant stats)",
    tags={"model": "fraud"},
)

# Version 2 adds the streaming aggregates: bursts of card tests within minutes.
fraud_v2 = FeatureService(
    name="fraud_v2",
    features=[user_stats, merchant_stats, user_stream_stats, merchant_stream_stats],
    description="Features of the fraud model, version 2 (daily stats plus streaming aggregates)",
    tags={"model": "fraud"},
)
