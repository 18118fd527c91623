"""Model signatures: sign a registered version, verify it at every load.

In: a version folder of the registry (``model.onnx``, ``manifest.json``), an elliptic-
curve private key (PEM) to sign with, public keys (PEM) to trust. Out: ``model.sig`` (an
OpenSSF ``model-signing`` bundle over the folder) and ``manifest.signed.json`` (the
manifest as registered, without its mutable ``history`` and ``signature``), both inside
the signature; or a :class:`ModelUntrusted` that says what did not verify.

Signing and verifying are the OpenSSF ``model-signing`` library's, not ours: it hashes
every file of the folder (a file added, removed or changed breaks the signature) and
signs the digest list as a Sigstore bundle with the key. What we add: ``manifest.json``
is outside the signature (promotions append to its history), so its signed copy is
inside, and at load every field but ``history`` and ``signature`` must equal it: a
manifest whose thresholds or inputs were edited is refused like an altered model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from models.errors import ModelError

__all__ = [
    "SIGNATURE_FILE",
    "SIGNED_MANIFEST_FILE",
    "ModelSigner",
    "ModelTrust",
    "ModelUntrusted",
    "key_id",
]

SIGNATURE_FILE = "model.sig"
SIGNED_MANIFEST_FILE = "manifest.signed.json"
# Outside the signature: the mutable manifest and the signature itself.
UNSIGNED = ("manifest.json", SIGNATURE_FILE)
MUTABLE_FIELDS = ("history", "signature")


class ModelUntrusted(ModelError):
    """A model's signature is missing or does not verify with a trusted key: refused."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        self.name = name
        self.version = version
        self.reason = reason
        super().__init__(f"model {name!r} version {version!r} refused: {reason}")


def key_id(public_key_pem: bytes) -> str:
    """sha256 of the DER public key: names a signing key in manifests and messages."""
    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def signed_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in MUTABLE_FIELDS}


def _hashing() -> Any:
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=UNSIGNED)


@dataclass(frozen=True)
class ModelSigner:
    """Signs versions at registration with an elliptic-curve private key (PEM)."""

    private_key: Path
    signer: str
    """Who signs (a person, a CI job): recorded in the manifest beside the key id."""
    password: str | None = field(default=None, repr=False)

    def public_key_id(self) -> str:
        data = self.private_key.read_bytes()
        password = self.password.encode() if self.password else None
        key = serialization.load_pem_private_key(data, password=password)
        return key_id(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the signed manifest copy and ``model.sig``; return the signature record."""
        import model_signing

        (folder / SIGNED_MANIFEST_FILE).write_text(
            json.dumps(signed_fields(manifest), indent=2, sort_keys=True, default=str)
        )
        (
            model_signing.signing.Config()
            .use_elliptic_key_signer(private_key=self.private_key, password=self.password)
            .set_hashing_config(_hashing())
            .sign(folder, folder / SIGNATURE_FILE)
        )
        return {
            "signer": self.signer,
            "key_id": self.public_key_id(),
            "signed_at": datetime.now(UTC).isoformat(),
            "files": sorted(
                p.name for p in folder.iterdir() if p.is_file() and p.name not in UNSIGNED
            ),
            "method": "model-signing (OpenSSF), elliptic-curve key",
        }


@dataclass(frozen=True)
class ModelTrust:
    """The public keys whose signatures a registry accepts. Empty: no signature checked
    (the registry then relies on the manifest's sha256 only)."""

    public_keys: tuple[Path, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.public_keys)

    def verify(self, name: str, version: str, folder: Path, manifest: dict[str, Any]) -> str:
        """Return the id of the trusted key that signed ``folder``; raise ModelUntrusted."""
        import model_signing

        signature = folder / SIGNATURE_FILE
        if not signature.is_file():
            raise ModelUntrusted(name, version, f"it is not signed (no {SIGNATURE_FILE})")
        failures = []
        for public_key in self.public_keys:
            try:
                (
                    model_signing.verifying.Config()
                    .use_elliptic_key_verifier(public_key=public_key)
                    .set_hashing_config(_hashing())
                    .verify(folder, signature)
                )
            except Exception as exc:  # the library raises ValueError and crypto errors
                failures.append(f"{public_key.name}: {str(exc).splitlines()[0][:200]}")
                continue
            signed = json.loads((folder / SIGNED_MANIFEST_FILE).read_text())
            current = json.loads(json.dumps(signed_fields(manifest), sort_keys=True, default=str))
            if signed != current:
                changed = sorted(
                    k for k in set(signed) | set(current) if signed.get(k) != current.get(k)
                )
                raise ModelUntrusted(
                    name, version, f"manifest.json differs from what was signed in {changed}"
                )
            return key_id(public_key.read_bytes())
        raise ModelUntrusted(
            name,
            version,
            "its signature does not verify with any trusted key (" + "; ".join(failures) + ")",
        )
