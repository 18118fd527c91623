"""Rollout of model versions: the state machine, entity routing and the quality gate.

In: the current :class:`RolloutState` of a model name plus an operator command
(promote, canary, shadow, rollback, clear). Out: the next state, or a
:class:`RolloutRefused` that says why. Pure: no files, no Kafka.

A control record carries the *whole* desired state, not a delta: the ``control``
topic is compacted by model name, so only its latest record survives, and a worker
that starts later must rebuild everything from that one record.

Routing is deterministic by entity: ``canary_bucket`` hashes (model name, entity id)
into 10 000 buckets; an entity below ``percent * 100`` goes to the canary. The
version is not part of the hash, so ramping 5 % -> 25 % keeps the first 5 % on the
canary and an entity never flips back and forth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.errors import ModelError

__all__ = [
    "Action",
    "Canary",
    "RolloutState",
    "RolloutRefused",
    "apply_command",
    "canary_bucket",
    "is_canary",
    "version_states",
    "undone",
    "GateResult",
    "quality_gate",
]

Action = Literal["promote", "canary", "shadow", "rollback", "clear-canary", "clear-shadow"]
BUCKETS = 10_000


class RolloutRefused(ModelError):
    """The command does not make sense for the current state (the message says why)."""

    def __init__(self, name: str, action: str, why: str) -> None:
        self.name = name
        self.action = action
        super().__init__(f"{action} of model {name!r} refused: {why}")


class Canary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    percent: float = Field(gt=0, le=100)


class RolloutState(BaseModel):
    """Which versions of one model serve, and how: what every worker applies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    champion: str
    canary: Canary | None = None
    shadow: str | None = None
    previous: list[str] = Field(
        default_factory=list, description="earlier champions, newest last: rollback pops"
    )
    seq: int = Field(default=0, description="bumped by every command; workers log it")
    action: str = "init"
    reason: str | None = None
    issued_at: datetime | None = None
    issued_by: str | None = None


def apply_command(
    state: RolloutState,
    action: Action,
    version: str | None = None,
    percent: float | None = None,
    reason: str | None = None,
    issued_by: str | None = None,
    now: datetime | None = None,
) -> RolloutState:
    """The state after ``action``; ``RolloutRefused`` when it cannot apply."""
    name = state.model
    changes: dict[str, object] = {}
    if action in ("promote", "canary", "shadow") and not version:
        raise RolloutRefused(name, action, "a version is required")
    if action == "promote":
        assert version is not None
        if version == state.champion:
            raise RolloutRefused(name, action, f"version {version} is already the champion")
        changes = {
            "champion": version,
            "previous": [*state.previous, state.champion],
            # the promoted version stops being a canary/shadow; the other slot stays
            "canary": None if state.canary and state.canary.version == version else state.canary,
            "shadow": None if state.shadow == version else state.shadow,
        }
    elif action == "canary":
        if percent is None:
            raise RolloutRefused(name, action, "--percent is required")
        if version == state.champion:
            raise RolloutRefused(name, action, f"version {version} is the champion")
        assert version is not None
        changes = {"canary": Canary(version=version, percent=percent)}
    elif action == "shadow":
        if version == state.champion:
            raise RolloutRefused(name, action, f"version {version} is the champion")
        changes = {"shadow": version}
    elif action == "rollback":
        changes = _undo(state)
    elif action == "clear-canary":
        changes = {"canary": None}
    elif action == "clear-shadow":
        changes = {"shadow": None}
    else:
        raise RolloutRefused(name, action, "unknown action")
    return state.model_copy(
        update=changes
        | {
            "seq": state.seq + 1,
            "action": action,
            "reason": reason,
            "issued_at": now or datetime.now(UTC),
            "issued_by": issued_by,
        }
    )


