"""Online feature rows read through Feast's ``OnlineStore.online_read``, one call per view.

In: per feature view, the feature names wanted, and entity rows (join key -> value).
Out: per view, ``{feature: [plain value or None per row]}`` and the view's event
timestamp per row (epoch seconds with the store's sub-second part, ``None`` for an
entity the store does not hold): what :class:`features.online.FeastOnlineSource` got
from ``get_online_features`` before, built without it.

Why: ``get_online_features`` is a generic request pipeline (feature service or refs,
request data, on-demand transforms, a response protobuf filled cell by cell and read
back by ``to_dict``); on Redis, with the example's four views, about two thirds of its
CPU time is that machinery, not the store's read. Here the store's own read
(``online_read``, the interface every Feast online store implements, SQLite and Redis
alike) is called with the entity keys Feast would build for it:

- the view from the registry as ``get_online_features`` takes it
  (``registry.get_any_feature_view(..., allow_cache=True)``, which also notices a
  changed registry file);
- the view's join keys, sorted (``serialize_entity_key`` sorts them too), each value
  converted by Feast's ``python_values_to_proto_values`` with the join key's declared
  type, merged over the batch's views the way ``utils._get_entity_maps`` merges them;
- each distinct entity of the view once (``utils._get_unique_entities``);
- values back to Python as ``OnlineResponse.to_dict`` does (``feast_value_type_to_
  python_type`` with the field's declared type; the plain scalar kinds read directly,
  which is what that function returns for them), timestamps as the response's
  protobuf ``Timestamp.FromDatetime`` would keep them (whole seconds plus microseconds).

Only for the Feast releases in :data:`ONLINE_READ_FEAST_VERSIONS`: the entity-key
rules above are Feast internals, checked value for value against
``get_online_features`` by ``tests/unit/features/test_online_read.py`` (SQLite) and
``tests/integration/test_online_read_redis.py`` (Redis). A view this path does not
serve as ``get_online_features`` would (an on-demand view, an entity-less view, a
projection with a join-key map, a disabled view or one not in a servable state, a row
without a join key value) raises :class:`NotReadDirectly`: the caller then asks
``get_online_features``, which serves it or raises its own error. Feast's own online
read metrics and MLflow logging are not recorded on this path.
"""

from __future__ import annotations

import calendar
import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, FeatureView
from feast.feature_view import DUMMY_ENTITY_NAME, FeatureViewState
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.passthrough_provider import PassthroughProvider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType

from features.errors import FeatureError

__all__ = [
    "ONLINE_READ_FEAST_VERSIONS",
    "NotReadDirectly",
    "FeatureNotInView",
    "OnlineStoreReader",
    "online_read_supported",
    "plain_value",
    "event_ts",
]

#: Feast releases whose entity-key rules this module follows, checked by the parity tests.
ONLINE_READ_FEAST_VERSIONS = frozenset({"0.67.0"})

# Protobuf value kinds that feast_value_type_to_python_type returns as they are (no
# conversion), unless the field is declared a UUID (a string it turns into uuid.UUID).
_AS_IS_KINDS = frozenset(
    {"int32_val", "int64_val", "float_val", "double_val", "string_val", "bool_val", "bytes_val"}
)
_CONVERTED_TYPES = frozenset({ValueType.UUID, ValueType.TIME_UUID})
# The states get_online_features serves (registry option serve_features_while_materializing
# adds MATERIALIZING: such a view is asked of get_online_features instead).
_SERVABLE_STATES = frozenset(
    {FeatureViewState.STATE_UNSPECIFIED, FeatureViewState.AVAILABLE_ONLINE}
)


def online_read_supported(version: str | None = None) -> bool:
    """Whether the installed Feast (or ``version``) is one this module was checked against."""
    if version is None:
        version = importlib.metadata.version("feast")
    return version in ONLINE_READ_FEAST_VERSIONS


