"""Public replies on Bluesky, against a real PDS (tests/peers/bluesky.py) and real PostgreSQL
(and Kafka for the crash test): threaded under the citizen's post and its thread's root, the
worker mentioned with a facet, the resolution photo as an image embed, and never two records for
one reply, whether a delivery is repeated or the notifier is SIGKILLed after the PDS created it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from plaza.bluesky import MENTION, AtUri, tid_for
from plaza.contracts import Envelope, ReplyKind
from plaza_notifier.bluesky import BlueskyChannel
from plaza_notifier.channels import ChannelReply, PostedReply, ReplyChannel
from plaza_notifier.delivery import Deliverer, DeliveryPolicy
from plaza_notifier.handler import PostReply
from plaza_notifier.photos import PhotoFetcher
from plaza_notifier.templates import templates
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.bluesky_helpers import Faults, account, proxy
from tests.integration.lifecycle_helpers import classified, outbox
from tests.integration.social_helpers import (
    Places,
    asked,
    delivery,
    notifier_until_posted,
    publish_asked,
    routed,
)
from tests.integration.social_helpers import deliver_until as _deliver_until
from tests.peers.bluesky import BlueskyPeer, RecordRef, tiny_png
from tests.processes import ServiceProcess, base_env

pytestmark = pytest.mark.postgres

FAST = DeliveryPolicy(base_delay=0.05, max_delay=0.2, poll_interval=0.05)
_places = Places(41.380, 2.13)
deliver_until = partial(_deliver_until, timeout=20)  # a real PDS answers slower than the fakes


@pytest.fixture
async def channels(bluesky_peer: BlueskyPeer) -> AsyncIterator[dict[str, ReplyChannel]]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield {"bluesky": BlueskyChannel(account(bluesky_peer), http)}


@pytest.fixture
async def local_photo_channels(bluesky_peer: BlueskyPeer) -> AsyncIterator[dict[str, ReplyChannel]]:
    """Channels that fetch photos from the local PDS, on 127.0.0.1: only with private hosts
    allowed (PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS), which a city's notifier never has."""
    photos = PhotoFetcher(allow_private_hosts=True)
    async with httpx.AsyncClient(timeout=10) as http:
        yield {"bluesky": BlueskyChannel(account(bluesky_peer), http, photos=photos)}


async def citizen_request(
    sessions: async_sessionmaker[AsyncSession],
    peer: BlueskyPeer,
    text: str = "el fanal del carrer de Verdi no funciona",
    *,
    reply_to: RecordRef | None = None,
) -> tuple[RecordRef, Envelope]:
    """Marta's post mentioning the city (as a reply to `reply_to` if given), routed into a
    request: the post and the reply-requested event of the acknowledgement. Its id in Plaza is
    its at:// URI, as the connector makes it."""
    async with peer.session(peer.citizens[0]) as marta:
        body = f"@{peer.city.handle} {text}"
        post = await marta.post(body, mentions=[peer.city], reply_to=reply_to, langs=["ca"])
    c = classified(
        post.uri,
        author="@marta.test",
        latlon=_places.next(),
        text=body,
        reply_to=reply_to.uri if reply_to else "",
    )
    c.post.platform = "bluesky"
    return post, await routed(sessions, c)


async def city_replies_to(peer: BlueskyPeer, post: RecordRef) -> list[dict[str, Any]]:
    return [
        r for r in await peer.city_replies() if r["value"]["reply"]["parent"]["uri"] == post.uri
    ]


