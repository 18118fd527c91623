"""The broker's jars: read the lock, fetch from Maven Central (or a mirror), verify, cache.

In: ``kafka.lock`` beside this module (``group:artifact:version sha256`` per line,
written by ``deploy/kafka/lock.sh`` from ``deploy/kafka/pom.xml``), a Maven repository
URL and a cache directory. Out: the directory of verified jars, one per user and Kafka
version (``<cache>/kafka-3.9.1/``), shared by every stack on the machine.

Nothing runs that the lock does not name with its hash: a jar whose sha256 differs
(a truncated download, a tampered mirror, a corrupted cache) is deleted and fetched
once more, then refused with :class:`JarHashMismatch`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

LOCK_PATH = Path(__file__).with_name("kafka.lock")
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
MIRROR_SETTING = "STREAMSCORE_KAFKA_MAVEN_MIRROR"

_LINE = re.compile(
    r"^(?P<group>[\w.\-]+):(?P<artifact>[\w.\-]+):(?P<version>[\w.\-]+)\s+(?P<sha>[0-9a-f]{64})$"
)


class JarError(RuntimeError):
    """The broker's jars could not be had; the message says which and what to do."""


class LockError(JarError):
    def __init__(self, path: Path, line_no: int, line: str, why: str) -> None:
        super().__init__(f"{path}:{line_no}: {why}: {line!r}")


class JarFetchError(JarError):
    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(
            f"could not download {url} ({cause}); check the network, or point "
            f"{MIRROR_SETTING} at a Maven repository you can reach (a company proxy)"
        )


class JarHashMismatch(JarError):
    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{url} has sha256 {actual}, the lock expects {expected}: refused and deleted "
            f"(fetched twice); a truncated download or a mirror serving other bytes "
            f"({MIRROR_SETTING})"
        )


@dataclass(frozen=True)
class LockedJar:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str) -> str:
        path = f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"
        return f"{repository.rstrip('/')}/{path}"


def parse_lock(text: str, path: Path = LOCK_PATH) -> list[LockedJar]:
    """The jars of a lock file; a malformed or ambiguous line fails with its number."""
    jars: list[LockedJar] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise LockError(path, line_no, line, "expected 'group:artifact:version sha256'")
        jar = LockedJar(match["group"], match["artifact"], match["version"], match["sha"])
        if jar.filename in seen:
            raise LockError(path, line_no, line, f"{jar.filename} is on line {seen[jar.filename]}")
        seen[jar.filename] = line_no
        jars.append(jar)
    if not jars:
        raise LockError(path, 0, "", "the lock names no jar")
    return jars


def read_lock(path: Path = LOCK_PATH) -> list[LockedJar]:
    return parse_lock(path.read_text(), path)


def kafka_version(jars: Iterable[LockedJar]) -> str:
    for jar in jars:
        if jar.group == "org.apache.kafka" and jar.artifact.startswith("kafka_"):
            return jar.version
    raise JarError("the lock has no org.apache.kafka:kafka_<scala> jar")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path, on_bytes: Callable[[int], None]) -> None:
    """Download to a temporary file beside ``dest``, then rename: no half-written jar."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                on_bytes(len(chunk))
        tmp.replace(dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise JarFetchError(url, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _ensure(
    jar: LockedJar, directory: Path, repository: str, on_bytes: Callable[[int], None]
) -> Path:
    dest = directory / jar.filename
    if dest.is_file() and sha256_of(dest) == jar.sha256:
        return dest
    url = jar.url(repository)
    actual = ""
    for _attempt in range(2):  # a bad jar is deleted and fetched once more, then refused
        dest.unlink(missing_ok=True)
        _download(url, dest, on_bytes)
        actual = sha256_of(dest)
        if actual == jar.sha256:
            return dest
    dest.unlink(missing_ok=True)
    raise JarHashMismatch(url, jar.sha256, actual)


def ensure_jars(
    cache_dir: Path,
    repository: str = MAVEN_CENTRAL,
    jars: list[LockedJar] | None = None,
    progress: bool = True,
) -> Path:
    """The directory holding every locked jar, verified; fetches what is missing or bad."""
    jars = read_lock() if jars is None else jars
    directory = cache_dir / f"kafka-{kafka_version(jars)}"
    missing = [j for j in jars if not _verified(directory / j.filename, j)]
    if missing:
        _fetch_all(missing, directory, repository, progress)
    # Only locked jars on the classpath: a stray jar in the cache is moved aside.
    locked = {j.filename for j in jars}
    for stray in directory.glob("*.jar"):
        if stray.name not in locked:
            shutil.move(stray, stray.with_suffix(".jar.unlocked"))
    return directory


def _verified(path: Path, jar: LockedJar) -> bool:
    return path.is_file() and sha256_of(path) == jar.sha256


def _fetch_all(missing: list[LockedJar], directory: Path, repository: str, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(
        desc=f"Kafka jars from {repository}",
        unit="B",
        unit_scale=True,
        disable=not progress,
        leave=False,
    ) as bar:
        # A few parallel downloads: the jars are many and small, latency dominates.
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(_ensure, j, directory, repository, bar.update) for j in missing]
            for future in futures:
                future.result()
