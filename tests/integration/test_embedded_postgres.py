"""The embedded PostgreSQL of `make run` and `make up`: who may stop it, and its buffers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plaza_cli.postgres import EmbeddedPostgres, stop_server


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


def shared_buffers(server: EmbeddedPostgres) -> str:
    return server.psql("SHOW shared_buffers;").splitlines()[2].strip()


def start_in_another_process(data: Path, buffers: str) -> list[str]:
    """Starts the server as a command would, with PLAZA_PG_SHARED_BUFFERS: its URL, its
    shared_buffers and what is pending (a process of its own, as pgserver keeps one server
    object per data directory and process)."""
    attach = (
        "from pathlib import Path; from plaza_cli.postgres import EmbeddedPostgres as E; "
        f"s = E(Path({str(data)!r})); print(s.url()); "
        "print(s.psql('SHOW shared_buffers;').splitlines()[2].strip()); print(s.pending)"
    )
    run = subprocess.run(
        [sys.executable, "-c", attach],
        capture_output=True,
        text=True,
        env={**os.environ, "PLAZA_PG_SHARED_BUFFERS": buffers},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


def test_the_server_gets_the_shared_buffers_asked_for_and_keeps_its_url() -> None:
    """initdb leaves 128MB, which a storm's database outgrows: the first start sets what
    PLAZA_PG_SHARED_BUFFERS asks (restarting once, on the same socket), a later start with
    another size changes it, and the server still stops with its last handle."""
    data = Path(tempfile.mkdtemp(prefix="plaza-test-buffers-")) / "pgdata"
    try:
        server = EmbeddedPostgres(data, shared_buffers=256 * 1024 * 1024)
        url = server.url()
        assert shared_buffers(server) == "256MB"
        assert server.pending is None
        server.ensure_database()
        server.stop()
        assert not running(data)  # stopped through the restarted postmaster, not the first one

        assert start_in_another_process(data, "160MB") == [url, "160MB", "None"]
        assert not running(data)
    finally:
        stop_server(data)
        shutil.rmtree(data.parent, ignore_errors=True)


def test_a_server_others_use_is_not_restarted_under_them() -> None:
    """`make up`'s services hold the server: a command that asks for other buffers leaves it
    running as it is, says when the size takes effect, and the next start applies it."""
    data = Path(tempfile.mkdtemp(prefix="plaza-test-buffers-busy-")) / "pgdata"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from plaza_cli.postgres import EmbeddedPostgres as E; "
            f"s = E(Path({str(data)!r}), shared_buffers=128 * 1024 * 1024); "
            "print('up', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        pid = (data / "postmaster.pid").read_text().split()[0]
        url, buffers, pending = start_in_another_process(data, "192MB")
        assert buffers == "128MB"
        assert pending == (
            f"shared_buffers is 128MB; 192MB (PLAZA_PG_SHARED_BUFFERS) takes effect when the "
            f"PostgreSQL in {data} next starts (process {holder.pid} uses it now)"
        )
        assert (data / "postmaster.pid").read_text().split()[0] == pid  # not restarted
        holder.communicate("\n", timeout=60)  # its last handle: the server stops
        assert not running(data)
        assert start_in_another_process(data, "192MB") == [url, "192MB", "None"]
    finally:
        holder.kill()
        stop_server(data)
        shutil.rmtree(data.parent, ignore_errors=True)


def test_buffers_the_machine_cannot_give_stop_start_up_and_leave_the_server_as_it_was() -> None:
    """A size beyond what the machine gives: PostgreSQL would not start with it, and every later
    start would fail the same way. The command stops, saying why; the server runs again with
    what it had, and starts with it next time. The machine here is a process limited to 8 GB of
    address space (its servers inherit the limit), asking for 16 GB: the kernel refuses it
    whatever its overcommit policy."""
    data = Path(tempfile.mkdtemp(prefix="plaza-test-buffers-huge-")) / "pgdata"
    limited = (
        "import resource; from pathlib import Path; "
        "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
        "from plaza_cli.postgres import EmbeddedPostgres as E; "
        f"E(Path({str(data)!r}), shared_buffers=16 << 30)"
    )
    try:
        run = subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True)
        assert run.returncode == 1, run.stderr[-3000:]
        said = run.stderr.strip().splitlines()[-1]
        assert said.startswith(
            "PLAZA_PG_SHARED_BUFFERS: PostgreSQL cannot start with shared_buffers 16GB on this "
            "machine (could not map anonymous shared memory"
        ), run.stderr[-3000:]
        assert said.endswith("; it runs with 128MB again")
        assert not running(data)  # back as it was, then stopped with its last handle
        # on the same machine it starts again, with what it had: 16GB was not left behind
        again = subprocess.run(
            [sys.executable, "-c", limited.replace("16 << 30", "128 << 20")],
            capture_output=True,
            text=True,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert start_in_another_process(data, "128MB")[1:] == ["128MB", "None"]
    finally:
        stop_server(data)
        shutil.rmtree(data.parent, ignore_errors=True)
