"""`make bench`: issue 8's figures for Plaza on real Kafka and PostgreSQL, each service its own
process, everything on 127.0.0.1. Prints a table, then one JSON line per figure.

    uv run --frozen python -m bench.run [--posts 20000] [--rate 1000] [--rate-seconds 5] [--no-scaling]
    uv run --frozen python -m bench.run --api-only [--api-seconds 10]   # the gateway alone, ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from plaza.db.migrate import upgrade

from bench import api, cpu, district_cost, raw_chain, router_cost
from bench.pipeline import PhaseResult, burst_phase, event_for, percentile, rate_phase, raw_dsn
from bench.posts import generate
from bench.stack import (
    Infra,
    RssSampler,
    Stack,
    api_alone,
    database_only,
    infrastructure,
    plaza_stack,
)

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 1000  # posts through the pipeline before anything is measured


@dataclass(frozen=True)
class Figure:
    metric: str
    value: float
    unit: str
    what: str


class Report:
    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.notes: list[str] = []

    def add(self, metric: str, value: float, unit: str, what: str) -> None:
        self.figures.append(Figure(metric, value, unit, what))

    def latencies(self, prefix: str, suffix: str, values: list[float], what: str) -> None:
        for q in (50, 95, 99):
            self.add(
                f"{prefix}_p{q}_ms_{suffix}", percentile(values, q / 100), "ms", f"p{q} {what}"
            )

    def print(self) -> None:
        print()
        print(f"{'figure':<46}{'value':>12}  {'unit':<12}what")
        print("-" * 120)
        for f in self.figures:
            shown = f"{f.value:.1f}" if abs(f.value) >= 10 or f.value == 0 else f"{f.value:.3f}"
            print(f"{f.metric:<46}{shown:>12}  {f.unit:<12}{f.what}")
        for note in self.notes:
            print(f"note: {note}")
        print()
        for f in self.figures:
            value = None if math.isnan(f.value) else float(f"{f.value:.6g}")
            print(json.dumps({"metric": f.metric, "value": value, "unit": f.unit}))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def describe(name: str, r: PhaseResult) -> None:
    log(
        f"{name}: {r.published} posts ({r.distinct} distinct) published in {r.publish_seconds:.1f}s, "
        f"{r.routed} routed in {r.seconds_to_routed:.1f}s: {r.requests_opened} requests opened, "
        f"{r.reports_merged} reports merged, {r.not_actionable} not actionable, "
        f"{r.replies} posts replied to, {r.lost} lost"
    )


def pipeline_figures(infra: Infra, args: argparse.Namespace, logs: Path, report: Report) -> None:
    bootstrap = infra.kafka.bootstrap
    with plaza_stack(infra, logs) as stack:
        rss = RssSampler(stack.services)
        rss.start()
        # Steady state, not a cold start: the groups have joined, the model is loaded, the
        # classifier's caches and the broker's compiled code are warm.
        log(f"warm-up: {WARM_UP} posts (consumer groups join, model loads, caches fill)")
        asyncio.run(burst_phase(stack, bootstrap, generate(WARM_UP, seed=1, platform="warmup")))

        mix = generate(args.posts, seed=args.seed, platform="bench-burst")
        log(
            f"sustained: {len(mix.posts)} posts, {mix.geotagged} geotagged, {mix.resends} re-sent, "
            f"{mix.near_duplicates} near-duplicates, {mix.chatter} chatter"
        )
        meter = pipeline_meter(infra, stack)
        burst = asyncio.run(burst_phase(stack, bootstrap, mix, meter))
        burst_cpu = burst.cpu
        describe("sustained", burst)
        report.add(
            "e2e_throughput_posts_per_s",
            burst.throughput,
            "posts/s",
            f"{burst.published} posts published at once; / seconds from first publish to last routed",
        )
        report.add(
            "e2e_lost_posts", burst.lost, "posts", "distinct posts never routed (router inbox)"
        )
        report.latencies(
            "e2e",
            "ingest_to_routed",
            burst.routed_ms,
            "publish -> router inbox row, backlog included",
        )
        report.latencies(
            "e2e",
            "ingest_to_reply",
            burst.reply_ms,
            "publish -> replies.posted_at, backlog included",
        )

        n = int(args.rate * args.rate_seconds)
        log(f"fixed rate: {n} posts at {args.rate:.0f}/s")
        fixed = asyncio.run(
            rate_phase(
                stack,
                bootstrap,
                generate(n, seed=args.seed + 1, platform="bench-rate"),
                args.rate,
                meter,
            )
        )
        fixed_cpu = fixed.cpu
        describe("fixed rate", fixed)
        report.add(
            "e2e_offered_posts_per_s_at_1000",
            fixed.offered_rate,
            "posts/s",
            "rate the bench actually published at",
        )
        report.add(
            "e2e_throughput_posts_per_s_at_1000",
            fixed.throughput,
            "posts/s",
            "posts / seconds from first publish to last routed",
        )
        report.add("e2e_lost_posts_at_1000", fixed.lost, "posts", "distinct posts never routed")
        report.add(
            "e2e_p50_ms_ingest_to_routed_at_1000",
            percentile(fixed.routed_ms, 0.5),
            "ms",
            "p50 publish -> routed at the fixed rate",
        )
        report.add(
            "e2e_p99_ms_ingest_to_routed_at_1000",
            percentile(fixed.routed_ms, 0.99),
            "ms",
            "p99 publish -> routed at the fixed rate",
        )
        report.add(
            "e2e_p99_ms_ingest_to_reply_at_1000",
            percentile(fixed.reply_ms, 0.99),
            "ms",
            "p99 publish -> reply recorded at the fixed rate",
        )
        cpu_figures(report, burst_cpu, burst.published)
        cpu_figures(report, fixed_cpu, fixed.published, suffix="_at_1000")
        if fixed.throughput < 0.95 * fixed.offered_rate:
            report.notes.append(
                f"the pipeline did not sustain {args.rate:.0f} posts/s (it drained at "
                f"{fixed.throughput:.0f}/s): the fixed-rate latencies are mostly queueing behind the backlog"
            )

        time.sleep(3)
        steady = rss.sample()  # idle after the pipeline's load
        log(f"filling the database to {args.api_requests} requests")
        total = asyncio.run(api.fill_to(stack.database_url, args.api_requests))
        with pinned(args, stack.pid("api"), infra.postgres.data_dir) as cpus:
            log(f"API load with wrk ({total} requests in the database; {cpus})")
            loads = api.load_endpoints(stack.api, stack.api_key, args.api_seconds, args.connections)
        time.sleep(2)
        after_api = rss.sample()
        rss.stop()
        for name in steady:
            steady[name] = max(steady[name], after_api.get(name, 0.0))
        stack.check_alive()
    api_figures(loads, args, report)
    for name, mb in steady.items():
        peak = max(rss.samples[name], default=mb)
        report.add(
            f"rss_mb_{name}",
            mb,
            "MB",
            f"steady (idle after load); peak during the run {peak:.0f} MB",
        )
    report.add(
        "max_service_rss_mb", max(steady.values()), "MB", "the largest steady RSS of any service"
    )

    log(f"raw chain: {burst.published} records through {len(raw_chain.HOPS)} pass-through hops")
    records = [
        (e.key.encode(), e.encode()) for e in (event_for(p, datetime.now(UTC)) for p in mix.posts)
    ]
    kafka = kafka_watched(infra)
    chain = raw_chain.run_chain(bootstrap, stack.namespace, records, logs, also=kafka)
    raw = len(records) / chain.seconds
    report.add(
        "raw_chain_throughput_posts_per_s",
        raw,
        "posts/s",
        "same records and hops as raw aiokafka pass-throughs",
    )
    report.add(
        "pipeline_to_raw_chain_ratio",
        burst.throughput / raw,
        "ratio",
        "e2e_throughput_posts_per_s / raw chain",
    )
    us = cpu.per_post_us(chain.cpu, len(records))
    hops = sum(v for name, v in us.items() if name in raw_chain.HOPS)
    report.add(
        "raw_chain_cpu_us_per_post",
        hops + us.get("kafka", 0.0),
        "us",
        f"CPU per record of the raw chain: its {len(raw_chain.HOPS)} hops {hops:.0f}"
        + (f", Kafka {us['kafka']:.0f}" if "kafka" in us else " (Kafka not measured)")
        + f"; its driver {us.get('bench', 0.0):.0f} besides",
    )


def kafka_watched(infra: Infra) -> dict[str, cpu.Watched]:
    """The broker's JVM, when the bench started it (not a broker it was given)."""
    data = infra.kafka.data_dir
    return {} if data is None else {"kafka": cpu.Watched(cpu.kafka_pid(data))}


