"""A citizen deletes their post on a real Bluesky PDS (tests/peers/bluesky.py) and Plaza withdraws
it: the delete commit comes by Jetstream, the connector (restarted since: it knows the post from
the database only) puts a post-withdrawn on real Kafka, and the router's handler takes the post's
words and photo out of the request on real PostgreSQL. So is one published before the restart
and not yet routed (it then opens nothing). Somebody else's deleted post is not Plaza's
business: nothing goes on the bus for it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from plaza.bus import Bus
from plaza.city import City
from plaza.contracts import (
    TOPICS,
    Envelope,
    LocationSource,
    Placement,
    Post,
    PostClassified,
    decode,
)
from plaza.db.models import RequestReport, ServiceRequest
from plaza.withdrawals import WITHDRAWN_TEXT
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.bluesky import BlueskyMentions
from plaza_router.withdrawals import WithdrawPost
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.bluesky_helpers import account
from tests.integration.lifecycle_helpers import as_event, router
from tests.integration.social_helpers import (  # the fixtures `bus` and `received` too
    Received,
    post_received_bus,  # noqa: F401
    received_posts,  # noqa: F401
    running,
)
from tests.peers.bluesky import BlueskyPeer, tiny_png

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def streetlight(post: Post) -> PostClassified:
    place = Placement(
        district_code="06",
        district_name=City.barcelona().districts["06"].name,
        barri_code="31",
        source=LocationSource.LOCATION_SOURCE_TEXT,
        confidence=1.0,
    )
    return PostClassified(
        post=post,
        service_code="streetlight",
        service_confidence=0.9,
        actionable=True,
        placement=place,
        language="ca",
    )


async def the_request(sessions: async_sessionmaker[AsyncSession], post_id: str) -> ServiceRequest:
    async with sessions() as s:
        report = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == post_id))
        ).scalar_one()
        request = await s.get(ServiceRequest, report.service_request_id)
        assert request is not None
        return request


async def test_a_post_deleted_on_the_pds_is_withdrawn_from_its_request(
    bluesky_peer: BlueskyPeer,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    marta, jordi = peer.citizens
    await bus.create_topics([TOPICS.POST_WITHDRAWN.topic], 3)
    withdrawals = await bus.subscribe("test-withdrawals", [TOPICS.POST_WITHDRAWN.topic])
    words = "Bon dia @ajuntament.test, el fanal del carrer de Sant Lluís fa pampallugues"
    async with (
        httpx.AsyncClient() as http,
        peer.session(marta) as m,
        peer.session(jordi) as j,
    ):
        mentions = BlueskyMentions(account(peer, password=False), http)
        async with running(ConnectorRunner(mentions, bus, sessions)):
            mention = await m.post(
                words, mentions=[peer.city], images=[(tiny_png(), "fanal")], langs=["ca"]
            )
            unrouted = await m.post(
                "@ajuntament.test i el de la plaça del Sol també", mentions=[peer.city]
            )
            posts = {p.post_id: p for p in await received.until(2)}
        await router(sessions)(as_event(streetlight(posts[mention.uri])))
        before = await the_request(sessions, mention.uri)
        assert before.description == words and before.media_urls

        # Ingest restarted: the routed post is known from the requests' records, the other
        # from the posts ingest published.
        async with running(
            ConnectorRunner(BlueskyMentions(account(peer, password=False), http), bus, sessions)
        ):
            chatter = await j.post("Quin dia més bonic a Gràcia", langs=["ca"])
            await j.delete_record(chatter)  # not Plaza's post
            loop = asyncio.get_running_loop()
            deleted_at = loop.time()
            await m.delete_record(mention)
            # ingest had published it before its restart, and the router has not had it yet:
            # ingest, remembering its posts of this run only, took it for somebody else's
            await m.delete_record(unrouted)
            events: list[Envelope] = []
            deadline = loop.time() + 30
            while not events and loop.time() < deadline:
                events += [decode(r.topic, r.value) for r in await withdrawals.fetch(10, 0.1)]
            latency = loop.time() - deleted_at
            end = loop.time() + 2.0  # and nothing more comes
            while loop.time() < end:
                events += [decode(r.topic, r.value) for r in await withdrawals.fetch(10, 0.3)]
    await withdrawals.close()

    [event, late] = sorted(events, key=lambda e: e.post_withdrawn.post_id != mention.uri)
    assert late.post_withdrawn.post_id == unrouted.uri
    # A quiet stream hands its deletions on within a second (the connector's idle batch), a
    # busy one at its next checkpoint (5 s).
    assert latency < 5.0
    w = event.post_withdrawn
    assert (w.platform, w.post_id, w.author_id, w.channel) == (
        "bluesky",
        mention.uri,
        marta.did,
        "stream",
    )
    await WithdrawPost(sessions)(event)
    request = await the_request(sessions, mention.uri)
    assert request.description == WITHDRAWN_TEXT
    assert request.media_urls == [] and request.media_url is None
    assert request.source_author_handle == "" and request.source_public_url is None
    assert (request.status, request.queue) == (before.status, before.queue)
    # The post withdrawn before it reached the router opens nothing when it does.
    await WithdrawPost(sessions)(late)
    await router(sessions)(as_event(streetlight(posts[unrouted.uri])))
    async with sessions() as s:
        found = await s.execute(select(RequestReport).where(RequestReport.post_id == unrouted.uri))
        assert list(found.scalars()) == []
