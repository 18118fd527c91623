"""The PII policy without services: personal fields never become slices (labels,
signals), redacted dead letters carry no personal value, pseudonyms are keyed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.errors import ContractViolation
from streams.pii import PiiPolicy, PiiPolicyError
from streams.pipeline import Inbound, dead_letter
from streams.settings import Settings

CANARY = "canary-7f3a9c"


def test_a_personal_field_as_a_slice_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, monitor_slice_fields="channel,user_id")
    with pytest.raises(PiiPolicyError, match=r"personal data \['user_id'\]"):
        PiiPolicy.from_settings(settings)
    # A field only the model's manifest marks is refused just the same.
    marked = Settings(home=tmp_path, monitor_slice_fields="channel,email")
    with pytest.raises(PiiPolicyError, match="email"):
        PiiPolicy.from_settings(marked, marked=["email"])
    assert PiiPolicy.from_settings(Settings(home=tmp_path)).fields == {"user_id"}


def test_pseudonyms_are_keyed_and_stable(tmp_path: Path) -> None:
    one = PiiPolicy.from_settings(Settings(home=tmp_path, pii_hmac_key=SecretStr("k1")))
    same = PiiPolicy.from_settings(Settings(home=tmp_path, pii_hmac_key=SecretStr("k1")))
    other = PiiPolicy.from_settings(Settings(home=tmp_path, pii_hmac_key=SecretStr("k2")))
    assert one.pseudonym(CANARY) == same.pseudonym(CANARY) != other.pseudonym(CANARY)
    assert CANARY not in one.pseudonym(CANARY) and one.pseudonym(CANARY).startswith("pii:")
    assert "k1" not in repr(one)


def test_redacted_dead_letter_carries_no_personal_value(tmp_path: Path) -> None:
    value = f'{{"event_id": "e1", "user_id": "{CANARY}", "amount": "x"}}'.encode()
    record = Inbound(CANARY.encode(), value, "events", 2, 41)
    letter = dead_letter(record, ContractViolation("amount", "must be a number, got str"))
    kept = PiiPolicy.from_settings(Settings(home=tmp_path)).redact_dead_letter(letter)
    assert kept is letter  # off by default: the original bytes, by contract
    policy = PiiPolicy.from_settings(
        Settings(home=tmp_path, deadletter_redact_value=True, pii_hmac_key=SecretStr("k"))
    )
    redacted = policy.redact_dead_letter(letter)
    headers = dict(redacted.headers)
    assert redacted.value == b"" and redacted.key == policy.pseudonym(CANARY).encode()
    assert headers["original.redacted"] == b"true"
    assert headers["original.size"] == str(len(value)).encode()
    assert headers["error.stage"] == b"validate" and headers["source.offset"] == b"41"
    everything = (
        redacted.key + redacted.value + b"".join(k.encode() + v for k, v in headers.items())
    )
    assert CANARY.encode() not in everything
