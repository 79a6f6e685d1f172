"""The `bus` fixture: every test using it runs once on the in-memory bus and once on real Kafka
(and, where a test module asks for it, on the embedded mode's JournalBus);
the session fixture `bluesky_peer` (registered here only: each import starts a peer of its own)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from plaza.bus import Bus
from plaza.bus.journal import JournalBus
from plaza.bus.kafka import KafkaBus
from plaza.bus.memory import MemoryBus
from plaza.db import create_engine

from tests.conftest import TEMPLATE_DB, Postgres
from tests.peers.bluesky import bluesky_peer_fixture  # noqa: F401  (the fixture `bluesky_peer`)

BusFactory = Callable[[], Bus]


@pytest.fixture(params=["memory", "kafka"])
async def bus_factory(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """Makes bus clients that share one broker (Kafka) or one in-process log (memory; journal,
    on a database of its own). A module runs on the journal too with
    `pytest.mark.parametrize("bus_factory", ["memory", "journal", "kafka"], indirect=True)`."""
    made: list[Bus] = []
    engine = None
    if request.param in ("memory", "journal"):
        if request.param == "journal":
            postgres: Postgres = request.getfixturevalue("postgres")
            database = f"test_{uuid.uuid4().hex[:12]}"
            await postgres.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE_DB}"')
            engine = create_engine(postgres.url(database))
            shared: Bus = JournalBus(engine, default_partitions=3)
        else:
            shared = MemoryBus(default_partitions=3)

        def factory() -> Bus:
            return shared
    else:
        broker = request.getfixturevalue("kafka")
        namespace = request.getfixturevalue("kafka_namespace")

        def factory() -> Bus:
            bus = KafkaBus(broker.bootstrap, namespace=namespace, join_timeout=30)
            made.append(bus)
            return bus

    yield factory
    for bus in made:
        await bus.close()
    if engine is not None:
        await engine.dispose()
        await postgres.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
async def bus(bus_factory: BusFactory) -> AsyncIterator[Bus]:
    b = bus_factory()
    await b.start()
    yield b
    await b.close()
