"""The embedded broker's SASL_SSL option, without a JVM: the config it writes, the SCRAM
users it formats with, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.broker.kafka import BrokerStartError, LocalKafka, SaslSslListener
from streams.broker.tls import CertificateAuthority
from streams.settings import Settings


@pytest.fixture
def listener(tmp_path: Path) -> SaslSslListener:
    ca = CertificateAuthority(tmp_path / "tls")
    cert = ca.issue("streamscore-broker")
    return SaslSslListener(
        keystore=cert.keystore,
        truststore=ca.cert_path,
        users={"admin": "admin-pw", "scoring": "scoring-pw"},
        acls=True,
    )


def test_sasl_ssl_config_has_no_plaintext_client_listener(
    tmp_path: Path, listener: SaslSslListener
) -> None:
    settings = Settings(home=tmp_path, kafka_port=29092, kafka_controller_port=29093)
    broker = LocalKafka(settings, listener)
    broker._write_config()
    config = broker.config.read_text()
    assert "listeners=SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093" in config
    assert "PLAINTEXT://" not in config
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL" in config
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in config
    assert "ssl.keystore.type=PEM" in config
    assert "ssl.endpoint.identification.algorithm=https" in config
    # ACLs: deny by default; the admin and the broker's own certificate are super users.
    assert "allow.everyone.if.no.acl.found=false" in config
    assert "super.users=User:admin;User:CN=streamscore-broker" in config
    assert broker.config.stat().st_mode & 0o077 == 0
    assert broker._scram_args() == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=admin-pw]",
        "--add-scram",
        "SCRAM-SHA-512=[name=scoring,password=scoring-pw]",
    ]
    assert "admin-pw" not in repr(listener)


def test_tls_private_keys_are_owner_only(tmp_path: Path) -> None:
    cert = CertificateAuthority(tmp_path / "tls").issue("redis")
    for path in (cert.key, cert.keystore):
        assert path.stat().st_mode & 0o077 == 0
    assert b"PRIVATE KEY" not in cert.cert.read_bytes()


@pytest.mark.parametrize(
    "users",
    [{"scoring": "pw"}, {"admin": 'has"quote'}, {"admin": "a,b"}, {"admin": ""}],
)
def test_unusable_scram_users_are_refused(tmp_path: Path, users: dict[str, str]) -> None:
    with pytest.raises(BrokerStartError):
        SaslSslListener(keystore=tmp_path, truststore=tmp_path, users=users)
