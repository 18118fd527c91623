"""What the feature registry declares, checked against what a model expects.

In: a ``feast.FeatureStore`` and a model's feature references with the dtype its
manifest reads them as (``float32`` or ``string``). Out: nothing, or a
:class:`FeatureReferenceError` naming every reference that does not exist and every one
whose Feast type cannot feed that input (a ``String`` feature read as ``float32`` would
be missing on every row; a number read as ``string`` would be one category per value).
Called at worker start-up, before the first event.
"""

from __future__ import annotations

from collections.abc import Mapping

from feast import FeatureStore

from features.errors import FeatureReferenceError, FeatureStoreUnavailable
from features.store import describe_store, store_connection_errors

__all__ = ["registered_types", "check_references", "ACCEPTED_TYPES"]

#: Feast value types each manifest dtype accepts (ValueType names).
ACCEPTED_TYPES: Mapping[str, frozenset[str]] = {
    "float32": frozenset({"INT32", "INT64", "FLOAT", "DOUBLE", "BOOL"}),
    "string": frozenset({"STRING"}),
}


def registered_types(store: FeatureStore) -> dict[str, str]:
    """``view:feature`` -> Feast value type name, for every feature view of the registry."""
    try:
        store.refresh_registry()
        views = store.list_all_feature_views()
    except store_connection_errors() as exc:
        raise FeatureStoreUnavailable(describe_store(store), exc) from exc
    return {
        f"{view.name}:{field.name}": field.dtype.to_value_type().name
        for view in views
        for field in view.features
    }


def check_references(store: FeatureStore, expected: Mapping[str, str]) -> None:
    """Raise FeatureReferenceError unless every ``ref`` exists with a type ``expected[ref]``
    (a manifest dtype) accepts."""
    declared = registered_types(store)
    missing = [ref for ref in expected if ref not in declared]
    mistyped = [
        (ref, dtype, declared[ref])
        for ref, dtype in expected.items()
        if ref in declared and declared[ref] not in ACCEPTED_TYPES[dtype]
    ]
    if missing or mistyped:
        raise FeatureReferenceError(missing, mistyped)
