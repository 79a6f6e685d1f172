"""Public replies on X, against a local X API v2 (tests/peers/x_api.py) and real PostgreSQL
(and Kafka for the crash test): threaded replies with X's own mention of the citizen, the
resolution photo uploaded and attached, a 429 honouring x-rate-limit-reset, 5xx retried then
dead-lettered, and never two replies for one event, since X has no idempotency key: the
notifier is SIGKILLed between the HTTP call and its commit, and looks before sending again."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from plaza.contracts import Envelope, ReplyKind
from plaza.db.models import Reply
from plaza_notifier.channels import ChannelReply, ReplyChannel
from plaza_notifier.delivery import Deliverer, DeliveryPolicy
from plaza_notifier.handler import PostReply
from plaza_notifier.length import LIMITS
from plaza_notifier.photos import PhotoFetcher
from plaza_notifier.x import XChannel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.lifecycle_helpers import classified, outbox
from tests.integration.social_helpers import (
    Places,
    asked,
    deliver_until,
    delivery,
    kill_notifier_while_held,
    notifier_until_posted,
    publish_asked,
    routed,
)
from tests.peers.x_api import PHOTO, FakeX
from tests.processes import base_env

pytestmark = pytest.mark.postgres

FAST = DeliveryPolicy(base_delay=0.05, max_delay=0.2, poll_interval=0.05)
TWEETS = "/2/tweets"
_places = Places(41.400, 2.15)


@pytest.fixture
def x() -> Iterator[FakeX]:
    with FakeX() as server:
        yield server


@pytest.fixture
async def channels(x: FakeX) -> AsyncIterator[dict[str, ReplyChannel]]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield {"x": XChannel(x.account(), http)}


@pytest.fixture
async def local_photo_channels(x: FakeX) -> AsyncIterator[dict[str, ReplyChannel]]:
    """Channels that fetch photos from the local X, on 127.0.0.1: only with private hosts
    allowed (PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS), which a city's notifier never has."""
    photos = PhotoFetcher(allow_private_hosts=True)
    async with httpx.AsyncClient(timeout=5) as http:
        yield {"x": XChannel(x.account(), http, photos=photos)}


async def citizen_request(
    sessions: async_sessionmaker[AsyncSession],
    x: FakeX,
    text: str = "El fanal del carrer de Verdi no funciona",
    language: str = "ca",
) -> tuple[dict[str, Any], Envelope]:
    """A citizen's mention on X, routed into a request: the post and the reply-requested
    event of the acknowledgement."""
    tweet = x.citizen_posts(text, lang=language)
    post = classified(
        tweet["id"], author="@marta", language=language, latlon=_places.next(), text=text
    )
    post.post.platform = "x"
    ask = await routed(sessions, post)
    assert ask.reply_requested.platform == "x"
    return tweet, ask


def posted_bodies(x: FakeX) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in x.seen("POST", TWEETS) if r.path == TWEETS]


