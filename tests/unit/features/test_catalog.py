"""Start-up check of a model's feature references: missing and mistyped ones, each named."""

from __future__ import annotations

from typing import Any

import pytest

from features.catalog import check_references, registered_types
from features.errors import FeatureReferenceError
from features.store import open_store


def test_types_come_from_the_registry(applied_repo: Any) -> None:
    types = registered_types(open_store(applied_repo.path, applied_repo.online))
    assert types["user_stats:home_country"] == "STRING"
    assert types["user_stream_stats:txn_count_1h"] == "INT64"
    assert types["user_stream_stats:amount_sum_1h"] == "FLOAT"


def test_every_missing_and_mistyped_reference_is_named(applied_repo: Any) -> None:
    store = open_store(applied_repo.path, applied_repo.online)
    check_references(
        store,
        {"user_stats:home_country": "string", "user_stream_stats:txn_count_1h": "float32"},
    )
    with pytest.raises(FeatureReferenceError) as info:
        check_references(
            store,
            {
                "user_stats:home_country": "float32",
                "user_stream_stats:txn_count_1h": "string",
                "user_stream_stats:nope": "float32",
                "user_stats:avg_amount_30d": "float32",
            },
        )
    message = str(info.value)
    assert "not in the feature registry: user_stream_stats:nope" in message
    assert "user_stats:home_country is STRING in Feast but the model reads it as float32" in message
    assert "user_stream_stats:txn_count_1h is INT64 in Feast but the model reads it as string" in (
        message
    )
    assert "avg_amount_30d" not in message
