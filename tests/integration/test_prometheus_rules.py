"""promtool on deploy/prometheus: the scrape configuration and rules are valid, and the rules'
unit tests (deploy/prometheus/tests) pass."""

from __future__ import annotations

import subprocess

import pytest

from tests.prometheus import DEPLOY, binary


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", str(DEPLOY / "prometheus.yml")],
        ["check", "rules", *(str(p) for p in sorted((DEPLOY / "rules").glob("*.yml")))],
        ["test", "rules", *(str(p) for p in sorted((DEPLOY / "tests").glob("*.yml")))],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    result = subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, cwd=DEPLOY, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
