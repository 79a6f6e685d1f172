"""`plaza backup FILE` and `plaza restore FILE`: a Plaza's whole database and PLAZA_HOME's keys in
one file, made while it runs and put back on the same machine or a new one.

The file is a tar archive: `plaza.dump` (pg_dump's custom format, taken in one snapshot: the
requests, users, keys, replies, inboxes and the embedded bus's journal and offsets agree with
each other), the files `make run` keeps in PLAZA_HOME (the city's name, the staff tokens'
secret, the first admin's key) and `manifest.json` (the city, the schema's revision and what it
holds). pg_dump, pg_restore and psql are the embedded PostgreSQL's own (pgserver's).

A restore leaves its mark for the notifier (plaza_notifier.restores): the replies posted between the backup and
the restore are not in the database that comes back, and the posts they answered are read again
from the connectors' restored cursors, so until then a reply may already be in its thread."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

FORMAT: Final = 1
DUMP: Final = "plaza.dump"
MANIFEST: Final = "manifest.json"
HOME_FILES: Final = ("city", "jwt_secret", "admin_key")
"""What `make run` keeps in PLAZA_HOME beside its database, all of it small and private."""

_FACTS = (
    "SELECT (SELECT version_num FROM alembic_version) AS schema,"
    " (SELECT count(*) FROM service_requests) AS requests,"
    " (SELECT count(*) FROM staff_users) AS users,"
    " (SELECT count(*) FROM api_keys) AS keys"
)
# Every reply not known to be posted may have gone out after the backup was taken: looked for in
# its thread before it is sent (the path of a send whose outcome is unknown).
_MAYBE_SENT = (
    "DO $$ BEGIN IF to_regclass('reply_deliveries') IS NOT NULL THEN"
    " UPDATE reply_deliveries SET maybe_sent = true WHERE state <> 'posted'; END IF; END $$"
)
_OTHERS = (
    "SELECT coalesce(nullif(application_name, ''), 'a client') FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend'"
)


_COPY_AGAIN = "copy it again from where it was made, or restore an older backup"


class BackupError(Exception):
    """Why a backup or a restore was not made; nothing was changed."""


@dataclass(frozen=True)
class Manifest:
    city: str
    schema: str
    made_at: str
    requests: int
    users: int
    keys: int
    # The PLAZA_HOME files the archive holds after its dump (None: a backup made before they
    # were listed), so that a copy cut short after its dump is not restored without its keys.
    home: tuple[str, ...] | None = None

    def summary(self) -> str:
        return (
            f"{self.city}'s Plaza of {self.made_at}: {self.requests} requests, "
            f"{self.users} users, {self.keys} API keys (schema {self.schema})"
        )

    @classmethod
    def read(cls, data: Mapping[str, object], source: Path) -> Manifest:
        if data.get("format") != FORMAT:
            raise BackupError(
                f"{source}: a backup of format {data.get('format')!r}, this Plaza reads {FORMAT}"
            )
        home = data.get("home")
        if home is not None and not isinstance(home, list):
            raise BackupError(f"{source}: its {MANIFEST} is damaged (home: {home!r})")
        try:
            return cls(
                city=str(data["city"]),
                schema=str(data["schema"]),
                made_at=str(data["made_at"]),
                requests=int(str(data["requests"])),
                users=int(str(data["users"])),
                keys=int(str(data["keys"])),
                home=None if home is None else tuple(str(name) for name in home),
            )
        except (KeyError, ValueError) as exc:
            raise BackupError(f"{source}: its {MANIFEST} is damaged ({exc})") from exc


def pg_tool(name: str) -> str:
    """The embedded PostgreSQL's own pg_dump, pg_restore or psql."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL (postgresql+asyncpg://...) as libpq's tools take it."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


