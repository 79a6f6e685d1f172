"""`plaza run` restored from a backup answers no Mastodon mention twice: the mention answered
after the backup is read again from the connector's restored cursor when Plaza starts again,
and the notifier finds the city's reply in its thread instead of posting another. The local
Mastodon ignores Idempotency-Key, as GoToSocial does (and Mastodon itself after an hour)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import SHARED_DATA, free_port
from tests.peers.mastodon import FakeMastodon
from tests.processes import ServiceProcess, wait_http

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon(honour_idempotency=False) as server:
        yield server


def plaza(env: dict[str, str], *args: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLAZA_")}
    done = subprocess.run(
        [sys.executable, "-m", "plaza_cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


async def start(env: dict[str, str], log_dir: Path, mastodon: FakeMastodon) -> ServiceProcess:
    """`plaza run`, once its Mastodon connector listens."""
    port = free_port()
    run = ServiceProcess(
        "embedded", {**env, "PLAZA_PORT": str(port)}, log_dir, module="plaza_cli", args=["run"]
    )
    run.start()
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=run)
    deadline = time.monotonic() + 30
    while mastodon.stream_count() == 0:  # the last run's stream closed as it stopped
        assert time.monotonic() < deadline, run.log()[-3000:]
        await asyncio.sleep(0.2)
    return run


async def answered(mastodon: FakeMastodon, status_id: str, run: ServiceProcess) -> None:
    deadline = time.monotonic() + 60
    while not mastodon.replies_to(status_id):
        assert time.monotonic() < deadline, run.log()[-6000:]
        await asyncio.sleep(0.2)


async def test_a_restored_plaza_answers_no_mention_twice(
    mastodon: FakeMastodon, database_url: str, tmp_path: Path
) -> None:
    env = {
        "PLAZA_DATABASE_URL": database_url,
        "PLAZA_HOME": str(tmp_path / "home"),
        "PLAZA_DEMO": "false",
        "PLAZA_CITY_DATA_DIR": str(SHARED_DATA / "barcelona"),
        "PLAZA_MASTODON_BASE_URL": mastodon.base_url,
        "PLAZA_MASTODON_TOKEN": mastodon.token,
        "PLAZA_REPLY_RETRY_BASE_SECONDS": "0.2",
    }
    texts = {
        "before": "La farola del carrer de Verdi, a Gràcia, no s'encén des de fa tres nits",
        "after": "El contenidor del carrer de Sants està cremat i fa pudor",
        "new": "Hi ha un forat a la vorera del carrer de Balmes, davant del 120",
    }
    statuses: dict[str, str] = {}
    run = await start(env, tmp_path, mastodon)
    try:
        statuses["before"] = mastodon.citizen_posts(texts["before"])["id"]
        await answered(mastodon, statuses["before"], run)
        plaza(env, "backup", str(tmp_path / "plaza.tar"))
        statuses["after"] = mastodon.citizen_posts(texts["after"])["id"]
        await answered(mastodon, statuses["after"], run)
    finally:
        run.stop()
    plaza(env, "restore", str(tmp_path / "plaza.tar"))

    again = await start(env, tmp_path, mastodon)
    try:
        # The connector caught up from the backup's cursor as it connected, before this one.
        statuses["new"] = mastodon.citizen_posts(texts["new"])["id"]
        await answered(mastodon, statuses["new"], again)
        await asyncio.sleep(2)  # a second reply to the one read again would be posted by now
    finally:
        again.stop()
    replies = {name: len(mastodon.replies_to(status)) for name, status in statuses.items()}
    assert replies == {"before": 1, "after": 1, "new": 1}, again.log()[-6000:]
    assert "was already in the thread" in again.log()
    assert "Traceback" not in run.log() + again.log()