def pipeline_meter(infra: Infra, stack: Stack) -> cpu.CpuMeter:
    """The CPU of every process the pipeline runs on: the services, PostgreSQL (its postmaster
    and backends), Kafka, and the bench itself (publishing and counting), told apart."""
    watched = {name: cpu.Watched(pid) for name in stack.services if (pid := stack.pid(name))}
    watched["postgres"] = cpu.Watched(cpu.postmaster_pid(infra.postgres.data_dir), tree=True)
    watched.update(kafka_watched(infra))
    watched["bench"] = cpu.Watched(os.getpid())
    return cpu.CpuMeter(watched)


ROLES = {
    "ingest": "its CPU per post (none: the bench publishes onto post-received, as `plaza replay`)",
    "api": "its CPU per post (none: nobody reads the API during the run)",
    "postgres": "its CPU per post: the postmaster and every backend",
    "kafka": "its CPU per post: the broker's JVM",
    "bench": "the bench: publishing, and counting what is routed",
}


def cpu_figures(report: Report, used: dict[str, float], posts: int, suffix: str = "") -> None:
    """CPU per post by process, the pipeline's total (the bench's driver apart: the raw chain
    has one too) and, for the sustained run, the throughput that total allows on this machine."""
    us = cpu.per_post_us(used, posts)
    total = sum(value for name, value in us.items() if name != "bench")
    unmeasured = "" if "kafka" in us else " (Kafka not measured: a broker the bench was given)"
    if suffix:
        for name, value in us.items():
            report.add(
                f"cpu_us_per_post_{name}{suffix}", value, "us", "the same, at the fixed rate"
            )
        report.add(
            f"cpu_us_per_post{suffix}",
            total,
            "us",
            "CPU per post of the services, PostgreSQL and Kafka at the fixed rate (smaller "
            "batches; idle work included)" + unmeasured,
        )
        return
    for name, value in us.items():
        report.add(f"cpu_us_per_post_{name}", value, "us", ROLES.get(name, "its CPU per post"))
    report.add(
        "cpu_us_per_post",
        total,
        "us",
        "CPU per post of the services, PostgreSQL and Kafka (the bench's driver apart)"
        + unmeasured,
    )
    cores = cpu.cpus()
    report.add(
        "cpu_bound_posts_per_s",
        cpu.bound_posts_per_s(total, cores),
        "posts/s",
        f"the most {cores} CPUs could route at that cost, doing nothing else",
    )


