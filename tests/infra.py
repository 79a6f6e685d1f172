"""Starts the real infrastructure the integration tests need: a Kafka broker and PostgreSQL.

Both are started by the test session itself (deploy/local/kafka.sh and pgserver), so
`make test` needs nothing running beforehand. PLAZA_TEST_KAFKA_BOOTSTRAP and
PLAZA_TEST_DATABASE_URL point the tests at existing servers instead. A server that cannot be
started fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A port p with p+1 also free (the broker's controller listens on p+1)."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


@dataclass
class KafkaBroker:
    bootstrap: str
    data_dir: Path | None = None
    port: int = 0

    def stop(self) -> None:
        if self.data_dir is not None:
            subprocess.run(
                [str(ROOT / "deploy/local/kafka.sh"), "stop"],
                env={
                    **os.environ,
                    "PLAZA_KAFKA_DATA": str(self.data_dir),
                    "PLAZA_KAFKA_PORT": str(self.port),
                },
                check=False,
                capture_output=True,
            )


def start_kafka(tmp: Path) -> Iterator[KafkaBroker]:
    existing = os.environ.get("PLAZA_TEST_KAFKA_BOOTSTRAP")
    if existing:
        yield KafkaBroker(existing)
        return
    port = free_port_pair()
    data = tmp / "kafka"
    env = {
        **os.environ,
        "PLAZA_KAFKA_PORT": str(port),
        "PLAZA_KAFKA_DATA": str(data),
        "PLAZA_KAFKA_PARTITIONS": "3",
    }
    result = subprocess.run(
        [str(ROOT / "deploy/local/kafka.sh"), "start"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"could not start Kafka for the tests:\n{result.stderr}")
    broker = KafkaBroker(f"127.0.0.1:{port}", data, port)
    try:
        yield broker
    finally:
        broker.stop()
