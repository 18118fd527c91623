"""Signed models in a real worker: with trusted keys, ``streamscore worker`` refuses an
unsigned champion at start-up (exit 2, the reason on stderr), and serves one that was
signed at registration by a trusted key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from models.registry import ModelRegistry
from streams import stack
from streams.registry import open_registry
from streams.settings import Settings
from tests.unit.models.test_signing import _key_pair

pytestmark = pytest.mark.integration


def test_worker_refuses_an_unsigned_champion_and_serves_a_signed_one(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    tmp_path: Path,
) -> None:
    private, public = _key_pair(tmp_path, "release")
    base = settings_factory()
    registry_copy = tmp_path / "registry"
    shutil.copytree(base.registry_path, registry_copy)  # the session's registry stays as is
    settings = settings_factory(registry_root=registry_copy, model_trusted_keys=str(public))

    refused = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=stack.child_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refused: it is not signed" in refused.stderr

    # Re-register the champion's model, signed, and make it the champion.
    unsigned = ModelRegistry(registry_copy)
    champion = unsigned.manifest("fraud", unsigned.champion("fraud") or "1")
    signing = open_registry(
        settings.model_copy(
            update={"model_signing_key_file": private, "model_signer": "integration-test"}
        )
    )
    fields = champion.model_dump(
        exclude={"name", "version", "sha256", "created_at", "history", "signature"}
    )
    signed = signing.register("fraud", unsigned.model_path("fraud", champion.version), **fields)
    signing.set_champion("fraud", signed.version)
    assert signed.signature is not None and signed.signature.signer == "integration-test"

    state = worker_factory(settings)
    log = Path(state.workers[0]["log"]).read_text()
    assert f"serving fraud v{signed.version}" in log
