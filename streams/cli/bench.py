"""``bench``: the benchmark harness (:mod:`streams.bench`) from the command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from streams.cli.common import EXIT_OK, StreamscoreCommand, build_settings, common_options


@click.command(cls=StreamscoreCommand)
@common_options
@click.option("--n", type=int, help="events of each saturated run (default 30000)")
@click.option(
    "--subjects",
    default="",
    help="comma-separated subset of ceiling,framework,naive,streamscore,quix",
)
@click.option("--quick", is_flag=True, help="small runs (CI's guard uses these)")
@click.option(
    "--latency-rate",
    "--rate",
    "latency_rate",
    type=float,
    help="events/s of the latency runs (default: half of each subject's maximum)",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="also N streamscore workers on N partitions",
)
@click.option("--seed", type=int)
@click.option(
    "--worker-python",
    type=click.Path(path_type=Path),
    help="python of another checkout's venv: bench that checkout's worker instead",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write the report here")
def bench(
    n: int | None,
    subjects: str,
    quick: bool,
    latency_rate: float | None,
    workers: int,
    seed: int | None,
    worker_python: Path | None,
    json_path: Path | None,
    **options: Any,
) -> int:
    """Ceiling, framework, naive, streamscore and quix on the same broker, same run."""
    from streams.bench.harness import SUBJECTS, BenchConfig, run_bench, stack_settings
    from streams.bench.report import SubjectResult, render_ratios, render_table

    chosen = [s.strip() for s in subjects.split(",") if s.strip()] or list(SUBJECTS)
    unknown = [s for s in chosen if s not in SUBJECTS]
    if unknown:
        raise click.BadParameter(
            f"unknown subjects {unknown}; choose from {SUBJECTS}", param_hint="--subjects"
        )
    overrides: dict[str, Any] = {"workers": workers}
    given = {"n": n, "latency_rate": latency_rate, "seed": seed, "worker_python": worker_python}
    overrides |= {name: value for name, value in given.items() if value is not None}
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(**overrides)
    settings = stack_settings(build_settings(**options))
    from tqdm import tqdm

    runs = len(chosen) + (1 if workers > 1 and "streamscore" in chosen else 0)
    # A bar over the subjects on a terminal (disable=None: off when stderr is not a TTY);
    # each subject's outcome is written as a line either way.
    with tqdm(total=runs, unit="subject", desc="bench", disable=None) as bar:

        def progress(message: str) -> None:
            if message.endswith("..."):
                bar.set_description(message.removesuffix(" ..."))
            else:
                bar.update(1)
                bar.write(message, file=sys.stderr)

        report = asyncio.run(run_bench(settings, chosen, config, progress=progress))
    results = [SubjectResult(**r) for r in report["results"].values()]
    click.echo(render_table(results))
    click.echo(
        render_ratios(report["ratios"]) or "ratios: none (a subject of each pair is missing)"
    )
    for r in results:
        for note in r.notes:
            click.echo(f"note: {r.subject}: {note}")
    click.echo(f"bench took {report['duration_s']:.0f}s")
    if json_path is not None:
        report["command"] = " ".join(["streamscore", *sys.argv[1:]])
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return EXIT_OK
