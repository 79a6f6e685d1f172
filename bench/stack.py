"""The system under test: a Kafka broker, an embedded PostgreSQL and each Plaza service as its
own process, all on 127.0.0.1, plus a sampler of the services' resident memory."""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from plaza.bus.kafka import KafkaBus
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.db.migrate import upgrade
from plaza_api.auth import Role, create_api_key
from plaza_cli.postgres import EmbeddedPostgres

from tests.infra import KafkaBroker, free_port, start_kafka
from tests.processes import ServiceProcess, base_env, wait_http

PARTITIONS = 3


@dataclass
class Infra:
    home: Path
    kafka: KafkaBroker
    postgres: EmbeddedPostgres

    def database_url(self, name: str) -> str:
        return self.postgres.url(name)


@contextmanager
def infrastructure() -> Iterator[Infra]:
    home = Path(tempfile.mkdtemp(prefix="plaza-bench-"))
    brokers = start_kafka(home)
    kafka = next(brokers)
    postgres = EmbeddedPostgres(home / "pg")
    try:
        yield Infra(home, kafka, postgres)
    finally:
        postgres.stop()
        brokers.close()  # runs start_kafka's finally: stops the broker
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def database_only() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL alone, for `bench.run --api-only`: the gateway needs no Kafka."""
    home = Path(tempfile.mkdtemp(prefix="plaza-bench-"))
    postgres = EmbeddedPostgres(home / "pg")
    try:
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)


def api_env(ingest_url: str) -> dict[str, str]:
    """The gateway's own settings, on top of base_env."""
    return {
        "PLAZA_INGEST_URL": ingest_url,
        "PLAZA_JWT_SECRET": secrets.token_urlsafe(48),
        # The load generator is one client: the per-key limit would only measure the limiter.
        "PLAZA_RATE_LIMIT_PER_MINUTE": "0",
        "PLAZA_ANONYMOUS_RATE_LIMIT_PER_MINUTE": "0",
    }


@contextmanager
def api_alone(postgres: EmbeddedPostgres, log_dir: Path) -> Iterator[Stack]:
    """A fresh database and the gateway as its own process, nothing else."""
    import asyncio

    name = f"bench_{uuid.uuid4().hex[:8]}"
    postgres.ensure_database(name)
    url = postgres.url(name)
    key = asyncio.run(prepare_database(url))
    port = free_port()
    api = ServiceProcess(
        "api",
        {
            **base_env("127.0.0.1:9", "unused.", url),  # the gateway never touches the bus
            **api_env("http://127.0.0.1:9"),
            "PLAZA_PORT": str(port),
        },
        log_dir,
    ).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc=api)
        yield Stack(f"http://127.0.0.1:{port}", key, url, "", {"api": api})
    finally:
        api.stop()


async def create_topics(bootstrap: str, namespace: str) -> None:
    bus = KafkaBus(bootstrap, namespace=namespace)
    await bus.start()
    try:
        await bus.create_topics(
            [t.topic for t in TOPICS.all()] + [t.dead_letter_topic for t in TOPICS.all()],
            PARTITIONS,
        )
    finally:
        await bus.close()


async def prepare_database(url: str) -> str:
    """Migrates a fresh database; returns a city-hall API key (it may read every queue)."""
    await upgrade(url)
    engine = create_engine(url)
    async with session_factory(engine).begin() as session:
        _, key = await create_api_key(session, name="bench", role=Role.CITY_HALL)
    await engine.dispose()
    return key


class RssSampler:
    """Samples each service's resident set size once a second, in a thread."""

    def __init__(self, services: dict[str, ServiceProcess]) -> None:
        self._procs = {
            name: psutil.Process(p.proc.pid) for name, p in services.items() if p.proc is not None
        }
        self.samples: dict[str, list[float]] = {name: [] for name in self._procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        now: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                now[name] = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.samples[name].append(now[name])
        return now

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Stack:
    api: str
    api_key: str
    database_url: str
    namespace: str
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def pid(self, name: str) -> int | None:
        proc = self.services[name].proc
        return proc.pid if proc else None

    def check_alive(self) -> None:
        for name, proc in self.services.items():
            if not proc.alive():
                raise RuntimeError(f"{name} died:\n{proc.log()[-3000:]}")


@contextmanager
def plaza_stack(infra: Infra, log_dir: Path, *, classifiers: int = 1) -> Iterator[Stack]:
    """A fresh database and topic namespace, and ingest, classifier(s), router (with its SLA
    scanner), relay, notifier and api each as its own process."""
    import asyncio

    name = f"bench_{uuid.uuid4().hex[:8]}"
    infra.postgres.ensure_database(name)
    url = infra.database_url(name)
    key = asyncio.run(prepare_database(url))
    namespace = f"bench{uuid.uuid4().hex[:8]}."
    asyncio.run(create_topics(infra.kafka.bootstrap, namespace))
    env = base_env(infra.kafka.bootstrap, namespace, url)
    ingest_port, api_port = free_port(), free_port()
    services: dict[str, ServiceProcess] = {
        "ingest": ServiceProcess("ingest", {**env, "PLAZA_INGEST_PORT": str(ingest_port)}, log_dir),
    }
    for i in range(classifiers):
        label = "classifier" if classifiers == 1 else f"classifier{i + 1}"
        services[label] = ServiceProcess(label, env, log_dir, module="plaza_classifier")
    services["router"] = ServiceProcess("router", env, log_dir)
    services["relay"] = ServiceProcess("relay", env, log_dir, module="plaza_router.relay")
    services["notifier"] = ServiceProcess("notifier", env, log_dir)
    services["api"] = ServiceProcess(
        "api",
        {
            **env,
            **api_env(f"http://127.0.0.1:{ingest_port}"),
            "PLAZA_PORT": str(api_port),
        },
        log_dir,
    )
    for proc in services.values():
        proc.start()
    try:
        wait_http(f"http://127.0.0.1:{ingest_port}/healthz", 60, proc=services["ingest"])
        wait_http(f"http://127.0.0.1:{api_port}/healthz", 60, proc=services["api"])
        yield Stack(f"http://127.0.0.1:{api_port}", key, url, namespace, services)
    finally:
        for proc in services.values():
            try:
                proc.stop()
            except AssertionError as exc:
                print(f"warning: {exc}", file=sys.stderr)
