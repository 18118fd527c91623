"""Our metrics keep in-memory values even though importing Feast asks prometheus_client
for its multiprocess (mmap) mode."""

from __future__ import annotations


def test_metric_values_stay_in_memory_after_feast_is_imported() -> None:
    import feast  # noqa: F401  (sets PROMETHEUS_MULTIPROCESS_DIR as a side effect)
    from prometheus_client import values

    from streams import metrics

    assert values.ValueClass is values.MutexValue
    child = metrics.PREDICTIONS.labels("m", "1", "champion", "approve")
    assert type(child._value) is values.MutexValue  # noqa: SLF001