async def _tool(*args: str) -> None:
    """Runs a PostgreSQL tool; a BackupError with its own message when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        name = Path(args[0]).name
        raise BackupError(f"{name} failed: {err.decode(errors='replace').strip()}")


async def backup(url: str, home: Path, city: str, target: Path) -> Manifest:
    """Writes the backup to `target` (through a temporary file beside it: an interrupted backup
    leaves the last one as it was). The database may be in use meanwhile."""
    import asyncpg

    conn = await asyncpg.connect(libpq_url(url))
    try:
        # pg_dump reads in this transaction's snapshot: the manifest's counts are the dump's.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = await conn.fetchrow(_FACTS)
            with tempfile.TemporaryDirectory(prefix="plaza-backup-") as work:
                dump = Path(work) / DUMP
                await _tool(
                    pg_tool("pg_dump"),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={dump}",
                    f"--dbname={libpq_url(url)}",
                )
                manifest = Manifest(
                    city=city,
                    schema=str(facts["schema"]),
                    made_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                    requests=int(facts["requests"]),
                    users=int(facts["users"]),
                    keys=int(facts["keys"]),
                    home=tuple(name for name in HOME_FILES if (home / name).is_file()),
                )
                _write_archive(target, dump, home, manifest)
    finally:
        await conn.close()
    return manifest


def _write_archive(target: Path, dump: Path, home: Path, manifest: Manifest) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)  # it holds the keys' hashes, the users' and the tokens' secret
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as archive:
            about = json.dumps({"format": FORMAT, **asdict(manifest)}, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(about), 0o600, int(time.time())
            archive.addfile(info, io.BytesIO(about))
            archive.add(dump, arcname=DUMP)
            for name in manifest.home or ():
                archive.add(home / name, arcname=f"home/{name}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def read_manifest(source: Path) -> Manifest:
    """The backup's manifest; a BackupError naming the file when it is no Plaza backup, or one
    cut short (a copy that stopped before its end: its dump or a home file missing)."""
    try:
        with tarfile.open(source, mode="r:") as archive:
            first = archive.next()  # plaza backup writes its manifest first
            member = archive.extractfile(first) if first and first.name == MANIFEST else None
            if member is None:
                raise KeyError(MANIFEST)
            data = json.loads(member.read())
            if not isinstance(data, dict):
                raise ValueError(f"its {MANIFEST} is no object")
            manifest = Manifest.read(data, source)
            try:
                names = archive.getnames()
            except tarfile.TarError as exc:
                raise BackupError(f"{source} is cut short ({exc}): {_COPY_AGAIN}") from exc
    except FileNotFoundError:
        raise BackupError(f"{source}: no such file") from None
    except (tarfile.TarError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise BackupError(
            f"{source}: not a backup made by plaza backup ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [n for n in (DUMP, *(f"home/{h}" for h in manifest.home or ())) if n not in names]
    if missing:
        raise BackupError(f"{source} is cut short (no {', '.join(missing)}): {_COPY_AGAIN}")
    return manifest


def check_schema(manifest: Manifest, source: Path) -> None:
    """A backup of a schema this Plaza's migrations do not know was made by a newer Plaza:
    restored, its database would stop the next make run at its first migration, with the
    database it replaced gone."""
    from alembic.script import ScriptDirectory
    from plaza.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    if manifest.schema not in {r.revision for r in script.walk_revisions()}:
        raise BackupError(
            f"{source} was made by a newer Plaza (schema {manifest.schema}; this one's is "
            f"{script.get_current_head()}): update this Plaza first (git pull, make env), "
            "then restore"
        )


async def running_clients(url: str) -> list[str]:
    """The other connections to the database: a Plaza that runs on it, or a console."""
    import asyncpg

    conn = await asyncpg.connect(libpq_url(url))
    try:
        return [str(row[0]) for row in await conn.fetch(_OTHERS)]
    finally:
        await conn.close()


async def restore(url: str, home: Path, source: Path) -> Manifest:
    """Replaces every table of the database with the backup's, in one transaction (a restore
    that fails leaves the database as it was), and PLAZA_HOME's files with the backup's; marks
    the database as restored, and its unsent replies as maybe sent."""
    from plaza_notifier.restores import marked_restored

    manifest = read_manifest(source)
    check_schema(manifest, source)
    others = await running_clients(url)
    if others:
        raise BackupError(
            f"the database is in use ({len(others)} connections: Plaza is running on it, or "
            "another client): stop Plaza first (Ctrl-C in make run, or systemctl stop plaza), "
            "then restore"
        )
    with tempfile.TemporaryDirectory(prefix="plaza-restore-") as work:
        _extract(source, Path(work))
        script = Path(work) / "restore.sql"
        await _tool(
            pg_tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            f"--file={script}",
            str(Path(work) / DUMP),
        )
        await _tool(
            pg_tool("psql"),
            "--quiet",
            "--no-psqlrc",
            "--single-transaction",
            "--set=ON_ERROR_STOP=1",
            "--command=DROP SCHEMA public CASCADE",
            "--command=CREATE SCHEMA public",
            f"--file={script}",
            f"--command={_MAYBE_SENT}",
            f"--command={marked_restored(manifest.made_at, datetime.now(UTC))}",
            f"--dbname={libpq_url(url)}",
        )
        _put_back(Path(work) / "home", home)
    return manifest


def _extract(source: Path, work: Path) -> None:
    """The dump and the home files, by their names only: nothing else in the archive is
    written anywhere."""
    (work / "home").mkdir()
    with tarfile.open(source, mode="r:") as archive:
        for name in [DUMP, *(f"home/{n}" for n in HOME_FILES)]:
            try:
                member = archive.extractfile(name)
            except KeyError:
                continue  # a home file the backed-up Plaza did not have
            if member is None:
                raise BackupError(f"{source}: its {name} is not a file")
            try:
                with member, (work / name).open("wb") as out:
                    shutil.copyfileobj(member, out)
            except tarfile.TarError as exc:  # changed since its manifest was read
                raise BackupError(f"{source} is cut short ({exc}): {_COPY_AGAIN}") from exc


def _put_back(kept: Path, home: Path) -> None:
    """PLAZA_HOME's files as the backup has them, readable by their owner only. Each is
    written beside its place and renamed over it: a crash leaves the old file or the new one,
    never an empty jwt_secret or admin_key."""
    home.mkdir(parents=True, exist_ok=True)
    for name in HOME_FILES:
        if (kept / name).is_file():
            content = (kept / name).read_bytes()
            partial = home / f".{name}.restoring"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, home / name)
