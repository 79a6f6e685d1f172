"""An embedded PostgreSQL 16 (pgserver) for `make run`, `make up` and tests: no root, no install."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from urllib.parse import quote

DATABASE = "plaza"


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir`; it survives restarts of Plaza."""

    def __init__(self, data_dir: Path, *, keep_running: bool = False) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(
            data_dir.resolve(), cleanup_mode=None if keep_running else "stop"
        )
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
    if not (data_dir / "postmaster.pid").exists():
        return False
    EmbeddedPostgres(data_dir).stop()  # attaching with cleanup "stop" stops it on release
    return True
