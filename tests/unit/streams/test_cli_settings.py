"""`streamscore settings` and the README's settings table come from one source; settings
compose (the topic prefix prefixes the consumer group)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from streams.cli import main
from streams.cli.settings import MASK, markdown_table, settings_rows, shown
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STREAMSCORE_"):
            monkeypatch.delenv(key)


def test_every_setting_has_a_doc_and_a_row() -> None:
    rows = settings_rows(Settings())
    assert [r["name"] for r in rows] == list(Settings.model_fields)
    assert all(r["doc"] and r["env"] == f"STREAMSCORE_{r['name'].upper()}" for r in rows)


def test_secrets_and_url_passwords_are_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMSCORE_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("STREAMSCORE_REDIS_URL", "redis://app:hunter2@redis:6379/0")
    assert shown("redis://:pw@h:1/0") == f"redis://:{MASK}@h:1/0"
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert f"STREAMSCORE_SASL_PASSWORD = {MASK}   (default None)" in out
    # A password written in the URL is moved out of it into STREAMSCORE_REDIS_PASSWORD.
    assert "STREAMSCORE_REDIS_URL = redis://redis:6379/0   " in out
    assert f"STREAMSCORE_REDIS_PASSWORD = {MASK}   (default None)" in out
    assert main(["settings", "--json", "--changed"]) == 0
    changed = {r["env"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(changed) == {
        "STREAMSCORE_SASL_PASSWORD",
        "STREAMSCORE_REDIS_URL",
        "STREAMSCORE_REDIS_USERNAME",
        "STREAMSCORE_REDIS_PASSWORD",
    }
    assert changed["STREAMSCORE_SASL_PASSWORD"]["value"] == MASK
    assert changed["STREAMSCORE_REDIS_PASSWORD"]["value"] == MASK


def test_the_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert found, "README.md has no generated settings table"
    assert found.group(1) == markdown_table(), (
        "README's settings table is stale: paste `streamscore settings --markdown` between "
        "the settings markers"
    )


def test_the_topic_prefix_prefixes_the_consumer_group() -> None:
    assert Settings().group_id == "streamscore"
    tickets = Settings(topic_prefix="tickets.")
    assert (tickets.group_id, tickets.topic("events")) == ("tickets.streamscore", "tickets.events")
    assert Settings(topic_prefix="t.", consumer_group="eta").group_id == "t.eta"


def test_the_local_redis_url_follows_redis_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # `up --online-store redis` starts Redis on redis_port: an unset URL must point there.
    monkeypatch.setenv("STREAMSCORE_REDIS_PORT", "26479")
    assert Settings().redis_url == "redis://127.0.0.1:26479/0"
    monkeypatch.setenv("STREAMSCORE_REDIS_URL", "redis://cache.internal:6380/2")
    assert Settings().redis_url == "redis://cache.internal:6380/2"
    monkeypatch.delenv("STREAMSCORE_REDIS_PORT")
    monkeypatch.delenv("STREAMSCORE_REDIS_URL")
    assert Settings().redis_url == "redis://127.0.0.1:6379/0"
