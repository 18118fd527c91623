"""The data contract: every way a producer can get an event wrong names the field."""

from datetime import UTC, datetime

import pytest

from streams.codec import decode_event, encode
from streams.contract import validate_event
from streams.errors import ContractViolation, DecodeError, OversizedEvent

GOOD = {
    "event_id": "e-1",
    "event_time": "2026-11-21T10:00:00+01:00",
    "user_id": "u00001",
    "merchant_id": "m0001",
    "amount": 12,
    "currency": "EUR",
    "channel": "web",
    "country": "DE",
    "unknown_extra": {"kept": True},
}


def test_valid_event_is_normalised_and_keeps_unknown_fields() -> None:
    event = validate_event(dict(GOOD))
    assert event["event_time"] == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert event["amount"] == 12.0 and isinstance(event["amount"], float)
    assert event["unknown_extra"] == {"kept": True}


def test_epoch_millis_accepted() -> None:
    event = validate_event(GOOD | {"event_time": 1795255200000})
    assert event["event_time"] == datetime.fromtimestamp(1795255200, tz=UTC)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"amount": -1}, "amount", "greater than or equal to 0"),
        ({"amount": "12"}, "amount", "valid number"),
        ({"amount": True}, "amount", "valid number"),
        ({"user_id": 42}, "user_id", "valid string"),
        ({"event_id": ""}, "event_id", "at least 1"),
        ({"event_time": "yesterday"}, "event_time", "unparseable timestamp"),
        ({"event_time": "2026-11-21"}, "event_time", "RFC 3339"),
        ({"event_time": "2026-11-21T10:00:00"}, "event_time", "UTC offset"),
        ({"event_time": 1795255200}, "event_time", "out of range"),
        ({"event_time": None}, "event_time", "expected an RFC 3339"),
    ],
)
def test_wrong_fields_are_named(change: dict, field: str, words: str) -> None:
    with pytest.raises(ContractViolation) as info:
        validate_event(GOOD | change)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert words in str(info.value)


@pytest.mark.parametrize(
    "field",
    [
        "event_id",
        "event_time",
        "user_id",
        "merchant_id",
        "amount",
        "currency",
        "channel",
        "country",
    ],
)
def test_missing_required_field_is_named(field: str) -> None:
    event = dict(GOOD)
    del event[field]
    with pytest.raises(ContractViolation, match=f"^{field}: required field is missing"):
        validate_event(event)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"event_id": "x"', "malformed JSON"),
        (b"[1, 2]", "JSON object, got list"),
        (b'"text"', "JSON object, got str"),
        (b'{"amount": NaN}', "malformed JSON"),
        (b'{"amount": 1e999}', "malformed JSON"),
        (None, "tombstone"),
    ],
)
def test_decode_errors(raw: bytes | None, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        decode_event(raw, max_bytes=1024)


def test_oversized_payload_is_refused_before_parsing() -> None:
    raw = encode(GOOD | {"padding": "x" * 2000})
    with pytest.raises(OversizedEvent, match="larger than the limit of 1024"):
        decode_event(raw, max_bytes=1024)
    assert decode_event(raw, max_bytes=len(raw))["event_id"] == "e-1"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"user_id": {"email": "alice@example.com"}}, "user_id", "(got an object)"),
        ({"user_id": 4111111111111111}, "user_id", "(got a number of 16 characters)"),
        ({"merchant_id": ["4111 1111 1111 1111"]}, "merchant_id", "(got an array)"),
        ({"amount": "4111 1111 1111 1111"}, "amount", "(got a string of 19 characters)"),
        ({"currency": "alice@example.com"}, "currency", "(got a string of 17 characters)"),
        ({"event_time": "alice@example.com"}, "event_time", "(got a string of 17 characters)"),
        ({"amount": -3}, "amount", "greater than or equal to 0 (got -3)"),
    ],
)
def test_messages_name_the_field_and_rule_but_never_repeat_a_string(
    change: dict, field: str, words: str
) -> None:
    with pytest.raises(ContractViolation) as info:
        validate_event(GOOD | change)
    message = str(info.value)
    assert message.startswith(f"{field}: ") and message.endswith(words)
    for secret in ("alice@example.com", "4111 1111 1111 1111", "4111111111111111"):
        assert secret not in message
