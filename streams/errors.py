"""Errors of the stream side: one base, one subclass per way an event can fail.

Each error knows its pipeline ``stage`` (the ``error.stage`` dead-letter header) and
whether it is worth retrying. Agents catch :class:`PipelineError` in one place and
route it: dead letter, or retry.
"""

from __future__ import annotations

from typing import Literal

Stage = Literal["decode", "validate", "enrich", "score", "publish"]


class PipelineError(Exception):
    """Base of every per-event failure."""

    stage: Stage = "validate"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DecodeError(PipelineError):
    """The bytes are not a JSON object."""

    stage: Stage = "decode"


class OversizedEvent(DecodeError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event is {size} bytes, larger than the limit of {limit} bytes")


class ContractViolation(PipelineError):
    """A required field is missing or wrongly typed; the message names the field."""

    stage: Stage = "validate"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class DuplicateEvent(PipelineError):
    stage: Stage = "validate"

    def __init__(self, event_id: str) -> None:
        # The id stays out of the message (it is in the dead letter's value): messages
        # never repeat a string value, see streams.contract.
        super().__init__("event_id: already read at another offset by this worker")
        self.event_id = event_id


class EnrichFailed(PipelineError):
    """The online store did not answer after the configured retries."""

    stage: Stage = "enrich"
    retryable = True


class ScoreFailed(PipelineError):
    """The model raised while scoring the batch."""

    stage: Stage = "score"
