"""``features ...``: the feature engineer's commands on any Feast repository.

``features apply`` registers the repo's objects (``feast apply`` without its side
effects) and validates what streamscore needs of them: every streaming view (fed by a
push source) has fields the feature worker can compute and an offline file to append
to. ``features materialize`` loads offline values into the online store.
``features get VIEW --entity KEY=VALUE`` shows what the online store holds for an
entity, with the row's timestamp and age. ``--repo PATH`` picks the repo
(``STREAMSCORE_FEATURE_REPO``); its online store follows ``feature_store.yaml`` unless
``--online-store`` / ``STREAMSCORE_ONLINE_STORE`` overrides it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from streams.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    StreamscoreGroup,
    build_settings,
    common_options,
    eprint,
    online_store_option,
)
from streams.settings import Settings

repo_option = click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="the Feast repository (STREAMSCORE_FEATURE_REPO; default feature_repo)",
)


def _settings(repo: Path | None, **options: Any) -> Settings:
    settings = build_settings(**options)
    if repo is not None:
        settings = settings.model_copy(update={"feature_repo": repo})
    return settings


def _store(settings: Settings) -> Any:
    from features.store import open_store
    from streams.online_store import online_store_config

    return open_store(settings.feature_repo, online_store_config(settings))


@click.group(cls=StreamscoreGroup)
def features() -> None:
    """The Feast repository: apply and validate, materialize, look at online values."""


@features.command("apply")
@common_options
@online_store_option
@repo_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
def apply_command(repo: Path | None, as_json: bool, **options: Any) -> int:
    """Register the repo's objects and validate them (streaming views included)."""
    from features.store import apply_repo
    from features.streaming import streaming_views
    from streams.online_store import online_store_config

    settings = _settings(repo, **options)
    apply_repo(settings.feature_repo, online_store_config(settings))
    store = _store(settings)
    streaming = {v.name: v for v in streaming_views(store)}
    problems = []
    views = []
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        entry: dict[str, Any] = {
            "view": view.name,
            "join_keys": list(view.join_keys),
            "features": {f.name: f.dtype.to_value_type().name for f in view.features},
            "ttl_s": view.ttl.total_seconds() if view.ttl else None,
            "streaming": view.name in streaming,
        }
        if view.name in streaming:
            source = view.batch_source
            path = Path(getattr(source, "path", "") or "")
            if not path.is_absolute():
                path = settings.feature_repo / path
            if not path.exists():
                problems.append(
                    f"{view.name}: its push source's offline file {path} does not exist; "
                    f"the feature worker appends to it: `streamscore features backfill "
                    f"{view.name}` writes it"
                )
            else:
                import pyarrow.parquet as pq

                columns = set(pq.read_schema(path).names)
                lacking = [f for f in entry["features"] if f not in columns]
                if lacking:
                    problems.append(
                        f"{view.name}: its offline file {path} has no column "
                        f"{', '.join(lacking)}; the feature worker cannot append to it until "
                        f"`streamscore features backfill {view.name}` rewrote it"
                    )
        views.append(entry)
    services = sorted(s.name for s in store.list_feature_services())
    if as_json:
        click.echo(json.dumps({"views": views, "feature_services": services, "problems": problems}))
    else:
        for entry in views:
            kind = "streaming" if entry["streaming"] else "batch"
            click.echo(
                f"{entry['view']} ({kind}, by {', '.join(entry['join_keys'])}): "
                + ", ".join(f"{n} {t}" for n, t in entry["features"].items())
            )
        click.echo(f"feature services: {', '.join(services) or 'none'}")
        for problem in problems:
            eprint(f"problem: {problem}")
    return EXIT_PROBLEM if problems else EXIT_OK


