"""`make bench` itself, in miniature: the whole run (its own broker and database, every service a
process, the raw chain, wrk on the gateway) with a few hundred posts, so a change that breaks
the benchmark shows here and not the next time someone measures. Nothing here is timed: the
figures' values are the benchmark's business, only their presence and consistency are checked.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.infra import ROOT, SHARED_DATA

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


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m bench.run` with these arguments, which must succeed: its figures on stdout,
    its log on stderr."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"bench failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run


@pytest.fixture(scope="module")
def bench_output() -> str:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is needed for the bench's API figures: apt-get install wrk")
    return run_bench(
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
        "--growth",
        "2",
        "--growth-posts",
        "200",
        "--cost-posts",
        "100",
        "--cost-sizes",
        "0,500",
        "--city-data",
        str(SHARED_DATA / "barcelona"),
    ).stdout


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


def test_the_bench_measures_the_cost_per_post_by_requests_and_by_districts(
    bench_output: str,
) -> None:
    found = {name: value for name, (value, _) in figures(bench_output).items()}
    assert found["router_posts_per_s_with_0_requests"] > 0
    assert found["router_posts_per_s_with_500_requests"] > 0
    districts = sorted(
        int(name.split("_")[4])
        for name in found
        if name.startswith("classifier_posts_per_s_") and name.split("_")[4].isdecimal()
    )
    # Barcelona twice (packaged outlines and exact polygons), its barris as districts, three grids
    assert len(districts) == 6 and districts[:3] == [10, 10, 73], districts
    assert districts[3] < districts[4] < districts[5] and districts[5] > 5_000, districts
    for name, value in found.items():
        if name.startswith(("classifier_posts_per_s_", "router_posts_per_s_")):
            assert value > 0, name
    # every city placed posts: the table shows the share placed, which is never 0%
    placed = [line for line in bench_output.splitlines() if "of posts placed" in line]
    assert len(placed) == 12 and not any(" 0% of posts placed" in line for line in placed)


def test_the_bench_says_where_the_cpu_goes(bench_output: str) -> None:
    """CPU per post by process over the sustained run: every service, PostgreSQL and Kafka,
    adding up to the pipeline's total, and the throughput that total allows."""
    found = {name: value for name, (value, _) in figures(bench_output).items()}
    mine = {name: found[f"cpu_us_per_post_{name}"] for name in (*SERVICES, "postgres", "kafka")}
    # the three that do the work of every post used CPU on it (ingest and the API need not:
    # the bench publishes onto post-received itself, and nobody reads the API meanwhile)
    assert all(mine[name] > 0 for name in ("classifier", "router", "postgres", "kafka")), mine
    assert found["cpu_us_per_post"] == pytest.approx(sum(mine.values()), rel=1e-3)
    cores = len(os.sched_getaffinity(0))
    assert found["cpu_bound_posts_per_s"] == pytest.approx(
        cores * 1e6 / found["cpu_us_per_post"], rel=1e-3
    )
    assert found["cpu_us_per_post_bench"] > 0 and found["cpu_us_per_post_at_1000"] > 0
    assert found["raw_chain_cpu_us_per_post"] > 0


def test_the_bench_measures_bursts_one_after_another(bench_output: str) -> None:
    """--growth: bursts on one database, each with its throughput and CPU per post."""
    found = {name: value for name, (value, _) in figures(bench_output).items()}
    for k in (1, 2):
        assert found[f"growth_throughput_posts_per_s_burst_{k}"] > 0
        assert found[f"growth_cpu_us_per_post_burst_{k}"] >= max(
            found[f"growth_cpu_us_per_post_router_burst_{k}"],
            found[f"growth_cpu_us_per_post_postgres_burst_{k}"],
        )
        assert found[f"growth_cpu_us_per_post_router_burst_{k}"] > 0
    assert "growth_throughput_posts_per_s_burst_3" not in found
    # each burst says how many requests the database held before it: the second, the first's too
    held = [
        int(re.search(r"with ([\d,]+) requests", line)[1].replace(",", ""))  # type: ignore[index]
        for line in bench_output.splitlines()
        if line.startswith("growth_throughput_posts_per_s_burst_")
    ]
    assert len(held) == 2 and 0 < held[0] < held[1], held


def test_the_bursts_run_alone_and_say_what_postgresql_did() -> None:
    """--growth-only: only the bursts (a broker and a database of their own), each followed by
    what PostgreSQL did in it."""
    run = run_bench("--growth-only", "--growth", "2", "--growth-posts", "150")
    found = figures(run.stdout)
    assert {name for name in found if name != "bench_runtime_s"} == {
        f"growth_{figure}_burst_{k}"
        for k in (1, 2)
        for figure in (
            "throughput_posts_per_s",
            "cpu_us_per_post",
            "cpu_us_per_post_router",
            "cpu_us_per_post_postgres",
        )
    }
    sizes = [
        float(m[1].replace(",", ""))
        for m in re.finditer(
            r"growth burst \d: PostgreSQL [\d,]+ rows read, [\d,]+ written \([\d,]+ updates, "
            r"\d+% of them HOT\), \d+ autovacuums, \d+ autoanalyzes, \d+ checkpoints "
            r"\([\d,]+ buffers written\), [\d,]+ blocks read from outside its buffers; "
            r"the database ([\d,]+) MB after it; the indexes it read most: ",
            run.stderr,
        )
    ]
    assert len(sizes) == 2 and 0 < sizes[0] <= sizes[1], run.stderr[-3000:]
    # every post's request or report is found through an index: the inbox's at least
    read_most = re.findall(r"the indexes it read most: (.*)", run.stderr)
    assert len(read_most) == 2 and all(re.match(r"\w+ [\d,]+ pages", r) for r in read_most)