def _undo(state: RolloutState) -> dict[str, object]:
    """What ``rollback`` changes: it undoes the last rollout step.

    Right after a promotion: the previous champion serves again (and a canary or shadow
    still running stops: the safest state). While a canary or shadow runs: they stop,
    so every event goes to the champion again. Otherwise: the previous champion, if any.
    """
    restore: dict[str, object] = {
        "champion": state.previous[-1] if state.previous else state.champion,
        "previous": state.previous[:-1],
        "canary": None,
        "shadow": None,
    }
    if state.action == "promote" and state.previous:
        return restore
    if state.canary is not None or state.shadow is not None:
        return {"canary": None, "shadow": None}
    if state.previous:
        return restore
    raise RolloutRefused(
        state.model,
        "rollback",
        f"nothing to undo: v{state.champion} is the champion, no canary or shadow runs "
        "and there is no earlier champion",
    )


def undone(before: RolloutState, after: RolloutState) -> str:
    """What a rollback did, in a sentence for the operator."""
    parts = []
    if before.champion != after.champion:
        parts.append(f"champion v{before.champion} -> v{after.champion} (restored)")
    if before.canary is not None:
        parts.append(f"canary v{before.canary.version} ({before.canary.percent:g}%) stopped")
    if before.shadow is not None:
        parts.append(f"shadow v{before.shadow} stopped")
    return "; ".join(parts) + f"; every event goes to v{after.champion}"


def canary_bucket(model: str, entity: str) -> int:
    """A stable bucket in [0, 10000) for (model, entity); same on every worker and run."""
    digest = hashlib.blake2b(f"{model}\x1f{entity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def is_canary(model: str, entity: str, percent: float) -> bool:
    return canary_bucket(model, entity) < round(percent * BUCKETS / 100)


def version_states(versions: list[str], state: RolloutState | None) -> dict[str, str]:
    """candidate / champion / canary / shadow / retired per version."""
    out = {}
    for version in versions:
        if state is None:
            out[version] = "candidate"
        elif version == state.champion:
            out[version] = "champion"
        elif state.canary and version == state.canary.version:
            out[version] = "canary"
        elif version == state.shadow:
            out[version] = "shadow"
        elif version in state.previous:
            out[version] = "retired"
        else:
            out[version] = "candidate"
    return out


# --- quality gate ---

# Metric -> True when higher is better. A metric missing on either side is skipped.
GATE_METRICS: dict[str, dict[str, bool]] = {
    "binary_classification": {"roc_auc": True, "pr_auc": True},
    "regression": {"mae": False, "rmse": False},
}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    # metric -> (candidate, champion, allowed worst value)
    compared: dict[str, tuple[float, float, float]]
    failures: list[str]

    def describe(self) -> str:
        rows = [
            f"{m}: candidate {c:.4f} vs champion {ch:.4f} (limit {lim:.4f})"
            for m, (c, ch, lim) in self.compared.items()
        ]
        return "; ".join(rows) or "no comparable metrics"


def quality_gate(
    task: str,
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    tolerance: float,
) -> GateResult:
    """Refuse a candidate whose hold-out metrics are worse than the champion's by > tolerance.

    ``tolerance`` is absolute (0.01 = one point of AUC). A gate that compares no
    metric at all fails: promoting blind needs ``--force``.
    """
    compared: dict[str, tuple[float, float, float]] = {}
    failures: list[str] = []
    for metric, higher_is_better in GATE_METRICS.get(task, {}).items():
        if metric not in candidate or metric not in champion:
            continue
        cand, champ = float(candidate[metric]), float(champion[metric])
        limit = champ - tolerance if higher_is_better else champ + tolerance
        compared[metric] = (cand, champ, limit)
        if (cand < limit) if higher_is_better else (cand > limit):
            failures.append(
                f"{metric} {cand:.4f} is worse than the champion's {champ:.4f} "
                f"beyond the tolerance {tolerance}"
            )
    if not compared:
        failures.append("no hold-out metric to compare with the champion")
    return GateResult(passed=not failures, compared=compared, failures=failures)
