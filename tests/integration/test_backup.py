"""`plaza backup` and `plaza restore` over a database that has moved on since the backup: the
restore puts back exactly what the backup held, in one transaction (a damaged backup changes
nothing), and never under a Plaza that is running on the database."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from plaza_api.auth import Role, create_user
from plaza_cli.backup import DUMP, MANIFEST, BackupError, backup, restore
from plaza_notifier.restores import restored_at
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import as_event, classified, router

TABLES = ("service_requests", "request_reports", "staff_users", "processed_events", "outbox")


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    async with sessions() as s:
        return {
            table: sorted(repr(tuple(r)) for r in (await s.execute(text(f"SELECT * FROM {table}"))))
            for table in TABLES
        }


def damaged(backup_file: Path, target: Path) -> Path:
    """The backup with its dump cut short inside an archive that is whole (pg_restore finds it
    out; a copy of the file cut short is refused before, tests/unit/test_backup_archive.py)."""
    with tarfile.open(backup_file) as archive:
        parts = {}
        for member in archive.getmembers():
            data = archive.extractfile(member)
            assert data is not None
            parts[member.name] = data.read()
    parts[DUMP] = parts[DUMP][: len(parts[DUMP]) * 2 // 3]
    with tarfile.open(target, "w") as archive:
        for name, data in parts.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return target


async def test_a_restore_puts_back_what_the_backup_held_and_nothing_else(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "jwt_secret").write_text("s" * 64)
    route = router(sessions)
    for post in ("p1", "p2"):
        await route(as_event(classified(post, latlon=(41.40 + len(post) * 0.01, 2.15))))
    async with sessions.begin() as s:
        await create_user(s, username="maria", password="x" * 16, role=Role.MANAGER, scopes=["06"])
    saved = await snapshot(sessions)
    manifest = await backup(database_url, home, "Barcelona", tmp_path / "b.tar")
    assert (manifest.requests, manifest.users, manifest.keys) == (1, 1, 0)
    with tarfile.open(tmp_path / "b.tar") as archive:
        about = archive.extractfile(MANIFEST)
        assert about is not None
        assert json.loads(about.read())["city"] == "Barcelona"
        assert "home/jwt_secret" in archive.getnames()

    # The database moves on: more requests, a user gone, a table the backup never had.
    await route(as_event(classified("p3", district="07", barri="43", latlon=(41.43, 2.16))))
    async with sessions.begin() as s:
        await s.execute(text("DELETE FROM staff_users"))
        await s.execute(text("CREATE TABLE a_newer_plazas_table (id int)"))
    (home / "jwt_secret").write_text("t" * 64)
    moved_on = await snapshot(sessions)
    assert moved_on != saved

    async with engine.connect():  # a Plaza still running on it
        with pytest.raises(BackupError, match=r"^the database is in use \(1 connections: "):
            await restore(database_url, home, tmp_path / "b.tar")
    await engine.dispose()

    with pytest.raises(BackupError, match=r"^pg_restore failed: "):
        await restore(database_url, home, damaged(tmp_path / "b.tar", tmp_path / "cut.tar"))
    assert await snapshot(sessions) == moved_on  # nothing changed
    async with sessions() as s:
        assert await restored_at(s) is None  # nor marked restored
    assert "restore mark" not in caplog.text  # PostgreSQL's own comment is no bad mark
    await engine.dispose()

    before = datetime.now(UTC)
    assert await restore(database_url, home, tmp_path / "b.tar") == manifest
    assert await snapshot(sessions) == saved
    async with sessions() as s:  # the notifier's mark: when, for the posts read again
        when = await restored_at(s)
    assert when is not None and before <= when <= datetime.now(UTC)
    assert (home / "jwt_secret").read_text() == "s" * 64
    async with sessions() as s:
        assert await s.scalar(text("SELECT to_regclass('a_newer_plazas_table')")) is None
    # The inbox came back with the rest: a post the backup had seen opens nothing again.
    await route(as_event(classified("p1", latlon=(41.42, 2.15))))
    assert await snapshot(sessions) == saved