@contextmanager
def pinned(args: argparse.Namespace, api_pid: int | None, postgres_dir: Path) -> Iterator[str]:
    if args.no_pin:
        yield "all processes share the CPUs (--no-pin)"
        return
    with api.gateway_on_its_own_cpu(api_pid, postgres_dir) as how:
        yield how


def api_figures(loads: dict[str, api.Load], args: argparse.Namespace, report: Report) -> None:
    paced, flat_out = loads["api_queue_paced"], loads["api_queue"]
    report.add(
        "api_queue_rps",
        flat_out.rps,
        "requests/s",
        f"GET {api.QUEUE_PATH}, as fast as wrk's {args.connections} connections go",
    )
    report.add("api_queue_p50_ms_flat_out", flat_out.p50_ms, "ms", "at that throughput")
    report.add("api_queue_p99_ms_flat_out", flat_out.p99_ms, "ms", "at that throughput")
    target = api.QUEUE_TARGET_RPS
    report.add("api_queue_rps_offered_2000", paced.rps, "requests/s", f"wrk paced to {target}/s")
    report.add("api_queue_p50_ms", paced.p50_ms, "ms", f"serving {target} requests/s")
    report.add("api_queue_p99_ms", paced.p99_ms, "ms", f"serving {target} requests/s")
    report.add(
        "open311_requests_rps",
        loads["open311_requests"].rps,
        "requests/s",
        f"GET {api.OPEN311_PATH}",
    )
    report.add("open311_requests_p99_ms", loads["open311_requests"].p99_ms, "ms", "")


