"""Kafka SASL/SCRAM-SHA-512 over TLS and topic ACLs against a real Apache Kafka listener.

The module starts its own embedded broker (streams/broker) once, with a SASL_SSL client
listener and the StandardAuthorizer: a CA and a broker certificate generated here (PEM,
no keytool), SCRAM users created by Kafka's own ``StorageTool format --add-scram``,
ACLs granted by Kafka's own ``kafka-acls``. Each principal (scoring worker, feedback
worker, feature worker, CLI) gets exactly the rows of the README's ACL table, and the
scoring worker, the feedback worker, the feature worker and the CLI (produce, tail,
audit) run against it, configured only
through ``STREAMSCORE_*`` with passwords in files. A wrong password, an untrusted
certificate, plaintext to the TLS port and SASL over plaintext each fail at once with a
message that names the setting to fix.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from streams import stack
from streams.broker.kafka import LocalKafka, SaslSslListener
from streams.broker.tls import CertificateAuthority
from streams.kafka import (
    KafkaSecurityError,
    ensure_topics,
    reader,
    send_records,
    wait_for_broker,
)
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class SecureBroker:
    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority(root / "tls")
        self.other_ca = CertificateAuthority(root / "other-tls", name="someone else's CA")
        cert = self.ca.issue("streamscore-broker")
        self.passwords = {
            name: secrets.token_urlsafe(16) for name in ("admin", *PRINCIPALS.values())
        }
        self.password_files = {}
        for name, password in self.passwords.items():
            path = root / f"{name}.password"
            path.write_text(password + "\n")
            path.chmod(0o600)
            self.password_files[name] = path
        self.settings = Settings(
            home=root / "broker-home",
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            kafka_start_timeout_s=120,
        )
        self.kafka = LocalKafka(
            self.settings,
            SaslSslListener(
                keystore=cert.keystore,
                truststore=self.ca.cert_path,
                users=self.passwords,
                acls=True,
            ),
        )

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def client(self, user: str = "scoring", **overrides: Any) -> dict[str, Any]:
        """The settings a client of this broker uses, as ``user``."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password_file": self.password_files[user],
            "ssl_cafile": self.ca.cert_path,
        } | overrides

    def as_user(self, settings: Settings, user: str) -> Settings:
        """The same deployment (topics, group) under another principal."""
        return Settings(**(settings.model_dump(exclude={"sasl_password"}) | self.client(user)))

    def grant_readme_acls(self, settings: Settings) -> list[tuple[str, ...]]:
        """Grant every row of the README's ACL table for ``settings``' topics and group."""
        grants = readme_acls(settings)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda args: self.kafka.add_acls(*args), grants))
        return grants


# README principal -> SCRAM user of this test
PRINCIPALS = {
    "scoring worker": "scoring",
    "feedback worker": "feedback",
    "feature worker": "features",
    "CLI": "operator",
}


