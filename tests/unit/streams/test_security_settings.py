"""Secrets, the Kafka security mapping and the HTTP surface, without services.

Secrets come only from the environment or files (``*_FILE``), and never show in
``repr``, a JSON dump, the workers' environment (stack.json), or an error message.
One mapping (``kafka_security``) feeds both adapters, aiokafka's and Faust's.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from features.store import redis_connection_string
from streams import stack
from streams.broker.tls import CertificateAuthority
from streams.faust_app import faust_credentials, make_app
from streams.kafka import KafkaSecurityError, aiokafka_security, client_kwargs, kafka_security
from streams.online_store import online_store_config
from streams.settings import Settings

SECRET = "s3cr3t-canary-Zq9"


def _secret_file(tmp_path: Path, name: str = "password") -> Path:
    path = tmp_path / name
    path.write_text(SECRET + "\n")
    return path


def _visible(settings: Settings) -> str:
    """Everything a log line, status or stack.json could show of the settings."""
    env = {k: v for k, v in stack.child_env(settings).items() if k.startswith("STREAMSCORE_")}
    return "\n".join([repr(settings), str(settings), settings.model_dump_json(), json.dumps(env)])


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        sasl_password_file=_secret_file(tmp_path, "kafka"),
        redis_password_file=_secret_file(tmp_path, "redis"),
    )
    assert settings.sasl_password is not None and settings.redis_password is not None
    assert settings.sasl_password.get_secret_value() == SECRET  # trailing newline dropped
    assert settings.redis_password.get_secret_value() == SECRET
    assert SECRET not in _visible(settings)
    # Workers get the files' paths, and read them as the parent did.
    env = stack.child_env(settings)
    assert env["STREAMSCORE_SASL_PASSWORD_FILE"] == str(tmp_path / "kafka")


def test_stack_json_never_records_a_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCORE_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("STREAMSCORE_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("STREAMSCORE_PII_HMAC_KEY_FILE", str(_secret_file(tmp_path)))
    settings = Settings(home=tmp_path)
    recorded = stack.recorded_env(settings)
    assert SECRET not in json.dumps(recorded)
    assert recorded["STREAMSCORE_PII_HMAC_KEY_FILE"] == str(tmp_path / "password")
    # The workers still get the value: they inherit the caller's environment.
    assert stack.child_env(settings)["STREAMSCORE_SASL_PASSWORD"] == SECRET


def test_secret_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_SASL_PASSWORD_FILE", str(_secret_file(tmp_path)))
    settings = Settings(home=tmp_path)
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == SECRET


def test_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="sasl_password or sasl_password_file") as exc:
        Settings(sasl_password=SecretStr(SECRET), sasl_password_file=_secret_file(tmp_path))
    assert SECRET not in str(exc.value)


def test_settings_errors_never_print_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_SASL_PASSWORD", "pw1")  # short: no truncation hides it
    monkeypatch.setenv("STREAMSCORE_REDIS_PASSWORD", "pw2")
    monkeypatch.setenv("STREAMSCORE_TYPO_SETTING", "1")  # a model-level error
    with pytest.raises(ValidationError, match="STREAMSCORE_TYPO_SETTING") as exc:
        Settings()
    assert "pw1" not in str(exc.value) and "pw2" not in str(exc.value)
    monkeypatch.delenv("STREAMSCORE_TYPO_SETTING")
    with pytest.raises(ValidationError, match="partitions") as exc:
        Settings(partitions=0)
    assert "pw1" not in str(exc.value)


def test_unreadable_secret_file_names_the_path_only(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="redis_password_file .*missing") as exc:
        Settings(redis_password_file=tmp_path / "missing")
    assert "Traceback" not in str(exc.value)


def test_password_in_redis_url_is_moved_out_of_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, redis_url=f"rediss://app:{SECRET}@cache.internal:6380/2")
    assert settings.redis_url == "rediss://cache.internal:6380/2"
    assert settings.redis_username == "app"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == SECRET
    assert SECRET not in _visible(settings)
    online = online_store_config(settings.model_copy(update={"online_store": "redis"}))
    assert SECRET not in repr(online) + online.describe()
    assert f"password={SECRET}" in redis_connection_string(
        online.redis_url or "", username=online.username, password=online.password
    )


def test_redis_tls_connection_string_names_the_ca(tmp_path: Path) -> None:
    text = redis_connection_string(
        "rediss://127.0.0.1:6390/0", username="u", password="p", ssl_ca_certs=tmp_path / "ca.pem"
    )
    assert text.endswith(f"ssl=true,ssl_check_hostname=true,ssl_ca_certs={tmp_path}/ca.pem")
    with pytest.raises(ValueError, match="must start with") as exc:
        redis_connection_string(f"http://u:{SECRET}@host")
    assert SECRET not in str(exc.value)


def test_sasl_over_plaintext_needs_an_explicit_setting(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "home": tmp_path,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "worker",
        "sasl_password": SecretStr(SECRET),
    }
    with pytest.raises(KafkaSecurityError, match="STREAMSCORE_SASL_ALLOW_PLAINTEXT"):
        kafka_security(Settings(**base))
    allowed = kafka_security(Settings(**base, sasl_allow_plaintext=True))
    assert allowed.protocol == "SASL_PLAINTEXT" and allowed.ssl_context is None


def test_sasl_without_credentials_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KafkaSecurityError, match="STREAMSCORE_SASL_PASSWORD_FILE"):
        kafka_security(Settings(home=tmp_path, security_protocol="SASL_SSL"))


def test_missing_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KafkaSecurityError, match="STREAMSCORE_SSL_CAFILE"):
        kafka_security(
            Settings(home=tmp_path, security_protocol="SSL", ssl_cafile=tmp_path / "none.pem")
        )


def test_one_mapping_two_adapters(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "tls")
    settings = Settings(
        home=tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password_file=_secret_file(tmp_path),
        ssl_cafile=ca.cert_path,
    )
    security = kafka_security(settings)
    assert SECRET not in repr(security)
    assert isinstance(security.ssl_context, ssl.SSLContext)
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert security.ssl_context.check_hostname

    aio = aiokafka_security(security)
    assert aio == {
        "security_protocol": "SASL_SSL",
        "ssl_context": security.ssl_context,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": SECRET,
    }
    assert client_kwargs(settings)["bootstrap_servers"] == settings.bootstrap_servers

    # Faust turns its credentials into aiokafka's arguments itself: the same ones.
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    assert credentials_to_aiokafka_auth(faust_credentials(security)) == aio


def test_tls_only_and_plaintext_adapters(tmp_path: Path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    ca = CertificateAuthority(tmp_path / "tls")
    tls = kafka_security(Settings(home=tmp_path, security_protocol="SSL", ssl_cafile=ca.cert_path))
    assert credentials_to_aiokafka_auth(faust_credentials(tls)) == aiokafka_security(tls)
    plain = kafka_security(Settings(home=tmp_path))
    assert faust_credentials(plain) is None
    assert aiokafka_security(plain) == {"security_protocol": "PLAINTEXT"}


def test_http_surface_is_loopback_and_faust_web_is_off(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.metrics_host == "127.0.0.1"
    app = make_app(settings, "security-unit")
    # No Faust web server at all: its table and router endpoints never listen.
    assert app.conf.web_enabled is False
