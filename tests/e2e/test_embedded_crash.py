"""`plaza run` (embedded mode) keeps every post it answered 202: killed with SIGKILL, or stopped
with Ctrl-C before or after its workers drained the bus, the next start handles what was left,
and each post ends as one request report with one reply.

PLAZA_BATCH_SIZE=1 makes the router slow, so a backlog forms as on a small machine in a spike
(the in-memory bus lost 870 of 1,094 accepted posts on Ctrl-C, 2,854 of 3,004 on kill -9)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from plaza.db import create_engine
from sqlalchemy import text

from tests.infra import SHARED_DATA, free_port
from tests.processes import ServiceProcess, wait_http

pytestmark = [pytest.mark.postgres]

POSTS = 400


def embedded(database_url: str, home: Path, port: int, **env: str) -> ServiceProcess:
    return ServiceProcess(
        "embedded",
        {
            "PLAZA_DATABASE_URL": database_url,
            "PLAZA_HOME": str(home),
            "PLAZA_PORT": str(port),
            "PLAZA_DEMO": "false",
            "PLAZA_RATE_LIMIT_PER_MINUTE": "0",
            "PLAZA_CITY_DATA_DIR": str(SHARED_DATA / "barcelona"),
            **env,
        },
        home.parent,
        module="plaza_cli",
        args=["run"],
    )


async def post_all(port: int, key: str) -> list[str]:
    """Posts POSTS posts, 50 at a time; the ids of those answered 202."""
    accepted: list[str] = []
    limit = asyncio.Semaphore(50)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:

        async def one(i: int) -> None:
            async with limit:
                answer = await api.post(
                    "/api/v1/posts",
                    json={
                        "platform": "webhook",
                        "post_id": f"p{i}",
                        "author_handle": f"@veí{i}",
                        "text": f"La farola del número {i} del carrer de Verdi no s'encén",
                        "lat": 41.403 + (i % 50) * 0.0001,
                        "long": 2.157,
                    },
                )
                if answer.status_code == 202:
                    accepted.append(f"p{i}")

        await asyncio.gather(*(one(i) for i in range(POSTS)))
    return accepted


async def stored(database_url: str) -> tuple[int, int, int]:
    """Request reports, posts replied to, and posts replied to more than once."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            reports = (
                await conn.execute(text("SELECT count(*) FROM request_reports"))
            ).scalar_one()
            replies = (
                await conn.execute(
                    text(
                        "SELECT count(*), count(*) FILTER (WHERE n > 1) FROM (SELECT count(*) AS n"
                        " FROM replies GROUP BY in_reply_to_post_id) AS r"
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return int(reports), int(replies[0]), int(replies[1])


@pytest.mark.parametrize(
    ("stop", "drain_seconds"),
    [("SIGKILL", "10"), ("SIGINT", "0"), ("SIGINT", "60")],
    ids=["kill-9", "ctrl-c-without-draining", "ctrl-c-draining"],
)
async def test_every_accepted_post_is_handled_once_after_a_stop(
    database_url: str, tmp_path: Path, stop: str, drain_seconds: str
) -> None:
    port = free_port()
    home = tmp_path / "home"
    plaza = embedded(
        database_url, home, port, PLAZA_BATCH_SIZE="1", PLAZA_DRAIN_SECONDS=drain_seconds
    ).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=plaza)
        accepted = await post_all(port, (home / "admin_key").read_text().strip())
        assert len(accepted) == POSTS
        assert plaza.proc is not None
        plaza.proc.send_signal(getattr(signal, stop))
        assert plaza.proc.wait(90) == (0 if stop == "SIGINT" else -signal.SIGKILL)
    finally:
        plaza.stop()
    at_stop, _, _ = await stored(database_url)
    if drain_seconds == "60":
        assert at_stop == POSTS, plaza.log()[-3000:]  # drained: every post handled before exit
        assert "stopping: handling the" in plaza.log()
    elif drain_seconds == "0":
        assert "records not handled yet: they are kept" in plaza.log()

    again = embedded(database_url, home, port).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=again)
        deadline = time.monotonic() + 120
        while (counts := await stored(database_url))[:2] != (POSTS, POSTS):
            assert time.monotonic() < deadline, (counts, again.log()[-3000:])
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # anything handled twice would be replied to by now
        assert await stored(database_url) == (POSTS, POSTS, 0)
    finally:
        again.stop()
    assert "Traceback" not in plaza.log() + again.log()
