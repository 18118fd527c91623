"""Parity of the two read paths of ``FeastOnlineSource``, for the unit (SQLite) and the
integration (Redis) tiers: ``online_read`` against Feast's ``get_online_features``.

:func:`prepare_parity_repo` copies the example repo, adds test-only views beside the
example's four (every Feast value type the example lacks, a two-entity view with an
INT64 join key, an entity-less view) and applies it to the given online store;
:func:`write_parity_rows` writes rows with sub-second event timestamps, null values and
NaN through Feast's own ``write_to_online_store``; :func:`assert_same_lookup` compares
the two paths value for value, type for type, timestamp for timestamp.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from features.online import FeastOnlineSource
from features.store import OnlineStoreConfig, apply_repo
from tests.conftest import copy_feature_repo

# Appended to the repo copy's definitions: the same module, so it reuses `user`.
EXTRA_DEFINITIONS = """

# --- test only (tests/online_parity.py) ---
from feast.types import Array, Bool, Bytes, Float64, Int32, UnixTimestamp, Uuid

account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)

typed_source = FileSource(
    name="typed_source", path="data/typed.parquet", timestamp_field="event_timestamp"
)

typed_stats = FeatureView(
    name="typed_stats",
    entities=[user, account],
    ttl=timedelta(days=2),
    schema=[
        Field(name="f_int32", dtype=Int32),
        Field(name="f_int64", dtype=Int64),
        Field(name="f_float32", dtype=Float32),
        Field(name="f_float64", dtype=Float64),
        Field(name="f_bool", dtype=Bool),
        Field(name="f_string", dtype=String),
        Field(name="f_bytes", dtype=Bytes),
        Field(name="f_unix_ts", dtype=UnixTimestamp),
        Field(name="f_uuid", dtype=Uuid),
        Field(name="f_int64_list", dtype=Array(Int64)),
        Field(name="f_string_list", dtype=Array(String)),
    ],
    online=True,
    source=typed_source,
)

global_source = FileSource(
    name="global_source", path="data/global.parquet", timestamp_field="event_timestamp"
)

