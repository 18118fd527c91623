"""Redis AUTH (an ACL user) and TLS for the online store, against a real redis-server.

The module starts its own redis-server with only a TLS port (the plaintext port is off),
a certificate from a CA generated here, the ``default`` user disabled and one ACL user
for streamscore. The feature repo is materialized into it and a scoring worker, given
``rediss://`` plus the user, a password file and the CA, scores the CLI's events with
features found. A wrong password, an untrusted certificate and plaintext to the TLS port
each fail at start-up with a message that names the store and never the password.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from features.errors import FeatureStoreUnavailable
from features.online import FeastOnlineSource
from features.store import materialize, open_store
from models.registry import ModelRegistry
from streams import stack
from streams.broker.tls import CertificateAuthority
from streams.online_store import online_store_config
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class SecureRedis:
    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority(root / "tls")
        self.other_ca = CertificateAuthority(root / "other-tls", name="someone else's CA")
        cert = self.ca.issue("redis")
        self.password = secrets.token_urlsafe(16)
        self.password_file = root / "redis.password"
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        self.port = free_port()
        self.log = root / "redis.log"
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: deploy/tools.sh installs it"
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", "0",  # no plaintext port at all
                "--tls-port", str(self.port),
                "--tls-cert-file", str(cert.cert),
                "--tls-key-file", str(cert.key),
                "--tls-ca-cert-file", str(self.ca.cert_path),
                "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "no",
                "--dir", str(root),
                "--logfile", str(self.log),
                "--user", "default", "off",
                "--user", "streamscore", "on", f">{self.password}", "~*", "&*", "+@all",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self, timeout_s: float = 20) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = redis.Redis(
                    host="127.0.0.1",
                    port=self.port,
                    username="streamscore",
                    password=self.password,
                    ssl=True,
                    ssl_ca_certs=str(self.ca.cert_path),
                )
                assert client.ping()
                return
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def client(self, **overrides: Any) -> dict[str, Any]:
        return {
            "online_store": "redis",
            "redis_url": f"rediss://127.0.0.1:{self.port}/0",
            "redis_username": "streamscore",
            "redis_password_file": self.password_file,
            "redis_ssl_cafile": self.ca.cert_path,
        } | overrides


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    server = SecureRedis(tmp_path_factory.mktemp("redis-tls"))
    try:
        server.wait()
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=20)


def test_worker_scores_with_features_from_an_authenticated_tls_redis(
    secure_redis: SecureRedis,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
) -> None:
    settings = settings_factory(**secure_redis.client())
    online = online_store_config(settings)
    assert secure_redis.password not in repr(online) + online.describe()
    end = datetime.now(UTC)
    materialize(open_store(settings.feature_repo, online), end, start=end - timedelta(days=60))

    worker_factory(settings)
    env = stack.child_env(settings)
    assert secure_redis.password not in json.dumps(env.get("STREAMSCORE_REDIS_URL", ""))
    produced = subprocess.run(
        [sys.executable, "-m", "streams.cli", "produce", "--n", "60", "--seed", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stderr
    tail = subprocess.run(
        [sys.executable, "-m", "streams.cli", "tail", "predictions", "--n", "60", "--idle", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(records) == 60, tail.stderr
    # Features were served from the TLS Redis: most demo users are known to it.
    found = [r for r in records if not r["features_missing"] and r["fallback"] is None]
    assert len(found) >= 45, records[:3]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "AuthenticationError"),
        ("untrusted certificate", "certificate verify failed"),
        ("plaintext to the TLS port", "unavailable"),
    ],
)
async def test_online_store_refusals_fail_at_start_up(
    secure_redis: SecureRedis,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    case: str,
    expected: str,
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    choices: dict[str, dict[str, Any]] = {
        "wrong password": {"redis_password_file": wrong},
        "untrusted certificate": {"redis_ssl_cafile": secure_redis.other_ca.cert_path},
        "plaintext to the TLS port": {"redis_url": f"redis://127.0.0.1:{secure_redis.port}/0"},
    }
    overrides = choices[case]
    settings = settings_factory(**secure_redis.client(**overrides))
    store = open_store(settings.feature_repo, online_store_config(settings))
    source = FeastOnlineSource(store)
    manifest = ModelRegistry(settings.registry_path).load("fraud", "1").manifest
    refs = manifest.feature_refs()
    started = time.monotonic()
    # What the worker does before its first event (streams/worker.py): one real lookup.
    with pytest.raises(FeatureStoreUnavailable, match=expected) as refused:
        await source.fetch(refs, [{key: "__startup_probe__" for key in manifest.entity_keys}])
    assert time.monotonic() - started < 15
    assert secure_redis.password not in str(refused.value)
    assert "not-the-password" not in str(refused.value)
    assert f"127.0.0.1:{secure_redis.port}" in str(refused.value)