async def test_an_acknowledgement_is_posted_once_in_the_citizens_thread(
    x: FakeX,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tweet, ask = await citizen_request(sessions, x)
    notify = PostReply(sessions, channels)
    assert await notify(ask) == [] and await notify(ask) == []  # a redelivery adds nothing
    deliverer = Deliverer(sessions, channels, FAST)
    assert await deliverer.deliver_due() == 1
    assert await deliverer.deliver_due() == 0
    [reply] = x.replies_to(tweet["id"])
    rid = ask.reply_requested.service_request_id
    assert reply["author_id"] == x.city["id"]
    # X mentions the citizen itself: the text sent carries no handle, the post shows it.
    [sent] = posted_bodies(x)
    assert sent["reply"] == {"in_reply_to_tweet_id": tweet["id"]}
    assert sent["text"].startswith(f"Rebut! Petició #{rid}, districte de Gràcia.")
    assert reply["text"] == f"@marta {sent['text']}"
    assert LIMITS["x"].fits(sent["text"])
    stored = await delivery(sessions, ask.reply_requested.reply_id)
    assert (stored.state, stored.attempts, stored.remote_id) == ("posted", 1, reply["id"])
    assert stored.public_url == f"https://x.com/bcn/status/{reply['id']}"
    async with sessions() as s:
        [row] = (await s.execute(select(Reply))).scalars().all()
    assert (row.channel, row.remote_id) == ("x", reply["id"])
    [posted] = await outbox(sessions, "reply-posted.v1")
    assert posted.reply_posted.remote_id == reply["id"]
    auth = {r.headers["authorization"] for r in x.seen("POST", TWEETS)}
    assert auth == {f"Bearer {x.user_token}"}  # posting takes the user-context token


async def test_a_429_waits_for_x_rate_limit_reset_then_posts(
    x: FakeX,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    notify = PostReply(sessions, channels)
    first, ask1 = await citizen_request(sessions, x)
    second, ask2 = await citizen_request(sessions, x, "Un altre fanal apagat")
    await notify(ask1)
    await notify(ask2)
    limited = x.rate_limited(1)
    x.fail_next("POST", TWEETS, 429, headers=limited)
    reset = datetime.fromtimestamp(int(limited["x-rate-limit-reset"]), UTC)
    deliverer = Deliverer(sessions, channels, FAST)
    # The first gets the 429; the second waits too, without a call: the platform is paused.
    assert await deliverer.deliver_due() == 2
    waiting = await delivery(sessions, ask1.reply_requested.reply_id)
    assert (waiting.state, waiting.attempts, waiting.next_attempt_at) == ("pending", 0, reset)
    assert "429" in (waiting.last_error or "")
    also = await delivery(sessions, ask2.reply_requested.reply_id)
    assert (also.state, also.attempts, also.next_attempt_at) == ("pending", 0, reset)
    assert await deliverer.deliver_due() == 0  # nothing goes to X before the reset
    assert len(posted_bodies(x)) == 1
    ids = [ask1.reply_requested.reply_id, ask2.reply_requested.reply_id]
    await deliver_until(deliverer, sessions, ids, {"posted"})
    assert datetime.now(UTC) >= reset and len(posted_bodies(x)) == 3  # the 429, then both
    assert len(x.replies_to(first["id"])) == len(x.replies_to(second["id"])) == 1


async def test_5xx_are_retried_then_dead_lettered_and_a_refused_reply_holds_up_no_other(
    x: FakeX,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    notify = PostReply(sessions, channels)
    policy = DeliveryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1, poll_interval=0.05)
    deliverer = Deliverer(sessions, channels, policy)
    unlucky, ask = await citizen_request(sessions, x, "Fanal apagat al carrer de Verdi")
    await notify(ask)
    x.fail_next("POST", TWEETS, 503, times=policy.max_attempts)
    dead_id = ask.reply_requested.reply_id
    await deliver_until(deliverer, sessions, [dead_id], {"failed"})
    dead = await delivery(sessions, dead_id)
    assert dead.attempts == policy.max_attempts
    assert "503" in (dead.last_error or "") and "Service Unavailable" in (dead.last_error or "")
    assert not x.replies_to(unlucky["id"])
    # after each 5xx the outcome was unknown: the city's timeline was read before re-sending
    looks = x.seen("GET", f"/2/users/{x.city['id']}/tweets")
    assert len(looks) == policy.max_attempts - 1
    assert all(f"since_id={unlucky['id']}" in r.query for r in looks)
    # A reply to a deleted post is refused at once (403) and holds up no other.
    asks = [await citizen_request(sessions, x, f"Fanal {i} apagat a Gràcia") for i in range(2)]
    for _, a in asks:
        await notify(a)
    gone = asks[0][0]["id"]
    del x.tweets[gone]
    ids = [a.reply_requested.reply_id for _, a in asks]
    await deliver_until(deliverer, sessions, ids, {"posted", "failed"})
    refused, ok = [await delivery(sessions, r) for r in ids]
    assert (refused.state, refused.attempts) == ("failed", 1)
    assert "deleted or not visible" in (refused.last_error or "")
    assert ok.state == "posted" and len(x.replies_to(asks[1][0]["id"])) == 1


async def test_the_resolution_photo_is_uploaded_and_attached(
    x: FakeX,
    local_photo_channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tweet, ask = await citizen_request(sessions, x, language="es")
    photo = f"{x.base_url}/media/farola-arreglada.jpg"
    note = "Farola reparada 💡. " + "Hemos cambiado la lámpara y el cableado. " * 10
    event = asked(ask, "resolved-x-1", ReplyKind.REPLY_KIND_RESOLVED, note=note, photo_url=photo)
    await PostReply(sessions, local_photo_channels)(event)
    await deliver_until(
        Deliverer(sessions, local_photo_channels, FAST), sessions, ["resolved-x-1"], {"posted"}
    )
    [reply] = x.replies_to(tweet["id"])
    [key] = reply["attachments"]["media_keys"]
    [upload] = x.uploads
    assert key == f"3_{upload['id']}"
    assert upload["bytes"] == PHOTO and upload["category"] == "tweet_image"
    assert upload["media_type"] == "image/jpeg"
    stored = await delivery(sessions, "resolved-x-1")
    assert photo not in stored.body  # attached, not linked
    assert LIMITS["x"].fits(stored.body) and stored.body.endswith("…")  # the note was cut
    assert f"#{ask.reply_requested.service_request_id}" in stored.body
    assert not stored.body.startswith("@")  # X adds the mention


async def test_x_refusing_a_duplicate_gives_back_the_reply_already_there(
    x: FakeX, channels: dict[str, ReplyChannel]
) -> None:
    tweet = x.citizen_posts("La font de la plaça del Sol perd aigua")
    reply = ChannelReply(
        reply_id="dup-1",
        in_reply_to_post_id=tweet["id"],
        author_handle="@marta",
        text="Rebut! Petició #77 & la revisem avui.",
        language="ca",
        photo_url=None,
    )
    first = await channels["x"].post(reply)
    again = await channels["x"].post(reply)  # X: 403 duplicate content; the timeline has it
    assert again == first and len(x.replies_to(tweet["id"])) == 1
    assert await channels["x"].find(reply) == first
    other = dataclasses.replace(reply, text="Rebut! Petició #78.")
    assert await channels["x"].find(other) is None


@pytest.mark.kafka
async def test_a_notifier_killed_between_the_call_and_the_commit_never_replies_twice(
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    with FakeX() as x:
        tweet, ask = await citizen_request(sessions, x)
        reply_id = ask.reply_requested.reply_id
        await publish_asked(kafka, kafka_namespace, ask)
        user_token = tmp_path / "x-user-token"
        user_token.write_text(x.user_token + "\n")
        env = {
            **base_env(kafka.bootstrap, kafka_namespace, database_url),
            **x.settings(),
            "PLAZA_X_BEARER_TOKEN": x.app_token,
            "PLAZA_X_USER_TOKEN_FILE": str(user_token),
            "PLAZA_REPLY_SENDING_LEASE_SECONDS": "2",
        }
        # the post is created, the answer never comes
        await kill_notifier_while_held(x, env, tmp_path)
        assert len(x.replies_to(tweet["id"])) == 1  # it did post...
        sending = await delivery(sessions, reply_id)
        assert (sending.state, sending.maybe_sent) == ("sending", True)  # ...but never knew
        notifier = await notifier_until_posted(sessions, reply_id, env, tmp_path)
        done = await delivery(sessions, reply_id)
        [reply] = x.replies_to(tweet["id"])  # exactly one reply in the thread
        assert (done.state, done.remote_id) == ("posted", reply["id"])
        assert len(posted_bodies(x)) == 1  # looked, found, never sent again
        assert x.seen("GET", f"/2/users/{x.city['id']}/tweets")
        assert "was already in the thread" in notifier.log()
        assert x.user_token not in notifier.log() and x.app_token not in notifier.log()
