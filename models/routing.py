"""The routing table a worker scores with: champion, optional canary, optional shadow.

In: a :class:`RolloutState` and a :class:`ModelRegistry`. Out: an immutable
:class:`RoutingTable` of loaded (hash-checked) models plus the rule that splits a
batch between champion and canary by entity hash. Loading is all-or-nothing: if any
version of the state is refused, ``build_routing`` raises and the caller keeps the
table it had, so a bad command never leaves a worker half-switched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.manifest import ModelManifest
from models.registry import ModelRegistry
from models.rollout import RolloutState, is_canary

__all__ = ["ServingModel", "RoutingTable", "build_routing", "entity_id"]


class ServingModel(Protocol):
    """What the pipeline needs of a model: its manifest and a batch scorer."""

    @property
    def manifest(self) -> ModelManifest: ...

    @property
    def scorer(self) -> Any: ...


def entity_id(manifest: ModelManifest, event: Mapping[str, Any]) -> str:
    """The routing identity of an event: its entity key values, in manifest order."""
    return "|".join(str(event.get(field, "")) for field in manifest.entity_keys.values())


@dataclass(frozen=True)
class RoutingTable:
    champion: ServingModel
    canary: ServingModel | None = None
    canary_percent: float = 0.0
    shadow: ServingModel | None = None
    state: RolloutState | None = None

    @classmethod
    def single(cls, model: ServingModel) -> RoutingTable:
        return cls(champion=model)

    @property
    def name(self) -> str:
        return self.champion.manifest.name

    def split(self, events: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Per event: True when the canary scores it (sticky by entity)."""
        if self.canary is None or self.canary_percent <= 0:
            return [False] * len(events)
        manifest = self.champion.manifest
        return [
            is_canary(manifest.name, entity_id(manifest, e), self.canary_percent) for e in events
        ]

    def models(self) -> list[ServingModel]:
        return [m for m in (self.champion, self.canary, self.shadow) if m is not None]

    def describe(self) -> dict[str, Any]:
        """Low-cardinality summary for logs, status and metrics."""
        return {
            "name": self.name,
            "champion": self.champion.manifest.version,
            "canary": self.canary.manifest.version if self.canary else None,
            "canary_percent": self.canary_percent if self.canary else 0.0,
            "shadow": self.shadow.manifest.version if self.shadow else None,
            "seq": self.state.seq if self.state else 0,
        }


def build_routing(
    registry: ModelRegistry,
    state: RolloutState,
    loaded: Mapping[str, ServingModel] | None = None,
) -> RoutingTable:
    """Load every version ``state`` names (hash-checked); reuse those in ``loaded``."""
    cache = dict(loaded or {})

    def load(version: str) -> ServingModel:
        if version not in cache:
            cache[version] = registry.load(state.model, version)
        return cache[version]

    champion = load(state.champion)
    canary = load(state.canary.version) if state.canary else None
    shadow = load(state.shadow) if state.shadow else None
    return RoutingTable(
        champion=champion,
        canary=canary,
        canary_percent=state.canary.percent if state.canary else 0.0,
        shadow=shadow,
        state=state,
    )
