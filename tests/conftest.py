"""Fixtures shared by every tier: a private copy of the Feast repo per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def copy_feature_repo(dest: Path) -> Path:
    """The declarative repo without generated data, so each run builds its own."""
    shutil.copytree(
        ROOT / "feature_repo", dest, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    return dest


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
