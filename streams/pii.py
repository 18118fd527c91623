"""The personal-data policy: which event fields are personal data, and their stand-ins.

In: the settings' ``pii_fields`` plus the fields a model's manifest marks
(``pii_fields``), and a secret HMAC key (``STREAMSCORE_PII_HMAC_KEY[_FILE]``). Out: a
:class:`PiiPolicy` that checks a deployment at start-up (no personal field may become
a metric label, a signal slice or a prediction's ``slices``), pseudonymises a value
(``pii:<hex>``, a keyed HMAC-SHA256: stable across workers sharing the key, not
reversible, and not guessable from a dictionary of ids without the key), and redacts
a dead letter when the operator asks for it.

What the policy does not touch, by contract (README, Security): a prediction's
``entity`` and its Kafka key are the entity the downstream consumer acts on; the
dead-letter value is the original bytes, so an operator can replay it, unless
``STREAMSCORE_DEADLETTER_REDACT_VALUE`` is on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.pipeline import Outbound
from streams.settings import Settings

__all__ = ["PiiPolicy", "PiiPolicyError"]

log = logging.getLogger(__name__)


class PiiPolicyError(ValueError):
    """A configuration that would put personal data where the policy forbids it."""


@dataclass(frozen=True)
class PiiPolicy:
    fields: frozenset[str]
    key: bytes = field(repr=False)
    redact_deadletters: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, marked: Iterable[str] = ()) -> PiiPolicy:
        """The policy of a worker: the settings' fields plus those its models mark."""
        if settings.pii_hmac_key is not None:
            key = settings.pii_hmac_key.get_secret_value().encode()
        else:
            # Pseudonyms then differ per process: they still hide the value, but the same
            # person gets another pseudonym from each worker.
            if settings.deadletter_redact_value:
                log.warning("STREAMSCORE_PII_HMAC_KEY is not set: pseudonyms are per process")
            key = secrets.token_bytes(32)
        policy = cls(
            fields=frozenset(settings.pii_field_names) | frozenset(marked),
            key=key,
            redact_deadletters=settings.deadletter_redact_value,
        )
        policy.check_slices(settings.slice_fields)
        return policy

    def check_slices(self, slice_fields: Iterable[str]) -> None:
        """Slice values become metric labels, signal keys and prediction ``slices``."""
        personal = sorted(set(slice_fields) & self.fields)
        if personal:
            raise PiiPolicyError(
                f"STREAMSCORE_MONITOR_SLICE_FIELDS names personal data {personal} "
                "(STREAMSCORE_PII_FIELDS or a model manifest's pii_fields): its values "
                "would become metric labels and signal keys; slice by another field"
            )

    def pseudonym(self, value: object) -> str:
        digest = hmac.new(self.key, str(value).encode(), hashlib.sha256).hexdigest()
        return f"pii:{digest[:24]}"

    def redact_dead_letter(self, letter: Outbound) -> Outbound:
        """A dead letter without personal data: key pseudonymised, value withheld.

        ``original.hmac`` (keyed, so a low-entropy value cannot be found by hashing
        guesses) and ``original.size`` let an operator match it with the event.
        """
        if not self.redact_deadletters:
            return letter
        value = letter.value
        headers = [(k, v) for k, v in letter.headers if k != "original.sha256"] + [
            ("original.redacted", b"true"),
            ("original.hmac", hmac.new(self.key, value, hashlib.sha256).hexdigest().encode()),
        ]
        if not any(k == "original.size" for k, _ in headers):
            headers.append(("original.size", str(len(value)).encode()))
        key = self.pseudonym(letter.key.decode(errors="replace")).encode() if letter.key else None
        return Outbound("deadletter", key, b"", headers)
