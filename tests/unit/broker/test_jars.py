"""The broker's jar lock: parsing, verification, refusal of bad bytes, the mirror setting.

A ``file://`` mirror stands in for Maven Central: urllib fetches it through the same
code path as an https repository, so refusal, retry and caching are tested for real.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from streams.broker import jars
from streams.broker.jars import (
    JarFetchError,
    JarHashMismatch,
    LockedJar,
    LockError,
    ensure_jars,
    kafka_version,
    parse_lock,
    read_lock,
)
from streams.settings import Settings

GOOD = b"PK\x03\x04 pretend this is a jar"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirror_with(root: Path, jar: LockedJar, data: bytes) -> str:
    """A Maven-layout directory serving ``data`` as ``jar``; returns its file:// URL."""
    path = Path(jar.url(str(root)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return root.as_uri()


def lock_of(data: bytes) -> list[LockedJar]:
    return [LockedJar("org.apache.kafka", "kafka_2.13", "3.9.1", sha(data))]


def test_the_shipped_lock_names_kafka_and_its_logging() -> None:
    locked = read_lock()
    assert kafka_version(locked) == "3.9.1"
    names = {j.artifact for j in locked}
    assert {"kafka_2.13", "kafka-clients", "kafka-raft", "reload4j", "slf4j-reload4j"} <= names
    assert all(len(j.sha256) == 64 for j in locked)


def test_lock_parser_skips_comments_and_names_the_bad_line() -> None:
    text = f"# header\n\norg.slf4j:slf4j-api:1.7.36 {'a' * 64}\n"
    assert parse_lock(text) == [LockedJar("org.slf4j", "slf4j-api", "1.7.36", "a" * 64)]
    with pytest.raises(LockError, match=r":3: expected 'group:artifact:version sha256'"):
        parse_lock(f"# x\n\norg.slf4j:slf4j-api {'a' * 64}\n")
    with pytest.raises(LockError, match="is on line 1"):
        parse_lock(f"a:b:1 {'a' * 64}\nc:b:1 {'b' * 64}\n")
    with pytest.raises(LockError, match="names no jar"):
        parse_lock("# only a comment\n")


def test_url_follows_the_maven_layout() -> None:
    jar = LockedJar("org.apache.kafka", "kafka-clients", "3.9.1", "0" * 64)
    assert jar.url("https://repo.example/maven2/") == (
        "https://repo.example/maven2/org/apache/kafka/kafka-clients/3.9.1/kafka-clients-3.9.1.jar"
    )


def test_fetches_verifies_and_caches(tmp_path: Path) -> None:
    locked = lock_of(GOOD)
    mirror = mirror_with(tmp_path / "mirror", locked[0], GOOD)
    directory = ensure_jars(tmp_path / "cache", mirror, locked, progress=False)
    assert directory == tmp_path / "cache" / "kafka-3.9.1"
    assert (directory / "kafka_2.13-3.9.1.jar").read_bytes() == GOOD
    # Cached: a second call needs no mirror at all.
    again = ensure_jars(tmp_path / "cache", (tmp_path / "nowhere").as_uri(), locked, progress=False)
    assert again == directory


def test_a_tampered_mirror_is_refused_and_nothing_is_left_to_run(tmp_path: Path) -> None:
    locked = lock_of(GOOD)
    mirror = mirror_with(tmp_path / "mirror", locked[0], b"evil bytes")
    with pytest.raises(JarHashMismatch, match="the lock expects") as info:
        ensure_jars(tmp_path / "cache", mirror, locked, progress=False)
    assert "STREAMSCORE_KAFKA_MAVEN_MIRROR" in str(info.value)
    assert not list((tmp_path / "cache" / "kafka-3.9.1").glob("*.jar"))


def test_a_corrupted_cache_is_deleted_and_fetched_again(tmp_path: Path) -> None:
    locked = lock_of(GOOD)
    mirror = mirror_with(tmp_path / "mirror", locked[0], GOOD)
    cached = tmp_path / "cache" / "kafka-3.9.1" / "kafka_2.13-3.9.1.jar"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(GOOD[:5])  # a truncated earlier download
    ensure_jars(tmp_path / "cache", mirror, locked, progress=False)
    assert cached.read_bytes() == GOOD


def test_a_bad_first_download_is_fetched_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = lock_of(GOOD)
    mirror = mirror_with(tmp_path / "mirror", locked[0], GOOD)
    real = jars._download
    calls = []

    def flaky(url: str, dest: Path, on_bytes) -> None:
        calls.append(url)
        real(url, dest, on_bytes)
        if len(calls) == 1:
            dest.write_bytes(GOOD[:3])  # the connection dropped mid-file

    monkeypatch.setattr(jars, "_download", flaky)
    ensure_jars(tmp_path / "cache", mirror, locked, progress=False)
    assert len(calls) == 2


def test_no_network_and_no_cache_names_the_url_and_the_mirror_setting(tmp_path: Path) -> None:
    locked = lock_of(GOOD)
    with pytest.raises(JarFetchError) as info:
        ensure_jars(tmp_path / "cache", (tmp_path / "offline").as_uri(), locked, progress=False)
    message = str(info.value)
    assert "org/apache/kafka/kafka_2.13/3.9.1/kafka_2.13-3.9.1.jar" in message
    assert "STREAMSCORE_KAFKA_MAVEN_MIRROR" in message


def test_a_stray_jar_never_reaches_the_classpath(tmp_path: Path) -> None:
    locked = lock_of(GOOD)
    mirror = mirror_with(tmp_path / "mirror", locked[0], GOOD)
    directory = tmp_path / "cache" / "kafka-3.9.1"
    directory.mkdir(parents=True)
    (directory / "planted-1.0.jar").write_bytes(b"x")
    ensure_jars(tmp_path / "cache", mirror, locked, progress=False)
    assert sorted(p.name for p in directory.glob("*.jar")) == ["kafka_2.13-3.9.1.jar"]


def test_mirror_and_cache_are_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA_MAVEN_MIRROR", "https://maven.corp.example/central")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = Settings()
    assert settings.kafka_maven_mirror == "https://maven.corp.example/central"
    assert settings.kafka_cache_dir == tmp_path / "streamscore"
    assert Settings(kafka_maven_mirror=jars.MAVEN_CENTRAL).kafka_maven_mirror.startswith("https://")
