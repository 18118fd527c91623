"""What ``streamscore models ...`` and ``streamscore train`` do, without argparse.

In: :class:`Settings`, a model name and an operator command. Out: the registry's
recorded rollout state and the manifest history updated, the new state published on
``control`` (every worker applies it), and a report for the terminal. The quality
gate and the state machine are pure (:mod:`models.rollout`); this module only orders
the side effects: check (hash, gate) -> publish -> record -> wait for workers.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.errors import ModelError
from models.manifest import HistoryEntry, ModelManifest
from models.registry import ModelRegistry
from models.rollout import (
    Action,
    RolloutRefused,
    apply_command,
    quality_gate,
    undone,
    version_states,
)
from streams.control import publish_state, wait_for_acks
from streams.registry import open_registry
from streams.settings import Settings


def registry_of(settings: Settings) -> ModelRegistry:
    return open_registry(settings)


def list_models(settings: Settings, name: str | None = None) -> list[dict[str, Any]]:
    registry = registry_of(settings)
    rows = []
    for model in [name] if name else registry.list_models():
        state = registry.rollout(model)
        states = version_states(registry.versions(model), state)
        for version, status in states.items():
            manifest = registry.manifest(model, version)
            row: dict[str, Any] = {
                "name": model,
                "version": version,
                "state": status,
                "task": manifest.task,
                "created_at": manifest.created_at.isoformat(),
                "metrics": {k: round(v, 4) for k, v in manifest.metrics.items() if "rows" not in k},
                "lineage": {
                    "feature_service": manifest.lineage.feature_service,
                    "start": manifest.lineage.start.isoformat(),
                    "end": manifest.lineage.end.isoformat(),
                    "rows": manifest.lineage.rows,
                    "data_sha256": manifest.lineage.data_sha256[:12],
                },
            }
            if status == "canary" and state is not None and state.canary is not None:
                row["percent"] = state.canary.percent
            rows.append(row)
    return rows


def model_card(manifest: ModelManifest, status: str) -> str:
    """The model card: intended use, inputs, metrics, lineage, thresholds, limits, history."""
    lines = [
        f"# {manifest.name} v{manifest.version}  ({status})",
        "",
        f"task: {manifest.task}    created: {manifest.created_at.isoformat()}",
        f"onnx sha256: {manifest.sha256}",
        "",
        "## Intended use",
        manifest.card.intended_use or "(not stated)",
        "",
        "## Inputs (in ONNX order)",
    ]
    for spec in manifest.inputs:
        lines.append(
            f"- {spec.name}: {spec.source} {spec.ref!r} ({spec.dtype}, default {spec.default!r})"
        )
    lines.append(f"entity keys (Feast join key <- event field): {manifest.entity_keys}")
    lines += ["", "## Hold-out metrics"]
    lines += [f"- {k}: {v:.4f}" for k, v in manifest.metrics.items()] or ["(none)"]
    lineage = manifest.lineage
    lines += [
        "",
        "## Lineage",
        f"- feature service: {lineage.feature_service}",
        f"- feature refs: {', '.join(lineage.feature_refs)}",
        f"- time range: {lineage.start.isoformat()} .. {lineage.end.isoformat()}",
        f"- rows: {lineage.rows}, data sha256: {lineage.data_sha256}",
        f"- seed: {lineage.seed}, code: {lineage.code_version}",
        "",
        "## Decisions",
    ]
    lines += [f"- {d.name}: score >= {d.min_score:.6f}" for d in manifest.decisions]
    lines.append(f"- otherwise: {manifest.default_decision}")
    lines += ["", "## Fallback policy"]
    if manifest.fallback is None:
        lines.append("(none: events the model cannot score are dead-lettered)")
    else:
        policy = manifest.fallback
        for rule in policy.rules:
            bounds = (
                f"== {rule.equals!r}" if rule.equals is not None else f"in [{rule.min}, {rule.max})"
            )
            lines.append(f"- {rule.field} {bounds} -> score {rule.score} {rule.decision or ''}")
        lines.append(f"- otherwise score {policy.default_score} {policy.default_decision or ''}")
        if policy.max_missing_fraction is not None:
            lines.append(f"- also when more than {policy.max_missing_fraction:.0%} features miss")
    lines += ["", "## Known limits"]
    lines += [f"- {x}" for x in manifest.card.known_limits] or ["(not stated)"]
    lines += ["", "## History"]
    for entry in manifest.history:
        extra = f" by {entry.by}" if entry.by else ""
        why = f": {entry.reason}" if entry.reason else ""
        detail = f" {entry.detail}" if entry.detail else ""
        lines.append(f"- {entry.at.isoformat()} {entry.action}{extra}{why}{detail}")
    return "\n".join(lines)


def show(settings: Settings, name: str, version: str) -> str:
    registry = registry_of(settings)
    manifest = registry.manifest(name, version)
    status = version_states([version], registry.rollout(name))[version]
    return model_card(manifest, status)


def register(settings: Settings, onnx_path: Path, manifest_path: Path) -> ModelManifest:
    """Register an ONNX file with a manifest JSON (name, inputs, ...; version/sha256 assigned)."""
    from pydantic import ValidationError

    from models.errors import ManifestInvalid
    from streams.codec import decode

    try:
        fields = decode(manifest_path.read_bytes())
    except ValueError as exc:
        raise ModelError(f"{manifest_path} is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ModelError(f"{manifest_path} is not a JSON object")
    for assigned in ("version", "sha256", "created_at", "history"):
        fields.pop(assigned, None)
    name = fields.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ManifestInvalid(
            "?", ["name: required, missing (the model's name)"], str(manifest_path)
        )
    try:
        # Validated whole first, so every problem is named at once (registration assigns
        # version, sha256 and created_at).
        ModelManifest.model_validate(
            {**fields, "name": name, "version": "", "sha256": "", "created_at": datetime.now(UTC)}
        )
    except ValidationError as exc:
        raise ManifestInvalid.from_validation(name, exc, str(manifest_path)) from None
    return registry_of(settings).register(name, onnx_path, **fields)


def rollout(
    settings: Settings,
    name: str,
    action: Action,
    version: str | None = None,
    percent: float | None = None,
    force: bool = False,
    reason: str | None = None,
    wait_workers: int | None = None,
    wait_s: float = 0.0,
) -> dict[str, Any]:
    """Check, record and publish one rollout command; optionally wait for workers to apply it."""
    registry = registry_of(settings)
    current = registry.rollout(name)
    if current is None:
        raise ModelError(f"model {name!r} has no registered version")
    if force and not reason:
        raise RolloutRefused(name, action, "--force needs --reason")
    gate = None
    if version is not None:
        version = str(version)
        # Refuse before anything is recorded: hash, checker and graph must be right.
        registry.load(name, version)
    if action == "promote":
        assert version is not None
        candidate = registry.manifest(name, version)
        champion = registry.manifest(name, current.champion)
        gate = quality_gate(
            candidate.task, candidate.metrics, champion.metrics, settings.gate_tolerance
        )
        if not gate.passed and not force:
            raise RolloutRefused(
                name,
                action,
                f"quality gate failed: {'; '.join(gate.failures)} "
                f"(use --force --reason '...' to override)",
            )
    user = getpass.getuser()
    state = apply_command(current, action, version, percent, reason=reason, issued_by=user)
    started = time.monotonic()
    # Publish first: a broker that is away leaves the registry's record unchanged.
    asyncio.run(publish_state(settings, state))
    registry.save_rollout(state)
    target = version
    if action == "rollback":
        # the version the undo concerns: the restored champion, else what was stopped
        stopped = current.canary.version if current.canary else current.shadow
        target = state.champion if state.champion != current.champion else stopped
    if target is not None:
        detail: dict[str, Any] = {"seq": state.seq}
        if percent is not None:
            detail["percent"] = percent
        if gate is not None:
            detail["gate"] = gate.describe()
            detail["gate_passed"] = gate.passed
        registry.add_history(
            name,
            target,
            HistoryEntry(
                at=datetime.now(UTC),
                action=f"{action} (forced)" if force and gate and not gate.passed else action,
                by=user,
                reason=reason,
                detail=detail,
            ),
        )
    acks: list[dict[str, Any]] = []
    if wait_s > 0:
        acks = asyncio.run(wait_for_acks(settings, name, state.seq, wait_workers, wait_s))
    return {
        "state": state.model_dump(mode="json"),
        "gate": gate.describe() if gate else None,
        "undone": undone(current, state) if action == "rollback" else None,
        "acks": [
            {
                "worker": a["worker"],
                "event": a["event"],
                "after_s": _seconds_between(a.get("issued_at"), a.get("emitted_at")),
            }
            for a in acks
        ],
        "waited_s": round(time.monotonic() - started, 2),
    }


def _seconds_between(start: Any, end: Any) -> float | None:
    if not start or not end:
        return None
    a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    return round((b - a).total_seconds(), 3)
