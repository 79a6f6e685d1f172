"""`make down` after a crash: a pid file left behind whose number now belongs to another process
stops nothing but the stack's own (down.sh and kafka.sh sent SIGTERM to whatever had the pid)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_down_leaves_a_process_that_took_a_stale_pid_alone(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        for name in ("api", "ingest", "classifier", "router", "relay", "notifier"):
            (run / f"{name}.pid").write_text(f"{stranger.pid}\n")
        (tmp_path / "kafka").mkdir()
        (tmp_path / "kafka" / "kafka.pid").write_text(f"{stranger.pid}\n")
        env = {**os.environ, "PLAZA_HOME": str(tmp_path)}
        done = subprocess.run(
            [ROOT / "deploy/local/down.sh"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert stranger.poll() is None, "down.sh stopped a process that was not the stack's"
        assert "stopped api" not in done.stdout
        assert not list(run.glob("*.pid")) and not (tmp_path / "kafka" / "kafka.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()
