"""The one codec: orjson in, orjson out.

In: raw Kafka value bytes. Out: a JSON object as a dict, or a :class:`DecodeError`
that says why (oversized, not JSON, not an object). Records leave as bytes via
:func:`encode`.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.errors import DecodeError, OversizedEvent


def decode_event(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Decode one event value; only JSON objects are events."""
    if raw is None:
        raise DecodeError("empty value (tombstone): an event must be a JSON object")
    if len(raw) > max_bytes:
        raise OversizedEvent(len(raw), max_bytes)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"event must be a JSON object, got {type(obj).__name__}")
    return obj


def encode(obj: Any) -> bytes:
    """Encode a record (dicts, datetimes, numpy scalars) as JSON bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z)


def decode(raw: bytes) -> Any:
    """Decode any JSON value (records read back by ``tail``, ``audit``, tests)."""
    return orjson.loads(raw)
