"""What the social channels' tests share (Mastodon, Bluesky, X). Ingest: the posts read back from
plaza.post-received.v1, a connector run by the test, its stored cursor, `python -m plaza_ingest`
started and restarted. Replies: a citizen's mention routed into a request, its reply deliveries,
and a notifier killed and run again.

`post_received_bus` and `received_posts` are the fixtures `bus` and `received`: a test module
that reads what its connector published imports them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest
from plaza.bus import Bus, Consumer, OutRecord
from plaza.bus.kafka import KafkaBus
from plaza.contracts import (
    TOPICS,
    Envelope,
    Post,
    PostClassified,
    ReplyKind,
    ReplyRequested,
    decode,
    envelope,
)
from plaza.db.models import ConnectorCursor, ReplyDelivery
from plaza_ingest.connectors import ConnectorRunner
from plaza_notifier.delivery import Deliverer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker, free_port
from tests.integration.lifecycle_helpers import as_event, outbox, router
from tests.processes import ServiceProcess, base_env, wait_http

# --- ingest ---------------------------------------------------------------------------------


@pytest.fixture(name="bus")
async def post_received_bus(kafka: KafkaBroker, kafka_namespace: str) -> AsyncIterator[Bus]:
    """Real Kafka, with plaza.post-received.v1 in three partitions."""
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace, join_timeout=30)
    await bus.start()
    await bus.create_topics([TOPICS.POST_RECEIVED.topic], 3)
    yield bus
    await bus.close()


class Received:
    """Reads plaza.post-received.v1 as a consumer group of its own."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self.posts: list[Post] = []

    async def until(self, count: int, timeout: float = 30) -> list[Post]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.posts) < count:
            assert loop.time() < deadline, f"{len(self.posts)} of {count} posts arrived"
            for record in await self._consumer.fetch(100, 0.5):
                self.posts.append(decode(record.topic, record.value).post_received.post)
        return self.posts

    async def settle(self, seconds: float = 2.0) -> list[Post]:
        """What arrives in the next `seconds` too (to see that nothing more does)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            for record in await self._consumer.fetch(100, 0.3):
                self.posts.append(decode(record.topic, record.value).post_received.post)
        return self.posts


@pytest.fixture(name="received")
async def received_posts(bus: Bus) -> AsyncIterator[Received]:
    consumer = await bus.subscribe("test-reader", [TOPICS.POST_RECEIVED.topic])
    yield Received(consumer)
    await consumer.close()


@contextlib.asynccontextmanager
async def running(runner: ConnectorRunner) -> AsyncIterator[asyncio.Task[None]]:
    """The connector runs while the block does, from its first connection on."""
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(runner.connected.wait(), 15)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cursor_of(sessions: async_sessionmaker[AsyncSession], name: str) -> str | None:
    async with sessions() as s:
        return (
            await s.execute(select(ConnectorCursor.cursor).where(ConnectorCursor.connector == name))
        ).scalar_one_or_none()


async def cursor_becomes(
    sessions: async_sessionmaker[AsyncSession], name: str, expected: str
) -> None:
    for _ in range(100):
        if await cursor_of(sessions, name) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"cursor of {name} is {await cursor_of(sessions, name)}, not {expected}")


class Ingest:
    """`python -m plaza_ingest` on a port of its own with the platform's `settings`, started
    (again) by the test once it answers /healthz."""

    def __init__(
        self,
        kafka: KafkaBroker,
        kafka_namespace: str,
        database_url: str,
        log_dir: Path,
        settings: dict[str, str],
    ) -> None:
        self.port = free_port()
        self.env = {
            **base_env(kafka.bootstrap, kafka_namespace, database_url),
            "PLAZA_INGEST_PORT": str(self.port),
            **settings,
        }
        self._log_dir = log_dir

    def start(self) -> ServiceProcess:
        proc = ServiceProcess("ingest", self.env, self._log_dir).start()
        wait_http(f"http://127.0.0.1:{self.port}/healthz", proc=proc)
        return proc


# --- replies --------------------------------------------------------------------------------


class Places:
    """Places 200 m apart from `origin` on: never a duplicate of another request of the test."""

    def __init__(self, latitude: float, longitude: float) -> None:
        self._origin = (latitude, longitude)
        self._count = itertools.count()

    def next(self) -> tuple[float, float]:
        n = next(self._count)
        return (self._origin[0] + 0.002 * (n % 5), self._origin[1] + 0.002 * (n // 5))


async def routed(sessions: async_sessionmaker[AsyncSession], post: PostClassified) -> Envelope:
    """The classified post routed into a request: the reply-requested event of its
    acknowledgement."""
    await router(sessions)(as_event(post))
    [ask] = [
        e
        for e in await outbox(sessions, "reply-requested.v1")
        if e.reply_requested.in_reply_to_post_id == post.post.post_id
    ]
    return ask


def asked(ask: Envelope, reply_id: str, kind: ReplyKind.ValueType, **params: str) -> Envelope:
    """Another reply to the same post (an assignment, a resolution) for the same request."""
    req = ask.reply_requested
    reply = ReplyRequested(
        reply_id=reply_id,
        service_request_id=req.service_request_id,
        kind=kind,
        language=req.language,
        platform=req.platform,
        in_reply_to_post_id=req.in_reply_to_post_id,
        author_handle=req.author_handle,
        params={"service_request_id": req.service_request_id, **params},
    )
    return envelope(reply, key="1", event_id=f"e-{reply_id}", correlation_id="c").envelope


async def delivery(sessions: async_sessionmaker[AsyncSession], reply_id: str) -> ReplyDelivery:
    async with sessions() as s:
        row = await s.get(ReplyDelivery, reply_id)
        assert row is not None
        return row


async def deliver_until(
    deliverer: Deliverer,
    sessions: async_sessionmaker[AsyncSession],
    reply_ids: list[str],
    states: set[str],
    timeout: float = 15,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await deliverer.deliver_due()
        now = {(await delivery(sessions, r)).state for r in reply_ids}
        if now <= states:
            return
        assert loop.time() < deadline, f"deliveries still {now}"
        await asyncio.sleep(0.05)


async def publish_asked(kafka: KafkaBroker, kafka_namespace: str, ask: Envelope) -> None:
    """The reply-requested event on Kafka, for a notifier process to take."""
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    await bus.start()
    await bus.create_topics([TOPICS.REPLY_REQUESTED.topic], 3)
    await bus.publish([OutRecord(TOPICS.REPLY_REQUESTED.topic, "1", ask.SerializeToString())])
    await bus.close()


class HoldsReplies(Protocol):
    """A local platform that can create a reply and hold back its answer (tests/peers)."""

    def hold_replies(self) -> None: ...

    def wait_until_holding(self, timeout: float = 30) -> bool: ...

    def release_replies(self) -> None: ...


async def kill_notifier_while_held(
    server: HoldsReplies, env: dict[str, str], log_dir: Path
) -> None:
    """A notifier SIGKILLed once the server has created its reply but not yet answered."""
    server.hold_replies()  # the post is created, the answer never comes
    notifier = ServiceProcess("notifier", env, log_dir).start()
    try:
        holding = await asyncio.to_thread(server.wait_until_holding, 60)
        assert holding, notifier.log()[-3000:]
        notifier.kill()
    finally:
        server.release_replies()


async def notifier_until_posted(
    sessions: async_sessionmaker[AsyncSession],
    reply_id: str,
    env: dict[str, str],
    log_dir: Path,
) -> ServiceProcess:
    """A notifier run until the reply is posted (30 s at the most), then stopped: its log."""
    notifier = ServiceProcess("notifier", env, log_dir).start()
    try:
        for _ in range(300):
            if (await delivery(sessions, reply_id)).state == "posted":
                break
            await asyncio.sleep(0.1)
    finally:
        notifier.stop()
    return notifier
