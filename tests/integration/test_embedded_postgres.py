"""The embedded PostgreSQL of `make run` and `make up`: who may stop it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
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


def test_a_power_cut_leaves_no_lock_file_that_stops_the_next_start() -> None:
    """PostgreSQL died with its machine, and after the reboot its old pid is another process's:
    the next start removes the stale lock file, says so, and runs a server (pgserver took the
    other process for the server, and PostgreSQL refused to start over its lock file, until
    someone deleted postmaster.pid by hand)."""
    data = Path(tempfile.mkdtemp(prefix="plaza-test-power-cut-")) / "pgdata"
    attach = (
        "from pathlib import Path; from plaza_cli.postgres import EmbeddedPostgres as E; "
        f"s = E(Path({str(data)!r})); s.ensure_database(); print(s.left_behind); "
        "print(s.psql('SELECT 40 + 2 AS answer;'))"
    )
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        # A first start, and a clean stop as its handle is released.
        subprocess.run([sys.executable, "-c", attach], check=True, capture_output=True)
        lock = data / "postmaster.pid"
        assert not running(data)
        # The lock files a server killed with its machine leaves, its pid now the stranger's.
        started = int(time.time()) - 3600
        lock.write_text(f"{stranger.pid}\n{data}\n{started}\n5432\n{data}\n\n  1 2\nready\n")
        (data / ".handle_pids.json").write_text(f"[{stranger.pid}]")  # the killed make run's
        (data / ".s.PGSQL.5432.lock").write_text(f"{stranger.pid}\n{data}\n{started}\n5432\n")

        again = subprocess.run([sys.executable, "-c", attach], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert " 42\n" in again.stdout, again.stdout
        assert f"whose pid {stranger.pid} is now another process's" in again.stdout
        assert stranger.poll() is None  # the stranger was left alone
        assert not running(data)  # and the server stopped with its last handle, as usual
    finally:
        stranger.kill()
        stranger.wait()
        stop_server(data)
        shutil.rmtree(data.parent, ignore_errors=True)