@features.command("materialize")
@common_options
@online_store_option
@repo_option
@click.option(
    "--start",
    type=click.DateTime(),
    default=None,
    help="reload from this UTC time (default: continue from the last materialization)",
)
def materialize_command(repo: Path | None, start: datetime | None, **options: Any) -> int:
    """Load offline values up to now into the online store."""
    from features.store import materialize

    settings = _settings(repo, **options)
    end = datetime.now(UTC)
    materialize(_store(settings), end=end, start=start.replace(tzinfo=UTC) if start else None)
    eprint(f"materialized {settings.feature_repo} up to {end.isoformat(timespec='seconds')}")
    return EXIT_OK


def _entity_row(store: Any, view_name: str, entity: tuple[str, ...]) -> dict[str, Any]:
    from features.errors import FeatureError

    view = store.get_feature_view(view_name)
    types = {c.name: c.dtype.to_value_type().name for c in view.entity_columns}
    row: dict[str, Any] = {}
    for item in entity:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise FeatureError(
                f"--entity {item!r}: expected KEY=VALUE with KEY one of {sorted(types)}"
            )
        row[key] = int(value) if types[key] in ("INT32", "INT64") else value
    missing = sorted(set(types) - set(row))
    if missing:
        raise FeatureError(f"--entity: {view_name} needs {', '.join(missing)}")
    return row


@features.command("get")
@common_options
@online_store_option
@repo_option
@click.argument("view")
@click.option(
    "--entity",
    "entity",
    multiple=True,
    required=True,
    help="join key and value, e.g. user_id=u00042",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def get_command(
    repo: Path | None, view: str, entity: tuple[str, ...], as_json: bool, **options: Any
) -> int:
    """What the online store holds for one entity of VIEW (values, timestamp, age)."""
    from features.online import FeastOnlineSource

    settings = _settings(repo, **options)
    store = _store(settings)
    row = _entity_row(store, view, entity)
    refs = [f"{view}:{f.name}" for f in store.get_feature_view(view).features]
    source = FeastOnlineSource(store)
    try:
        values = asyncio.run(source.fetch(refs, [row]))
        stamp = source.last_event_timestamps().get(view, [None])[0]
    finally:
        source.close()
    now = datetime.now(UTC).timestamp()
    out: dict[str, Any] = {
        "view": view,
        "entity": row,
        "found": stamp is not None,
        "event_timestamp": (
            datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
            if stamp is not None
            else None
        ),
        "age_s": round(now - stamp, 3) if stamp is not None else None,
        "features": {ref.partition(":")[2]: values[ref][0] for ref in refs},
    }
    if as_json:
        click.echo(json.dumps(out))
    elif stamp is None:
        click.echo(f"{view}: no online row for {row}")
    else:
        click.echo(f"{view} {row} at {out['event_timestamp']} ({out['age_s']} s ago)")
        for name, value in out["features"].items():
            click.echo(f"  {name} = {value}")
    return EXIT_OK if stamp is not None else EXIT_PROBLEM


@features.command("backfill")
@common_options
@online_store_option
@repo_option
@click.argument("view")
@click.option(
    "--events",
    "events_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="parquet of past events (default: the example's <repo>/data/transactions.parquet)",
)
def backfill_command(repo: Path | None, view: str, events_path: Path | None, **options: Any) -> int:
    """Rewrite a streaming VIEW's offline history from past events (the batch computation),
    then materialize its newest rows; run it after adding a field to the view."""
    import pandas as pd

    from features.store import materialize
    from features.streaming import backfill

    settings = _settings(repo, **options)
    store = _store(settings)
    events_path = events_path or settings.data_dir / "transactions.parquet"
    path, rows = backfill(store, view, pd.read_parquet(events_path))
    eprint(f"wrote {rows} rows of {view} to {path}")
    ttl = store.get_feature_view(view).ttl
    end = datetime.now(UTC)
    materialize(store, end=end, start=end - ttl if ttl else None)
    eprint(f"materialized {settings.feature_repo} up to {end.isoformat(timespec='seconds')}")
    return EXIT_OK