def readme_acls(settings: Settings) -> list[tuple[str, ...]]:
    """``kafka-acls`` arguments for each row of the README's ACL table."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = text.split("| principal | resource | name | operations |", 1)[1].split("\n\n", 1)[0]
    grants = []
    for line in table.splitlines()[2:]:
        principal, resource, names, operations = (c.strip() for c in line.strip(" |").split("|"))
        user = next(u for p, u in PRINCIPALS.items() if principal.startswith(p))
        args = ["--allow-principal", f"User:{user}"]
        for op in operations.split(","):
            args += ["--operation", op.strip()]
        for name in re.findall(r"`([^`]+)`", names):
            if name.startswith("<consumer_group>"):
                full = name.replace("<consumer_group>", settings.group_id)
            else:
                full = settings.topic_prefix + name
            args += [f"--{resource}", full]
        grants.append(tuple(args))
    assert len(grants) >= 8, table
    return grants


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path_factory.mktemp("sasl-ssl"))
    broker.kafka.start(progress=False)
    try:
        yield broker
    finally:
        broker.kafka.stop()


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``streamscore ARGS`` as a user runs it, configured by the environment only."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=stack.child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_broker_listener_is_sasl_ssl_only(secure_broker: SecureBroker) -> None:
    config = secure_broker.kafka.config.read_text()
    assert f"listeners=SASL_SSL://127.0.0.1:{secure_broker.settings.kafka_port}," in config
    assert "PLAINTEXT://" not in config.split("listeners=", 1)[1].split("\n", 1)[0]
    assert secure_broker.kafka.config.stat().st_mode & 0o077 == 0  # holds the admin password


async def test_workers_and_cli_run_over_sasl_ssl(
    secure_broker: SecureBroker,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., stack.StackState],
    prepared_repo: tuple[Path, Path],
    root: Path,
    tmp_path: Path,
) -> None:
    admin = settings_factory(**secure_broker.client("admin"))
    await ensure_topics(admin)  # an administrator creates the topics
    secure_broker.grant_readme_acls(admin)
    scoring = secure_broker.as_user(admin, "scoring")
    feedback = secure_broker.as_user(admin, "feedback")
    settings = secure_broker.as_user(admin, "operator")  # the CLI's principal
    assert scoring.sasl_password is not None
    # Only the file's path travels to the workers, never the password itself.
    env = stack.child_env(scoring)
    assert secure_broker.passwords["scoring"] not in json.dumps(
        {k: v for k, v in env.items() if k.startswith("STREAMSCORE_")}
    )

    # The feature worker appends to its repo's offline files: a private copy of the repo.
    repo = tmp_path / "feature_repo"
    shutil.copytree(prepared_repo[0], repo)
    features = secure_broker.as_user(admin, "features").model_copy(update={"feature_repo": repo})
    workers = (
        worker_factory(scoring).workers
        + worker_factory(feedback, role="feedback").workers
        + worker_factory(features, role="features").workers
    )
    # A brand-new user's events, through the CLI: the feature worker aggregates them
    # under its grants alone (events, feature-events, its changelog, feature-updates).
    user = f"sec-{secrets.token_hex(4)}"
    t0 = int(time.time() * 1000) - 30_000
    events_file = tmp_path / "new-user.jsonl"
    events_file.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"{user}-{i}",
                    "event_time": t0 + i * 1000,
                    "user_id": user,
                    "merchant_id": "m0001",
                    "amount": 10.0,
                    "currency": "EUR",
                    "channel": "web",
                    "country": "DE",
                }
            )
            + "\n"
            for i in range(3)
        )
    )
    sent = cli(settings, "produce", "--file", str(events_file))
    assert sent.returncode == 0, sent.stderr

    produced = cli(settings, "produce", "--n", "120", "--labels", "--seed", "11")
    assert produced.returncode == 0, produced.stderr
    bad = cli(settings, "produce", "--file", str(root / "deploy" / "demo" / "bad-events.jsonl"))
    assert bad.returncode == 0, bad.stderr

    tail = cli(settings, "tail", "predictions", "--n", "5", "--idle", "60")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.strip().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["model"] == "fraud" for line in lines)

    deadline = time.monotonic() + 120
    while True:
        audit = cli(settings, "audit", "--json", "--idle", "3")
        report = json.loads(audit.stdout)
        if audit.returncode == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert report["events"] >= 120 + 7 and report["missing"] == 0
    assert report["deadletters"] >= 7

    # The feedback worker joined labels with predictions over the same listener.
    consumer = reader(admin, admin.topic("labelled"))
    await consumer.start()
    joined = 0
    try:
        while joined < 100 and time.monotonic() < deadline + 60:
            batch = await consumer.getmany(timeout_ms=1000)
            joined += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    assert joined >= 100

    # The feature worker's aggregates of the new user reached the online store.
    while True:
        row = await asyncio.to_thread(online_user_row, features, user)
        if row.get("txn_count_24h") == 3 or time.monotonic() > deadline + 60:
            break
        await asyncio.sleep(0.5)
    assert row.get("txn_count_24h") == 3, row
    # ... and it told the scoring workers which entities it wrote (its Write on
    # feature-updates), after the write.
    consumer = reader(admin, admin.topic("feature-updates"))
    await consumer.start()
    announced = False
    try:
        while not announced and time.monotonic() < deadline + 90:
            batch = await consumer.getmany(timeout_ms=1000)
            announced = any(
                user.encode() in record.value for records in batch.values() for record in records
            )
    finally:
        await consumer.stop()
    assert announced, f"no feature-updates record names {user}"
    feature_log = await asyncio.to_thread(Path(workers[-1]["log"]).read_text)
    assert "authorization" not in feature_log.lower(), feature_log[-2000:]
    # No password in the workers' logs or in `status --json`.
    status = cli(settings, "status", "--json")
    outputs = [status.stdout, status.stderr]
    outputs += [await asyncio.to_thread(Path(w["log"]).read_text) for w in workers]
    for password in secure_broker.passwords.values():
        assert not any(password in text for text in outputs)

    # The authorizer is on: what the table does not list is refused.
    with pytest.raises(TopicAuthorizationFailedError):
        await asyncio.wait_for(
            send_records(scoring, scoring.topic("labels"), [(None, b"{}")]), timeout=60
        )


def online_user_row(settings: Settings, user: str) -> dict[str, Any]:
    """What the online store holds in ``user_stream_stats`` for ``user`` ({} if nothing)."""
    from feast import FeatureStore

    from features.store import open_store
    from streams.online_store import online_store_config

    store: FeatureStore = open_store(settings.feature_repo, online_store_config(settings))
    values = store.get_online_features(
        features=["user_stream_stats:txn_count_24h"], entity_rows=[{"user_id": user}]
    ).to_dict()
    return {k: v[0] for k, v in values.items() if k != "user_id" and v[0] is not None}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "refused SASL SCRAM-SHA-512 authentication of user 'scoring'"),
        ("untrusted certificate", "is not trusted"),
        ("plaintext to the TLS port", "speaks TLS but STREAMSCORE_SECURITY_PROTOCOL=PLAINTEXT"),
        ("SASL over plaintext", "STREAMSCORE_SASL_ALLOW_PLAINTEXT"),
        ("wrong mechanism", "does not accept SASL SCRAM-SHA-256"),
    ],
)
async def test_refusals_fail_fast_with_the_setting(
    secure_broker: SecureBroker, tmp_path: Path, case: str, expected: str
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    choices: dict[str, dict[str, Any]] = {
        "wrong password": {"sasl_password_file": wrong},
        "untrusted certificate": {"ssl_cafile": secure_broker.other_ca.cert_path},
        "plaintext to the TLS port": {"security_protocol": "PLAINTEXT"},
        "SASL over plaintext": {"security_protocol": "SASL_PLAINTEXT"},
        "wrong mechanism": {"sasl_mechanism": "SCRAM-SHA-256"},
    }
    overrides = choices[case]
    settings = Settings(home=tmp_path, **secure_broker.client(**overrides))
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError, match=expected) as refused:
        # A refusal that waited would take the whole minute.
        await wait_for_broker(settings, timeout_s=60)
    assert time.monotonic() - started < 15
    assert secure_broker.passwords["scoring"] not in str(refused.value)
    assert "not-the-password" not in str(refused.value)


def test_worker_with_a_wrong_password_stops_at_start_up(
    secure_broker: SecureBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    settings = settings_factory(**secure_broker.client(sasl_password_file=wrong))
    result = cli(settings, "worker", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused SASL SCRAM-SHA-512 authentication of user 'scoring'" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
