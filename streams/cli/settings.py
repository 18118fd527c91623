"""``settings``: every setting with its environment variable, doc, default and current
value (secrets masked). The README's settings table is :func:`markdown_table`, so the
two cannot disagree (tests/unit/streams/test_cli_settings.py checks the README)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from streams.cli.common import EXIT_OK, StreamscoreCommand
from streams.settings import Settings

MASK = "********"
COMPUTED = "(computed: see its doc)"
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]+@")


def env_name(field: str) -> str:
    return f"STREAMSCORE_{field.upper()}"


def shown(value: Any) -> Any:
    """A value as it may be printed: secrets masked, passwords in URLs masked."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value)
    return value


def _default(field: Any) -> Any:
    if field.default_factory is not None:
        return COMPUTED
    return None if field.default is PydanticUndefined else shown(field.default)


def _doc(field: Any) -> str:
    return " ".join((field.description or "").split())


def settings_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per setting: name, env, doc, default, current value (masked)."""
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append(
            {
                "name": name,
                "env": env_name(name),
                "doc": _doc(field),
                "default": _default(field),
                "value": shown(getattr(settings, name)),
            }
        )
    return rows


def markdown_table() -> str:
    """The README's settings table: every setting, its default and its doc."""

    def cell(value: Any) -> str:
        text = "" if value is None else f"`{value}`" if value != "" else '`""`'
        return text.replace("|", "\\|")

    lines = ["| setting | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        doc = _doc(field).replace("|", "\\|")
        lines.append(f"| `{env_name(name)}` | {cell(_default(field))} | {doc} |")
    return "\n".join(lines)


@click.command("settings", cls=StreamscoreCommand)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--markdown", is_flag=True, help="the README's settings table")
@click.option("--changed", is_flag=True, help="only the settings that differ from the default")
def settings_command(as_json: bool, markdown: bool, changed: bool) -> int:
    """Every setting: environment variable, doc, default, current value (secrets masked)."""
    if markdown:
        click.echo(markdown_table())
        return EXIT_OK
    rows = settings_rows(Settings())
    if changed:
        rows = [r for r in rows if r["value"] != r["default"] and r["default"] != COMPUTED]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    for row in rows:
        same = row["value"] == row["default"] or row["default"] == COMPUTED
        mark = "" if same else f"   (default {row['default']})"
        click.echo(f"{row['env']} = {row['value']}{mark}")
        click.echo(f"    {row['doc']}")
    return EXIT_OK
