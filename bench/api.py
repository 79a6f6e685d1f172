"""The gateway under load: the district queue and Open311 GET requests.json with 100,000
requests in the database, loaded by wrk (a separate process)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from bench.pipeline import raw_dsn

# Requests spread over the ten districts, six services and every status, half of them past a
# deadline. Those carry the breach the SLA scanner would have recorded (and its escalation), as
# in a city's database, where the scanner has long caught up: otherwise the scanner would be
# busy breaching 50,000 requests at once while the gateway is measured beside it.
FILL = """
INSERT INTO service_requests (
    status, service_code, description, requested_datetime, updated_datetime, expected_datetime,
    ack_due_at, agency_responsible, district_code, barri_code, location_source, queue, urgency,
    language, service_confidence, channel, source_platform, source_post_id, source_author_handle,
    media_urls, lat, long, ack_breached_at, resolve_breached_at, escalated_at)
SELECT g.*,
    CASE WHEN g.status IN ('new','transferred','reopened') AND g.ack_due_at <= now()
         THEN g.ack_due_at END,
    CASE WHEN g.status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')
          AND g.expected_datetime <= now() THEN g.expected_datetime END,
    CASE WHEN g.status IN ('new','transferred','reopened') AND g.ack_due_at <= now()
         THEN least(g.ack_due_at, g.expected_datetime)
         WHEN g.status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')
          AND g.expected_datetime <= now() THEN g.expected_datetime END
FROM (SELECT
    (ARRAY['new','acknowledged','assigned','in_progress','resolved','closed'])[1 + n % 6] AS status,
    (ARRAY['streetlight','pavement','cleaning','graffiti','parks_trees','traffic'])[1 + n % 6],
    'Report number ' || n,
    now() - (n % 2000) * interval '1 hour',
    now() - (n % 1000) * interval '1 hour',
    now() + ((n % 500) - 250) * interval '1 hour' AS expected_datetime,
    now() + ((n % 300) - 150) * interval '1 hour' AS ack_due_at,
    'Districte ' || lpad((1 + n % 10)::text, 2, '0'),
    lpad((1 + n % 10)::text, 2, '0'),
    lpad((1 + n % 73)::text, 2, '0'),
    'geo',
    lpad((1 + n % 10)::text, 2, '0'),
    CASE WHEN n % 13 = 0 THEN 'urgent' ELSE 'normal' END,
    (ARRAY['ca','es','en'])[1 + n % 3],
    0.9, 'bench', 'bench', 'post-' || n, '@neighbour' || n, '{}'::text[],
    41.38 + (n % 100) * 0.001, 2.15 + (n % 97) * 0.001
    FROM generate_series(1, $1::int) AS n) AS g
"""

QUEUE_PATH = "/api/v1/districts/06/queue?limit=50"
OPEN311_PATH = "/open311/v2/requests.json?page_size=50"


async def fill_to(database_url: str, total: int) -> int:
    """Adds requests until the database holds `total`; returns how many it holds."""
    conn = await asyncpg.connect(raw_dsn(database_url))
    try:
        have = int(await conn.fetchval("SELECT count(*) FROM service_requests"))
        if have < total:
            await conn.execute(FILL, total - have)
        await conn.execute("VACUUM ANALYZE service_requests")
        return int(await conn.fetchval("SELECT count(*) FROM service_requests"))
    finally:
        await conn.close()


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# wrk paced to a fixed rate (LuaJIT's ffi reads the monotonic clock): every request of the
# thread gets the next slot of a schedule `1000 / rate` ms apart, sent as soon as a connection
# is free if the schedule is behind. So the gateway is offered the rate, not driven to its limit,
# and the latencies are those of serving that rate.
PACED_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } plaza_timespec;
int clock_gettime(int clk_id, plaza_timespec *tp);
]]
local ts = ffi.new("plaza_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = 1000 / RATE
local next_slot = nil
function delay()
  local t = now_ms()
  if next_slot == nil then next_slot = t end
  local slot = next_slot
  next_slot = next_slot + interval
  local d = slot - t
  if d <= 0 then return 0 end
  return math.floor(d + 0.5)
end
"""


def wrk(url: str, key: str, seconds: int, connections: int, rate: float | None = None) -> Load:
    """wrk's throughput and latencies: as fast as `connections` go, or paced to `rate`/s."""
    script: list[str] = []
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if rate is not None:
            lua.write(PACED_LUA.replace("RATE", repr(float(rate))))
            lua.flush()
            script = ["-s", lua.name]
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                *script,
                "-H",
                f"Authorization: Bearer {key}",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors while loading {url}:\n{out}")
    if "Socket errors" in out:
        print(f"wrk reported socket errors on {url}:\n{out}", file=sys.stderr)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return Load(float(rps.group(1)), _ms(*p50.groups()), _ms(*p99.groups()))


def _pin(pids: Iterable[int], cpus: set[int]) -> None:
    """Every thread of these processes on these CPUs (sched_setaffinity binds one thread)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue  # gone meanwhile
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


@contextmanager
def gateway_on_its_own_cpu(api_pid: int | None, postgres_dir: Path) -> Iterator[str]:
    """While loading the gateway: the gateway alone on the first CPU, and everything else of
    the bench (PostgreSQL, Kafka, the other services, this process and so wrk, which it starts)
    on the others, as a gateway worker would have its own core beside a database on its own
    machine. Without that, on two cores, wrk and PostgreSQL preempt the gateway and the figure
    mostly measures the scheduler. Yields how the CPUs were shared, for the report."""
    cpus = os.sched_getaffinity(0)
    if api_pid is None or len(cpus) < 2:
        yield "all processes share the CPUs"
        return
    own, rest = {min(cpus)}, cpus - {min(cpus)}
    me = psutil.Process()
    others = [me.pid, *(p.pid for p in me.children(recursive=True) if p.pid != api_pid)]
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        postmaster = int((postgres_dir / "postmaster.pid").read_text().split()[0])
        others += [postmaster, *(p.pid for p in psutil.Process(postmaster).children())]
    _pin([api_pid], own)
    _pin(others, rest)  # new PostgreSQL backends inherit the postmaster's CPUs
    try:
        yield f"the gateway alone on CPU {min(own)}, the rest on CPU {','.join(map(str, sorted(rest)))}"
    finally:
        _pin([api_pid, *others], cpus)


QUEUE_TARGET_RPS = 2000  # issue 5: the queue serves 2,000 requests/s with p99 <= 25 ms


def load_endpoints(base: str, key: str, seconds: int, connections: int) -> dict[str, Load]:
    """Each endpoint as fast as wrk's connections go (its capacity, and the latencies when
    driven there); the queue also paced at its target rate (the latencies of serving it)."""
    figures = {}
    for name, path in (("api_queue", QUEUE_PATH), ("open311_requests", OPEN311_PATH)):
        wrk(base + path, key, 2, connections)  # warm-up: connection pools, caches
        figures[name] = wrk(base + path, key, seconds, connections)
        if name == "api_queue":  # before Open311's slow pages, which outlive their load
            figures["api_queue_paced"] = wrk(
                base + path, key, seconds, connections, rate=QUEUE_TARGET_RPS
            )
    return figures
