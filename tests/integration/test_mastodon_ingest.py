"""The Mastodon connector against a local Mastodon (tests/peers/mastodon.py), real Kafka and
PostgreSQL: live mentions and hashtags, a dropped stream caught up through REST from the last
id, and a restart of `python -m plaza_ingest` from its durable cursor (no miss, no repeat)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from plaza.bus import Bus
from plaza.contracts import TOPICS, decode
from plaza.worker import RetryPolicy
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.mastodon import MastodonStream, Source
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.social_helpers import (  # the fixtures `bus` and `received` too
    Ingest,
    Received,
    cursor_becomes,
    post_received_bus,  # noqa: F401
    received_posts,  # noqa: F401
    running,
)
from tests.peers.mastodon import FakeMastodon

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon() as server:
        yield server


async def test_mentions_and_hashtags_stream_in_with_text_and_media(
    mastodon: FakeMastodon,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = mastodon.citizen_posts("Abans de Plaza: no s'ha de publicar")
    async with httpx.AsyncClient() as http:
        mentions = MastodonStream(mastodon.account(), Source.MENTIONS, http)
        tag = MastodonStream(mastodon.account(), Source.HASHTAG, http, hashtag="BCNincidencies")
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
        mentions = MastodonStream(mastodon.account(), Source.MENTIONS, http)
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


async def test_the_first_start_misses_nothing_posted_as_it_subscribes(
    mastodon: FakeMastodon,
) -> None:
    """The very first start takes no backfill, but a mention posted just as the stream is
    subscribed (before the connector asked for the newest notification) is not history."""
    mastodon.citizen_posts("Abans de Plaza: no s'ha de publicar")
    posted: list[dict[str, object]] = []
    mastodon.on_subscribe = lambda: posted.append(
        mastodon.citizen_posts("Just ara: la font de la plaça del Sol perd aigua")
    )

    async def first_post(stream: MastodonStream) -> list[str]:
        async for batch in stream.batches(None):
            if batch.posts:
                return [p.post_id for p in batch.posts]
        return []

    async with httpx.AsyncClient() as http:
        stream = MastodonStream(mastodon.account(), Source.MENTIONS, http)
        ids = await asyncio.wait_for(first_post(stream), 10)
    assert len(posted) == 1
    assert ids == [posted[0]["id"]]


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
    token_file = tmp_path / "mastodon-token"
    token_file.write_text(mastodon.token + "\n")
    settings = {
        "PLAZA_MASTODON_BASE_URL": mastodon.base_url,
        "PLAZA_MASTODON_TOKEN_FILE": str(token_file),
        "PLAZA_MASTODON_HASHTAGS": "bcnincidencies",
    }
    process = Ingest(kafka, kafka_namespace, database_url, tmp_path, settings)
    name = f"mastodon:{mastodon.host}:mentions"

    async def streaming() -> None:
        for _ in range(150):
            if mastodon.stream_count() == 2:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the ingest process did not open its two streams")

    ingest = process.start()
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
        ingest = process.start()
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


async def test_a_deleted_mention_is_withdrawn_and_a_deleted_stranger_is_not(
    mastodon: FakeMastodon,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await bus.create_topics([TOPICS.POST_WITHDRAWN.topic], 3)
    withdrawn = await bus.subscribe("test-withdrawals", [TOPICS.POST_WITHDRAWN.topic])
    stranger = mastodon.citizen_posts("Abans de Plaza: mai publicat", username="anna")
    async with httpx.AsyncClient() as http:
        mentions = MastodonStream(mastodon.account(), Source.MENTIONS, http)
        tag = MastodonStream(mastodon.account(), Source.HASHTAG, http, hashtag="BCNincidencies")
        async with (
            running(ConnectorRunner(mentions, bus, sessions)),
            running(ConnectorRunner(tag, bus, sessions)),
        ):
            mention = mastodon.citizen_posts("La font de la plaça del Sol no raja")
            tagged = mastodon.citizen_posts(
                "Grafitis a l'escola", username="pere", mention=False, tags=("bcnincidencies",)
            )
            await received.until(2)
            mastodon.citizen_deletes(stranger["id"])  # Plaza never had it: not its business
            mastodon.citizen_deletes(mention["id"])
            mastodon.citizen_deletes(tagged["id"])
            ids: list[str] = []
            loop = asyncio.get_running_loop()
            end = loop.time() + 8  # the two, and time for a third that must not come
            while len(ids) < 3 and loop.time() < end:
                for record in await withdrawn.fetch(10, 0.5):
                    ids.append(decode(record.topic, record.value).post_withdrawn.post_id)
    await withdrawn.close()
    # Each from the stream it came by, once (the user stream, the hashtag's).
    assert Counter(ids) == {mention["id"]: 1, tagged["id"]: 1}
