"""`streamscore features apply|materialize|get|backfill` on a repo copy (real Feast, SQLite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from streams.cli import main


@pytest.fixture
def repo(applied_repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(applied_repo.path, copy)
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    return copy


def test_apply_get_and_a_new_field_that_needs_a_backfill(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "apply", "--repo", str(repo), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    streaming = {v["view"] for v in summary["views"] if v["streaming"]}
    assert streaming == {"user_stream_stats", "merchant_stream_stats"}
    assert summary["problems"] == [] and "fraud_v2" in summary["feature_services"]

    assert (
        main(
            [
                "features",
                "get",
                "user_stats",
                "--entity",
                "user_id=u00001",
                "--repo",
                str(repo),
                "--json",
            ]
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["found"] and set(shown["features"]) >= {"txn_count_7d", "home_country"}
    assert (
        main(["features", "get", "user_stats", "--entity", "user_id=nobody", "--repo", str(repo)])
        == 1
    )
    assert "no online row" in capsys.readouterr().out
    assert main(["features", "get", "user_stats", "--entity", "uid=1", "--repo", str(repo)]) == 2
    assert "KEY one of ['user_id']" in capsys.readouterr().err

    # The worked example of the README: a new streaming feature.
    definitions = repo / "fraud_features.py"
    definitions.write_text(
        definitions.read_text().replace(
            'Field(name="amount_sum_24h", dtype=Float32),',
            'Field(name="amount_sum_24h", dtype=Float32),\n'
            '        Field(name="amount_max_1h", dtype=Float32),',
        )
    )
    assert main(["features", "apply", "--repo", str(repo)]) == 1
    assert "no column amount_max_1h" in capsys.readouterr().err
    assert main(["features", "backfill", "user_stream_stats", "--repo", str(repo)]) == 0
    history = pd.read_parquet(repo / "data" / "user_stream_stats.parquet")
    assert "amount_max_1h" in history and history["amount_max_1h"].notna().any()
    assert main(["features", "apply", "--repo", str(repo)]) == 0
    assert main(["features", "materialize", "--repo", str(repo)]) == 0
