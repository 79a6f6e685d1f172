"""The gateway under load: the district queue and Open311 GET requests.json with 100,000
requests in the database, loaded by wrk (a separate process)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

import asyncpg

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


def wrk(url: str, key: str, seconds: int, connections: int) -> Load:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
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


def load_endpoints(base: str, key: str, seconds: int, connections: int) -> dict[str, Load]:
    figures = {}
    for name, path in (("api_queue", QUEUE_PATH), ("open311_requests", OPEN311_PATH)):
        wrk(base + path, key, 2, connections)  # warm-up: connection pools, caches
        figures[name] = wrk(base + path, key, seconds, connections)
    return figures
