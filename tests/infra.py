"""Starts the real infrastructure the integration tests need: a Kafka broker and PostgreSQL.

Both are started by the test session itself (deploy/local/kafka.sh and pgserver), so
`make test` needs nothing running beforehand. PLAZA_TEST_KAFKA_BOOTSTRAP and
PLAZA_TEST_DATABASE_URL point the tests at existing servers instead. A server that cannot be
started fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator
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


def start_kafka(tmp: Path) -> Generator[KafkaBroker, None, None]:
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


@dataclass
class KafkaNode:
    """One node (broker and controller in one JVM) of a test cluster, run by kafka.sh."""

    node_id: int
    port: int
    data_dir: Path
    env: dict[str, str]

    def _script(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "deploy/local/kafka.sh"), action],
            env=self.env,
            capture_output=True,
            text=True,
        )

    def start(self) -> subprocess.Popen[str]:
        """Starts the node in the background (a node opens its port only once the quorum has
        a majority, so the nodes of a cluster start together); wait() the returned process."""
        return subprocess.Popen(
            [str(ROOT / "deploy/local/kafka.sh"), "start"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill(self) -> None:
        """SIGKILL, as when the machine dies: only the JVM kafka.sh started from this node's
        data directory (its pid file, checked against the command line)."""
        pid = int((self.data_dir / "kafka.pid").read_text())
        command = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True
        ).stdout
        assert f" kafka.Kafka {self.data_dir}/server.properties" in command, (
            f"pid {pid} is not node {self.node_id}'s broker: {command!r}"
        )
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"node {self.node_id} (pid {pid}) outlived its SIGKILL")

    def alive(self) -> bool:
        return self._script("status").returncode == 0

    def stop(self) -> None:
        self._script("stop")


@dataclass
class KafkaCluster:
    nodes: list[KafkaNode]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, nodes: list[KafkaNode] | None = None) -> None:
        starting = [(n, n.start()) for n in nodes or self.nodes]
        failed = []
        for node, proc in starting:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                failed.append(f"node {node.node_id}:\n{err}")
        if failed:
            raise RuntimeError("could not start the Kafka cluster:\n" + "\n".join(failed))

    def stop(self) -> None:
        """Kills every node: a cluster's last node waits in vain for a quorum to leave in order
        (30 s, then kafka.sh kills it anyway), and the test cluster's data is thrown away."""
        for node in self.nodes:
            if node.alive():
                node.kill()


def start_kafka_cluster(tmp: Path, size: int = 3, heap: str = "320m") -> Iterator[KafkaCluster]:
    """`size` nodes in KRaft combined mode with a quorum of all of them, each in its own JVM
    with a small heap (kafka.sh's C1-only options), on free ports under `tmp`."""
    ports: list[int] = []
    while len(ports) < size:
        port = free_port_pair()
        if not {port, port + 1} & {q for p in ports for q in (p, p + 1)}:
            ports.append(port)
    voters = ",".join(f"{i}@127.0.0.1:{p + 1}" for i, p in enumerate(ports, 1))
    cluster_id = ""
    while not cluster_id or cluster_id.startswith("-"):  # as Kafka's own ids, never an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    nodes = [
        KafkaNode(
            i,
            p,
            tmp / f"node{i}",
            {
                **os.environ,
                "PLAZA_KAFKA_PORT": str(p),
                "PLAZA_KAFKA_DATA": str(tmp / f"node{i}"),
                "PLAZA_KAFKA_NODE_ID": str(i),
                "PLAZA_KAFKA_VOTERS": voters,
                "PLAZA_KAFKA_CLUSTER_ID": cluster_id,
                "PLAZA_KAFKA_HEAP": heap,
                "PLAZA_KAFKA_PARTITIONS": "3",
            },
        )
        for i, p in enumerate(ports, 1)
    ]
    cluster = KafkaCluster(nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
