"""`make bench` itself, in miniature: the whole run (its own broker and database, every service a
process, the raw chain, wrk on the gateway) with a few hundred posts, so a change that breaks
the benchmark shows here and not the next time someone measures. Nothing here is timed: the
figures' values are the benchmark's business, only their presence and consistency are checked.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from tests.infra import ROOT

# The figures issue 8 names, which `make bench` must always print.
REQUIRED = (
    "e2e_throughput_posts_per_s",
    "e2e_lost_posts",
    "e2e_p99_ms_ingest_to_routed_at_1000",
    "raw_chain_throughput_posts_per_s",
    "pipeline_to_raw_chain_ratio",
    "api_queue_rps",
    "api_queue_p99_ms",
    "open311_requests_rps",
    "max_service_rss_mb",
)
SERVICES = ("ingest", "classifier", "router", "relay", "notifier", "api")


@pytest.fixture(scope="module")
def bench_output() -> str:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is needed for the bench's API figures: apt-get install wrk")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--posts",
            "300",
            "--rate",
            "200",
            "--rate-seconds",
            "1",
            "--api-requests",
            "2000",
            "--api-seconds",
            "1",
            "--connections",
            "4",
            "--no-scaling",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"bench failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run.stdout


def figures(output: str) -> dict[str, tuple[float, str]]:
    found = {}
    for line in output.splitlines():
        if line.startswith("{"):
            figure = json.loads(line)
            assert set(figure) == {"metric", "value", "unit"}, line
            found[figure["metric"]] = (figure["value"], figure["unit"])
    return found


def test_the_bench_prints_every_figure_of_issue_8_once_as_json(bench_output: str) -> None:
    lines = [line for line in bench_output.splitlines() if line.startswith("{")]
    found = figures(bench_output)
    assert len(found) == len(lines), "a figure printed twice"
    missing = [name for name in REQUIRED if name not in found]
    assert not missing, f"missing figures: {missing}"
    for name in REQUIRED:
        value, unit = found[name]
        assert isinstance(value, float) and math.isfinite(value), (name, value)
        assert unit, name
    # the readable table comes first, a row per figure
    table = bench_output.split("\n{", 1)[0]
    assert all(f"\n{name} " in table for name in found)


def test_the_bench_loses_nothing_and_its_figures_agree_with_each_other(
    bench_output: str,
) -> None:
    found = {name: value for name, (value, _) in figures(bench_output).items()}
    assert found["e2e_lost_posts"] == 0 and found["e2e_lost_posts_at_1000"] == 0
    for name in ("e2e_throughput_posts_per_s", "raw_chain_throughput_posts_per_s", "api_queue_rps"):
        assert found[name] > 0, name
    ratio = found["e2e_throughput_posts_per_s"] / found["raw_chain_throughput_posts_per_s"]
    assert found["pipeline_to_raw_chain_ratio"] == pytest.approx(ratio, rel=1e-3)
    assert (
        found["e2e_p50_ms_ingest_to_routed_at_1000"] <= found["e2e_p99_ms_ingest_to_routed_at_1000"]
    )
    memory = [found[f"rss_mb_{service}"] for service in SERVICES]
    assert all(mb > 0 for mb in memory)
    assert found["max_service_rss_mb"] == max(memory)
