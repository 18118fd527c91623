"""``train`` and ``models ...``: the registry and live rollout through ``control``.

Every ``models`` subcommand takes the model name the same way: an optional first
argument (``models promote fraud 2``, ``models rollback fraud``), or ``--model NAME``;
it may be left out when only one model is registered (or ``STREAMSCORE_MODEL_NAME``
names one). The work itself is in :mod:`streams.lifecycle`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from streams.cli.common import (
    EXIT_OK,
    StreamscoreCommand,
    StreamscoreGroup,
    build_settings,
    common_options,
    eprint,
    json_option,
    online_store_option,
)
from streams.settings import Settings


def resolve_model(settings: Settings, given: str | None) -> str:
    """The model a command is about: the one named, else the only one registered, else
    ``STREAMSCORE_MODEL_NAME`` if set; several without a name is a usage error."""
    from models.registry import ModelRegistry

    if given:
        return given
    registered = ModelRegistry(settings.registry_path).list_models()
    if len(registered) == 1:
        return registered[0]
    if not registered or "model_name" in settings.model_fields_set:
        return settings.model_name
    raise click.UsageError(
        f"several models are registered ({', '.join(registered)}): name one, "
        f"e.g. `streamscore models list {registered[0]}` or --model {registered[0]}"
    )


def split_name_version(
    ctx: click.Context, args: tuple[str, ...], model: str | None, version_required: bool
) -> tuple[str | None, str | None]:
    """``[NAME] VERSION`` (or ``[NAME]``) from the positional arguments and ``--model``."""
    most = 2 if version_required else 1
    if not (version_required <= len(args) <= most):
        usage = "[NAME] VERSION" if version_required else "[NAME]"
        raise click.UsageError(f"expected {usage}, got {' '.join(args) or 'nothing'}", ctx)
    name = args[0] if len(args) == most else None
    version = args[-1] if version_required else None
    if name and model and name != model:
        raise click.UsageError(f"model named twice: {name!r} and --model {model!r}", ctx)
    return name or model, version


model_option = click.option(
    "--model", default=None, help="model name (the same as the NAME argument)"
)


@click.command(cls=StreamscoreCommand)
@common_options
@online_store_option
@click.option("--name", default="fraud", show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--max-iter", type=int, help="boosting iterations (default: the example's)")
@click.option(
    "--feature-service",
    default=None,
    help="the Feast feature service to train on (default fraud_v2, the example's: daily "
    "stats plus streaming aggregates; fraud_v1 is batch only)",
)
def train(
    name: str, seed: int, max_iter: int | None, feature_service: str | None, **options: Any
) -> int:
    """Point-in-time training set from Feast, train, register a candidate."""
    from tqdm import tqdm

    from features.store import open_store
    from models.training import TRAIN_STEPS, TrainingConfig, train_model
    from streams.lifecycle import registry_of
    from streams.online_store import online_store_config

    logging.getLogger().setLevel(logging.INFO)
    settings = build_settings(**options)
    store = open_store(settings.feature_repo, online_store_config(settings))
    registry = registry_of(settings)
    config = TrainingConfig()
    if max_iter:
        config = replace(config, max_iter=max_iter)
    if feature_service:
        config = replace(config, feature_service=feature_service)
    # A bar over the training steps on a terminal (disable=None: off when not a TTY).
    with tqdm(total=len(TRAIN_STEPS), desc="train", unit="step", disable=None) as bar:

        def progress(step: str) -> None:
            if step != TRAIN_STEPS[0]:
                bar.update(1)
            bar.set_description(f"train: {step}")

        manifest = train_model(
            store,
            settings.data_dir,
            registry,
            name=name,
            seed=seed,
            config=config,
            progress=progress,
        )
        bar.update(1)
    state = "champion" if registry.champion(name) == manifest.version else "candidate"
    click.echo(
        f"registered {manifest.name} v{manifest.version} as {state}: "
        + ", ".join(f"{k}={manifest.metrics[k]:.4f}" for k in ("roc_auc", "pr_auc"))
        + f"; data sha256 {manifest.lineage.data_sha256[:12]}, rows {manifest.lineage.rows}"
    )
    click.echo(f"next: streamscore models promote {manifest.version}  (or canary / shadow)")
    return EXIT_OK


@click.group(cls=StreamscoreGroup)
def models() -> None:
    """The registry and live rollout through control."""


@models.command("list")
@common_options
@click.argument("name", required=False)
@model_option
@json_option
def list_(name: str | None, model: str | None, as_json: bool, **options: Any) -> int:
    """Versions, state, metrics and lineage (every model, or NAME's)."""
    from streams import lifecycle

    settings = build_settings(**options)
    rows = lifecycle.list_models(settings, name or model)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return EXIT_OK
    click.echo(models_table(rows))
    return EXIT_OK


def models_table(rows: list[dict[str, Any]]) -> str:
    """One table per task, so each model's metrics sit under their own names (a
    classifier's roc_auc/pr_auc, a regressor's mae/rmse: what its promotion gate uses)."""
    from tabulate import tabulate

    from models.rollout import GATE_METRICS

    tables = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metrics = list(GATE_METRICS.get(task, {})) or sorted(
            {k for r in mine for k in r["metrics"]}
        )
        table = [
            [
                r["name"],
                r["version"],
                r["state"] + (f" {r['percent']:g}%" if "percent" in r else ""),
                *(r["metrics"].get(m) for m in metrics),
                f"{r['lineage']['feature_service'] or '-'} "
                f"{r['lineage']['start'][:10]}..{r['lineage']['end'][:10]}",
                r["lineage"]["rows"],
                r["lineage"]["data_sha256"],
            ]
            for r in mine
        ]
        headers = ["model", "ver", "state", *metrics, "trained on", "rows", "data"]
        tables.append(
            f"{task}:\n"
            + tabulate(table, headers=headers, floatfmt=".4f", missingval="-", tablefmt="simple")
        )
    return "\n\n".join(tables) or "no models registered"


@models.command()
@common_options
@click.argument("args", nargs=-1, metavar="[NAME] VERSION")
@model_option
@json_option
@click.pass_context
def show(
    ctx: click.Context, args: tuple[str, ...], model: str | None, as_json: bool, **options: Any
) -> int:
    """The model card of one version (--json: its manifest)."""
    from streams import lifecycle

    settings = build_settings(**options)
    name, version = split_name_version(ctx, args, model, version_required=True)
    assert version is not None
    name = resolve_model(settings, name)
    if as_json:
        manifest = lifecycle.registry_of(settings).manifest(name, version)
        click.echo(manifest.model_dump_json(indent=2))
        return EXIT_OK
    click.echo(lifecycle.show(settings, name, version))
    return EXIT_OK


@models.command()
@common_options
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@json_option
def register(onnx: Path, manifest: Path, as_json: bool, **options: Any) -> int:
    """Register an ONNX file with its manifest JSON as a candidate."""
    from streams import lifecycle

    registered = lifecycle.register(build_settings(**options), onnx, manifest)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "name": registered.name,
                    "version": registered.version,
                    "sha256": registered.sha256,
                }
            )
        )
        return EXIT_OK
    click.echo(
        f"registered {registered.name} v{registered.version} (sha256 {registered.sha256[:12]})"
    )
    return EXIT_OK