global_stats = FeatureView(
    name="global_stats",
    entities=[],
    ttl=timedelta(days=2),
    schema=[Field(name="open_alerts", dtype=Int64)],
    online=True,
    source=global_source,
)
"""

EXAMPLE_REFS = [
    "user_stats:txn_count_7d",
    "user_stats:avg_amount_30d",
    "user_stats:std_amount_30d",
    "user_stats:max_amount_30d",
    "user_stats:distinct_merchants_30d",
    "user_stats:home_country",
    "user_stats:days_since_first_txn",
    "merchant_stats:txn_count_7d",
    "merchant_stats:avg_amount_30d",
    "merchant_stats:fraud_rate_90d",
    "merchant_stats:risk_tier",
    "merchant_stats:merchant_age_days",
    "user_stream_stats:txn_count_10m",
    "user_stream_stats:txn_count_1h",
    "user_stream_stats:amount_sum_1h",
    "user_stream_stats:txn_count_24h",
    "user_stream_stats:amount_sum_24h",
    "merchant_stream_stats:txn_count_1h",
    "merchant_stream_stats:amount_sum_1h",
    "merchant_stream_stats:txn_count_24h",
]
EXAMPLE_VIEWS = list(dict.fromkeys(ref.split(":")[0] for ref in EXAMPLE_REFS))
TYPED_FEATURES = [
    "f_int32",
    "f_int64",
    "f_float32",
    "f_float64",
    "f_bool",
    "f_string",
    "f_bytes",
    "f_unix_ts",
    "f_uuid",
    "f_int64_list",
    "f_string_list",
]
TYPED_REFS = [f"typed_stats:{f}" for f in TYPED_FEATURES]

# Written with sub-second stamps (Redis keeps them; SQLite keeps whole seconds).
WRITTEN_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def prepare_parity_repo(dest: Path, online: OnlineStoreConfig, project: str) -> Path:
    """A copy of the example repo plus the test-only views, applied to ``online`` as Feast
    project ``project`` (its own Redis keys: the integration session's repo shares Redis)."""
    repo = copy_feature_repo(dest)
    config = repo / "feature_store.yaml"
    config.write_text(config.read_text().replace("project: streamscore", f"project: {project}"))
    definitions = repo / "fraud_features.py"
    definitions.write_text(definitions.read_text() + EXTRA_DEFINITIONS)
    (repo / "data").mkdir(exist_ok=True)
    apply_repo(repo, online)
    return repo


def materialize_example(store: FeatureStore, start: datetime) -> None:
    """Materialize the example's four views (the test views have no offline rows)."""
    store.materialize(start_date=start, end_date=datetime.now(UTC), feature_views=EXAMPLE_VIEWS)


def _stamp(seconds: int, micros: int) -> datetime:
    return WRITTEN_AT + timedelta(seconds=seconds, microseconds=micros)


def write_parity_rows(store: FeatureStore, users: list[str], merchants: list[str]) -> None:
    """Rows whose values and timestamps the lookups must return exactly: the first users
    and merchants rewritten with sub-second stamps (one with a null string and a NaN
    float), the typed view's rows, the entity-less view's row."""
    u0, u1, u2 = users[:3]
    store.write_to_online_store(
        "user_stats",
        pd.DataFrame(
            {
                "user_id": [u0, u1, u2],
                "txn_count_7d": [7, 0, 3],
                "avg_amount_30d": [12.5, float("nan"), 1e-3],
                "std_amount_30d": [1.25, 0.0, 2.5],
                "max_amount_30d": [99.99, 0.0, 4.25],
                "distinct_merchants_30d": [4, 0, 1],
                "home_country": ["FR", None, "DE"],
                "days_since_first_txn": [10.5, 0.0, 3.0],
                "event_timestamp": [_stamp(0, 123456), _stamp(1, 999999), _stamp(2, 0)],
                "created": [WRITTEN_AT] * 3,
            }
        ),
    )
    store.write_to_online_store(
        "user_stream_stats",
        pd.DataFrame(
            {
                "user_id": [u0, u2],
                "txn_count_10m": [1, 2],
                "txn_count_1h": [2, 3],
                "amount_sum_1h": [10.25, 20.5],
                "txn_count_24h": [5, 6],
                "amount_sum_24h": [50.75, 60.0],
                "event_timestamp": [_stamp(3, 500000), _stamp(4, 1)],
                "created": [WRITTEN_AT] * 2,
            }
        ),
    )
    store.write_to_online_store(
        "merchant_stream_stats",
        pd.DataFrame(
            {
                "merchant_id": [merchants[0]],
                "txn_count_1h": [40],
                "amount_sum_1h": [1234.5],
                "txn_count_24h": [400],
                "event_timestamp": [_stamp(5, 250000)],
                "created": [WRITTEN_AT],
            }
        ),
    )
    store.write_to_online_store(
        "typed_stats",
        pd.DataFrame(
            {
                "user_id": [u0, u1],
                "account_id": [1, 2**40],
                "f_int32": [-(2**31), 7],
                "f_int64": [2**62, -1],
                "f_float32": [0.1, float("nan")],
                "f_float64": [0.1, -2.5e300],
                "f_bool": [True, False],
                "f_string": ["é ü", ""],
                "f_bytes": [b"\x00\xff", b""],
                "f_unix_ts": [_stamp(6, 0), _stamp(7, 0)],
                "f_uuid": [str(uuid.UUID(int=1)), str(uuid.UUID(int=2**100))],
                "f_int64_list": [[1, 2, 3], []],
                "f_string_list": [["a", "b"], ["c"]],
                "event_timestamp": [_stamp(8, 654321), _stamp(9, 1000)],
            }
        ),
    )
    # write_to_online_store keys an entity-less view's row by no join key at all, while
    # get_online_features reads it under Feast's dummy entity: write it as materialize does.
    store._get_provider().online_store.online_write_batch(
        store.config,
        store.get_feature_view("global_stats"),
        [
            (
                EntityKeyProto(
                    join_keys=[DUMMY_ENTITY_ID],
                    entity_values=[ValueProto(string_val=DUMMY_ENTITY_VAL)],
                ),
                {"open_alerts": ValueProto(int64_val=3)},
                _stamp(10, 0),
                None,
            )
        ],
        None,
    )


def parity_rows(users: list[str], merchants: list[str]) -> list[dict[str, Any]]:
    """Known and unknown entities, each known one twice or more, in one batch."""
    u0, u1, u2 = users[:3]
    rows = [
        {"user_id": u0, "merchant_id": merchants[0], "account_id": 1},
        {"user_id": u1, "merchant_id": merchants[1], "account_id": 2**40},
        {"user_id": u2, "merchant_id": merchants[0], "account_id": 1},  # no typed row
        {"user_id": "x-unknown", "merchant_id": "m-unknown", "account_id": 3},
        {"user_id": u0, "merchant_id": merchants[1], "account_id": 1},  # u0 again
        {"user_id": users[5], "merchant_id": merchants[2], "account_id": 2**40},
        {"user_id": u1, "merchant_id": merchants[0], "account_id": 2**40},  # u1 again
    ]
    rows += [
        {"user_id": users[i], "merchant_id": merchants[i % len(merchants)], "account_id": i}
        for i in range(6, 40)
    ]
    return rows


def _typed(value: Any) -> Any:
    # Type by type (list items too), NaN as a marker (NaN != NaN).
    if isinstance(value, list | tuple | set):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "NaN")
    return (type(value).__name__, value)


def assert_same_lookup(
    store: FeatureStore, refs: list[str], rows: list[dict[str, Any]]
) -> tuple[dict[str, list[Any]], dict[str, list[float | None]]]:
    """The lookup thread's two paths return the same values (same Python types) and the
    same event timestamps; the online_read path's answer is returned."""
    direct = FeastOnlineSource(store, online_read=True)
    feast = FeastOnlineSource(store, online_read=False)
    try:
        assert direct.read_path == "online_read"
        assert feast.read_path == "get_online_features"
        values, stamps = direct._fetch_blocking(refs, rows)
        expected_values, expected_stamps = feast._fetch_blocking(refs, rows)
    finally:
        direct.close()
        feast.close()
    assert list(values) == list(expected_values)
    for ref in refs:
        assert _typed(values[ref]) == _typed(expected_values[ref]), ref
    assert stamps == expected_stamps
    return values, stamps


def build_parity_store(
    dest: Path, online: OnlineStoreConfig, project: str
) -> tuple[FeatureStore, tuple[list[str], list[str]]]:
    """The example repo plus the test views under ``dest`` as ``project`` on ``online``:
    offline data generated, materialized, then the parity rows written. Returns the store
    and its (users, merchants)."""
    from features.fraud_data import generate_offline_data
    from features.store import open_store

    repo = prepare_parity_repo(dest, online, project)
    data = generate_offline_data(
        repo / "data",
        seed=5,
        n_users=60,
        n_merchants=12,
        days=6,
        end=datetime(2026, 1, 1, tzinfo=UTC),
    )
    store = open_store(repo, online)
    materialize_example(store, data.start)
    users = sorted(pd.read_parquet(data.user_stats)["user_id"].unique())
    merchants = sorted(pd.read_parquet(data.merchant_stats)["merchant_id"].unique())
    write_parity_rows(store, users, merchants)
    return store, (users, merchants)
