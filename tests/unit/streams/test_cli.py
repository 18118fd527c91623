"""The command line on Click: every command and flag the README and the tests use
parses, user errors are one line with exit code 2, model names are taken one way."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from streams.cli import cli, main
from streams.cli.models import resolve_model, split_name_version
from streams.settings import Settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("STREAMSCORE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def parse(*argv: str) -> dict:
    """The parameters a command line resolves to, without running it."""
    command: click.Command = cli
    args = list(argv)
    while isinstance(command, click.Group):
        name = args.pop(0)
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"no command {name!r}"
        command = found
    return command.make_context(" ".join(argv[:1]), args).params


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--broker", "external", "--online-store", "redis", "--workers", "2"],
        ["up", "--timeout", "60", "--home", "/tmp/x", "--bootstrap-servers", "h:1"],
        ["down"],
        ["status", "--json"],
        ["worker", "--role", "feedback", "--online-store", "sqlite"],
        ["bootstrap", "--online-store", "redis"],
        ["produce", "--n", "10", "--rate", "5", "--seed", "3", "--labels"],
        ["produce", "--flip-labels", "0.3", "--drift", "amount=3", "--drift", "x=2"],
        ["produce", "--unknown-user-rate", "0.1"],
        ["tail", "predictions", "--n", "5", "--idle", "20", "--latest"],
        ["audit", "--idle", "3", "--since", "15m", "--until", "1d", "--json"],
        ["bench", "--quick", "--subjects", "framework", "--workers", "2", "--json", "x.json"],
        ["train", "--name", "fraud", "--seed", "7", "--max-iter", "10"],
        ["models", "list", "--json"],
        ["models", "list", "fraud"],
        ["models", "show", "fraud", "2"],
        ["models", "show", "2"],
        ["models", "register", "--onnx", __file__, "--manifest", __file__],
        ["models", "promote", "2", "--force", "--reason", "why", "--wait", "0"],
        ["models", "canary", "fraud", "2", "--percent", "10", "--workers", "1"],
        ["models", "shadow", "3", "--model", "fraud"],
        ["models", "rollback"],
        ["models", "rollback", "fraud"],
        ["models", "canary-off"],
        ["models", "shadow-off", "fraud"],
        ["up", "--json"],
        ["down", "--json"],
        ["models", "show", "2", "--json"],
        ["models", "rollback", "--json", "--wait", "0"],
        ["models", "register", "--onnx", __file__, "--manifest", __file__, "--json"],
        ["settings", "--json", "--changed"],
        ["models", "schema", "-o", "s.json"],
        ["models", "init", __file__, "--name", "x", "--input", "a,b", "--entity-key", "k"],
    ],
)
def test_every_documented_command_line_parses(argv: list[str]) -> None:
    parse(*argv)


def test_produce_drift_is_repeatable_and_bench_rate_is_an_alias() -> None:
    assert parse("produce", "--drift", "amount=3", "--drift", "x=2")["drift"] == (
        "amount=3",
        "x=2",
    )
    assert parse("bench", "--rate", "200")["latency_rate"] == 200.0


def test_name_and_version_are_taken_one_way() -> None:
    ctx = click.Context(cli)
    assert split_name_version(ctx, ("2",), None, version_required=True) == (None, "2")
    assert split_name_version(ctx, ("eta", "2"), None, version_required=True) == ("eta", "2")
    assert split_name_version(ctx, ("2",), "eta", version_required=True) == ("eta", "2")
    assert split_name_version(ctx, ("eta",), None, version_required=False) == ("eta", None)
    assert split_name_version(ctx, (), None, version_required=False) == (None, None)
    with pytest.raises(click.UsageError, match=r"expected \[NAME\] VERSION"):
        split_name_version(ctx, (), None, version_required=True)
    with pytest.raises(click.UsageError, match="model named twice"):
        split_name_version(ctx, ("eta", "2"), "fraud", version_required=True)


def _fake_version(home: Path, name: str) -> None:
    folder = home / "registry" / name / "1"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")


def test_the_model_name_is_optional_only_when_it_is_unambiguous(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_model(Settings(), None) == "fraud"  # nothing registered: the setting
    _fake_version(home, "eta")
    assert resolve_model(Settings(), None) == "eta"  # the only one registered
    _fake_version(home, "fraud")
    with pytest.raises(click.UsageError, match=r"several models are registered \(eta, fraud\)"):
        resolve_model(Settings(), None)
    assert resolve_model(Settings(), "fraud") == "fraud"
    monkeypatch.setenv("STREAMSCORE_MODEL_NAME", "eta")
    assert resolve_model(Settings(), None) == "eta"


def test_a_user_error_is_one_line_naming_the_command_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "show", "fraud", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamscore models show: ") and "Traceback" not in err
    assert "'fraud'" in err and "9" in err


def test_usage_errors_exit_2_and_name_the_option(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["produce", "--drift", "amount"]) == 2
    assert "--drift" in capsys.readouterr().err
    assert main(["models", "promote"]) == 2
    assert "[NAME] VERSION" in capsys.readouterr().err
    assert main(["nonsense"]) == 2
    assert main(["bench", "--subjects", "flink"]) == 2
    assert "unknown subjects ['flink']" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("up", "produce", "models", "audit", "bench"))
    assert main(["models", "promote", "--help"]) == 0
    assert "[NAME] VERSION" in capsys.readouterr().out


def test_a_file_is_sent_as_is_keyed_by_the_field(tmp_path: Path) -> None:
    from streams.cli.produce import file_records

    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event_id": "1", "team_id": "t1"}\n\nnot json\n{"event_id": "2"}\n')
    assert file_records(path, "team_id") == [
        (b"t1", b'{"event_id": "1", "team_id": "t1"}'),
        (None, b"not json"),
        (None, b'{"event_id": "2"}'),
    ]
    assert [key for key, _ in file_records(path, None)] == [None, None, None]
    assert parse("produce", "--file", str(path), "--key", "team_id")["key_field"] == "team_id"


def test_models_list_shows_each_tasks_own_metrics() -> None:
    from streams.cli.models import models_table

    lineage = {
        "feature_service": None,
        "start": "2026-01-01T00:00:00",
        "end": "2026-01-02T00:00:00",
        "rows": 10,
        "data_sha256": "abc",
    }
    rows = [
        {"name": "fraud", "version": "1", "state": "champion", "task": "binary_classification",
         "metrics": {"roc_auc": 0.91, "pr_auc": 0.5}, "lineage": lineage},
        {"name": "fraud", "version": "2", "state": "canary", "percent": 10.0,
         "task": "binary_classification", "metrics": {"roc_auc": 0.92}, "lineage": lineage},
        {"name": "eta", "version": "1", "state": "champion", "task": "regression",
         "metrics": {"mae": 2.5, "rmse": 3.25}, "lineage": lineage},
    ]  # fmt: skip
    classification, regression = models_table(rows).split("\n\n")
    assert classification.splitlines()[1].split() == [
        "model", "ver", "state", "roc_auc", "pr_auc", "trained", "on", "rows", "data",
    ]  # fmt: skip
    canary = classification.splitlines()[-1].split()
    assert canary[:6] == ["fraud", "2", "canary", "10%", "0.9200", "-"], canary
    assert (
        regression.startswith("regression:") and "mae" in regression and "roc_auc" not in regression
    )
    assert regression.splitlines()[-1].split()[3:5] == ["2.5000", "3.2500"]
