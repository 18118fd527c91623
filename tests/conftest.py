"""Fixtures shared by every tier: a private copy of the Feast repo per session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def copy_feature_repo(dest: Path) -> Path:
    """The declarative repo without generated data, so each run builds its own."""
    shutil.copytree(
        ROOT / "feature_repo", dest, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    return dest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kcat(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
    """Run Debian's kcat (librdkafka), an independent Kafka client; fail on its error."""
    binary = shutil.which("kcat")
    assert binary, "kcat is missing: deploy/tools.sh installs it"
    result = subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def consume_until(bootstrap: str, topic: str, needle: str, fmt: str, timeout_s: float = 60) -> str:
    """Read ``topic`` with kcat from the beginning until ``needle`` shows up in its output."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = kcat(
            "-b",
            bootstrap,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            fmt,
        )
        if needle in out:
            return out
        time.sleep(1)
    raise AssertionError(f"{needle!r} never appeared on {topic}")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