def api_only_figures(args: argparse.Namespace, logs: Path, report: Report) -> None:
    """The gateway alone on a fresh database of `--api-requests` requests: no Kafka, no pipeline."""
    with database_only() as postgres, api_alone(postgres, logs) as stack:
        log(f"filling the database to {args.api_requests} requests")
        total = asyncio.run(api.fill_to(stack.database_url, args.api_requests))
        rss = RssSampler(stack.services)
        with pinned(args, stack.pid("api"), postgres.data_dir) as cpus:
            log(f"API load with wrk ({total} requests in the database; {cpus})")
            loads = api.load_endpoints(stack.api, stack.api_key, args.api_seconds, args.connections)
        after = rss.sample()
        stack.check_alive()
    api_figures(loads, args, report)
    report.add("rss_mb_api", after.get("api", math.nan), "MB", "right after the load")


def router_cost_figures(infra: Infra, args: argparse.Namespace, report: Report) -> None:
    sizes = args.cost_sizes
    urls = {}
    for size in sizes:
        name = f"bench_cost_{size}_{uuid.uuid4().hex[:6]}"
        infra.postgres.ensure_database(name)
        urls[size] = infra.database_url(name)
        asyncio.run(upgrade(urls[size]))
    log(
        f"router cost: {args.cost_posts} posts routed in process with "
        + ", ".join(f"{size:,}" for size in sizes)
        + " requests"
    )
    for size, rate in router_cost.cost_by_size(urls, args.cost_posts, args.seed + 20):
        report.add(
            f"router_posts_per_s_with_{size}_requests",
            rate,
            "posts/s",
            f"in process, batches of {router_cost.BATCH}, {size} requests (two thirds open) before",
        )


def district_cost_figures(infra: Infra, args: argparse.Namespace, report: Report) -> None:
    data_dir = args.city_data
    if not (data_dir / "barris_geo.json").is_file():
        report.notes.append(
            f"no cost by districts: no barris_geo.json in {data_dir} (--city-data, or "
            "PLAZA_CITY_DATA_DIR)"
        )
        return
    workdir = Path(tempfile.mkdtemp(prefix="plaza-bench-cities-"))
    builders = district_cost.cities(data_dir, workdir)

    def fresh(i: int) -> str:
        name = f"bench_districts_{i}_{uuid.uuid4().hex[:6]}"
        infra.postgres.ensure_database(name)
        url = infra.database_url(name)
        asyncio.run(upgrade(url))
        return url

    log(
        f"cost by districts: {args.cost_posts} posts classified and routed in process, {len(builders)} cities"
    )
    for cost in district_cost.cost_by_districts(builders, fresh, args.cost_posts, args.seed + 30):
        name = f"{cost.districts}_districts" + (
            "_" + cost.city.rsplit(" ", 1)[1] if cost.city.startswith("Barcelona,") else ""
        )
        what = f"{cost.city}: {cost.districts} districts, {cost.placed:.0%} of posts placed"
        report.add(f"classifier_posts_per_s_{name}", cost.classifier_posts_per_s, "posts/s", what)
        report.add(f"router_posts_per_s_{name}", cost.router_posts_per_s, "posts/s", what)


def scaling_figures(infra: Infra, args: argparse.Namespace, logs: Path, report: Report) -> None:
    for k in (1, 2, 3):
        (logs / f"classifiers{k}").mkdir()
        with plaza_stack(infra, logs / f"classifiers{k}", classifiers=k) as stack:
            asyncio.run(
                burst_phase(
                    stack, infra.kafka.bootstrap, generate(WARM_UP, seed=1, platform="warmup")
                )
            )
            mix = generate(args.scaling_posts, seed=args.seed + 10 + k, platform="bench-scale")
            r = asyncio.run(burst_phase(stack, infra.kafka.bootstrap, mix))
            describe(f"{k} classifier(s)", r)
            report.add(
                f"e2e_throughput_posts_per_s_classifiers_{k}",
                r.throughput,
                "posts/s",
                f"{r.published} posts, {k} classifier process(es) in one group, fresh database",
            )


