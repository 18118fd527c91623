"""Errors of the model side.

In: which model, which version, what differed. Out: exceptions that build
their own message from those arguments and say whether a retry can help
(`retryable`), so callers route them without parsing text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "ModelError",
    "ModelNotFound",
    "ModelIntegrityError",
    "ModelSignatureError",
    "ManifestInvalid",
    "ScoringError",
]


class ModelError(Exception):
    """Base of every error raised by `models`."""

    retryable: bool = False


class ModelNotFound(ModelError):
    """No such model, or no such version of it, in the registry."""

    def __init__(self, name: str, version: str | None = None, root: str | None = None) -> None:
        self.name = name
        self.version = version
        where = f" in registry {root}" if root else ""
        what = f"model {name!r} version {version!r}" if version else f"model {name!r}"
        super().__init__(f"{what} not found{where}")


class ModelIntegrityError(ModelError):
    """The ONNX file's sha256 differs from its manifest: the model is refused."""

    def __init__(self, name: str, version: str, expected: str, actual: str) -> None:
        self.name = name
        self.version = version
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"model {name!r} version {version!r} refused: model.onnx sha256 is {actual}, "
            f"manifest says {expected}"
        )


class ModelSignatureError(ModelError):
    """The ONNX graph does not have the inputs/outputs its manifest declares."""

    def __init__(self, name: str, version: str, problems: Iterable[str]) -> None:
        self.name = name
        self.version = version
        self.problems = list(problems)
        what = f"model {name!r} version {version!r}" if version else f"model {name!r} (new version)"
        super().__init__(f"{what} does not match its manifest: " + "; ".join(self.problems))


class ManifestInvalid(ModelError):
    """A manifest that does not validate: each problem names its field."""

    def __init__(self, name: str, problems: Iterable[str], source: str = "") -> None:
        self.name = name
        self.problems = list(problems)
        super().__init__(
            f"manifest {source + ' ' if source else ''}of model {name!r} is invalid: "
            + "; ".join(self.problems)
            + ' (the format: `streamscore models schema`, README "Bring your own model")'
        )

    @classmethod
    def from_validation(cls, name: str, exc: Any, source: str = "") -> ManifestInvalid:
        """From a pydantic ``ValidationError``: ``field.path: what is wrong`` per error."""
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            kind = error["type"]
            if kind == "missing":
                what = "required, missing"
            elif kind == "extra_forbidden":
                what = "unknown key (a typo?)"
            else:
                what = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {what}")
        return cls(name, problems, source)


class ScoringError(ModelError):
    """ONNX Runtime failed on a batch (bad input shape or type, runtime failure)."""

    def __init__(self, name: str, version: str, cause: BaseException) -> None:
        self.name = name
        self.version = version
        self.cause = cause
        super().__init__(
            f"scoring with model {name!r} version {version!r} failed: "
            f"{type(cause).__name__}: {cause}"
        )
