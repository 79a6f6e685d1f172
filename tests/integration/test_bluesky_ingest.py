"""The Bluesky connector against a real PDS and its Jetstream (tests/peers/bluesky.py), real Kafka
and PostgreSQL: mentions of the city (and answers to its posts) come in with their images and
language, a dropped connection resumes rewound from the cursor, and `python -m plaza_ingest`
restarts from its durable cursor missing and repeating nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from plaza.bluesky import AtUri
from plaza.bus import Bus
from plaza.worker import RetryPolicy
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.bluesky import BlueskyMentions, Position
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.bluesky_helpers import account, image_url, proxy
from tests.integration.social_helpers import (  # the fixtures `bus` and `received` too
    Ingest,
    Received,
    cursor_of,
    post_received_bus,  # noqa: F401
    received_posts,  # noqa: F401
    running,
)
from tests.peers.bluesky import BlueskyPeer, tiny_png

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def position_of(sessions: async_sessionmaker[AsyncSession], name: str) -> Position | None:
    cursor = await cursor_of(sessions, name)
    return Position.parse(cursor) if cursor is not None else None


async def cursor_holds(
    sessions: async_sessionmaker[AsyncSession], name: str, post_id: str | None = None
) -> Position:
    """The stored cursor, once there is one (that has recorded `post_id`)."""
    for _ in range(150):
        position = await position_of(sessions, name)
        if position is not None and (post_id is None or post_id in position.seen):
            return position
        await asyncio.sleep(0.1)
    raise AssertionError(f"cursor of {name}: {await position_of(sessions, name)}")


async def test_a_post_mentioning_the_city_reaches_kafka_with_its_images_and_language(
    bluesky_peer: BlueskyPeer,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    marta, jordi = peer.citizens
    photo = tiny_png(rgb=(10, 200, 30))
    async with (
        httpx.AsyncClient() as http,
        peer.session(peer.city) as city,
        peer.session(marta) as m,
        peer.session(jordi) as j,
    ):
        mentions = BlueskyMentions(account(peer, password=False), http)
        async with running(ConnectorRunner(mentions, bus, sessions)):
            text = "Bon dia @ajuntament.test, el fanal de Verdi no s'encén 💡"
            mention = await m.post(
                text, mentions=[peer.city], images=[(photo, "fanal")], langs=["ca"]
            )
            await j.post("Quin dia més bonic a Gràcia", langs=["ca"])  # not for the city
            await m.post("@jordi.test has vist el fanal?", mentions=[jordi])  # another account
            notice = await city.post("Avís: obres al carrer Gran de Gràcia dilluns")  # the city's
            answer = await j.reply(
                notice, "I el soroll de les obres? No es pot dormir", langs=["es"]
            )
            posts = await received.until(2)
            posts = await received.settle(1.5)
            position = await cursor_holds(sessions, mentions.name, str(answer.uri))
            stored = await m.get_record(mention)
        blob = await http.get(posts[0].media_urls[0])

    assert [p.post_id for p in posts] == [mention.uri, answer.uri]
    first = posts[0]
    assert first.platform == "bluesky" and first.channel == "stream"
    assert first.text == text and first.language == "ca"
    assert first.author_handle == "@marta.test" and first.author_id == marta.did
    uri = AtUri.parse(first.post_id)
    assert (uri.did, uri.collection, uri.rkey) == (marta.did, "app.bsky.feed.post", mention.rkey)
    assert first.public_url == f"https://bsky.app/profile/{marta.did}/post/{mention.rkey}"
    [media] = first.media_urls
    cid = stored["value"]["embed"]["images"][0]["image"]["ref"]["$link"]
    assert media == image_url(peer).format(did=marta.did, cid=cid)
    assert blob.status_code == 200 and blob.content == photo  # the image itself, by that URL
    assert not first.HasField("latitude")  # Bluesky has no geotags
    assert not first.reply_to_post_id
    second = posts[1]
    assert second.reply_to_post_id == notice.uri  # an answer in the city's thread
    assert second.language == "es" and second.author_handle == "@jordi.test"
    assert set(position.seen) == {mention.uri, answer.uri}


async def test_a_dropped_connection_resumes_rewound_from_its_cursor_missing_and_repeating_nothing(
    bluesky_peer: BlueskyPeer,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    async with (
        httpx.AsyncClient() as http,
        proxy(peer.jetstream_url) as jetstream,
        peer.session(peer.citizens[0]) as marta,
    ):
        mentions = BlueskyMentions(account(peer, password=False, jetstream_url=jetstream.url), http)
        runner = ConnectorRunner(mentions, bus, sessions, backoff=RetryPolicy(base_delay=0.3))

        async def mention(text: str) -> str:
            return (await marta.post(f"@ajuntament.test {text}", mentions=[peer.city])).uri

        async with running(runner):
            first = await mention("Primer: soroll al carrer Gran")
            await received.until(1)
            await cursor_holds(sessions, mentions.name, first)
            jetstream.drop()  # the connection is lost, and Jetstream is unreachable for a while
            gap = [await mention(f"Durant el tall {i}") for i in range(2)]
            await asyncio.sleep(1.0)
            runner.connected.clear()
            stored = await cursor_holds(sessions, mentions.name, first)  # what the runner loads
            jetstream.restore()
            await received.until(3)
            await asyncio.wait_for(runner.connected.wait(), 15)
            after = await mention("Després: ja torna a funcionar")
            await received.until(4)
            posts = await received.settle(1.5)

    assert runner.connections >= 2
    ids = Counter(p.post_id for p in posts)
    assert set(ids) == {first, *gap, after}
    assert all(n == 1 for n in ids.values()), ids  # the rewound replay repeated nothing
    # The reconnect asked for the events from a few seconds before the stored cursor (but not
    # from before the first start, which takes no backfill).
    cursors = [
        int(parse_qs(urlsplit(line.split(" ")[1]).query)["cursor"][0])
        for line in jetstream.requests
    ]
    assert len(cursors) >= 2
    assert cursors[-1] == stored.rewound(5_000_000) < stored.time_us
    assert cursors[-1] == max(stored.since_us, stored.time_us - 5_000_000)


async def test_ingest_restarts_from_its_durable_cursor_missing_and_repeating_nothing(
    bluesky_peer: BlueskyPeer,
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    peer = bluesky_peer
    settings = {
        "PLAZA_BLUESKY_HANDLE": peer.city.handle,
        "PLAZA_BLUESKY_PDS_URL": peer.pds_url,
        "PLAZA_BLUESKY_JETSTREAM_URL": peer.jetstream_url,
        "PLAZA_BLUESKY_PLC_URL": peer.plc_url,
        "PLAZA_BLUESKY_IMAGE_URL": image_url(peer),
    }
    process = Ingest(kafka, kafka_namespace, database_url, tmp_path, settings)
    name = f"bluesky:{peer.city.handle}:mentions"

    async with peer.session(peer.citizens[0]) as marta, peer.session(peer.citizens[1]) as jordi:

        async def mention(who: str, text: str) -> str:
            client = marta if who == "marta" else jordi
            return (await client.post(f"@ajuntament.test {text}", mentions=[peer.city])).uri

        ingest = process.start()
        try:
            await cursor_holds(sessions, name)  # connected: the first cursor is stored
            before = await mention("marta", "Abans de l'aturada")
            await received.until(1)
            await cursor_holds(sessions, name, before)
            ingest.kill()
            while_down = [
                await mention("marta", "Mentre estava aturat"),
                await mention("jordi", "També aturat: la font no raja"),
            ]
            ingest = process.start()
            await received.until(3)
            live = await mention("jordi", "Després de tornar")
            await received.until(4)
            posts = await received.settle(2)
        finally:
            ingest.stop()
    ids = Counter(p.post_id for p in posts)
    assert set(ids) == {before, *while_down, live}
    assert all(n == 1 for n in ids.values()), ids  # the rewound replay repeated nothing
    assert "connecting from cursor {" in ingest.log()  # the second run resumed from the cursor
