"""The X connector against a local X API v2 (tests/peers/x_api.py), real Kafka and PostgreSQL:
mentions live on the filtered stream with photos, geotags and language; a dropped stream caught
up through the mentions timeline from the last id; mentions polled while the stream is refused;
and a restart of `python -m plaza_ingest` from its durable cursor (no miss, no repeat)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from plaza.bus import Bus
from plaza.worker import RetryPolicy
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.x import Backoff, XMentions
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
from tests.peers._server import Seen
from tests.peers.x_api import FakeX

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
STREAM = "/2/tweets/search/stream"

# X's documented delays, scaled down a hundredfold; the stream's heartbeat every 0.2 s.
FAST = Backoff(
    network_step=0.5, network_max=1, http_first=1.5, http_max=3, rate_first=1.5, rate_max=3
)


@pytest.fixture
def x() -> Iterator[FakeX]:
    with FakeX(heartbeat=0.2) as server:
        yield server


def mentions(server: FakeX, http: httpx.AsyncClient) -> XMentions:
    return XMentions(server.account(), http, backoff=FAST, stall_timeout=2.0, poll_interval=0.3)


def stream_calls(server: FakeX) -> list[Seen]:
    return [c for c in server.seen("GET", STREAM) if c.path == STREAM]


def since_ids(server: FakeX) -> list[str]:
    calls = server.seen("GET", f"/2/users/{server.city['id']}/mentions")
    return [parse_qs(c.query).get("since_id", [""])[0] for c in calls]


async def until(condition: object, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_mentions_stream_in_with_photos_geotags_and_language(
    x: FakeX,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = x.citizen_posts("Abans de Plaza: no s'ha de publicar")
    async with httpx.AsyncClient() as http:
        connector = mentions(x, http)
        async with running(ConnectorRunner(connector, bus, sessions)):
            assert x.stream_count() == 1
            [rule] = x.rules
            assert rule == {
                "id": rule["id"],
                "value": "@bcn -from:bcn -is:retweet",
                "tag": f"plaza:mentions:{x.city['id']}",
            }
            fanal = x.citizen_posts(
                "El fanal de la plaça del Sol no funciona & fa fosc",
                photos=2,
                point=(41.4036, 2.1577),
            )
            x.citizen_posts("Bon dia a tothom", username="pere", mention=False)  # not for us
            x.citizen_posts("@bcn Avui hem arreglat 3 fanals", username="bcn", mention=False)
            font = x.citizen_posts(
                "The fountain is leaking",
                username="anna",
                lang="en",
                place={
                    "id": "01a9a39529b27f36",
                    "full_name": "Plaça Reial, Barcelona",
                    "place_type": "poi",
                    "geo": {"type": "Feature", "bbox": [2.1749, 41.3798, 2.1759, 41.3806]},
                },
            )
            posts = await received.until(2)
            await cursor_becomes(sessions, connector.name, font["id"])
            posts = await received.settle(1.0)
    by_id = {p.post_id: p for p in posts}
    assert set(by_id) == {fanal["id"], font["id"]}  # not the old one, not the city's own
    assert old["id"] not in by_id
    first = by_id[fanal["id"]]
    assert first.platform == "x" and first.channel == "stream"
    assert first.text == "@bcn El fanal de la plaça del Sol no funciona & fa fosc"
    assert first.author_handle == "@marta" and first.language == "ca"
    assert list(first.media_urls) == [x.media[k]["url"] for k in fanal["attachments"]["media_keys"]]
    assert (first.latitude, first.longitude) == (41.4036, 2.1577)
    assert first.public_url == f"https://x.com/marta/status/{fanal['id']}"
    second = by_id[font["id"]]
    assert second.language == "en" and second.address == "Plaça Reial, Barcelona"
    assert second.latitude == pytest.approx(41.3802) and second.longitude == pytest.approx(2.1754)
    # the stream asked for what the posts need; only the app's bearer token was used
    [stream] = stream_calls(x)
    query = parse_qs(stream.query)
    assert "attachments.media_keys" in query["expansions"][0]
    assert "geo" in query["tweet.fields"][0] and "lang" in query["tweet.fields"][0]
    assert {r.headers["authorization"] for r in x.requests} == {f"Bearer {x.app_token}"}


async def test_a_dropped_stream_reconnects_and_catches_up_through_mentions_from_the_last_id(
    x: FakeX,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with httpx.AsyncClient() as http:
        connector = mentions(x, http)
        runner = ConnectorRunner(connector, bus, sessions, backoff=RetryPolicy(base_delay=0.3))
        async with running(runner):
            first = x.citizen_posts("Primer: soroll al carrer Gran")
            await received.until(1)
            await cursor_becomes(sessions, connector.name, first["id"])
            # X disconnects the stream for operational reasons; two mentions are posted
            # before the connector is back (the network backoff's first step: 0.5 s).
            x.drop_streams(error=True)
            gap = [x.citizen_posts(f"Durant el tall {i}") for i in range(2)]
            await received.until(3)
            await until(lambda: x.stream_count() == 1 and connector.streaming)
            after = x.citizen_posts("Després: ja torna a funcionar")
            await received.until(4)
            posts = await received.settle(1.5)
    assert runner.connections >= 2
    assert since_ids(x)[-1] == first["id"]  # the catch-up read from the last id on
    ids = [p.post_id for p in posts]  # (the topic's partitions do not keep their order)
    assert sorted(ids) == sorted([first["id"], *(t["id"] for t in gap), after["id"]])
    assert Counter(ids).most_common(1)[0][1] == 1  # nothing twice


async def test_mentions_are_polled_while_the_stream_is_refused_then_the_stream_returns(
    x: FakeX,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The access tier has no filtered stream (403), then its connections are spent (429).
    x.fail_next("GET", STREAM, 403, detail="client-not-enrolled")
    x.fail_next("GET", STREAM, 429, headers=x.rate_limited(0))
    async with httpx.AsyncClient() as http:
        connector = mentions(x, http)
        runner = ConnectorRunner(connector, bus, sessions, backoff=RetryPolicy(base_delay=0.1))
        async with running(runner):
            assert not connector.streaming  # caught up by polling
            polled = [x.citizen_posts(f"Sense stream {i}") for i in range(3)]
            await received.until(3)
            await until(lambda: connector.streaming, timeout=20)
            live = x.citizen_posts("Amb stream")
            await received.until(4)
            posts = await received.settle(1.0)
    ids = [p.post_id for p in posts]
    assert sorted(ids) == sorted([*(t["id"] for t in polled), live["id"]])  # each once
    calls = stream_calls(x)
    assert len(calls) == 3  # 403, 429, then connected
    # the documented waits: 5 s after an HTTP error, a minute after a 429 (scaled here)
    assert calls[1].at - calls[0].at >= FAST.http(1) - 0.1
    assert calls[2].at - calls[1].at >= FAST.rate_limited(1) - 0.1
    assert len(since_ids(x)) >= 4  # mentions were polled meanwhile


async def test_ingest_restarts_from_its_durable_cursor_missing_and_repeating_nothing(
    x: FakeX,
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "x-bearer"
    token_file.write_text(x.app_token + "\n")
    settings = {**x.settings(), "PLAZA_X_BEARER_TOKEN_FILE": str(token_file)}
    process = Ingest(kafka, kafka_namespace, database_url, tmp_path, settings)
    name = f"x:{x.city['id']}:mentions"

    async def streaming() -> None:
        await until(lambda: x.stream_count() == 1, timeout=20)

    ingest = process.start()
    try:
        await streaming()
        before = x.citizen_posts("Abans de l'aturada")
        await received.until(1)
        await cursor_becomes(sessions, name, before["id"])
        ingest.kill()
        while_down = [x.citizen_posts(f"Mentre estava aturat {i}") for i in range(3)]
        ingest = process.start()
        await received.until(4)
        await streaming()
        live = x.citizen_posts("Després de tornar")
        await received.until(5)
        posts = await received.settle(2)
        await cursor_becomes(sessions, name, live["id"])
    finally:
        ingest.stop()
    assert x.app_token not in ingest.log()  # credentials never reach the log
    assert since_ids(x)[-1] == before["id"]  # the restart caught up from the stored cursor
    ids = Counter(p.post_id for p in posts)
    assert set(ids) == {before["id"], *(t["id"] for t in while_down), live["id"]}
    assert all(n == 1 for n in ids.values()), ids
    assert len(x.rules) == 1  # the rule was added once, found again after the restart
