"""The scoring-side hook (missing-feature rate, drift, served-feature log) and the
terminal view of /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams import metrics
from streams.codec import decode
from streams.monitoring.monitor import ScoringMonitor, partition_lag, served_feature_records
from streams.monitoring.status import render_status_figures
from streams.settings import Settings
from tests.unit.monitoring.test_drift import manifest, sample


def test_observe_batch_counts_missing_features_and_closes_drift_windows() -> None:
    m = manifest()
    monitor = ScoringMonitor(Settings(drift_window_events=100))
    before = metrics.FEATURE_MISSING_BY_FEATURE.labels(
        "fraud", "user_stats:avg_amount_30d"
    )._value.get()
    frame, scores = sample(150, seed=8, amount_scale=3)
    columns = {c: frame[c].to_numpy().reshape(-1, 1) for c in frame}
    missing = [["user_stats:avg_amount_30d"]] * 10 + [[]] * 140
    signals = monitor.observe_batch(m, "canary", columns, scores, missing)
    after = metrics.FEATURE_MISSING_BY_FEATURE.labels(
        "fraud", "user_stats:avg_amount_30d"
    )._value.get()
    assert after - before == 10
    assert {s.feature for s in signals} == {"amount"}
    assert all(s.variant == "canary" and s.window and s.window.size == 100 for s in signals)
    gauge = metrics.DRIFT.labels("fraud", "2", "canary", "amount", "psi")._value.get()
    assert gauge > 0.2


def test_served_feature_log_names_every_input_by_reference() -> None:
    m = manifest()
    frame, _ = sample(2, seed=9)
    columns = {c: frame[c].to_numpy().reshape(-1, 1) for c in frame}
    preds = [{"event_id": f"e{i}", "variant": "champion", "features_missing": []} for i in range(2)]
    records = served_feature_records(m, preds, columns)
    key, value = records[1]
    record = decode(value)
    assert key == b"e1"
    assert set(record["features"]) == {"amount", "channel", "user_stats:avg_amount_30d"}
    assert record["features"]["amount"] == float(frame["amount"].iloc[1])


def test_partition_lag() -> None:
    assert partition_lag(120, 100) == 20
    assert partition_lag(None, 3) is None
    assert partition_lag(5, 9) == 0


def test_status_figures_from_a_metrics_page() -> None:
    registry = CollectorRegistry()
    ns = "streamscore"
    Counter("events_consumed", "", namespace=ns, registry=registry).inc(1000)
    p = Counter(
        "predictions",
        "",
        ["model", "version", "variant", "decision"],
        namespace=ns,
        registry=registry,
    )
    p.labels("fraud", "3", "champion", "approve").inc(970)
    p.labels("fraud", "3", "champion", "review").inc(20)
    Counter("deadletters", "", ["stage"], namespace=ns, registry=registry).labels("validate").inc(
        10
    )
    Counter("fallbacks", "", ["model", "reason"], namespace=ns, registry=registry).labels(
        "fraud", "model_error"
    ).inc(4)
    h = Histogram(
        "stage_seconds", "", ["stage"], namespace=ns, registry=registry, buckets=(0.01, 0.1, 1)
    )
    for _ in range(99):
        h.labels("score").observe(0.005)
    h.labels("score").observe(0.5)
    Gauge(
        "consumer_lag", "", ["group", "topic", "partition"], namespace=ns, registry=registry
    ).labels("streamscore", "events", "0").set(42)
    d = Gauge(
        "drift",
        "",
        ["model", "version", "variant", "feature", "statistic"],
        namespace=ns,
        registry=registry,
    )
    d.labels("fraud", "3", "champion", "amount", "psi").set(0.41)
    d.labels("fraud", "3", "champion", "channel", "psi").set(0.01)
    q = Gauge(
        "quality", "", ["model", "version", "variant", "statistic"], namespace=ns, registry=registry
    )
    q.labels("fraud", "3", "champion", "roc_auc").set(0.91)
    q.labels("fraud", "4", "canary", "roc_auc").set(0.62)

    text = render_status_figures(generate_latest(registry).decode())
    lines = text.splitlines()
    assert "events:     1000 consumed, 990 predicted, 10 dead-lettered" in lines
    assert "fallbacks:  model_error 4" in lines
    assert "score p50 10.0ms p99 10.0ms" in text
    assert "lag:        events 42" in lines
    assert "drift psi:  fraud v3 amount 0.410, fraud v3 channel 0.010" in lines
    assert "quality:    fraud v4 (canary): roc_auc 0.620" in lines
    assert render_status_figures("")  # an empty page still renders
