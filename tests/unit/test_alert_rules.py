"""Alert rules: promtool's own unit tests of them, and every alert's runbook entry exists.

promtool comes from Debian's `prometheus` package (deploy/tools.sh, run by `make test`);
without it this test fails rather than skips, so CI cannot pass by testing nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `bash deploy/tools.sh promtool`", pytrace=False)
    return path


def alerts() -> list[dict]:
    groups = yaml.safe_load((RULES / "streamscore.rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    check = subprocess.run(
        [promtool(), "check", "rules", "streamscore.rules.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    tested = set(re.findall(r"alertname: (\w+)", (RULES / "tests.yml").read_text()))
    assert {a["alert"] for a in alerts()} <= tested


def test_every_alert_links_to_its_runbook_entry() -> None:
    runbook = (ROOT / "docs/runbook.md").read_text()
    # GitHub's anchors: lower-cased headings, spaces to hyphens, punctuation dropped
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, flags=re.M)
    }
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, (alert["alert"], url)
        assert alert["alert"] in runbook, f"{alert['alert']} is not named in the runbook"
