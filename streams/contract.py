"""The producers' data contract: which fields an event must carry, and their types.

In: a decoded JSON object. Out: the same object with its contract fields normalised
(``event_time`` as an aware UTC datetime, ``amount`` as a float), or a
:class:`ContractViolation` naming the first offending field. Unknown fields are kept
and ignored. Pydantic does the checking; strict mode so ``"12"`` is not a number and
``12`` is not a user id.

Messages go into dead-letter headers, which travel further than the event (logs,
dashboards), so they never repeat a string value: a user id may be an e-mail address.
They name the field, the rule and what was given (:func:`describe_value`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from streams.errors import ContractViolation

# Epoch milliseconds accepted as event_time: 2000-01-01 .. 2100-01-01. Outside that
# an integer is almost certainly seconds or microseconds, which we refuse rather
# than silently misread.
_MIN_EPOCH_MS = 946_684_800_000
_MAX_EPOCH_MS = 4_102_444_800_000


#: Numbers up to this many characters are shown in messages (``-3``, ``1795255200``);
#: longer ones may be a card or phone number and are shown by type and length only.
SHOWN_NUMBER_CHARS = 10


def describe_value(value: Any) -> str:
    """What a message may say about a field's value: short numbers as they are,
    anything else by its JSON type and size, never a string's content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        text = repr(value)
        if len(text) <= SHOWN_NUMBER_CHARS:
            return text
        return f"a number of {len(text)} characters"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _parse_event_time(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError("expected an RFC 3339 string or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        # Compared as given: ``math.isfinite`` would turn an int beyond float range
        # into an OverflowError instead of a contract violation.
        finite = isinstance(value, int) or math.isfinite(value)
        if not finite or not _MIN_EPOCH_MS <= value <= _MAX_EPOCH_MS:
            raise ValueError(
                f"epoch milliseconds out of range (years 2000-2100) (got {describe_value(value)})"
            )
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"unparseable timestamp, expected RFC 3339 (got {describe_value(value)})"
            ) from None
        if parsed.tzinfo is None or "T" not in value.upper() and " " not in value:
            raise ValueError("timestamp lacks a time or UTC offset, expected RFC 3339")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 shifted by its offset leaves datetime's range
            raise ValueError("timestamp is out of range (years 1-9999 in UTC)") from None
    raise ValueError(
        f"expected an RFC 3339 string or epoch milliseconds (got {describe_value(value)})"
    )


EventTime = Annotated[datetime, BeforeValidator(_parse_event_time)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]


class TransactionEvent(BaseModel):
    """A card transaction, as producers send it to the ``events`` topic."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    event_id: NonEmpty
    event_time: EventTime
    user_id: NonEmpty
    merchant_id: NonEmpty
    amount: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    channel: NonEmpty
    country: Annotated[str, Field(min_length=2, max_length=3)]


def validate_event(obj: dict[str, Any]) -> dict[str, Any]:
    """Check ``obj`` against the contract; return it with normalised contract fields."""
    try:
        event = TransactionEvent.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "event"
        problem = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            problem = "required field is missing"
        elif "input" in first and first["type"] != "value_error":
            problem = f"{problem} (got {describe_value(first['input'])})"
        raise ContractViolation(field, problem) from None
    normalised = dict(obj)
    # The contract's fields as validated (plain values: no nested models), read directly:
    # model_dump(exclude=extras) cost a fifth of this function's CPU time per event.
    normalised.update({name: getattr(event, name) for name in _CONTRACT_FIELDS})
    return normalised


_CONTRACT_FIELDS = tuple(TransactionEvent.model_fields)


def validate_with_schema(obj: dict[str, Any], schema: Mapping[str, str]) -> dict[str, Any]:
    """The contract a model's manifest declares (``event_schema``), for use cases
    other than card transactions: ``event_id`` and ``event_time`` are always required,
    then each declared field with its type (``string``, ``number``, ``timestamp``).
    """
    out = dict(obj)
    wanted = {"event_id": "string", "event_time": "timestamp"} | dict(schema)
    for name, kind in wanted.items():
        if name not in obj or obj[name] is None:
            raise ContractViolation(name, "required field is missing")
        value = obj[name]
        if kind == "string":
            if not isinstance(value, str) or not value:
                raise ContractViolation(
                    name, f"expected a non-empty string (got {describe_value(value)})"
                )
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ContractViolation(name, f"expected a number (got {describe_value(value)})")
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range
                raise ContractViolation(name, "expected a finite number") from None
            if not math.isfinite(number):
                raise ContractViolation(
                    name, f"expected a finite number (got {describe_value(value)})"
                )
            out[name] = number
        else:
            try:
                out[name] = _parse_event_time(value)
            except ValueError as exc:
                raise ContractViolation(name, str(exc)) from None
    return out