class NotReadDirectly(FeatureError):
    """This lookup is not one ``online_read`` serves as ``get_online_features`` would; the
    caller asks ``get_online_features`` instead (not raised to the agent)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not read through online_read: {reason}")


class FeatureNotInView(KeyError):
    """Features missing from an existing view: a KeyError, as Feast raises for them."""

    def __init__(self, refs: Sequence[str]) -> None:
        self.refs = list(refs)
        super().__init__(", ".join(self.refs))


def event_ts(seconds: int, nanos: int = 0) -> float | None:
    """Epoch seconds of a row's event timestamp; ``None`` for Feast's empty timestamp (0 s),
    which stands for an entity the store does not hold."""
    return seconds + nanos / 1e9 if seconds > 0 else None


def plain_value(value: Any) -> Any:
    """NaN from a float column means "missing", as ``None``."""
    if isinstance(value, float) and value != value:
        return None
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stamp(ts: datetime | None) -> float | None:
    # Exactly what the response's Timestamp.FromDatetime keeps (timegm of the UTC time
    # tuple, microseconds as nanos), so both paths give the same float.
    if ts is None:
        return None
    if ts.tzinfo is UTC:  # what the SQLite and Redis stores return: the same whole seconds
        delta = ts - _EPOCH
        return event_ts(delta.days * 86400 + delta.seconds, ts.microsecond * 1000)
    return event_ts(calendar.timegm(ts.utctimetuple()), ts.microsecond * 1000)


@dataclass(frozen=True, slots=True)
class _ViewRead:
    view: FeatureView
    features: tuple[str, ...]
    join_keys: tuple[str, ...]  # sorted
    key_types: tuple[ValueType, ...]  # of each join key
    # per feature: (name, declared type, whether a scalar kind is returned as it is)
    conversions: tuple[tuple[str, ValueType, bool], ...]


class OnlineStoreReader:
    """Reads a batch's views from the FeatureStore's online store object, in the calling
    thread (the lookup thread of :class:`features.online.FeastOnlineSource`)."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._online: OnlineStore | None = None

    def _online_store(self) -> OnlineStore:
        if self._online is None:
            provider = self._store._get_provider()
            online = getattr(provider, "online_store", None)
            if not isinstance(provider, PassthroughProvider) or not isinstance(online, OnlineStore):
                raise NotReadDirectly(f"provider {type(provider).__name__} has no OnlineStore")
            self._online = online
        return self._online

    def _plan(self, features: Mapping[str, Sequence[str]]) -> list[_ViewRead]:
        registry, project = self._store.registry, self._store.project
        views: list[tuple[FeatureView, tuple[str, ...]]] = []
        missing: list[str] = []
        for name, wanted in features.items():
            # FeastObjectNotFoundException for an unknown view, as get_online_features.
            view = registry.get_any_feature_view(name, project, allow_cache=True)
            if not isinstance(view, FeatureView):
                raise NotReadDirectly(f"{name} is a {type(view).__name__}")
            if not view.entity_columns or DUMMY_ENTITY_NAME in (view.entities or []):
                raise NotReadDirectly(f"{name} has no entity")
            if view.projection.join_key_map:
                raise NotReadDirectly(f"{name} maps its join keys")
            if not getattr(view, "enabled", True):
                raise NotReadDirectly(f"{name} is disabled")
            state = getattr(view, "state", FeatureViewState.STATE_UNSPECIFIED)
            if isinstance(state, FeatureViewState) and state not in _SERVABLE_STATES:
                raise NotReadDirectly(f"{name} is in state {state.name}")
            declared = {field.name for field in view.features}
            missing.extend(f"{name}:{f}" for f in wanted if f not in declared)
            views.append((view, tuple(dict.fromkeys(wanted))))
        if missing:
            raise FeatureNotInView(missing)
        # One type per join key over the batch's views, the last view's winning, as
        # utils._get_entity_maps builds the map get_online_features converts with.
        key_types = {
            column.name: column.dtype.to_value_type()
            for view, _ in views
            for column in view.entity_columns
        }
        plans = []
        for view, wanted in views:
            types = {field.name: field.dtype.to_value_type() for field in view.features}
            join_keys = tuple(sorted(column.name for column in view.entity_columns))
            plans.append(
                _ViewRead(
                    view,
                    wanted,
                    join_keys,
                    tuple(key_types.get(k, ValueType.UNKNOWN) for k in join_keys),
                    tuple((f, types[f], types[f] not in _CONVERTED_TYPES) for f in wanted),
                )
            )
        return plans

    def read(
        self, features: Mapping[str, Sequence[str]], rows: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, dict[str, list[Any]]], dict[str, list[float | None]]]:
        """``({view: {feature: [value per row]}}, {view: [event ts per row]})``.

        Raises NotReadDirectly (ask get_online_features), FeatureNotInView, Feast's
        FeastObjectNotFoundException for an unknown view, and the store's own errors
        (a Redis ConnectionError...) unchanged."""
        online = self._online_store()
        config = self._store.config
        plans = self._plan(features)
        values: dict[str, dict[str, list[Any]]] = {}
        stamps: dict[str, list[float | None]] = {}
        for plan in plans:
            name = plan.view.name
            distinct: dict[tuple[Any, ...], int] = {}
            positions: list[int] = []
            for row in rows:
                try:
                    key = tuple(row[k] for k in plan.join_keys)
                except KeyError as exc:
                    raise NotReadDirectly(f"a row has no {exc.args[0]!r} for {name}") from None
                if None in key:
                    raise NotReadDirectly(f"a row's join key of {name} is None")
                positions.append(distinct.setdefault(key, len(distinct)))
            keys = list(distinct)
            columns = [
                python_values_to_proto_values([key[i] for key in keys], key_type)
                for i, key_type in enumerate(plan.key_types)
            ]
            entity_keys = [
                EntityKeyProto(join_keys=plan.join_keys, entity_values=entity_values)
                for entity_values in zip(*columns, strict=True)
            ]
            # A fresh list: the Redis store appends its "_ts:<view>" field to it.
            read = online.online_read(config, plan.view, entity_keys, list(plan.features))
            if len(read) != len(entity_keys):
                raise FeatureError(
                    f"{type(online).__name__}.online_read returned {len(read)} rows "
                    f"for {len(entity_keys)} entity keys of {name}"
                )
            per_entity = [_row_values(data, plan) for _, data in read]
            entity_stamps = [_stamp(ts) for ts, _ in read]
            values[name] = {
                feature: [per_entity[p][i] for p in positions]
                for i, feature in enumerate(plan.features)
            }
            stamps[name] = [entity_stamps[p] for p in positions]
        return values, stamps


def _row_values(data: Mapping[str, ValueProto] | None, plan: _ViewRead) -> list[Any]:
    if data is None:
        return [None] * len(plan.features)
    out: list[Any] = []
    for feature, value_type, as_is in plan.conversions:
        value = data.get(feature)
        kind = value.WhichOneof("val") if value is not None else None
        if value is None or kind is None:
            out.append(None)  # no row, or a null value: get_online_features gives None too
        elif as_is and kind in _AS_IS_KINDS:
            plain = getattr(value, kind)
            out.append(None if plain != plain else plain)  # NaN: missing
        else:
            out.append(plain_value(feast_value_type_to_python_type(value, value_type)))
    return out
