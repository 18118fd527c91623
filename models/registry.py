"""A directory-tree model registry.

In: ONNX models (a path or bytes) plus their manifest fields. Out: versioned
folders ``<root>/<name>/<version>/model.onnx`` + ``manifest.json`` and a
``<root>/<name>/state.json`` naming the champion; loaded models that were
hash-checked against their manifest (a mismatch is refused, loudly). With a
:class:`~models.signing.ModelSigner` each version is signed at registration, and with a
:class:`~models.signing.ModelTrust` every load verifies the signature (and that the
manifest still says what was signed); an unsigned or untrusted model is refused.

Versions are integers assigned in order ("1", "2", ...). A version folder is
claimed with an exclusive ``mkdir`` and files are written to temporary names
and renamed, so concurrent registrations and readers never see half a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from models.errors import ModelError, ModelIntegrityError, ModelNotFound, ModelSignatureError
from models.manifest import (
    Decision,
    HistoryEntry,
    Lineage,
    ModelInput,
    ModelManifest,
    SignatureRecord,
)
from models.rollout import RolloutState
from models.scoring import LoadedModel, OnnxScorer
from models.signing import ModelSigner, ModelTrust

__all__ = ["ModelRegistry", "sha256_bytes"]

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_name(kind: str, value: str) -> None:
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise ModelError(f"invalid model {kind} {value!r}")


class ModelRegistry:
    """Models under ``root``; one folder per name, one sub-folder per version."""

    def __init__(
        self, root: Path, signer: ModelSigner | None = None, trust: ModelTrust | None = None
    ) -> None:
        self.root = Path(root)
        self.signer = signer
        self.trust = trust or ModelTrust()

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # --- reading ---
    def list_models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def is_empty(self) -> bool:
        return not self.list_models()

    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, oldest first (complete ones only)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [
            p.name
            for p in folder.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(found, key=int)

    def manifest(self, name: str, version: str) -> ModelManifest:
        path = self.root / name / str(version) / MANIFEST_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ModelNotFound(name, str(version), str(self.root)) from None
        try:
            return ModelManifest.model_validate_json(text)
        except ValueError as exc:
            raise ModelError(
                f"manifest of model {name!r} version {version!r} is invalid: {exc}"
            ) from exc

    def model_path(self, name: str, version: str) -> Path:
        return self.root / name / str(version) / MODEL_FILE

    def _state(self, name: str) -> dict[str, Any]:
        path = self.root / name / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(state, dict):
            raise ModelError(f"{path} is not a JSON object")
        return state

    def champion(self, name: str) -> str | None:
        """The champion version of ``name``; the first version if none was set."""
        champion = self._state(name).get("champion")
        if champion is not None:
            return str(champion)
        versions = self.versions(name)
        return versions[0] if versions else None

    def set_champion(self, name: str, version: str) -> None:
        version = str(version)
        if version not in self.versions(name):
            raise ModelNotFound(name, version, str(self.root))
        state = self._state(name)
        state["champion"] = version
        _atomic_write(self.root / name / STATE_FILE, json.dumps(state, indent=2).encode())

    def rollout(self, name: str) -> RolloutState | None:
        """The recorded rollout state of ``name`` (champion, canary, shadow, previous)."""
        champion = self.champion(name)
        if champion is None:
            return None
        state = self._state(name)
        state.setdefault("model", name)
        state["champion"] = champion
        try:
            return RolloutState.model_validate(state)
        except ValueError as exc:
            raise ModelError(f"rollout state of model {name!r} is invalid: {exc}") from exc

    def save_rollout(self, state: RolloutState) -> None:
        """Record ``state`` (what the CLI also publishes on ``control``)."""
        for version in filter(None, [state.champion, state.shadow, *state.previous]):
            if version not in self.versions(state.model):
                raise ModelNotFound(state.model, version, str(self.root))
        if state.canary and state.canary.version not in self.versions(state.model):
            raise ModelNotFound(state.model, state.canary.version, str(self.root))
        _atomic_write(
            self.root / state.model / STATE_FILE, state.model_dump_json(indent=2).encode()
        )

    def add_history(self, name: str, version: str, entry: HistoryEntry) -> ModelManifest:
        """Append a lifecycle step to the version's manifest (the model card's history).

        The manifest is not covered by the ONNX hash, so it may change; the model may not.
        """
        manifest = self.manifest(name, version)
        updated = manifest.model_copy(update={"history": [*manifest.history, entry]})
        _atomic_write(
            self.root / name / str(version) / MANIFEST_FILE,
            updated.model_dump_json(indent=2).encode(),
        )
        return updated

    def load(self, name: str, version: str, intra_op_threads: int = 1) -> LoadedModel:
        """Hash-check and load a version; ``ModelIntegrityError`` if the file was altered."""
        version = str(version)
        manifest = self.manifest(name, version)
        path = self.model_path(name, version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(name, version, str(self.root)) from None
        actual = sha256_bytes(data)
        if actual != manifest.sha256:
            raise ModelIntegrityError(name, version, manifest.sha256, actual)
        if self.trust.enabled:
            self.trust.verify(name, version, path.parent, manifest.model_dump(mode="json"))
        try:
            onnx.checker.check_model(onnx.load_from_string(data))
        except Exception as exc:
            raise ModelSignatureError(name, version, [f"onnx.checker refused it: {exc}"]) from exc
        # The session is built from the very bytes that were hashed.
        scorer = OnnxScorer(path, manifest, intra_op_threads, model_bytes=data)
        return LoadedModel(manifest=manifest, path=path, scorer=scorer)

    # --- writing ---
    def register(
        self,
        name: str,
        model: Path | bytes,
        *,
        task: str,
        inputs: list[ModelInput] | list[Mapping[str, Any]],
        entity_keys: Mapping[str, str],
        outputs: Mapping[str, str],
        lineage: Lineage | Mapping[str, Any],
        decisions: list[Decision] | list[Mapping[str, Any]] | None = None,
        default_decision: str = "approve",
        metrics: Mapping[str, float] | None = None,
        profile: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
        **extra: Any,
    ) -> ModelManifest:
        """Check the ONNX model, store it as the next version and return its manifest.

        The manifest is validated and the graph is checked against it (inputs,
        dtypes, score output) before anything is written.
        """
        _check_name("name", name)
        data = Path(model).read_bytes() if isinstance(model, Path) else bytes(model)
        try:
            onnx.checker.check_model(onnx.load_from_string(data))
        except Exception as exc:
            raise ModelSignatureError(name, "", [f"onnx.checker refused it: {exc}"]) from exc
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        fields: dict[str, Any] = {
            "name": name,
            "sha256": sha256_bytes(data),
            "created_at": created_at or datetime.now(UTC),
            "task": task,
            "inputs": inputs,
            "entity_keys": dict(entity_keys),
            "outputs": dict(outputs),
            "decisions": decisions or [],
            "default_decision": default_decision,
            "lineage": lineage,
            "metrics": dict(metrics or {}),
            "profile": dict(profile or {}),
            # fallback, event_schema, card: optional manifest fields, validated below
            **extra,
        }
        fields.setdefault("history", [])
        fields["history"] = [
            *fields["history"],
            HistoryEntry(at=fields["created_at"], action="registered"),
        ]
        draft = ModelManifest.model_validate({**fields, "version": ""})  # "": not assigned yet
        OnnxScorer(folder / MODEL_FILE, draft, model_bytes=data)  # signature check only

        version_dir = self._claim_next_version(folder)
        manifest = draft.model_copy(update={"version": version_dir.name})
        _atomic_write(version_dir / MODEL_FILE, data)
        if self.signer is not None:
            record = self.signer.sign(version_dir, manifest.model_dump(mode="json"))
            manifest = manifest.model_copy(update={"signature": SignatureRecord(**record)})
        # manifest.json last: a version counts as registered once it exists.
        _atomic_write(version_dir / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
        if self._state(name).get("champion") is None:
            self.set_champion(name, manifest.version)
        return manifest

    def _claim_next_version(self, folder: Path) -> Path:
        existing = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        candidate = max(existing, default=0) + 1
        while True:
            path = folder / str(candidate)
            try:
                path.mkdir()  # exclusive: two writers never get the same version
                return path
            except FileExistsError:
                candidate += 1
