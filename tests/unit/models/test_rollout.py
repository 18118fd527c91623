"""Rollout state machine, entity routing and the quality gate: pure logic, no Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.errors import ModelIntegrityError
from models.manifest import HistoryEntry
from models.registry import ModelRegistry
from models.rollout import (
    RolloutRefused,
    RolloutState,
    apply_command,
    canary_bucket,
    is_canary,
    quality_gate,
    undone,
    version_states,
)
from models.routing import build_routing


def test_promote_canary_shadow_rollback() -> None:
    s0 = RolloutState(model="fraud", champion="1")
    s1 = apply_command(s0, "canary", "2", percent=10)
    s2 = apply_command(s1, "shadow", "3")
    assert (s2.canary and s2.canary.version, s2.shadow, s2.seq) == ("2", "3", 2)
    s3 = apply_command(s2, "promote", "2", reason="canary looked fine")
    assert s3.champion == "2" and s3.previous == ["1"] and s3.canary is None and s3.shadow == "3"
    assert s3.reason == "canary looked fine" and s3.action == "promote"
    s4 = apply_command(s3, "rollback")
    assert s4.champion == "1" and s4.previous == [] and s4.shadow is None and s4.seq == 4
    with pytest.raises(RolloutRefused, match="nothing to undo: v1 is the champion"):
        apply_command(s4, "rollback")
    with pytest.raises(RolloutRefused, match="already the champion"):
        apply_command(s4, "promote", "1")
    with pytest.raises(RolloutRefused, match="--percent"):
        apply_command(s4, "canary", "2")
    assert version_states(["1", "2", "3", "4"], s3) == {
        "1": "retired",
        "2": "champion",
        "3": "shadow",
        "4": "candidate",
    }


def test_rollback_undoes_the_last_step() -> None:
    first = RolloutState(model="fraud", champion="1")
    # A bad canary over the first champion: rollback stops it (issue 12's operator).
    canary = apply_command(first, "canary", "2", percent=10)
    back = apply_command(canary, "rollback")
    assert (back.champion, back.canary, back.shadow, back.previous) == ("1", None, None, [])
    assert undone(canary, back) == "canary v2 (10%) stopped; every event goes to v1"
    shadow = apply_command(first, "shadow", "3")
    assert apply_command(shadow, "rollback").shadow is None
    # After a promotion: the previous champion again, experiments stopped.
    promoted = apply_command(apply_command(first, "shadow", "3"), "promote", "2")
    restored = apply_command(promoted, "rollback")
    assert (restored.champion, restored.shadow, restored.previous) == ("1", None, [])
    assert undone(promoted, restored) == (
        "champion v2 -> v1 (restored); shadow v3 stopped; every event goes to v1"
    )
    # A canary after a promotion: the first rollback stops the canary, the second
    # restores the previous champion, the third has nothing to undo.
    canary_on_2 = apply_command(apply_command(first, "promote", "2"), "canary", "3", percent=5)
    step1 = apply_command(canary_on_2, "rollback")
    assert (step1.champion, step1.canary) == ("2", None)
    step2 = apply_command(step1, "rollback")
    assert (step2.champion, step2.previous) == ("1", [])
    with pytest.raises(RolloutRefused, match="nothing to undo"):
        apply_command(step2, "rollback")
    with pytest.raises(RolloutRefused, match="nothing to undo"):
        apply_command(first, "rollback")


def test_canary_share_is_within_two_points_and_monotone_when_ramping() -> None:
    entities = [f"u{i:05d}" for i in range(10_000)]
    for percent in (5, 10, 25, 50):
        share = sum(is_canary("fraud", e, percent) for e in entities) / len(entities) * 100
        assert abs(share - percent) <= 2, (percent, share)
    five = {e for e in entities if is_canary("fraud", e, 5)}
    twenty_five = {e for e in entities if is_canary("fraud", e, 25)}
    assert five < twenty_five, "ramping up keeps the entities already on the canary"
    assert canary_bucket("fraud", "u00001") == canary_bucket("fraud", "u00001")
    assert not any(is_canary("fraud", e, 0.0001) for e in entities[:100])


def test_quality_gate_uses_tolerance_and_direction() -> None:
    champ = {"roc_auc": 0.90, "pr_auc": 0.50}
    assert quality_gate(
        "binary_classification", {"roc_auc": 0.895, "pr_auc": 0.5}, champ, 0.01
    ).passed
    worse = quality_gate("binary_classification", {"roc_auc": 0.85, "pr_auc": 0.5}, champ, 0.01)
    assert not worse.passed and "roc_auc 0.8500" in worse.failures[0]
    assert quality_gate("regression", {"mae": 5.0}, {"mae": 5.2}, 0.0).passed
    assert not quality_gate("regression", {"mae": 6.0}, {"mae": 5.2}, 0.5).passed
    assert not quality_gate("binary_classification", {}, champ, 0.01).passed


def test_rollout_state_and_history_are_recorded(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path)
    for _ in range(3):
        registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    state = registry.rollout("fraud")
    assert state is not None and state.champion == "1"
    nxt = apply_command(state, "canary", "2", percent=20)
    registry.save_rollout(nxt)
    assert registry.rollout("fraud") == nxt and registry.champion("fraud") == "1"
    manifest = registry.add_history(
        "fraud", "2", HistoryEntry(at=nxt.issued_at, action="promote (forced)", reason="hotfix")
    )
    assert [h.action for h in manifest.history] == ["registered", "promote (forced)"]
    assert registry.manifest("fraud", "2").history[-1].reason == "hotfix"
    registry.load("fraud", "2")  # the manifest changed, the model did not: still loads

    routing = build_routing(registry, nxt)
    assert routing.canary is not None and routing.canary.manifest.version == "2"
    assert routing.describe()["canary_percent"] == 20


def test_routing_with_a_tampered_version_is_refused_whole(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    path = registry.model_path("fraud", "2")
    path.write_bytes(path.read_bytes() + b"\x00")
    state = apply_command(RolloutState(model="fraud", champion="1"), "shadow", "2")
    with pytest.raises(ModelIntegrityError, match="'fraud' version '2' refused"):
        build_routing(registry, state)
