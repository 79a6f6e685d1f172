"""An embedded PostgreSQL 16 (pgserver) for `make run`, `make up` and tests: no root, no install."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import time
import warnings
from pathlib import Path
from urllib.parse import quote

from plaza.settings import SettingsError, load
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

DATABASE = "plaza"
KEEP_RUNNING = ".plaza_keep_running"

_MB = 1024 * 1024
_PAGE = 8192
_MOST_PAGES = 2**30 - 1  # shared_buffers' bound, in pages
_SIZE = re.compile(r"(?P<number>[1-9][0-9]*)\s*(?P<unit>kB|MB|GB)")
_UNITS = {"kB": 1024, "MB": _MB, "GB": 1024 * _MB}
# PostgreSQL's own default, and the most "auto" gives (a storm's database of a few hundred MB
# stays in memory; a town's never comes near it, and buffers cost memory only once used).
_LEAST_BUFFERS = 128 * _MB
_MOST_AUTO_BUFFERS = 1024 * _MB


class EmbeddedPostgresSettings(BaseSettings):
    """The embedded server's own settings (`make run`, `make up`, the bench, the tests)."""

    model_config = SettingsConfigDict(env_prefix="PLAZA_", extra="ignore", frozen=True)

    pg_shared_buffers: str = Field(
        default="auto",
        description="PLAZA_PG_SHARED_BUFFERS: the embedded PostgreSQL's shared_buffers, such as "
        "512MB or 2GB; auto: an eighth of the machine's memory, between 128MB and 1GB",
    )

    @field_validator("pg_shared_buffers")
    @classmethod
    def _size(cls, value: str) -> str:
        if value.strip() != "auto":
            _bytes(value)
        return value.strip()

    def shared_buffers_bytes(self) -> int:
        if self.pg_shared_buffers != "auto":
            return _bytes(self.pg_shared_buffers)
        import psutil

        eighth = int(psutil.virtual_memory().total) // 8 // _MB * _MB
        return max(_LEAST_BUFFERS, min(_MOST_AUTO_BUFFERS, eighth))


