"""`plaza run` (embedded mode, the command of `make run`) as Jun would use it: one process on the
in-memory bus, listening to the city's Mastodon account and answering there. A citizen's
mention becomes a request in its district's queue, and the acknowledgement is a threaded reply
on the citizen's own instance, in their language; a manager's assignment is answered there too,
mentioning the worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from plaza.db import create_engine, session_factory
from plaza_api.auth import Role, create_api_key

from tests.infra import SHARED_DATA, free_port
from tests.peers.mastodon import FakeMastodon
from tests.processes import ServiceProcess, wait_http

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon() as server:
        yield server


async def _replies(
    server: FakeMastodon, status_id: str, count: int, plaza: ServiceProcess, timeout: float = 60
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = server.replies_to(status_id)
        if len(replies) >= count:
            return replies
        await asyncio.sleep(0.2)
    arrived = len(server.replies_to(status_id))
    raise AssertionError(
        f"{arrived} of {count} replies arrived; plaza's log:\n{plaza.log()[-6000:]}"
    )


async def test_plaza_run_answers_a_mastodon_mention_in_the_citizens_thread(
    mastodon: FakeMastodon, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    plaza = ServiceProcess(
        "embedded",
        {
            "PLAZA_DATABASE_URL": database_url,
            "PLAZA_HOME": str(tmp_path / "home"),
            "PLAZA_PORT": str(port),
            "PLAZA_DEMO": "false",
            "PLAZA_CITY_DATA_DIR": str(SHARED_DATA / "barcelona"),
            "PLAZA_MASTODON_BASE_URL": mastodon.base_url,
            "PLAZA_MASTODON_TOKEN": mastodon.token,
            "PLAZA_REPLY_RETRY_BASE_SECONDS": "0.2",
        },
        tmp_path,
        module="plaza_cli",
        args=["run"],
    )
    plaza.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=plaza)
        deadline = time.monotonic() + 30
        while mastodon.stream_count() == 0:  # the connector is listening
            assert time.monotonic() < deadline, plaza.log()[-3000:]
            await asyncio.sleep(0.2)

        status = mastodon.citizen_posts(
            "La farola del carrer de Verdi, a Gràcia, no s'encén des de fa tres nits",
            language="ca",
        )
        [ack] = await _replies(mastodon, status["id"], 1, plaza)
        assert "Petició #" in ack["content"] and "Gràcia" in ack["content"], ack["content"]
        assert ack["in_reply_to_id"] == status["id"]
        request_id = ack["content"].split("Petició #")[1].split(",")[0].split(" ")[0]

        engine = create_engine(database_url)
        try:
            async with session_factory(engine).begin() as session:
                _, key = await create_api_key(
                    session, name="gracia", role=Role.MANAGER, scopes=["06"]
                )
        finally:
            await engine.dispose()
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            queue = (await api.get("/api/v1/districts/06/queue")).json()
            assert [item["service_request_id"] for item in queue["items"]] == [request_id]
            assert queue["items"][0]["service_code"] == "streetlight"
            for action, body in (
                ("acknowledge", {}),
                ("assign", {"worker": "@jordi@bcn.social"}),
            ):
                answer = await api.post(
                    f"/api/v1/requests/{request_id}/actions/{action}", json=body
                )
                assert answer.status_code == 200, answer.text
        replies = await _replies(mastodon, status["id"], 2, plaza)
        assert "jordi@bcn.social" in replies[-1]["content"], replies[-1]["content"]  # a mention
        assert len({r["id"] for r in replies}) == len(replies) == 2  # each answered once
    finally:
        plaza.stop()
    assert "Traceback" not in plaza.log(), plaza.log()[-3000:]
