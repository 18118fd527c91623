"""Start-up faults of the embedded broker, each a clear error and nothing left running.

A shell script stands in for java (unit tier: no JVM); the real broker is started by
``make test`` and by the e2e test.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from streams.broker.jars import LockedJar
from streams.broker.kafka import BrokerStartError, LocalKafka, cluster_id
from streams.settings import Settings
from tests.conftest import free_port


def fake_java(tmp_path: Path, body: str) -> Path:
    """A 'java' that formats storage at once and then does what ``body`` says."""
    path = tmp_path / "java"
    path.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ " $* " == *" kafka.tools.StorageTool "* ]]; then exit 0; fi\n'
        'echo "fake broker starting: $*"\n' + body + "\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # No jar download in the unit tier: an empty, verified jar directory.
    jars = tmp_path / "jars"
    jars.mkdir()
    monkeypatch.setattr(
        "streams.broker.kafka.ensure_jars", lambda cache, mirror, progress=True: jars
    )
    return Settings(
        home=tmp_path / "home",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_start_timeout_s=2,
    )


def test_a_taken_port_names_the_port_and_its_setting(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.kafka_port))
        taken.listen()
        with pytest.raises(BrokerStartError) as info:
            LocalKafka(settings).start(progress=False)
    message = str(info.value)
    assert f"127.0.0.1:{settings.kafka_port} is already in use" in message
    assert "STREAMSCORE_KAFKA_PORT" in message


def test_a_broker_that_exits_shows_its_log(settings: Settings, tmp_path: Path) -> None:
    java = fake_java(tmp_path, 'echo "ERROR bad config, giving up" >&2; exit 3')
    broker = LocalKafka(settings.model_copy(update={"kafka_java": java}))
    with pytest.raises(BrokerStartError, match="exited with code 3") as info:
        broker.start(progress=False)
    assert "ERROR bad config, giving up" in str(info.value)
    assert broker.pid() is None


def test_a_broker_that_never_answers_is_stopped(settings: Settings, tmp_path: Path) -> None:
    java = fake_java(tmp_path, 'echo "stuck forever"; exec sleep 60')
    broker = LocalKafka(settings.model_copy(update={"kafka_java": java}))
    with pytest.raises(BrokerStartError, match="did not answer") as info:
        broker.start(progress=False)
    assert "STREAMSCORE_KAFKA_START_TIMEOUT_S" in str(info.value)
    assert "stuck forever" in str(info.value)
    # Stopped, not half-started: no pid recorded, nothing listening.
    assert broker.pid() is None and not broker.pid_file.exists()


def test_a_java_that_is_not_executable_is_named(settings: Settings, tmp_path: Path) -> None:
    broker = LocalKafka(settings.model_copy(update={"kafka_java": tmp_path / "nope"}))
    with pytest.raises(BrokerStartError, match="STREAMSCORE_KAFKA_JAVA"):
        broker.start(progress=False)


def test_config_is_loopback_only_and_data_lives_in_home(settings: Settings) -> None:
    broker = LocalKafka(settings)
    broker._write_config()
    config = broker.config.read_text()
    assert f"listeners=PLAINTEXT://127.0.0.1:{settings.kafka_port}," in config
    assert f"log.dirs={(settings.home / 'kafka' / 'data').resolve()}" in config
    assert "0.0.0.0" not in config


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {cluster_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 22 and "=" not in i for i in ids)


def test_locked_jar_filename() -> None:
    assert LockedJar("g", "a", "1.0", "0" * 64).filename == "a-1.0.jar"
