"""Jun's backup, its town hall's PC lost, and its restore on a new one: `plaza backup` made while
`make run` answers posts, `plaza restore` into an empty PLAZA_HOME (its own embedded
PostgreSQL), and the next `plaza run` there has the same requests, users and keys, answers the
posts it had answered no second time, and goes on with the new ones."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from plaza.db import create_engine
from sqlalchemy import text

from tests.infra import ROOT, free_port
from tests.processes import ServiceProcess, wait_http

pytestmark = [pytest.mark.postgres]

JUN = str(ROOT / "deploy" / "cities" / "jun.toml")
PASSWORD = "alcaldía-de-jun-2026"


@pytest.fixture
def new_machine() -> Iterator[Path]:
    """A home outside pytest's basetemp, which is 0700 to the embedded server's own user."""
    where = Path(tempfile.mkdtemp(prefix="plaza-jun-restore-"))
    os.chmod(where, 0o755)
    try:
        yield where / "home"
    finally:
        shutil.rmtree(where, ignore_errors=True)


def env_of(home: Path, database_url: str | None) -> dict[str, str]:
    env = {
        "PLAZA_HOME": str(home),
        "PLAZA_CITY_CONFIG": JUN,
        "PLAZA_RATE_LIMIT_PER_MINUTE": "0",
    }
    if database_url:
        env["PLAZA_DATABASE_URL"] = database_url
    return env


def plaza(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLAZA_")}
    return subprocess.run(
        [sys.executable, "-m", "plaza_cli", *args],
        env={**clean, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def post(port: int, key: str, ids: range) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        for i in ids:
            answer = await api.post(
                "/api/v1/posts",
                json={
                    "platform": "webhook",
                    "post_id": f"jun{i}",
                    "author_handle": f"@vecina{i}",
                    "text": f"Hay un bache enorme delante del número {i} de la calle Real",
                    "lat": 37.2206 + i * 0.001 % 0.01,
                    "long": -3.5950,
                },
            )
            assert answer.status_code == 202, answer.text


async def stored(database_url: str) -> tuple[int, int, int, int]:
    """Requests, request reports, posts replied to, posts replied to more than once."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT (SELECT count(*) FROM service_requests),"
                        " (SELECT count(*) FROM request_reports),"
                        " (SELECT count(DISTINCT in_reply_to_post_id) FROM replies),"
                        " (SELECT count(*) FROM (SELECT in_reply_to_post_id FROM replies"
                        "  GROUP BY in_reply_to_post_id HAVING count(*) > 1) AS twice)"
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def settled(database_url: str, posts: int, proc: ServiceProcess) -> tuple[int, int, int, int]:
    deadline = time.monotonic() + 60
    while (counts := await stored(database_url))[1:3] != (posts, posts):
        assert time.monotonic() < deadline, (counts, proc.log()[-3000:])
        await asyncio.sleep(0.3)
    await asyncio.sleep(1)  # a post handled twice would be replied to again by now
    return await stored(database_url)


def start(env: dict[str, str], log_dir: Path, port: int) -> ServiceProcess:
    plaza_run = ServiceProcess(
        "embedded", {**env, "PLAZA_PORT": str(port)}, log_dir, module="plaza_cli", args=["run"]
    )
    plaza_run.start()
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=plaza_run)
    return plaza_run


def refuses_what_is_not_jun_s_backup(backup_file: Path, other_file: Path, home: Path) -> None:
    """Jun's backup in a Plaza serving Barcelona, and a file that is no backup, are refused
    before anything is made."""
    barcelona = plaza(
        {k: v for k, v in env_of(home, None).items() if k != "PLAZA_CITY_CONFIG"},
        "restore",
        str(backup_file),
    )
    assert barcelona.returncode == 1, barcelona.stderr
    assert barcelona.stderr == (
        f"plaza restore: {backup_file} holds Jun's Plaza, and this one serves Barcelona "
        "(PLAZA_CITY_CONFIG): set PLAZA_CITY_CONFIG as make run has it\n"
    )
    not_a_backup = plaza(env_of(home, None), "restore", str(other_file))
    assert not_a_backup.returncode == 1
    assert not_a_backup.stderr.startswith(
        f"plaza restore: {other_file}: not a backup made by plaza backup ("
    )
    assert not home.exists()


async def test_a_backup_restored_on_a_new_machine_carries_on_without_replying_twice(
    database_url: str, tmp_path: Path, new_machine: Path
) -> None:
    old = env_of(tmp_path / "home", database_url)
    backup_file = tmp_path / "jun.plaza-backup"
    port = free_port()
    running = start(old, tmp_path, port)
    try:
        key = (tmp_path / "home" / "admin_key").read_text().strip()
        made = plaza(old, "users", "create", "alcaldesa", "--role", "admin", "--password-stdin",
                     stdin=PASSWORD + "\n")  # fmt: skip
        assert made.returncode == 0, made.stderr
        await post(port, key, range(20))
        at_backup = await settled(database_url, 20, running)
        saved = plaza(old, "backup", str(backup_file))
        assert saved.returncode == 0, saved.stderr
        assert (
            saved.stdout.startswith("backed up Jun's Plaza of 20")
            and f": {at_backup[0]} requests, 1 users, 1 API keys (schema " in saved.stdout
        )
        assert backup_file.stat().st_mode & 0o077 == 0  # it holds the tokens' secret

        # Over a running Plaza, a restore would pull its journal from under it.
        refused = plaza(old, "restore", str(backup_file))
        assert refused.returncode == 1
        assert refused.stderr.startswith("plaza restore: the database is in use (")
        assert "stop Plaza first" in refused.stderr

        await post(port, key, range(20, 25))  # after the backup: lost with the old PC
        await settled(database_url, 25, running)
    finally:
        running.stop()

    refuses_what_is_not_jun_s_backup(backup_file, tmp_path / "home" / "admin_key", new_machine)
    new = env_of(new_machine, None)
    restored = plaza(new, "restore", str(backup_file))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored Jun's Plaza of 20")
    assert (new_machine / "admin_key").read_text().strip() == key
    assert (new_machine / "city").read_text().strip() == "Jun"

    embedded_url = f"postgresql+asyncpg://postgres@/plaza?host={new_machine / 'pgdata'}"
    port = free_port()
    again = start(new, new_machine.parent, port)
    try:
        assert await stored(embedded_url) == at_backup
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            token = await api.post(
                "/api/v1/auth/token", data={"username": "alcaldesa", "password": PASSWORD}
            )
            assert token.status_code == 200, token.text
            queue = await api.get(
                "/api/v1/districts/01/queue", headers={"Authorization": f"Bearer {key}"}
            )
            assert queue.status_code == 200, queue.text
        # The citizens' posts come again (a bridge resending what it sent since the backup):
        # the 20 the backup holds are answered no second time, the 5 after it once.
        await post(port, key, range(25))
        requests, reports, replied, twice = await settled(embedded_url, 25, again)
        assert (reports, replied, twice) == (25, 25, 0)
        assert requests >= at_backup[0]
    finally:
        assert again.proc is not None
        again.proc.send_signal(signal.SIGINT)
        again.proc.wait(60)
    assert "Plaza stopped" in again.log()
    assert "Traceback" not in running.log() + again.log()