def growth_figures(infra: Infra, args: argparse.Namespace, logs: Path, report: Report) -> None:
    """Bursts one after another on one database, as on a storm day: how the pipeline's
    throughput and CPU per post change as the requests it has opened pile up (none is closed,
    so each burst's posts find more to merge with)."""
    (logs / "growth").mkdir()
    with plaza_stack(infra, logs / "growth") as stack:
        asyncio.run(
            burst_phase(stack, infra.kafka.bootstrap, generate(WARM_UP, seed=1, platform="warmup"))
        )
        meter = pipeline_meter(infra, stack)
        for k in range(1, args.growth + 1):
            opened = asyncio.run(requests_in(stack.database_url))
            activity = asyncio.run(pg_activity(stack.database_url))
            mix = generate(args.growth_posts, seed=args.seed + 100 + k, platform=f"bench-grow{k}")
            log(f"growth burst {k}: {args.growth_posts} posts, {opened:,} requests in the database")
            r = asyncio.run(burst_phase(stack, infra.kafka.bootstrap, mix, meter))
            us = cpu.per_post_us(r.cpu, r.published)
            describe(f"growth burst {k}", r)
            during = asyncio.run(pg_activity(stack.database_url)) - activity
            log(f"growth burst {k}: PostgreSQL {during}")
            before = f"with {opened:,} requests in the database"
            merged = r.reports_merged / max(r.reports_merged + r.requests_opened, 1)
            report.add(
                f"growth_throughput_posts_per_s_burst_{k}",
                r.throughput,
                "posts/s",
                f"{r.published} posts {before}; {merged:.0%} of its reports merged",
            )
            for name in ("router", "postgres"):
                report.add(f"growth_cpu_us_per_post_{name}_burst_{k}", us[name], "us", before)
            report.add(
                f"growth_cpu_us_per_post_burst_{k}",
                sum(v for name, v in us.items() if name != "bench"),
                "us",
                f"{before}: every service, PostgreSQL and Kafka",
            )


@dataclass(frozen=True)
class PgActivity:
    """What PostgreSQL did in a burst, from its statistics views: the rows the pipeline's
    statements read and wrote (a plan that reads a whole table shows here), how many of its
    updates were HOT, and what it did besides (autovacuums, checkpoints, reads from outside
    its buffers): behind a burst whose CPU per post jumps, one of these is the usual cause.
    And which indexes it read most (their pages, found in its buffers or not): where the
    statements' index searches went."""

    autovacuums: int
    autoanalyzes: int
    rows_read: int
    rows_written: int
    updates: int
    hot_updates: int
    checkpoints: int
    buffers_checkpoint: int
    blocks_read: int
    database_mb: float
    index_pages: dict[str, int]

    def __sub__(self, other: PgActivity) -> PgActivity:
        return PgActivity(
            self.autovacuums - other.autovacuums,
            self.autoanalyzes - other.autoanalyzes,
            self.rows_read - other.rows_read,
            self.rows_written - other.rows_written,
            self.updates - other.updates,
            self.hot_updates - other.hot_updates,
            self.checkpoints - other.checkpoints,
            self.buffers_checkpoint - other.buffers_checkpoint,
            self.blocks_read - other.blocks_read,
            self.database_mb,
            {
                name: pages - other.index_pages.get(name, 0)
                for name, pages in self.index_pages.items()
            },
        )

    def __str__(self) -> str:
        hot = self.hot_updates / self.updates if self.updates else 0.0
        return (
            f"{self.rows_read:,} rows read, {self.rows_written:,} written "
            f"({self.updates:,} updates, {hot:.0%} of them HOT), "
            f"{self.autovacuums} autovacuums, {self.autoanalyzes} autoanalyzes, "
            f"{self.checkpoints} checkpoints ({self.buffers_checkpoint:,} buffers written), "
            f"{self.blocks_read:,} blocks read from outside its buffers; "
            f"the database {self.database_mb:,.0f} MB after it; the indexes it read most: "
            + ", ".join(f"{name} {pages:,} pages" for name, pages in self.most_read_indexes())
        )

    def most_read_indexes(self, n: int = 5) -> list[tuple[str, int]]:
        ranked = sorted(self.index_pages.items(), key=lambda item: (-item[1], item[0]))
        return [(name, pages) for name, pages in ranked[:n] if pages > 0]


