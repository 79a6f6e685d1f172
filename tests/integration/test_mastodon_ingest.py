"""The Mastodon connector against a local Mastodon (tests/peers/mastodon.py), real Kafka and
PostgreSQL: live mentions and hashtags, a dropped stream caught up through REST from the last
id, and a restart of `python -m plaza_ingest` from its durable cursor (no miss, no repeat)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from plaza.bus import Bus, Consumer
from plaza.bus.kafka import KafkaBus
from plaza.contracts import TOPICS, Post, decode
from plaza.db.models import ConnectorCursor
from plaza.social import MastodonAccount
from plaza.worker import RetryPolicy
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.mastodon import MastodonStream, Source
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker, free_port
from tests.peers.mastodon import FakeMastodon
from tests.processes import ServiceProcess, base_env, wait_http

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    server = FakeMastodon().start()
    yield server
    server.stop()


@pytest.fixture
async def bus(kafka: KafkaBroker, kafka_namespace: str) -> AsyncIterator[Bus]:
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace, join_timeout=30)
    await bus.start()
    await bus.create_topics([TOPICS.POST_RECEIVED.topic], 3)
    yield bus
    await bus.close()


def account(server: FakeMastodon, hashtags: tuple[str, ...] = ()) -> MastodonAccount:
    return MastodonAccount(
        base_url=server.base_url,
        streaming_url=server.base_url.replace("http://", "ws://"),
        token=SecretStr(server.token),
        hashtags=hashtags,
    )


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


@pytest.fixture
async def received(bus: Bus) -> AsyncIterator[Received]:
    consumer = await bus.subscribe("test-reader", [TOPICS.POST_RECEIVED.topic])
    yield Received(consumer)
    await consumer.close()


@contextlib.asynccontextmanager
async def running(runner: ConnectorRunner) -> AsyncIterator[asyncio.Task[None]]:
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


async def test_mentions_and_hashtags_stream_in_with_text_and_media(
    mastodon: FakeMastodon,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = mastodon.citizen_posts("Abans de Plaza: no s'ha de publicar")
    async with httpx.AsyncClient() as http:
        mentions = MastodonStream(account(mastodon), Source.MENTIONS, http)
        tag = MastodonStream(account(mastodon), Source.HASHTAG, http, hashtag="BCNincidencies")
        async with (
            running(ConnectorRunner(mentions, bus, sessions)),
            running(ConnectorRunner(tag, bus, sessions)),
        ):
            photo = f"{mastodon.base_url}/files/fanal.jpg"
            mention = mastodon.citizen_posts(
                "El fanal del carrer de Verdi no funciona & fa fosc", media=(photo,)
            )
            tagged = mastodon.citizen_posts(
                "Contenidor cremat a Sants",
                username="pere",
                mention=False,
                tags=("bcnincidencies",),
            )
            posts = await received.until(2)
            # each cursor follows its post once the bus has acknowledged it
            await cursor_becomes(sessions, mentions.name, mastodon.notifications[-1]["id"])
            await cursor_becomes(sessions, tag.name, tagged["id"])
    by_id = {p.post_id: p for p in posts}
    assert set(by_id) == {mention["id"], tagged["id"]}  # not the one from before the start
    assert old["id"] not in by_id
    first = by_id[mention["id"]]
    assert first.platform == "mastodon" and first.channel == "stream"
    assert first.text == "@bcn El fanal del carrer de Verdi no funciona & fa fosc"
    assert first.author_handle == f"@marta@{mastodon.host}"
    assert list(first.media_urls) == [photo]
    assert first.language == "ca" and first.public_url == mention["url"]
    assert not first.HasField("latitude")  # Mastodon has no geotags
    assert by_id[tagged["id"]].text == "Contenidor cremat a Sants #bcnincidencies"
    auth = {r.headers["authorization"] for r in mastodon.requests}
    assert auth == {"Bearer city-token"}


async def test_a_dropped_stream_reconnects_and_catches_up_from_the_last_id(
    mastodon: FakeMastodon,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with httpx.AsyncClient() as http:
        mentions = MastodonStream(account(mastodon), Source.MENTIONS, http)
        runner = ConnectorRunner(mentions, bus, sessions, backoff=RetryPolicy(base_delay=0.3))
        async with running(runner):
            first = mastodon.citizen_posts("Primer: soroll al carrer Gran")
            await received.until(1)
            last_id = mastodon.notifications[-1]["id"]
            # The stream drops; two mentions are posted before the connector is back.
            mastodon.drop_streams()
            gap = [mastodon.citizen_posts(f"Durant el tall {i}") for i in range(2)]
            posts = await received.until(3)
            await asyncio.wait_for(runner.connected.wait(), 15)
            after = mastodon.citizen_posts("Després: ja torna a funcionar")
            posts = await received.until(4)
            posts = await received.settle(1.5)
    assert runner.connections >= 2
    catch_up = [r for r in mastodon.seen("GET", "/api/v1/notifications") if "min_id" in r.query]
    assert any(f"min_id={last_id}" in r.query for r in catch_up), [r.query for r in catch_up]
    ids = [p.post_id for p in posts]
    assert sorted(ids) == sorted([first["id"], *(s["id"] for s in gap), after["id"]])
    assert Counter(ids).most_common(1)[0][1] == 1  # nothing twice


async def test_ingest_restarts_from_its_durable_cursor_missing_and_repeating_nothing(
    mastodon: FakeMastodon,
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    port = free_port()
    token_file = tmp_path / "mastodon-token"
    token_file.write_text(mastodon.token + "\n")
    env = {
        **base_env(kafka.bootstrap, kafka_namespace, database_url),
        "PLAZA_INGEST_PORT": str(port),
        "PLAZA_MASTODON_BASE_URL": mastodon.base_url,
        "PLAZA_MASTODON_TOKEN_FILE": str(token_file),
        "PLAZA_MASTODON_HASHTAGS": "bcnincidencies",
    }
    name = f"mastodon:{mastodon.host}:mentions"

    def start() -> ServiceProcess:
        proc = ServiceProcess("ingest", env, tmp_path).start()
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        return proc

    async def streaming() -> None:
        for _ in range(150):
            if mastodon.stream_count() == 2:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the ingest process did not open its two streams")

    ingest = start()
    try:
        await streaming()
        before = mastodon.citizen_posts("Abans de l'aturada")
        await received.until(1)
        await cursor_becomes(sessions, name, mastodon.notifications[-1]["id"])
        ingest.kill()
        while_down = [
            mastodon.citizen_posts("Mentre estava aturat"),
            mastodon.citizen_posts("Amb etiqueta", mention=False, tags=("bcnincidencies",)),
            mastodon.citizen_posts(
                "També aturat, mencionant i amb etiqueta", tags=("bcnincidencies",)
            ),
        ]
        ingest = start()
        await received.until(4)
        await streaming()
        live = mastodon.citizen_posts("Després de tornar")
        await received.until(5)
        posts = await received.settle(2)
    finally:
        ingest.stop()
    assert mastodon.token not in ingest.log()  # credentials never reach the log
    ids = Counter(p.post_id for p in posts)
    expected = {before["id"], *(s["id"] for s in while_down), live["id"]}
    assert set(ids) == expected
    assert all(n == 1 for n in ids.values()), ids  # the post both mentioned and tagged: once
