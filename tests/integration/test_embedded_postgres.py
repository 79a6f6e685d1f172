"""The embedded PostgreSQL of `make run` and `make up`: who may stop it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from plaza_cli.postgres import stop_server


def running(data: Path) -> bool:
    pid_file = data / "postmaster.pid"
    return pid_file.exists()


def test_a_server_kept_for_make_up_outlives_other_commands_until_stopped() -> None:
    data = Path(tempfile.mkdtemp(prefix="plaza-test-keep-")) / "pgdata"
    attach = "from pathlib import Path; from plaza_cli.postgres import EmbeddedPostgres as E; E(Path({!r}){})"
    try:
        # `plaza postgres start`: a process that starts the server and exits, leaving it running
        subprocess.run(
            [sys.executable, "-c", attach.format(str(data), ", keep_running=True")], check=True
        )
        assert running(data)
        # another command attaches and exits (as `plaza keys create` does): the server stays
        subprocess.run([sys.executable, "-c", attach.format(str(data), "")], check=True)
        assert running(data)
        assert stop_server(data) is True  # `plaza postgres stop`
        assert not running(data)
        assert stop_server(data) is False
    finally:
        stop_server(data)
        shutil.rmtree(data.parent, ignore_errors=True)