async def pg_activity(database_url: str) -> PgActivity:
    conn = await asyncpg.connect(raw_dsn(database_url))
    try:
        tables = await conn.fetchrow(
            "SELECT sum(autovacuum_count)::bigint AS v, sum(autoanalyze_count)::bigint AS a, "
            "sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint AS r, "
            "sum(n_tup_ins + n_tup_upd + n_tup_del)::bigint AS w, "
            "sum(n_tup_upd)::bigint AS u, sum(n_tup_hot_upd)::bigint AS h "
            "FROM pg_stat_user_tables"
        )
        io = await conn.fetchval(
            "SELECT sum(coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0) "
            "+ coalesce(toast_blks_read, 0) + coalesce(tidx_blks_read, 0))::bigint "
            "FROM pg_statio_user_tables"
        )
        writer = await conn.fetchrow(
            "SELECT (checkpoints_timed + checkpoints_req)::bigint AS n, buffers_checkpoint "
            "FROM pg_stat_bgwriter"
        )
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        indexes = await conn.fetch(
            "SELECT indexrelname, (coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0))::bigint"
            " AS pages FROM pg_statio_user_indexes"
        )
    finally:
        await conn.close()
    return PgActivity(
        int(tables["v"] or 0),
        int(tables["a"] or 0),
        int(tables["r"] or 0),
        int(tables["w"] or 0),
        int(tables["u"] or 0),
        int(tables["h"] or 0),
        int(writer["n"]),
        int(writer["buffers_checkpoint"]),
        int(io or 0),
        size / 1024 / 1024,
        {row["indexrelname"]: int(row["pages"]) for row in indexes},
    )


async def requests_in(database_url: str) -> int:
    conn = await asyncpg.connect(raw_dsn(database_url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM service_requests"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 20,000: 4,000 were routed in about 1.3 s, a window in which a scheduling hiccup moved the
    # figure by a fifth from one run to the next
    parser.add_argument("--posts", type=int, default=20_000, help="posts of the sustained run")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--api-requests", type=int, default=100_000)
    parser.add_argument("--api-seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--scaling-posts", type=int, default=10_000)
    parser.add_argument("--cost-posts", type=int, default=2000)
    parser.add_argument(
        "--cost-sizes",
        type=lambda text: tuple(int(size) for size in text.split(",")),
        default=(0, 20_000, 100_000),
        help="requests in the database for the router's cost (comma-separated)",
    )
    parser.add_argument(
        "--no-scaling", action="store_true", help="no runs with 1, 2 and 3 classifier processes"
    )
    parser.add_argument(
        "--growth",
        type=int,
        default=0,
        help="that many more bursts one after another on one database (a broker and a "
        "PostgreSQL of their own), after the rest (4 take about 3 minutes): the cost per post "
        "as the open requests pile up",
    )
    parser.add_argument("--growth-posts", type=int, default=40_000, help="posts of each burst")
    parser.add_argument(
        "--growth-only", action="store_true", help="only the bursts of --growth (default 4)"
    )
    parser.add_argument(
        "--city-data",
        type=Path,
        default=Path(
            os.environ.get("PLAZA_CITY_DATA_DIR") or ROOT.parent / "shared/data/barcelona"
        ),
        help="Barcelona's barris_geo.json and districtes_geo.json, for the cost by districts",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="load the gateway with every process sharing the CPUs (by default the gateway has "
        "the first CPU to itself during its load)",
    )
    parser.add_argument(
        "--api-only", action="store_true", help="only the gateway's figures (no Kafka, no pipeline)"
    )
    args = parser.parse_args()
    if args.growth_only:
        args.growth = args.growth or 4
    if shutil.which("wrk") is None and not args.growth_only:
        sys.exit("wrk is needed for the API figures: apt-get install wrk")
    started = time.monotonic()
    report = Report()
    logs = Path(tempfile.mkdtemp(prefix="plaza-bench-logs-"))
    log(f"service logs in {logs}")
    try:
        if args.api_only:
            api_only_figures(args, logs, report)
            return
        if not args.growth_only:
            with infrastructure() as infra:
                log(f"Kafka on {infra.kafka.bootstrap}, PostgreSQL in {infra.home}")
                pipeline_figures(infra, args, logs, report)
                if not args.no_scaling:
                    scaling_figures(infra, args, logs, report)
                router_cost_figures(infra, args, report)
                district_cost_figures(infra, args, report)
        if args.growth:  # a broker and a database of their own: nothing left over to share them
            with infrastructure() as infra:
                growth_figures(infra, args, logs, report)
    finally:  # what was measured is shown even when a later phase fails (which still fails)
        report.add("bench_runtime_s", time.monotonic() - started, "s", "the whole run")
        report.print()


if __name__ == "__main__":
    main()
