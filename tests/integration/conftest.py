"""The `bus` fixture: every test using it runs once on the in-memory bus and once on real Kafka;
the session fixture `bluesky_peer` (registered here only: each import starts a peer of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from plaza.bus import Bus
from plaza.bus.kafka import KafkaBus
from plaza.bus.memory import MemoryBus

from tests.peers.bluesky import bluesky_peer_fixture  # noqa: F401  (the fixture `bluesky_peer`)

BusFactory = Callable[[], Bus]


@pytest.fixture(params=["memory", "kafka"])
async def bus_factory(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """Makes bus clients that share one broker (Kafka) or one in-process log (memory)."""
    made: list[Bus] = []
    if request.param == "memory":
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


@pytest.fixture
async def bus(bus_factory: BusFactory) -> AsyncIterator[Bus]:
    b = bus_factory()
    await b.start()
    yield b
    await b.close()
