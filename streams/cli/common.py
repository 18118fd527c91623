"""What every ``streamscore`` command shares: the common options, the one
:class:`Settings` a command builds, and the one place a user-facing failure becomes a
message and an exit code.

Exit codes (README, "Exit codes"): 0 done; 1 a check found a problem (``audit`` not
reconciled); 2 a usage error or a refused command (the message says why); 3 ``status``:
the stack is not (fully) up.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streams.settings import Settings

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_NOT_UP = 3

F = TypeVar("F", bound=Callable[..., Any])


def user_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can act on: printed as one line, never a traceback."""
    from pydantic import ValidationError

    from features.store import FeatureError
    from models.registry import ModelError
    from streams.kafka import BrokerUnavailable
    from streams.stack import StackError

    return (StackError, BrokerUnavailable, ModelError, FeatureError, ValidationError)


class StreamscoreCommand(click.Command):
    """A command whose user-facing failures print ``streamscore <cmd>: <why>``, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except user_errors() as exc:
            click.echo(f"{ctx.command_path}: {exc}", err=True)
            ctx.exit(EXIT_USAGE)


class StreamscoreGroup(click.Group):
    command_class = StreamscoreCommand
    group_class = type  # subgroups are StreamscoreGroups too


def common_options(func: F) -> F:
    """``--home`` and ``--bootstrap-servers``, accepted by every command."""

    @click.option(
        "--bootstrap-servers",
        default=None,
        help="Kafka bootstrap addresses (STREAMSCORE_BOOTSTRAP_SERVERS)",
    )
    @click.option(
        "--home",
        type=click.Path(path_type=Path),
        default=None,
        help="stack directory (STREAMSCORE_HOME)",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


json_option = click.option(
    "--json", "as_json", is_flag=True, help="machine-readable output on stdout"
)

online_store_option = click.option(
    "--online-store",
    type=click.Choice(["repo", "sqlite", "redis"]),
    default=None,
    help="repo: as feature_store.yaml says (default); sqlite or redis override it",
)


def build_settings(*, follow_stack: bool = True, **options: Any) -> Settings:
    """One :class:`Settings`: env ``STREAMSCORE_*`` plus the command's options.

    ``follow_stack``: after ``up --broker external``, produce/tail/audit/bench talk to the
    stack that is up (its recorded bootstrap address), unless one was given.
    """
    overrides = {
        name: value
        for name in ("broker", "online_store", "bootstrap_servers", "home")
        if (value := options.get(name)) is not None
    }
    settings = Settings(**overrides)
    if (
        follow_stack
        and "bootstrap_servers" not in overrides
        and settings.bootstrap_servers == f"127.0.0.1:{settings.kafka_port}"
    ):
        from streams.stack import StackState, state_path

        state = StackState.load(state_path(settings))
        if state is not None:
            settings = settings.model_copy(update={"bootstrap_servers": state.bootstrap_servers})
    return settings


def eprint(message: str) -> None:
    """Progress and summaries go to stderr, so stdout stays the data a script reads."""
    print(message, file=sys.stderr, flush=True)
