"""promtool on deploy/prometheus: the scrape configuration and rules are valid, and the rules'
unit tests (deploy/prometheus/tests) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prometheus import DEPLOY, binary


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", str(DEPLOY / "prometheus.yml")],
        ["check", "config", str(DEPLOY / "prometheus-embedded.yml")],
        ["check", "rules", *(str(p) for p in sorted((DEPLOY / "rules").glob("*.yml")))],
        ["test", "rules", *(str(p) for p in sorted((DEPLOY / "tests").glob("*.yml")))],
    ],
    ids=["check-config", "check-config-embedded", "check-rules", "test-rules"],
)
def test_promtool(args: list[str], tmp_path: Path) -> None:
    """The configuration is checked where `make up` leaves it: promtool also checks that each
    scrape's token file is there (../../.plaza/metrics_token, which up.sh makes), so it is
    checked, unchanged, in a copy of deploy/prometheus beside such a file."""
    deploy = tmp_path / "deploy" / "prometheus"
    shutil.copytree(DEPLOY, deploy)
    (tmp_path / ".plaza").mkdir()
    (tmp_path / ".plaza" / "metrics_token").write_text("a-token-of-sixteen-or-more\n")
    args = [arg.replace(str(DEPLOY), str(deploy)) for arg in args]
    result = subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, cwd=deploy, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
