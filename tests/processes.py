"""Runs Plaza services as real OS processes for crash and end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.infra import SHARED_DATA


class ServiceProcess:
    """`python -m plaza_<name>` (or another module) with its own environment; output goes to a
    log file."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        module: str = "",
        args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.module = module or f"plaza_{name}"
        self.args = list(args)
        self.env = {**os.environ, "PLAZA_LOG_LEVEL": "INFO", **env}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args], env=self.env, stdout=log, stderr=log
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no commit, as when a machine dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.name} did not stop within {timeout}s on SIGTERM") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tasks(self, timeout: float = 5) -> str:
        """What each of the process's asyncio tasks waits on (plaza.service.log_tasks, asked
        with SIGUSR1), for a failure's message: a live service that stopped working says where
        it is stuck."""
        if not self.alive():
            return f"{self.name} is not running"
        assert self.proc is not None
        before = len(self.log())
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dumped = self.log()[before:]
            at = dumped.find("tasks on SIGUSR1")
            if at >= 0:
                time.sleep(0.2)  # the rest of the record
                return self.log()[before + at :]
            time.sleep(0.1)
        return f"{self.name} did not answer SIGUSR1 within {timeout:g} s"


def base_env(bootstrap: str, namespace: str, database_url: str) -> dict[str, str]:
    return {
        "PLAZA_BUS": "kafka",
        "PLAZA_KAFKA_BOOTSTRAP": bootstrap,
        "PLAZA_KAFKA_NAMESPACE": namespace,
        "PLAZA_DATABASE_URL": database_url,
        "PLAZA_CITY_DATA_DIR": str(SHARED_DATA / "barcelona"),
    }


def wait_http(url: str, timeout: float = 30, proc: ServiceProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited during start-up:\n{proc.log()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")
