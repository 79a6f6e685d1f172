"""Measures the gateway's read endpoints with 100,000 requests in the database.

    uv run python scripts/bench_api.py [--requests 100000] [--seconds 10] [--connections 32]

Starts an embedded PostgreSQL, fills it, runs `python -m plaza_api` as its own process (one
worker, rate limits off) and loads it with wrk from another process. Prints a table and one
JSON line per figure. Issue 8's `make bench` will fold this in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from plaza.db import create_engine, session_factory
from plaza.db.migrate import upgrade
from plaza_api.auth import Role, create_api_key
from plaza_cli.postgres import EmbeddedPostgres
from sqlalchemy import text

FILL = """
INSERT INTO service_requests (
    status, service_code, description, requested_datetime, updated_datetime, expected_datetime,
    ack_due_at, agency_responsible, district_code, barri_code, location_source, queue, urgency,
    language, service_confidence, channel, source_platform, source_post_id, source_author_handle,
    media_urls, lat, long)
SELECT
    (ARRAY['new','acknowledged','assigned','in_progress','resolved','closed'])[1 + n % 6],
    (ARRAY['streetlight','pavement','cleaning','graffiti','parks_trees','traffic'])[1 + n % 6],
    'Report number ' || n,
    now() - (n % 2000) * interval '1 hour',
    now() - (n % 1000) * interval '1 hour',
    now() + ((n % 500) - 250) * interval '1 hour',
    now() + ((n % 300) - 150) * interval '1 hour',
    'Districte ' || lpad((1 + n % 10)::text, 2, '0'),
    lpad((1 + n % 10)::text, 2, '0'),
    lpad((1 + n % 73)::text, 2, '0'),
    'geo',
    lpad((1 + n % 10)::text, 2, '0'),
    CASE WHEN n % 13 = 0 THEN 'urgent' ELSE 'normal' END,
    (ARRAY['ca','es','en'])[1 + n % 3],
    0.9, 'bench', 'bench', 'post-' || n, '@neighbour' || n, '{}',
    41.38 + (n % 100) * 0.001, 2.15 + (n % 97) * 0.001
FROM generate_series(1, :n) AS n
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prepare(url: str, n: int) -> str:
    await upgrade(url)
    engine = create_engine(url)
    async with session_factory(engine).begin() as session:
        await session.execute(text(FILL), {"n": n})
        _, key = await create_api_key(session, name="bench", role=Role.CITY_HALL)
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE service_requests"))
    await engine.dispose()
    return key


def wrk(url: str, key: str, seconds: int, connections: int) -> tuple[float, float]:
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
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(p99) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out:
        raise SystemExit(f"errors while loading {url}:\n{out}")
    return rps, p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    home = Path(tempfile.mkdtemp(prefix="plaza-bench-"))
    pg = EmbeddedPostgres(home / "pg")
    pg.ensure_database()
    api = None
    try:
        key = asyncio.run(prepare(pg.url(), args.requests))
        port = free_port()
        env = {
            **os.environ,
            "PLAZA_DATABASE_URL": pg.url(),
            "PLAZA_PORT": str(port),
            "PLAZA_JWT_SECRET": secrets.token_urlsafe(48),
            "PLAZA_RATE_LIMIT_PER_MINUTE": "0",
            "PLAZA_ANONYMOUS_RATE_LIMIT_PER_MINUTE": "0",
            "PLAZA_LOG_LEVEL": "WARNING",
        }
        api = subprocess.Popen([sys.executable, "-m", "plaza_api"], env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        figures = {}
        for name, path in (
            ("api_queue", "/api/v1/districts/06/queue?limit=50"),
            ("open311_requests", "/open311/v2/requests.json?page_size=50"),
        ):
            wrk(base + path, key, 2, args.connections)  # warm up
            rps, p99 = wrk(base + path, key, args.seconds, args.connections)
            figures[f"{name}_rps"] = (rps, "requests/s")
            figures[f"{name}_p99_ms"] = (p99, "ms")
        print(f"{'figure':<28}{'value':>12}  unit   ({args.requests} requests in the database)")
        for metric, (value, unit) in figures.items():
            print(f"{metric:<28}{value:>12.1f}  {unit}")
        for metric, (value, unit) in figures.items():
            print(json.dumps({"metric": metric, "value": round(value, 2), "unit": unit}))
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
