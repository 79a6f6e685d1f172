"""`plaza run` started from the example town's city file (deploy/cities/jun.toml), as its IT
person would start it: the banner and the first admin's hint show Jun's own queue, no demo post
from Barcelona comes in, and a post in a language Plaza has no replies in is answered in Jun's
Spanish, its request published in the names of Jun's council."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.infra import ROOT, free_port
from tests.processes import ServiceProcess, wait_http

pytestmark = [pytest.mark.postgres]


async def test_plaza_run_serves_jun_from_its_city_file(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    plaza = ServiceProcess(
        "embedded",
        {
            "PLAZA_DATABASE_URL": database_url,
            "PLAZA_HOME": str(home),
            "PLAZA_PORT": str(port),
            "PLAZA_CITY_CONFIG": str(ROOT / "deploy" / "cities" / "jun.toml"),
            "PLAZA_DEMO_INTERVAL": "0.1",  # were the feed on, it would post at once
        },
        tmp_path,
        module="plaza_cli",
        args=["run"],
    )
    plaza.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=plaza)
        deadline = time.monotonic() + 10
        while "Use it (every role's endpoints)" not in plaza.log():
            assert time.monotonic() < deadline, plaza.log()[-3000:]
            await asyncio.sleep(0.1)
        log = plaza.log()
        assert "(queue of Casco Urbano: /api/v1/districts/01/queue; Ctrl-C stops)" in log
        assert f"http://127.0.0.1:{port}/api/v1/districts/01/queue" in log
        assert "Jun: 2 districts, 0 barris, 37.215000..37.235000 N" in log
        key = (home / "admin_key").read_text().strip()
        # Its output is a log here, as a systemd service's is: the key is in its file only.
        assert key not in log
        assert f"admin API key was made and saved in {home / 'admin_key'} (not shown" in log
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            await asyncio.sleep(1)
            assert (await api.get("/open311/v2/requests.json")).json() == []  # no demo feed
            posted = await api.post(
                "/api/v1/posts",
                json={
                    "platform": "mastodon",
                    "post_id": "j8",
                    "author_handle": "@marie@mastodon.social",
                    "text": "Le lampadaire de la calle Real est en panne depuis trois jours",
                    "lang": "fr",
                    "lat": 37.2206,
                    "long": -3.5950,
                },
            )
            assert posted.status_code == 202, posted.text
            deadline = time.monotonic() + 30
            while not (requests := (await api.get("/open311/v2/requests.json")).json()):
                assert time.monotonic() < deadline, plaza.log()[-3000:]
                await asyncio.sleep(0.2)
            [request] = requests
            assert request["agency_responsible"] == "Distrito de Casco Urbano"
            rid = request["service_request_id"]
            while not (replies := (await api.get(f"/api/v1/requests/{rid}")).json()["replies"]):
                assert time.monotonic() < deadline, plaza.log()[-3000:]
                await asyncio.sleep(0.2)
            assert replies[0]["language"] == "es", replies
            assert replies[0]["text"].startswith(f"¡Recibido! Petición #{rid}, distrito de Casco")
            jurisdiction = await api.get("/open311/v2/requests.json?jurisdiction_id=jun")
            assert jurisdiction.status_code == 200
    finally:
        plaza.stop()
    assert "Traceback" not in plaza.log(), plaza.log()[-3000:]
    assert "demo post" not in plaza.log()
