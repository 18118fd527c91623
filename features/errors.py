"""Errors of the feature side.

In: what went wrong (references, entities, the underlying exception). Out:
exceptions that build their own message and say whether a retry can help
(`retryable`), so the agent routes them in one place without parsing text.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "FeatureError",
    "UnknownFeatureError",
    "FeatureStoreUnavailable",
    "FeatureReferenceError",
    "OfflineFileBusy",
]


class FeatureError(Exception):
    """Base of every error raised by `features`."""

    retryable: bool = False


class UnknownFeatureError(FeatureError):
    """Feature references that do not exist in the Feast registry (config error, not retryable)."""

    retryable = False

    def __init__(self, missing: Iterable[str], available: Iterable[str]) -> None:
        self.missing = sorted(set(missing))
        self.available = sorted(set(available))
        shown = ", ".join(self.available[:40])
        more = f" (+{len(self.available) - 40} more)" if len(self.available) > 40 else ""
        super().__init__(
            f"unknown feature reference(s) {', '.join(self.missing)}; "
            f"the registry has: {shown or 'nothing'}{more}"
        )


class FeatureStoreUnavailable(FeatureError):
    """The online store could not be reached or answered with an I/O error; retry later."""

    retryable = True

    def __init__(self, store: str, cause: BaseException) -> None:
        self.store = store
        self.cause = cause
        super().__init__(f"online store {store} unavailable: {type(cause).__name__}: {cause}")


class FeatureReferenceError(FeatureError):
    """A model's feature references that are missing from the registry or whose Feast type
    cannot feed the model's input (config error, not retryable): each one named."""

    retryable = False

    def __init__(self, missing: Iterable[str], mistyped: Iterable[tuple[str, str, str]]) -> None:
        self.missing = sorted(set(missing))
        self.mistyped = sorted(set(mistyped))
        parts = []
        if self.missing:
            parts.append(f"not in the feature registry: {', '.join(self.missing)}")
        for ref, wanted, declared in self.mistyped:
            parts.append(f"{ref} is {declared} in Feast but the model reads it as {wanted}")
        super().__init__("feature reference(s) refused: " + "; ".join(parts))


class OfflineFileBusy(FeatureError):
    """Another process writes a streaming view's offline file (the file offline store
    rewrites the whole file per append, so a second writer would lose rows): not
    retryable, the second writer must not run."""

    retryable = False

    def __init__(self, view: str, path: str, holder: str) -> None:
        self.view = view
        self.path = path
        self.holder = holder
        super().__init__(
            f"the offline file of {view} ({path}) is already written by "
            f"{holder or 'another process'}; "
            "Feast's file offline store rewrites the whole file on every push and takes one "
            "writer: run a single feature worker (and stop it before `features backfill`)"
        )
