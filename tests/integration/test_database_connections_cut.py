"""The workers and the relay run without a ping per transaction (plaza.db.create_engine's
pre_ping=False): when PostgreSQL closes their connections (a restart, a failover, an idle
timeout), the transaction that meets a dead connection fails, is retried on a new one, and
nothing is lost, dead-lettered or done twice. Here every connection of the test's database is
terminated while a router worker and an outbox relay are running."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from plaza.bus import Bus, OutRecord
from plaza.contracts import TOPICS, envelope
from plaza.db import create_engine, session_factory
from plaza.db.models import OutboxRecord, ProcessedEvent
from plaza.outbox import Relay, stage
from plaza.worker import Worker
from plaza_router.handler import GROUP
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import Postgres
from tests.integration.lifecycle_helpers import as_event, classified, router
from tests.integration.test_bus_contract import drain

pytestmark = [pytest.mark.postgres]


UNPUBLISHED = select(func.count()).select_from(OutboxRecord)  # published events are deleted


def database_name(database_url: str) -> str:
    return database_url.split("?", 1)[0].rsplit("/", 1)[1]


async def cut_connections(postgres: Postgres, database_url: str) -> int:
    """Terminates every server process serving the test's database; how many there were."""
    name = database_name(database_url)
    cut = await postgres.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    assert isinstance(cut, int)
    return cut


async def until_count(
    sessions: async_sessionmaker[AsyncSession], stmt: Any, expected: int, timeout: float = 30.0
) -> None:
    """Waits until `stmt` (a count) reads `expected`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with sessions() as s:
            found = await s.scalar(stmt)
        if found == expected:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{found} of {expected}"
        await asyncio.sleep(0.1)


def posts(start: int, n: int) -> list[OutRecord]:
    out = []
    for i in range(start, start + n):
        latlon = (41.38 + 0.002 * i, 2.17)  # far apart: each opens a request of its own
        event = as_event(classified(f"cut{i}", latlon=latlon))
        out.append(
            OutRecord(TOPICS.POST_CLASSIFIED.topic, f"mastodon:cut{i}", event.SerializeToString())
        )
    return out


async def test_a_router_worker_outlives_its_connections(
    bus: Bus, postgres: Postgres, database_url: str
) -> None:
    engine = create_engine(database_url, pre_ping=False)
    sessions = session_factory(engine)
    watcher = create_engine(database_url)  # the test's own reads and writes: pinged
    watching = session_factory(watcher)
    topic = TOPICS.POST_CLASSIFIED
    await bus.create_topics([topic.topic, topic.dead_letter_topic], 3)
    dead = await bus.subscribe("cut-dlq", [topic.dead_letter_topic])
    worker = Worker.in_batches(
        bus, group=GROUP, topics=[topic], handler=router(sessions), batch_size=10
    )
    running = asyncio.create_task(worker.run())
    routed = select(func.count()).select_from(ProcessedEvent)
    try:
        await bus.publish(posts(0, 30))
        await until_count(watching, routed, 30)
        assert await cut_connections(postgres, database_url) >= 1  # the worker's pool was cut
        await bus.publish(posts(30, 30))
        await until_count(watching, routed, 60)
    finally:
        worker.stop()
        await running
    assert await dead.fetch(100, 1.0) == []  # none was dead-lettered
    await dead.close()
    await engine.dispose()
    await watcher.dispose()


async def test_the_relay_outlives_its_connections(
    bus: Bus, postgres: Postgres, database_url: str
) -> None:
    engine = create_engine(database_url, pool_size=2, pre_ping=False)
    watcher = create_engine(database_url)  # the test's own reads and writes: pinged
    watching = session_factory(watcher)
    topic = TOPICS.POST_CLASSIFIED
    await bus.create_topics([topic.topic], 3)
    out = await bus.subscribe("cut-relay-out", [topic.topic])

    async def add(start: int, n: int) -> None:
        async with watching.begin() as s:
            stage(
                s,
                [
                    envelope(
                        classified(f"relay{i}"),
                        key=f"k{i}",
                        event_id=f"relay-{i}",
                        correlation_id="c",
                    )
                    for i in range(start, start + n)
                ],
            )

    relay = Relay(bus, engine, busy_interval=0.01, idle_interval=0.02)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.leading.wait(), 10)
        await add(0, 10)
        await until_count(watching, UNPUBLISHED, 0)
        assert await cut_connections(postgres, database_url) >= 1
        await add(10, 10)
        await until_count(watching, UNPUBLISHED, 0)
    finally:
        relay.stop()
        await running
    ids = {r.value for r in await drain(out, 20)}
    assert len(ids) == 20  # every event published, each once (nothing else was staged)
    await out.close()
    await engine.dispose()
    await watcher.dispose()


async def test_a_relay_whose_lock_dies_stops_publishing_and_one_relay_leads(
    bus: Bus, postgres: Postgres, database_url: str
) -> None:
    """The relay lock lives as long as the session that took it. When that session ends (here
    terminated; a PostgreSQL restart does the same), the relay that held it stops publishing
    and competes again, so a waiting relay taking the lock never publishes beside it."""
    name = database_name(database_url)
    holders = (
        "SELECT coalesce(array_agg(pid), '{}') FROM pg_locks WHERE locktype = 'advisory'"
        f" AND granted AND database = (SELECT oid FROM pg_database WHERE datname = '{name}')"
    )
    engines = [create_engine(database_url, pool_size=2, pre_ping=False) for _ in range(2)]
    watcher = create_engine(database_url)
    watching = session_factory(watcher)
    await bus.create_topics([TOPICS.POST_CLASSIFIED.topic], 3)
    first, second = (
        Relay(bus, e, busy_interval=0.01, idle_interval=0.02, lock_check_interval=0.2)
        for e in engines
    )
    running = [asyncio.create_task(first.run())]
    try:
        await asyncio.wait_for(first.leading.wait(), 10)
        running.append(asyncio.create_task(second.run()))
        await asyncio.sleep(1.5)
        assert not second.leading.is_set()  # one relay at a time
        held = await postgres.fetchval(holders)
        assert isinstance(held, list) and len(held) == 1
        assert await postgres.fetchval(f"SELECT pg_terminate_backend({held[0]})")
        await asyncio.sleep(3)  # the second relay tried again at least twice meanwhile
        for _ in range(10):
            assert [first.leading.is_set(), second.leading.is_set()].count(True) == 1
            held = await postgres.fetchval(holders)
            assert isinstance(held, list) and len(held) == 1
            await asyncio.sleep(0.1)
        async with watching.begin() as s:
            stage(s, [envelope(classified("after"), key="k", event_id="after", correlation_id="c")])
        await until_count(watching, UNPUBLISHED, 0)
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(*running)
    for e in (*engines, watcher):
        await e.dispose()
