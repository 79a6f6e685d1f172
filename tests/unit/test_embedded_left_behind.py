"""What a `make run` killed with kill -9 (or with its machine) leaves in its pgdata is said by the
next start, which went on as if nothing had happened."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from plaza_cli.postgres import _forget_a_dead_server, _forget_dead_handles


def test_a_handle_of_a_process_that_is_gone_is_dropped_and_named(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    handles = tmp_path / ".handle_pids.json"
    handles.write_text(json.dumps([os.getpid(), gone.pid]))
    said = _forget_dead_handles(tmp_path)
    assert said == (
        f"process {gone.pid}, which used this PostgreSQL, ended without stopping "
        "(a kill -9, a crash or a power cut)"
    )
    assert json.loads(handles.read_text()) == [os.getpid()]
    assert _forget_dead_handles(tmp_path) is None  # a clean start says nothing


def test_a_lock_file_of_a_pid_no_process_has_is_left_to_postgresql(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = tmp_path / "postmaster.pid"
    lock.write_text(f"{gone.pid}\n{tmp_path}\n1700000000\n5432\n")
    assert _forget_a_dead_server(tmp_path) is None
    assert lock.exists()  # PostgreSQL takes over a lock file whose process is gone


def test_with_no_server_running_every_handle_is_a_dead_ones(tmp_path: Path) -> None:
    """After a power cut and a reboot, a handle's pid may be another process's: with no server
    running, it is no handle (it kept the next server running after Plaza had stopped)."""
    handles = tmp_path / ".handle_pids.json"
    handles.write_text(json.dumps([os.getpid()]))  # alive, as a reboot's stranger would be
    said = _forget_dead_handles(tmp_path, server_runs=False)
    assert said is not None and said.startswith(f"process {os.getpid()}, which used this")
    assert json.loads(handles.read_text()) == []
