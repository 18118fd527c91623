"""Model signing (OpenSSF model-signing, elliptic-curve keys): signed at registration,
verified at every load; unsigned, re-signed by an unknown key, altered or re-described
models are refused, and the manifest records who signed what."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from models.registry import ModelRegistry, sha256_bytes
from models.signing import ModelSigner, ModelTrust, ModelUntrusted, key_id


def _key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.key.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: _key_pair(folder, name) for name in ("release", "intruder")}


def test_signed_model_loads_and_the_manifest_says_who_signed(
    tmp_path: Path, tiny_model: Any, keys: dict[str, tuple[Path, Path]]
) -> None:
    private, public = keys["release"]
    signer = ModelSigner(private, signer="ci-release-job")
    registry = ModelRegistry(tmp_path / "reg", signer=signer, trust=ModelTrust((public,)))
    manifest = registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    assert manifest.signature is not None
    assert manifest.signature.signer == "ci-release-job"
    assert manifest.signature.key_id == key_id(public.read_bytes())
    assert manifest.signature.files == ["manifest.signed.json", "model.onnx"]
    assert registry.load("fraud", "1").manifest == manifest
    # Promotions append history: still verifies (history is outside the signature).
    from datetime import UTC, datetime

    from models.manifest import HistoryEntry

    registry.add_history("fraud", "1", HistoryEntry(at=datetime.now(UTC), action="promoted"))
    registry.load("fraud", "1")


def test_unsigned_model_is_refused_when_keys_are_trusted(
    tmp_path: Path, tiny_model: Any, keys: dict[str, tuple[Path, Path]]
) -> None:
    ModelRegistry(tmp_path / "reg").register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    trusting = ModelRegistry(tmp_path / "reg", trust=ModelTrust((keys["release"][1],)))
    with pytest.raises(ModelUntrusted, match="not signed"):
        trusting.load("fraud", "1")


def test_model_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, tiny_model: Any, keys: dict[str, tuple[Path, Path]]
) -> None:
    intruder = ModelSigner(keys["intruder"][0], signer="someone")
    ModelRegistry(tmp_path / "reg", signer=intruder).register(
        "fraud", tiny_model.onnx_bytes, **tiny_model.fields
    )
    trusting = ModelRegistry(tmp_path / "reg", trust=ModelTrust((keys["release"][1],)))
    with pytest.raises(ModelUntrusted, match="does not verify with any trusted key"):
        trusting.load("fraud", "1")


def test_swapped_model_with_a_matching_hash_is_refused(
    tmp_path: Path, tiny_model: Any, keys: dict[str, tuple[Path, Path]]
) -> None:
    """Whoever can write the registry can fix up the sha256; not the signature."""
    private, public = keys["release"]
    registry = ModelRegistry(
        tmp_path / "reg", signer=ModelSigner(private, "ci"), trust=ModelTrust((public,))
    )
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    folder = tmp_path / "reg" / "fraud" / "1"
    import onnx

    graph = onnx.load_from_string(tiny_model.onnx_bytes)
    graph.doc_string = "swapped"
    altered = graph.SerializeToString()
    (folder / "model.onnx").write_bytes(altered)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = sha256_bytes(altered)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelUntrusted, match="does not verify"):
        registry.load("fraud", "1")


def test_edited_thresholds_are_refused(
    tmp_path: Path, tiny_model: Any, keys: dict[str, tuple[Path, Path]]
) -> None:
    private, public = keys["release"]
    registry = ModelRegistry(
        tmp_path / "reg", signer=ModelSigner(private, "ci"), trust=ModelTrust((public,))
    )
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    path = tmp_path / "reg" / "fraud" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["default_decision"] = "approve-everything"
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        ModelUntrusted, match=r"differs from what was signed in \['default_decision'\]"
    ):
        registry.load("fraud", "1")


def test_no_trusted_keys_keeps_the_hash_check_only(tmp_path: Path, tiny_model: Any) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.register("fraud", tiny_model.onnx_bytes, **tiny_model.fields)
    assert not registry.trust.enabled
    assert registry.load("fraud", "1").manifest.signature is None
