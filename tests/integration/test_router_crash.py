"""The router dies by SIGKILL mid-stream on real Kafka and PostgreSQL: nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from plaza.bus import OutRecord
from plaza.bus.kafka import KafkaBus
from plaza.contracts import TOPICS, decode
from plaza.db.models import ServiceRequest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.test_bus_contract import drain
from tests.integration.test_database import as_event, classified
from tests.processes import ServiceProcess, base_env

POSTS = 3000


async def requests_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(ServiceRequest))).scalar_one())


async def wait_for_count(
    sessions: async_sessionmaker[AsyncSession],
    router: ServiceProcess,
    at_least: int,
    timeout: float = 90,
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (n := await requests_count(sessions)) < at_least:
        assert router.alive(), f"router exited:\n{router.log()[-3000:]}"
        assert loop.time() < deadline, (
            f"only {n} requests after {timeout}s:\n{router.log()[-3000:]}"
        )
        await asyncio.sleep(0.02)
    return n


async def test_router_killed_mid_stream_loses_nothing_and_creates_nothing_twice(
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    await bus.start()
    await bus.create_topics([t.topic for t in TOPICS.all()], 3)
    events = [
        as_event(classified(f"post-{n}", district=random.choice(["01", "06", ""])))
        for n in range(POSTS)
    ]
    await bus.publish(
        [
            OutRecord(TOPICS.POST_CLASSIFIED.topic, f"mastodon:post-{n}", e.SerializeToString())
            for n, e in enumerate(events)
        ]  # type: ignore[attr-defined]
    )
    router = ServiceProcess(
        "router", base_env(kafka.bootstrap, kafka_namespace, database_url), tmp_path
    ).start()
    kills = []
    try:
        for fraction in (0.2, 0.55):
            seen = await wait_for_count(sessions, router, int(POSTS * fraction))
            await asyncio.sleep(random.uniform(0, 0.05))
            router.kill()
            kills.append(seen)
            router.start()
        await wait_for_count(sessions, router, POSTS, timeout=120)
        await asyncio.sleep(2)  # anything still in flight would show up as an extra request
        assert await requests_count(sessions) == POSTS
        assert all(k < POSTS for k in kills), f"the router finished before it was killed: {kills}"
        async with sessions() as s:
            distinct = (
                await s.execute(select(func.count(func.distinct(ServiceRequest.source_post_id))))
            ).scalar_one()
        assert distinct == POSTS

        # Every request was announced; redeliveries re-announce with the same event id.
        reader = await bus.subscribe("crash-test-reader", [TOPICS.REQUEST_CREATED.topic])
        records = await drain(reader, POSTS, timeout=60)
        await asyncio.sleep(1)
        records += await reader.fetch(10_000, 1.0)
        ids = {decode(r.topic, r.value).event_id for r in records}
        assert len(ids) == POSTS
        await reader.close()
        assert router.stop() == 0, router.log()[-3000:]
    finally:
        if router.alive():
            router.kill()
        await bus.close()
