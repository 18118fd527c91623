"""The ``signals`` record: what the monitoring publishes for operators and automation.

In: a drift, quality or retrain finding. Out: a :class:`Signal` and its Kafka form,
key = the signal kind, value = JSON through :mod:`streams.codec`:

```json
{"kind": "drift", "model": "fraud", "version": "3", "variant": "champion",
 "feature": "amount", "statistic": "psi", "value": 0.41, "threshold": 0.2,
 "window": {"index": 7, "size": 1000, "start": "...", "end": "..."},
 "slice": null, "details": {}, "emitted_at": "..."}
```

``kind`` is ``drift`` (one input or ``score`` crossed a drift threshold in a closed
tumbling window), ``quality`` (the figures of a sliding quality window, every
``quality_emit_every`` pairs; ``details`` holds every statistic and the slices) or
``retrain`` (drift or quality breached for ``retrain_after_windows`` windows in a row)
or ``online_store`` (the scoring worker's online store changed state: ``statistic`` is
``open``, ``empty``, ``closed`` or ``rematerialized``; see :mod:`features.breaker`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from streams import metrics
from streams.codec import decode, encode

SignalKind = Literal["drift", "quality", "retrain", "online_store"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Window:
    """Which window a figure comes from: its index per model version, size and time span."""

    index: int
    size: int
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Signal:
    kind: SignalKind
    model: str
    version: str
    variant: str
    statistic: str
    value: float
    threshold: float | None = None
    feature: str | None = None
    window: Window | None = None
    slice: dict[str, str] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    emitted_at: datetime = field(default_factory=utcnow)

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def retrain_if_due(
    streak: int,
    after: int,
    source: Signal | tuple[str, str, str],
    statistic: str,
    window: Window | None,
    details: dict[str, Any],
) -> Signal | None:
    """A ``retrain`` signal once ``streak`` bad windows in a row reach ``after``.

    ``source`` is (model, version, variant). Drift and quality share this rule.
    """
    if streak < after:
        return None
    model, version, variant = (
        (source.model, source.version, source.variant) if isinstance(source, Signal) else source
    )
    return Signal(
        "retrain",
        model,
        version,
        variant,
        statistic,
        float(streak),
        float(after),
        window=window,
        details=details,
    )


def encode_signal(signal: Signal) -> tuple[bytes, bytes]:
    """(key, value) for the signals topic; counts the signal by kind."""
    metrics.SIGNALS.labels(signal.kind).inc()
    return signal.kind.encode(), encode(signal.as_record())


def decode_signal(raw: bytes) -> dict[str, Any]:
    """A signal as read back (tail, tests): a plain dict."""
    record = decode(raw)
    if not isinstance(record, dict) or record.get("kind") not in ("drift", "quality", "retrain"):
        raise ValueError(f"not a signal record: {raw[:200]!r}")
    return record