def _bytes(size: str) -> int:
    """PostgreSQL's notation for a memory size ("512MB"), in bytes, in whole pages of 8kB as
    PostgreSQL keeps it (1001kB is 1000kB); from 128kB (16 pages) to PostgreSQL's most."""
    match = _SIZE.fullmatch(size.strip())
    if match is None:
        raise ValueError(f"{size!r} is not a size: a whole number and kB, MB or GB, such as 512MB")
    number = int(match["number"]) * _UNITS[match["unit"]] // _PAGE * _PAGE
    if number < 16 * _PAGE:
        raise ValueError(f"{size!r} is less than PostgreSQL's least, 128kB")
    if number > _MOST_PAGES * _PAGE:
        raise ValueError(f"{size!r} is more than PostgreSQL's most, {_MOST_PAGES * 8}kB")
    return number


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir`; it survives restarts of Plaza."""

    def __init__(
        self, data_dir: Path, *, keep_running: bool = False, shared_buffers: int | None = None
    ) -> None:
        """shared_buffers (bytes): PLAZA_PG_SHARED_BUFFERS's when None (a bad one stops
        start-up before the server starts)."""
        if shared_buffers is None:
            settings = load(EmbeddedPostgresSettings, warn_unknown=False)
            shared_buffers = settings.shared_buffers_bytes()
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
        self.pending = self._configure_buffers(shared_buffers)

    def _configure_buffers(self, wanted: int) -> str | None:
        """Gives the server `wanted` bytes of shared buffers, restarting it once when they
        change (the first start of a data directory, or a new PLAZA_PG_SHARED_BUFFERS): initdb
        leaves PostgreSQL's 128MB, which a storm's database outgrows (the bench's fourth burst
        of 40,000 posts read 290,000 blocks from outside them). A server that others use
        (`make up`'s services) is not restarted under them: the size waits for a start with
        no one else on the server, and the returned line says so."""
        have = self._bytes_of("current_setting('shared_buffers')")
        if have == wanted:
            return None
        others = [p for p in _handles(self.data_dir) if p != os.getpid() and _alive(p)]
        if others:
            return (
                f"shared_buffers is {_size(have)}; {_size(wanted)} (PLAZA_PG_SHARED_BUFFERS) takes "
                f"effect when the PostgreSQL in {self.data_dir} next starts (process "
                f"{', '.join(map(str, others))} uses it now)"
            )
        self.psql(f"ALTER SYSTEM SET shared_buffers = '{wanted // 1024}kB';")
        failed = self._pg_ctl("-m", "fast", "restart")
        if not failed and (now := self._bytes_of("current_setting('shared_buffers')")) != wanted:
            failed = f"it restarted with {_size(now)}"
        if failed:
            # Too much for the machine: back as it was, running, and say why.
            self._keep_buffers(have)
            if again := self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir()}", "start"):
                raise RuntimeError(f"PostgreSQL in {self.data_dir} did not start again: {again}")
            raise SettingsError(
                f"PLAZA_PG_SHARED_BUFFERS: PostgreSQL cannot start with shared_buffers "
                f"{_size(wanted)} on this machine ({failed}); it runs with {_size(have)} again"
            )
        log.info(
            "PostgreSQL in %s: shared_buffers %s, was %s", self.data_dir, _size(wanted), _size(have)
        )
        return None

    def _bytes_of(self, expression: str) -> int:
        out = self.psql(f"SELECT 'bytes:' || pg_size_bytes({expression});")
        match = re.search(r"bytes:(\d+)", out)
        if match is None:
            raise RuntimeError(f"PostgreSQL in {self.data_dir} did not say {expression}: {out!r}")
        return int(match[1])

    def _pg_ctl(self, *args: str) -> str | None:
        """Runs pg_ctl as the server's user, logging where pgserver's start does, and waits for
        the server to be ready: None, or why it is not (the log's FATAL line). A restart keeps
        the options pgserver started the server with (its socket directory, no TCP:
        postmaster.opts), so the URL stays the same."""
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.utils import PostmasterInfo

        server = self._server
        pg_ctl = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w"]
        logged = server.log.stat().st_size if server.log.exists() else 0
        done = subprocess.run(
            [*pg_ctl, "-l", str(server.log), *args],
            user=server.system_user,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            with server.log.open(errors="replace") as log_file:
                log_file.seek(logged)
                fatal = [line for line in log_file.read().splitlines() if "FATAL:" in line]
            why = fatal[-1].split("FATAL:", 1)[1] if fatal else done.stderr or done.stdout
            return why.strip()
        deadline = time.monotonic() + 30
        while True:
            info = PostmasterInfo.read_from_pgdata(server.pgdata)
            if info is not None and info.is_running() and info.status == "ready":
                server._postmaster_info = info  # pgserver stops the server by this at the end
                return None
            if time.monotonic() > deadline:
                return f"not ready after 30 s: see {server.log}"
            time.sleep(0.1)

    def _keep_buffers(self, size: int) -> None:
        """Writes shared_buffers into postgresql.auto.conf as ALTER SYSTEM would, with the
        server down (ALTER SYSTEM needs it running)."""
        auto = self._server.pgdata / "postgresql.auto.conf"
        kept = [
            line
            for line in auto.read_text().splitlines()
            if not line.strip().startswith("shared_buffers")
        ]
        auto.write_text("\n".join([*kept, f"shared_buffers = '{size // 1024}kB'", ""]))

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


def _size(number: int) -> str:
    """Bytes as PostgreSQL writes a size: 1GB, 512MB, 1536kB."""
    for unit in ("GB", "MB"):
        if number % _UNITS[unit] == 0:
            return f"{number // _UNITS[unit]}{unit}"
    return f"{number // 1024}kB"


def _handles(data_dir: Path) -> list[int]:
    """The pids pgserver counts as the server's users."""
    try:
        return [int(p) for p in json.loads((data_dir / ".handle_pids.json").read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        return []


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
    pids = _handles(data_dir)
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
