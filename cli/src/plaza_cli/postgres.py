"""An embedded PostgreSQL 16 (pgserver) for `make run`, `make up` and tests: no root, no install."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from urllib.parse import quote

DATABASE = "plaza"
KEEP_RUNNING = ".plaza_keep_running"


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir`; it survives restarts of Plaza."""

    def __init__(self, data_dir: Path, *, keep_running: bool = False) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        # What an unclean stop left behind, said by whoever starts the server again.
        gone = _forget_a_dead_server(data_dir)
        handles = _forget_dead_handles(data_dir, server_runs=_server_runs(data_dir))
        self.left_behind = [found for found in (handles, gone) if found]
        kept = data_dir / KEEP_RUNNING
        # A server that `plaza postgres start` keeps running for `make up` outlives whoever else
        # attaches to it (`plaza keys create`, say); only `plaza postgres stop` stops it.
        keep = keep_running or kept.exists()
        self._server = get_server(data_dir.resolve(), cleanup_mode=None if keep else "stop")
        if keep_running:
            kept.touch()  # after get_server: initdb wants an empty directory
        self.data_dir = data_dir

    def socket_dir(self) -> str:
        uri: str = self._server.get_uri()
        return uri.split("host=", 1)[1]

    def ensure_database(self, name: str = DATABASE) -> None:
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{name}";')

    def url(self, name: str = DATABASE) -> str:
        """The SQLAlchemy URL (asyncpg over the server's Unix socket)."""
        return f"postgresql+asyncpg://postgres@/{name}?host={quote(self.socket_dir())}"

    def psql(self, command: str) -> str:
        out: str = self._server.psql(command)
        return out

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.cleanup()


def stop_server(data_dir: Path) -> bool:
    """Stops a server left running by `plaza postgres start` in data_dir; False if none ran."""
    (data_dir / KEEP_RUNNING).unlink(missing_ok=True)
    if not (data_dir / "postmaster.pid").exists():
        return False
    EmbeddedPostgres(data_dir).stop()  # attaching with cleanup "stop" stops it on release
    return True


def _server_runs(data_dir: Path) -> bool:
    """Whether postmaster.pid names a process that exists (a stale file of another process's
    pid is gone by now: _forget_a_dead_server)."""
    try:
        return _alive(int((data_dir / "postmaster.pid").read_text().splitlines()[0]))
    except (FileNotFoundError, IndexError, ValueError):
        return False


def _forget_dead_handles(data_dir: Path, *, server_runs: bool = True) -> str | None:
    """pgserver stops the server when its last handle is released, counting handles by pid in
    a file. A process that was killed never released its handle, so the server would never stop:
    drop the pids of processes that no longer exist, and say which. With no server running,
    every pid is one of a process that used a server gone since: after a reboot, one that is
    now another process's would keep the next server running after Plaza stops."""
    handles = data_dir / ".handle_pids.json"
    if not handles.exists():
        return None
    try:
        pids = [int(p) for p in json.loads(handles.read_text())]
    except (ValueError, TypeError):
        pids = []
    alive = [p for p in pids if server_runs and _alive(p)]
    handles.write_text(json.dumps(alive))
    dead = sorted(set(pids) - set(alive))
    if not dead:
        return None
    return (
        f"process {', '.join(map(str, dead))}, which used this PostgreSQL, ended without stopping "
        "(a kill -9, a crash or a power cut)"
    )


# How far a postmaster's start time in postmaster.pid may be from its process's creation.
_START_SLACK_SECONDS = 5.0


def _forget_a_dead_server(data_dir: Path) -> str | None:
    """Removes the lock files of a server that no longer runs, when their pid is now another
    process's. After a power cut and a reboot, the pid in postmaster.pid often belongs to
    something else: pgserver would take that for the server and connect to nothing, and
    PostgreSQL would refuse to start ("lock file already exists"), until someone deleted the
    file by hand. A pid no process has is left to PostgreSQL, which takes such a file over."""
    import psutil

    lock = data_dir / "postmaster.pid"
    try:
        lines = lock.read_text().splitlines()
        pid, started = int(lines[0]), float(lines[2])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        process = psutil.Process(pid)
        if (
            "postgres" in process.name()
            and abs(process.create_time() - started) <= _START_SLACK_SECONDS
        ):
            return None  # the server itself, still running
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        pass  # another user's process: the server runs as ours, or as pgserver's user
    for stale in [lock, *data_dir.glob(".s.PGSQL.*")]:
        stale.unlink(missing_ok=True)
    return (
        f"PostgreSQL had stopped without removing its lock file, whose pid {pid} is now another "
        "process's (a reboot after a power cut): removed it"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
