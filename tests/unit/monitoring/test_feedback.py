"""The label join and online quality, without Kafka: either order, redeliveries, and
online figures equal to scikit-learn's on the same pairs computed offline."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from streams.monitoring.feedback import (
    JoinItem,
    expired_outcome,
    is_expired,
    join_step,
    parse_label,
)
from streams.monitoring.quality import QualityMonitor


def scored_stream(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    label = rng.random(n) < 0.1
    score = np.clip(rng.normal(0.2 + 0.4 * label, 0.15), 0, 1)
    version = rng.choice(["1", "2"], n, p=[0.8, 0.2])
    preds = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "model": "fraud",
            "version": version,
            "variant": np.where(version == "2", "canary", "champion"),
            "score": score,
            "decision": np.where(score >= 0.5, "review", "approve"),
            "channel": rng.choice(["pos", "web"], n),
        }
    )
    # only ~70% of the predictions ever get a label
    labelled = preds.sample(frac=0.7, random_state=seed)[["event_id"]]
    labelled["label"] = label[labelled.index]
    return preds, labelled


def items(preds: pd.DataFrame, labels: pd.DataFrame, seed: int) -> list[JoinItem]:
    out = []
    for p in preds.to_dict("records"):
        body = {k: p[k] for k in ("model", "version", "variant", "score", "decision")}
        # the slice fields travel in the prediction record (its `slices` field)
        body["slices"] = {"channel": p["channel"]}
        out.append(JoinItem("prediction", p["event_id"], body))
    for lab in labels.to_dict("records"):
        out.append(JoinItem("label", lab["event_id"], {"label": int(lab["label"])}))
    random.Random(seed).shuffle(out)  # labels before and after their predictions
    # at-least-once upstream: some inputs arrive twice
    return out + random.Random(seed + 1).sample(out, 200)


def run_join(stream: list[JoinItem], monitor: QualityMonitor) -> tuple[list, list, dict]:
    states: dict[str, dict] = {}
    pairs: list = []
    signals: list = []
    outcomes: dict[str, int] = {}
    for t, item in enumerate(stream):
        state, new_pairs, outcome = join_step(states.get(item.event_id), item, now=float(t))
        states[item.event_id] = state
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if item.kind == "prediction" and outcome != "duplicate":
            monitor.prediction_seen(item.body["model"], item.body["version"], item.body["variant"])
        for pair in new_pairs:
            pairs.append(pair)
            signals += monitor.add(pair)
    return pairs, signals, outcomes


def offline(frame: pd.DataFrame) -> dict[str, float]:
    y, s = frame["label"].to_numpy(), frame["score"].to_numpy()
    positive = frame["decision"].isin(["review", "decline"]).to_numpy()
    return {
        "precision": precision_score(y, positive, zero_division=0),
        "recall": recall_score(y, positive, zero_division=0),
        "roc_auc": roc_auc_score(y, s),
        "brier": brier_score_loss(y, s),
        "pairs": float(len(y)),
    }


def test_every_label_meets_its_prediction_once_in_any_order() -> None:
    preds, labels = scored_stream(3000, seed=1)
    monitor = QualityMonitor(10_000, 10_000, 50, ["review", "decline"], ["channel"], 0.75, 3)
    pairs, _, outcomes = run_join(items(preds, labels, seed=1), monitor)
    assert len(pairs) == len(labels)
    assert sorted(p.event_id for p in pairs) == sorted(labels["event_id"])
    stream = items(preds, labels, seed=1)
    assert outcomes["duplicate"] == len(stream[-200:])
    truth = labels.set_index("event_id")["label"]
    assert all(p.label == truth[p.event_id] for p in pairs)
    assert all(p.slices["channel"] in ("pos", "web") for p in pairs if p.slices)


def test_online_quality_equals_offline_on_the_same_pairs() -> None:
    preds, labels = scored_stream(3000, seed=2)
    window = 500
    monitor = QualityMonitor(window, 7, 50, ["review", "decline"], ["channel"], 0.75, 3)
    pairs, signals, _ = run_join(items(preds, labels, seed=2), monitor)

    joined = pd.DataFrame([p.__dict__ for p in pairs])
    for version, variant in (("1", "champion"), ("2", "canary")):
        mine = joined[(joined.version == version) & (joined.variant == variant)]
        assert any(s.kind == "quality" and s.version == version for s in signals)
        last = monitor.emit(("fraud", version, variant))[0]  # the figures now
        expected = offline(mine.tail(window))  # the sliding window: the last `window` pairs
        for name, value in expected.items():
            assert last.details[name] == pytest.approx(value, abs=1e-12), name
        assert last.window is not None and last.window.size == min(window, len(mine))
        coverage = len(mine) / (preds.version == version).sum()
        assert last.details["label_coverage"] == pytest.approx(coverage)
        # each slice is a sliding window of its own: the slice's last `window` pairs
        channel = mine.slices.map(lambda s: s.get("channel", "__missing__"))
        assert {sl["value"] for sl in last.details["slices"]} <= set(channel)
        for sl in last.details["slices"]:
            part = offline(mine[channel == sl["value"]].tail(window))
            for name in ("precision", "recall", "roc_auc", "brier", "pairs"):
                assert sl[name] == pytest.approx(part[name], abs=1e-12), (sl["value"], name)


def test_a_failing_segment_shows_in_its_slice() -> None:
    preds, labels = scored_stream(4000, seed=3)
    # the model is useless on the web channel: scores there are noise
    web = preds.channel == "web"
    preds.loc[web, "score"] = np.random.default_rng(0).random(web.sum())
    monitor = QualityMonitor(10_000, 10_000, 50, ["review", "decline"], ["channel"], 0.75, 3)
    _, signals, _ = run_join(items(preds, labels, seed=3), monitor)
    last = monitor.emit(("fraud", "1", "champion"))[0]
    by_slice = {s["value"]: s["roc_auc"] for s in last.details["slices"]}
    assert by_slice["pos"] > 0.85 and by_slice["web"] < 0.65


def test_quality_breach_for_consecutive_windows_asks_for_retraining() -> None:
    preds, labels = scored_stream(3000, seed=4)
    preds["score"] = np.random.default_rng(1).random(len(preds))  # a broken model
    monitor = QualityMonitor(200, 100, 50, ["review", "decline"], [], 0.75, 3)
    _, signals, _ = run_join(items(preds, labels, seed=4), monitor)
    retrain = [s for s in signals if s.kind == "retrain"]
    assert retrain and retrain[0].details["reason"] == "quality"
    assert all(s.value < 0.75 for s in signals if s.kind == "quality")


def test_late_shadow_prediction_still_joins_and_expiry_is_counted() -> None:
    champion = {"model": "m", "version": "1", "score": 0.9, "decision": "review"}
    state, pairs, _ = join_step(None, JoinItem("label", "e1", {"label": 1}), now=0)
    assert pairs == [] and expired_outcome(state) == "expired_label_only"
    item = JoinItem("prediction", "e1", champion | {"variant": "champion"})
    state, pairs, outcome = join_step(state, item, now=1)
    assert outcome == "joined" and pairs[0].label == 1
    item = JoinItem("prediction", "e1", champion | {"variant": "shadow", "version": "2"})
    state, pairs, outcome = join_step(state, item, now=2)
    assert outcome == "joined" and pairs[0].version == "2"
    assert expired_outcome(state) == "expired_complete"
    lone = JoinItem("prediction", "e2", champion | {"variant": "champion"})
    state, _, _ = join_step(None, lone, now=0)
    assert expired_outcome(state) == "expired_unlabelled"


def test_completed_joins_are_kept_an_hour_waiting_ones_the_full_retention() -> None:
    """Completed entries only answer redeliveries: the table (and the changelog a restart
    replays) holds an hour of them, not the days a label may take."""
    day, hour = 86400.0, 3600.0
    champion = {"model": "m", "version": "1", "score": 0.9, "decision": "review"}
    waiting, _, _ = join_step(None, JoinItem("prediction", "e1", champion | {"variant": "c"}), 0)
    assert not is_expired(waiting, 6 * day, 7 * day, hour)
    assert is_expired(waiting, 7 * day + 1, 7 * day, hour)
    # Its label comes 3 days later: the pair is emitted, the entry is done.
    done, pairs, _ = join_step(waiting, JoinItem("label", "e1", {"label": 1}), 3 * day)
    assert pairs and done["completed_at"] == 3 * day
    assert not is_expired(done, 3 * day + hour - 1, 7 * day, hour)
    assert is_expired(done, 3 * day + hour + 1, 7 * day, hour)
    again, pairs, outcome = join_step(done, JoinItem("label", "e1", {"label": 1}), 3 * day + 60)
    assert (pairs, outcome) == ([], "duplicate"), "a redelivery within the hour is recognised"


@pytest.mark.parametrize(
    "bad", [{"event_id": "e", "label": 2}, {"label": 1}, [1], {"event_id": ""}]
)
def test_malformed_labels_are_refused_with_a_reason(bad: object) -> None:
    with pytest.raises(ValueError, match="label"):
        parse_label(bad)
    assert math.isfinite(parse_label({"event_id": "e", "label": True}).body["label"])


def test_join_records_of_an_unknown_kind_are_refused_not_crashing_the_join() -> None:
    from streams.codec import encode
    from streams.monitoring.feedback import decode_join_item

    prediction = {"model": "m", "version": "1", "variant": "champion", "score": 0.2}
    ok = decode_join_item(
        encode({"kind": "prediction", "event_id": "e", "body": prediction | {"decision": "a"}})
    )
    assert ok.kind == "prediction" and ok.event_id == "e"
    assert decode_join_item(encode({"kind": "label", "event_id": "e", "body": {"label": 1}}))
    # 0.1 forwarded event context onto the join topic; such records must be skipped
    for bad in (
        {"kind": "context", "event_id": "e", "body": {"slices": {}}},
        {"kind": "label", "event_id": "e", "body": {}},
        {"kind": "prediction", "event_id": "e", "body": prediction},
        [1],
    ):
        with pytest.raises(ValueError):
            decode_join_item(encode(bad))
