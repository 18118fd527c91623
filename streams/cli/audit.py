"""``audit``: events in versus predictions plus dead letters, reconciled by id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from streams.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    StreamscoreCommand,
    build_settings,
    common_options,
)


@click.command(cls=StreamscoreCommand)
@common_options
@click.option(
    "--idle",
    type=float,
    default=5.0,
    show_default=True,
    help="seconds without new records before counting",
)
@click.option(
    "--since", help="only events from this time (RFC 3339, epoch ms, or an age: 15m, 2h, 1d)"
)
@click.option("--until", help="only events before this time (same forms as --since)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def audit(idle: float, since: str | None, until: str | None, as_json: bool, **options: Any) -> int:
    """Reconcile events in versus predictions plus dead letters (exit 1: not reconciled)."""
    from streams.audit import audit as run_audit
    from streams.audit import parse_time

    try:
        since_ms = parse_time(since) if since else None
        until_ms = parse_time(until) if until else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    report = asyncio.run(
        run_audit(build_settings(**options), idle_s=idle, since_ms=since_ms, until_ms=until_ms)
    )
    summary = report.as_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"events in: {summary['events']}  predictions: {summary['predictions']}  "
            f"dead letters: {summary['deadletters']} {summary['deadletters_by_stage']}  "
            f"missing: {summary['missing']}  "
            f"duplicate predictions: {summary['duplicate_predictions']}  "
            f"-> {'reconciled' if report.reconciled else 'NOT reconciled'}"
        )
    return EXIT_OK if report.reconciled else EXIT_PROBLEM