async def test_an_acknowledgement_is_threaded_under_the_citizens_post_and_its_root(
    bluesky_peer: BlueskyPeer,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    async with peer.session(peer.citizens[0]) as marta:
        first = await marta.post("Fa tres dies que el fanal de la plaça del Sol no s'encén")
    # Marta's request is her own answer in that thread: ours goes under it, in the same thread.
    post, ask = await citizen_request(sessions, peer, "encara no funciona", reply_to=first)
    notify = PostReply(sessions, channels)
    assert await notify(ask) == [] and await notify(ask) == []  # a redelivery adds nothing
    deliverer = Deliverer(sessions, channels, FAST)
    assert await deliverer.deliver_due() == 1
    assert await deliverer.deliver_due() == 0

    [reply] = await city_replies_to(peer, post)
    record = reply["value"]
    assert record["reply"]["parent"] == {"uri": post.uri, "cid": post.cid}
    assert record["reply"]["root"] == {"uri": first.uri, "cid": first.cid}
    rid = ask.reply_requested.service_request_id
    assert record["text"].startswith(f"Rebut! Petició #{rid}, districte")  # no @: a reply notifies
    assert record["langs"] == ["ca"]
    reply_id = ask.reply_requested.reply_id
    uri = AtUri.parse(reply["uri"])
    assert (uri.did, uri.rkey) == (peer.city.did, tid_for(reply_id))  # its key: from the reply id
    stored = await delivery(sessions, reply_id)
    assert (stored.state, stored.attempts, stored.remote_id) == ("posted", 1, reply["uri"])
    [posted] = await outbox(sessions, "reply-posted.v1")
    assert posted.reply_posted.remote_id == reply["uri"]
    assert posted.reply_posted.public_url == f"https://bsky.app/profile/{uri.did}/post/{uri.rkey}"


async def test_the_assignment_mentions_the_worker_with_a_facet_in_utf8_bytes(
    bluesky_peer: BlueskyPeer,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    worker = peer.citizens[1]  # jordi.test, the brigade's public account
    post, ask = await citizen_request(sessions, peer)
    # Accents and an emoji before the handle: byte offsets differ from character offsets.
    table = {**templates(), "assigned": {"ca": "Petició #{service_request_id}: hi va {worker} 🚐."}}
    event = asked(ask, "assigned-1", ReplyKind.REPLY_KIND_ASSIGNED, worker=f"@{worker.handle}")
    await PostReply(sessions, channels, table)(event)
    await deliver_until(Deliverer(sessions, channels, FAST), sessions, ["assigned-1"], {"posted"})

    [reply] = await city_replies_to(peer, post)
    text, facets = reply["value"]["text"], reply["value"]["facets"]
    assert text == f"Petició #{ask.reply_requested.service_request_id}: hi va @jordi.test 🚐."
    [facet] = facets
    assert facet["features"] == [{"$type": MENTION, "did": worker.did}]
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    assert text.encode()[start:end] == b"@jordi.test"
    assert start == text.index("@jordi.test") + 1  # "ó" is two bytes


async def test_the_resolution_photo_is_an_image_embed(
    bluesky_peer: BlueskyPeer,
    local_photo_channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    post, ask = await citizen_request(sessions, peer)
    photo = tiny_png(4, 3, rgb=(40, 90, 200))
    async with peer.session(peer.citizens[1]) as brigade:  # the worker's photo, on its PDS
        blob = await brigade.upload_blob(photo)
        await brigade.post("Fanal arreglat", images=[(photo, "fanal")])  # keeps the blob
        stored = await brigade.list_records(brigade.did)
    cid = stored[0]["value"]["embed"]["images"][0]["image"]["ref"]["$link"]
    assert cid == blob["ref"]["$link"]
    photo_url = f"{peer.pds_url}/xrpc/com.atproto.sync.getBlob?did={peer.citizens[1].did}&cid={cid}"
    note = "Hem canviat la làmpada i el cablejat del fanal. " * 12
    event = asked(ask, "resolved-1", ReplyKind.REPLY_KIND_RESOLVED, note=note, photo_url=photo_url)
    await PostReply(sessions, local_photo_channels)(event)
    await deliver_until(
        Deliverer(sessions, local_photo_channels, FAST), sessions, ["resolved-1"], {"posted"}
    )

    [reply] = await city_replies_to(peer, post)
    embed = reply["value"]["embed"]
    assert embed["$type"] == "app.bsky.embed.images"
    [image] = embed["images"]
    assert image["alt"] == "Foto de la feina feta"
    assert image["image"]["mimeType"] == "image/png"
    async with httpx.AsyncClient() as http:
        ours = await http.get(
            f"{peer.pds_url}/xrpc/com.atproto.sync.getBlob",
            params={"did": peer.city.did, "cid": image["image"]["ref"]["$link"]},
        )
    assert ours.content == photo  # uploaded to the city's repo
    text = reply["value"]["text"]
    assert photo_url not in text  # attached, not linked
    assert len(text) <= 300 and text.endswith("…")  # the long note was shortened to fit
    assert f"#{ask.reply_requested.service_request_id}" in text


async def test_an_expired_access_token_is_refreshed(
    bluesky_peer: BlueskyPeer,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    post, ask = await citizen_request(sessions, peer)
    faults = Faults()
    async with httpx.AsyncClient(transport=faults, timeout=10) as http:
        channels: dict[str, ReplyChannel] = {"bluesky": BlueskyChannel(account(peer), http)}
        await PostReply(sessions, channels)(ask)
        # The PDS's answer once an access token has expired (its lifetime is two hours).
        faults.fail_next("com.atproto.repo.getRecord", 400, error="ExpiredToken")
        deliverer = Deliverer(sessions, channels, FAST)
        await deliver_until(deliverer, sessions, [ask.reply_requested.reply_id], {"posted"})
    assert faults.calls[:4] == [
        "com.atproto.server.createSession",
        "com.atproto.repo.getRecord",
        "com.atproto.server.refreshSession",
        "com.atproto.repo.getRecord",
    ]
    assert (await delivery(sessions, ask.reply_requested.reply_id)).attempts == 1
    assert len(await city_replies_to(peer, post)) == 1


class LostAnswer:
    """The channel, but the PDS's answer to the first post is lost (a crash after the call)."""

    def __init__(self, channel: ReplyChannel) -> None:
        self._channel = channel
        self.lost = 0

    @property
    def platform(self) -> str:
        return self._channel.platform

    @property
    def mention_author(self) -> bool:
        return self._channel.mention_author

    async def post(self, reply: ChannelReply) -> PostedReply:
        posted = await self._channel.post(reply)
        if not self.lost:
            self.lost += 1
            raise ConnectionResetError("the answer never came")
        return posted

    async def find(self, reply: ChannelReply) -> PostedReply | None:
        return await self._channel.find(reply)


async def test_a_duplicate_delivery_of_one_reply_leaves_exactly_one_record(
    bluesky_peer: BlueskyPeer,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "plaza_notifier")
    peer = bluesky_peer
    post, ask = await citizen_request(sessions, peer)
    reply_id = ask.reply_requested.reply_id
    lossy = LostAnswer(channels["bluesky"])
    await PostReply(sessions, channels)(ask)
    deliverer = Deliverer(sessions, {"bluesky": lossy}, FAST)
    await deliver_until(deliverer, sessions, [reply_id], {"posted"})
    assert lossy.lost == 1  # the first attempt created the post but never heard so
    done = await delivery(sessions, reply_id)
    assert (done.state, done.attempts) == ("posted", 2)
    [reply] = await city_replies_to(peer, post)
    assert done.remote_id == reply["uri"]
    # The same reply sent again without looking first: the PDS refuses the record key (a bare
    # 500), the channel finds the record there, and answers with it.
    row = await delivery(sessions, reply_id)
    again = await channels["bluesky"].post(
        ChannelReply(
            reply_id=reply_id,
            in_reply_to_post_id=post.uri,
            author_handle=row.author_handle,
            text=row.body,
            language=row.language,
            photo_url=None,
        )
    )
    assert again.remote_id == reply["uri"]
    assert f"reply {reply_id} was already posted" in caplog.text
    assert len(await city_replies_to(peer, post)) == 1  # exactly one record in the city's repo


async def test_a_429_waits_for_ratelimit_reset_and_5xx_are_retried(
    bluesky_peer: BlueskyPeer,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    post, ask = await citizen_request(sessions, peer)
    reply_id = ask.reply_requested.reply_id
    faults = Faults()
    async with httpx.AsyncClient(transport=faults, timeout=10) as http:
        channels: dict[str, ReplyChannel] = {"bluesky": BlueskyChannel(account(peer), http)}
        await PostReply(sessions, channels)(ask)
        reset = int(time.time()) + 2  # RateLimit-Reset: unix seconds
        limited = {
            "RateLimit-Limit": "5000",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": "5000;w=3600",
        }
        faults.fail_next("com.atproto.repo.createRecord", 429, headers=limited)
        deliverer = Deliverer(sessions, channels, FAST)
        assert await deliverer.deliver_due() == 1
        waiting = await delivery(sessions, reply_id)
        assert (waiting.state, waiting.attempts) == ("pending", 0)  # a wait is no failed attempt
        assert waiting.next_attempt_at == datetime.fromtimestamp(reset, UTC)
        assert "429" in (waiting.last_error or "")
        assert await deliverer.deliver_due() == 0  # nothing goes to Bluesky before the reset
        faults.fail_next("com.atproto.repo.createRecord", 502, times=2)
        await deliver_until(deliverer, sessions, [reply_id], {"posted"})
    assert time.time() >= reset
    done = await delivery(sessions, reply_id)
    assert done.attempts == 3  # two 502s retried, then posted
    assert faults.calls.count("com.atproto.repo.createRecord") == 4
    assert len(await city_replies_to(peer, post)) == 1


async def test_a_reply_to_a_deleted_post_is_never_sent_the_post_withdrawn_and_holds_up_no_other(
    bluesky_peer: BlueskyPeer,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    peer = bluesky_peer
    gone, ask1 = await citizen_request(sessions, peer, "la font no raja")
    kept, ask2 = await citizen_request(sessions, peer, "la paperera és plena")
    async with peer.session(peer.citizens[0]) as marta:
        await marta._call(  # the citizen deleted her post
            "com.atproto.repo.deleteRecord",
            json_body={"repo": marta.did, "collection": "app.bsky.feed.post", "rkey": gone.rkey},
        )
    notify = PostReply(sessions, channels)
    await notify(ask1)
    await notify(ask2)
    ids = [ask1.reply_requested.reply_id, ask2.reply_requested.reply_id]
    await deliver_until(Deliverer(sessions, channels, FAST), sessions, ids, {"posted", "withdrawn"})
    withdrawn, posted = [await delivery(sessions, r) for r in ids]
    # Not a dead letter for a manager to puzzle over (it was, "refused"): the post is gone.
    assert (withdrawn.state, withdrawn.attempts) == ("withdrawn", 1)
    assert withdrawn.author_handle == "" and withdrawn.body == ""
    [event] = await outbox(sessions, "post-withdrawn.v1")  # for the router to withdraw it
    w = event.post_withdrawn
    assert (w.platform, w.post_id, w.channel) == ("bluesky", gone.uri, "lookup")
    assert posted.state == "posted" and len(await city_replies_to(peer, kept)) == 1


@pytest.mark.kafka
async def test_a_notifier_killed_after_the_pds_created_the_reply_never_replies_twice(
    bluesky_peer: BlueskyPeer,
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    peer = bluesky_peer
    post, ask = await citizen_request(sessions, peer)
    reply_id = ask.reply_requested.reply_id
    await publish_asked(kafka, kafka_namespace, ask)
    password = tmp_path / "bluesky-password"
    password.write_text(peer.city.password + "\n")
    async with proxy(peer.pds_url) as pds:
        env = {
            **base_env(kafka.bootstrap, kafka_namespace, database_url),
            "PLAZA_BLUESKY_HANDLE": peer.city.handle,
            "PLAZA_BLUESKY_PASSWORD_FILE": str(password),
            "PLAZA_BLUESKY_PDS_URL": pds.url,
            "PLAZA_REPLY_SENDING_LEASE_SECONDS": "2",
        }
        pds.hold(b"com.atproto.repo.createRecord")  # the record is created, the answer is lost
        notifier = ServiceProcess("notifier", env, tmp_path).start()
        try:
            await asyncio.wait_for(pds.holding.wait(), 60)
            for _ in range(100):  # the PDS has created it...
                if await city_replies_to(peer, post):
                    break
                await asyncio.sleep(0.1)
            notifier.kill()
        finally:
            pds.drop()
            pds.restore()
        pds.hold(b"never")
        assert len(await city_replies_to(peer, post)) == 1
        sending = await delivery(sessions, reply_id)
        assert (sending.state, sending.maybe_sent) == ("sending", True)  # ...but it never knew
        notifier = await notifier_until_posted(sessions, reply_id, env, tmp_path)
    done = await delivery(sessions, reply_id)
    [reply] = await city_replies_to(peer, post)  # exactly one record in the city's repo
    assert (done.state, done.remote_id) == ("posted", reply["uri"])
    assert AtUri.parse(reply["uri"]).rkey == tid_for(reply_id)
    log = notifier.log()
    assert "was already in the thread" in log
    assert peer.city.password not in log  # credentials never reach the log