@models.command()
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write it here"
)
def schema(output: Path | None) -> int:
    """The JSON Schema of a manifest file (what `models register` takes)."""
    from models.manifest import registration_schema

    text = json.dumps(registration_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        eprint(f"wrote {output}")
    return EXIT_OK


@models.command()
@click.argument("onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="the model's name in the registry")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    metavar="REF[=DEFAULT]",
    help="an event field or a Feast 'view:feature', in the model's column order; "
    "repeatable or comma-separated",
)
@click.option(
    "--entity-key",
    "entity_keys",
    multiple=True,
    metavar="JOIN_KEY[=EVENT_FIELD]",
    help="the Feast join key the feature refs are looked up by (repeatable)",
)
@click.option("--task", type=click.Choice(["binary_classification", "regression"]))
@click.option(
    "--training-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the training set (.parquet or .csv): lineage (rows, sha256, time range) and "
    "defaults (each input's median)",
)
@click.option("--time-column", default="event_timestamp", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write it here"
)
def init(
    onnx: Path,
    name: str,
    inputs: tuple[str, ...],
    entity_keys: tuple[str, ...],
    task: str | None,
    training_data: Path | None,
    time_column: str,
    output: Path | None,
) -> int:
    """A manifest skeleton for ONNX fed by --input refs, checked against the graph."""
    from models.skeleton import manifest_skeleton

    data = onnx.read_bytes()
    skeleton = manifest_skeleton(data, name, inputs, entity_keys, task, training_data, time_column)
    _check_against_graph(data, skeleton.manifest)
    text = json.dumps(skeleton.manifest, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        eprint(f"wrote {output}")
    for line in skeleton.todo:
        eprint(f"to review: {line}")
    target = output or "manifest.json"
    eprint(f"next: streamscore models register --onnx {onnx} --manifest {target}")
    return EXIT_OK


def _check_against_graph(data: bytes, manifest: dict[str, Any]) -> None:
    """The skeleton must pass registration's graph check (lineage may still be open)."""
    from datetime import UTC, datetime

    from models.manifest import ModelManifest
    from models.scoring import OnnxScorer

    now = datetime.now(UTC)
    lineage = {"start": now, "end": now, "rows": 0, "data_sha256": ""} | manifest["lineage"]
    draft = ModelManifest.model_validate(
        manifest | {"lineage": lineage, "version": "", "sha256": "", "created_at": now}
    )
    OnnxScorer(Path("model.onnx"), draft, model_bytes=data)


def rollout_options(func: Any) -> Any:
    func = click.option("--workers", type=int, help="return once this many workers applied it")(
        func
    )
    func = click.option(
        "--wait",
        type=float,
        default=10.0,
        show_default=True,
        help="seconds to wait for workers' acks (0: no)",
    )(func)
    func = click.option("--reason", help="why (required with --force; kept in the history)")(func)
    func = model_option(func)
    func = json_option(func)
    return common_options(func)


def run_rollout(
    ctx: click.Context,
    action: str,
    args: tuple[str, ...],
    model: str | None,
    reason: str | None,
    wait: float,
    workers: int | None,
    as_json: bool,
    options: dict[str, Any],
    percent: float | None = None,
    force: bool = False,
) -> int:
    from streams import lifecycle, stack

    settings = build_settings(**options)
    needs_version = action in ("promote", "canary", "shadow")
    given, version = split_name_version(ctx, args, model, version_required=needs_version)
    name = resolve_model(settings, given)
    wait_workers = workers
    if wait_workers is None:
        # Wait for the workers `up` started; a deployment passes --workers N itself.
        state_file = stack.StackState.load(stack.state_path(settings))
        wait_workers = len(
            [
                w
                for w in (state_file.workers if state_file else [])
                if stack.worker_running(w) and w.get("role", "score") == "score"
            ]
        )
    report = lifecycle.rollout(
        settings,
        name,
        action,  # type: ignore[arg-type]
        version=version,
        percent=percent,
        force=force,
        reason=reason,
        wait_workers=wait_workers or None,
        wait_s=wait if wait_workers or workers is not None else 0.0,
    )
    if as_json:
        click.echo(json.dumps(report | {"model": name, "action": action}, indent=2))
        return EXIT_OK
    state = report["state"]
    canary = state["canary"]
    click.echo(
        f"{name} rollout #{state['seq']} ({action}) published: champion v{state['champion']}"
        + (f", canary v{canary['version']} {canary['percent']:g}%" if canary else "")
        + (f", shadow v{state['shadow']}" if state["shadow"] else "")
    )
    if report.get("undone"):
        click.echo(f"rollback: {report['undone']}")
    if report["gate"]:
        click.echo(f"quality gate: {report['gate']}")
    for ack in report["acks"]:
        click.echo(f"  {ack['worker']}: {ack['event']} {ack['after_s']}s after issue")
    if wait:
        click.echo(f"{len(report['acks'])} worker(s) acknowledged within {report['waited_s']}s")
    return EXIT_OK


@models.command()
@rollout_options
@click.argument("args", nargs=-1, metavar="[NAME] VERSION")
@click.option("--force", is_flag=True, help="override the quality gate")
@click.pass_context
def promote(ctx: click.Context, args: tuple[str, ...], force: bool, **kw: Any) -> int:
    """Make VERSION the champion (quality gate first)."""
    return run_rollout(ctx, "promote", args, force=force, **_split(kw))


@models.command()
@rollout_options
@click.argument("args", nargs=-1, metavar="[NAME] VERSION")
@click.option("--percent", type=float, required=True, help="share of entities, 0-100")
@click.pass_context
def canary(ctx: click.Context, args: tuple[str, ...], percent: float, **kw: Any) -> int:
    """Route --percent of entities to VERSION (sticky by entity)."""
    return run_rollout(ctx, "canary", args, percent=percent, **_split(kw))


@models.command()
@rollout_options
@click.argument("args", nargs=-1, metavar="[NAME] VERSION")
@click.pass_context
def shadow(ctx: click.Context, args: tuple[str, ...], **kw: Any) -> int:
    """Score every event with VERSION too, to predictions-shadow."""
    return run_rollout(ctx, "shadow", args, **_split(kw))


@models.command()
@rollout_options
@click.argument("args", nargs=-1, metavar="[NAME]")
@click.pass_context
def rollback(ctx: click.Context, args: tuple[str, ...], **kw: Any) -> int:
    """Undo the last rollout step: stop a canary or shadow, or restore the previous
    champion after a promotion; refused only when there is nothing to undo."""
    return run_rollout(ctx, "rollback", args, **_split(kw))


@models.command("canary-off")
@rollout_options
@click.argument("args", nargs=-1, metavar="[NAME]")
@click.pass_context
def canary_off(ctx: click.Context, args: tuple[str, ...], **kw: Any) -> int:
    """Stop the canary."""
    return run_rollout(ctx, "clear-canary", args, **_split(kw))


@models.command("shadow-off")
@rollout_options
@click.argument("args", nargs=-1, metavar="[NAME]")
@click.pass_context
def shadow_off(ctx: click.Context, args: tuple[str, ...], **kw: Any) -> int:
    """Stop the shadow."""
    return run_rollout(ctx, "clear-shadow", args, **_split(kw))


def _split(kw: dict[str, Any]) -> dict[str, Any]:
    """The rollout options apart from the settings options (--home, --bootstrap-servers)."""
    mine = {k: kw.pop(k) for k in ("model", "reason", "wait", "workers", "as_json")}
    return mine | {"options": kw}
