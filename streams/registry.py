"""Settings to the model registry: where it is, who signs, which keys are trusted.

In: :class:`Settings` (``registry_root``, ``model_signing_key_file``, ``model_signer``,
``model_trusted_keys``). Out: a :class:`models.registry.ModelRegistry` that signs what
it registers when a signing key is set, and verifies every load against the trusted
public keys when any are set. Free of Faust and Kafka, so every entry point (worker,
CLI, stack, bench) opens the registry the same way.
"""

from __future__ import annotations

from models.registry import ModelRegistry
from models.signing import ModelSigner, ModelTrust
from streams.settings import Settings


def open_registry(settings: Settings) -> ModelRegistry:
    signer = None
    if settings.model_signing_key_file is not None:
        signer = ModelSigner(settings.model_signing_key_file, signer=settings.model_signer)
    return ModelRegistry(
        settings.registry_path,
        signer=signer,
        trust=ModelTrust(tuple(settings.trusted_key_paths)),
    )
