"""Where the CPU goes: the CPU time (user + system, from /proc through psutil) each process of
the bench spends over a phase, divided by the posts of the phase.

A PostgreSQL server is a postmaster and a backend per connection, so it is measured as a tree:
the postmaster, its live children and the children it has reaped (their time is added to the
postmaster's children_user and children_system when they exit). Kafka is one JVM. A service
is its own process (its threads included).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Watched:
    pid: int
    tree: bool = False  # with its children, live and reaped (a PostgreSQL server)


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """The CPU seconds a process has used so far (0.0 when it is gone: the phase lost it, and
    the figure shows it rather than failing the run)."""
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        used: float = times.user + times.system
        if tree:
            used += times.children_user + times.children_system
            for child in proc.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                except psutil.Error:  # exited in between: in children_* from now on
                    continue
                used += child_times.user + child_times.system
        return used
    except psutil.Error:
        return 0.0


def postmaster_pid(data_dir: Path) -> int:
    """The pid PostgreSQL's postmaster.pid names (its first line)."""
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def kafka_pid(data_dir: Path) -> int:
    """The broker's JVM, from the pid file deploy/local/kafka.sh writes in its data directory."""
    return int((data_dir / "kafka.pid").read_text().strip())


def cpus() -> int:
    """The CPUs this process may run on (what the pipeline shares)."""
    return len(os.sched_getaffinity(0))


class CpuMeter:
    """CPU seconds of named processes between start() and stop()."""

    def __init__(self, watched: Mapping[str, Watched]) -> None:
        self.watched = dict(watched)
        self._started: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(w.pid, tree=w.tree) for name, w in self.watched.items()}

    def start(self) -> None:
        self._started = self._read()

    def stop(self) -> dict[str, float]:
        """Seconds used by each since start()."""
        now = self._read()
        return {name: max(0.0, now[name] - self._started[name]) for name in self.watched}


def per_post_us(used: Mapping[str, float], posts: int) -> dict[str, float]:
    """Microseconds of CPU per post, by process."""
    return {name: seconds / posts * 1e6 for name, seconds in used.items()} if posts else {}


def bound_posts_per_s(us_per_post: float, cores: int) -> float:
    """The most posts a second `cores` CPUs could take at this cost, if they did nothing else."""
    return cores * 1e6 / us_per_post if us_per_post else 0.0
