"""``streamscore``: the operator's and the newcomer's command line (Click).

One module per command group: :mod:`.stack` (``up``, ``down``, ``status``, ``worker``,
``bootstrap``), :mod:`.produce`, :mod:`.tail`, :mod:`.audit`, :mod:`.bench`,
:mod:`.models` (``train`` and ``models ...``), :mod:`.features` (``features ...``),
:mod:`.settings`. Every command builds one
:class:`~streams.settings.Settings` (env ``STREAMSCORE_*`` plus its options); shared
options, error handling and exit codes are in :mod:`.common`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import click

from streams.cli.audit import audit
from streams.cli.bench import bench
from streams.cli.common import StreamscoreGroup
from streams.cli.features import features
from streams.cli.models import models, train
from streams.cli.produce import produce
from streams.cli.settings import settings_command
from streams.cli.stack import bootstrap, down, status, up, worker
from streams.cli.tail import tail


@click.group(cls=StreamscoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """streamscore: event-driven streaming inference (Faust, Feast, ONNX Runtime, Kafka)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for command in (
    up,
    down,
    status,
    worker,
    bootstrap,
    produce,
    tail,
    audit,
    bench,
    train,
    models,
    features,
    settings_command,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (README, "Exit codes")."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="streamscore",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    # ``--help`` returns None (exit 0); an ``Exit`` returns its code.
    return int(result or 0)


__all__ = ["cli", "main"]
