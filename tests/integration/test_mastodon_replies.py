"""Public replies on Mastodon, against a local Mastodon (tests/peers/mastodon.py) and real
PostgreSQL (and Kafka for the crash test): threaded replies with an Idempotency-Key, the
resolution photo, 429s and rate-limit headers, 5xx retries, dead letters retried by a manager
through the API, and never two replies for one event even when the notifier is SIGKILLed
between the HTTP call and its commit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from plaza.contracts import Envelope, ReplyKind
from plaza.db.models import Reply
from plaza.social import html_to_text
from plaza_api.auth import Role
from plaza_notifier.channels import ReplyChannel
from plaza_notifier.delivery import Deliverer, DeliveryPolicy
from plaza_notifier.handler import PostReply
from plaza_notifier.mastodon import MastodonChannel
from plaza_notifier.metrics import REPLIES_DEAD_LETTERED
from plaza_notifier.photos import PhotoFetcher
from plaza_router.sla_scanner import SlaScanner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.api_helpers import client, gateway, new_key
from tests.integration.lifecycle_helpers import POSTED_AT, as_event, classified, outbox, router
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
from tests.peers.mastodon import PHOTO, FakeMastodon
from tests.processes import base_env

pytestmark = pytest.mark.postgres

FAST = DeliveryPolicy(base_delay=0.05, max_delay=0.2, poll_interval=0.05)
_places = Places(41.400, 2.15)


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    with FakeMastodon() as server:
        yield server


@pytest.fixture
async def channels(mastodon: FakeMastodon) -> AsyncIterator[dict[str, ReplyChannel]]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield {"mastodon": MastodonChannel(mastodon.account(), http)}


@pytest.fixture
async def local_photo_channels(mastodon: FakeMastodon) -> AsyncIterator[dict[str, ReplyChannel]]:
    """Channels that fetch photos from the local Mastodon, on 127.0.0.1: only with private hosts
    allowed (PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS), which a city's notifier never has."""
    photos = PhotoFetcher(allow_private_hosts=True)
    async with httpx.AsyncClient(timeout=5) as http:
        yield {"mastodon": MastodonChannel(mastodon.account(), http, photos=photos)}


async def citizen_request(
    sessions: async_sessionmaker[AsyncSession],
    mastodon: FakeMastodon,
    text: str = "El fanal del carrer de Verdi no funciona",
    language: str = "ca",
    visibility: str = "public",
) -> tuple[dict[str, Any], Envelope]:
    """A citizen's mention on Mastodon, routed into a request: its status and the
    reply-requested event of the acknowledgement."""
    status = mastodon.citizen_posts(text, language=language, visibility=visibility)
    post = classified(
        status["id"],
        author=f"@marta@{mastodon.host}",
        language=language,
        latlon=_places.next(),
        text=text,
        at=datetime.now(UTC),  # so that its due time is ahead, and in the reply
    )
    return status, await routed(sessions, post)


async def reply_asked(
    sessions: async_sessionmaker[AsyncSession],
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    text: str = "El fanal del carrer de Verdi no funciona",
) -> tuple[dict[str, Any], str]:
    """A citizen's mention routed, and its acknowledgement handed to the notifier: the status
    and the reply's id."""
    status, ask = await citizen_request(sessions, mastodon, text)
    await PostReply(sessions, channels)(ask)
    return status, ask.reply_requested.reply_id


async def test_an_acknowledgement_is_posted_once_in_the_citizens_thread(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    status, ask = await citizen_request(sessions, mastodon)
    notify = PostReply(sessions, channels)
    assert await notify(ask) == [] and await notify(ask) == []  # a redelivery adds nothing
    deliverer = Deliverer(sessions, channels, FAST)
    assert await deliverer.deliver_due() == 1
    assert await deliverer.deliver_due() == 0
    [reply] = mastodon.replies_to(status["id"])
    rid = ask.reply_requested.service_request_id
    assert reply["account"]["id"] == mastodon.city["id"] and reply["visibility"] == "public"
    text = html_to_text(reply["content"])
    assert text.startswith(f"@marta@{mastodon.host} Rebut! Petició #{rid}, districte de Gràcia.")
    assert "Previsió:" in text
    [call] = mastodon.seen("POST", "/api/v1/statuses")
    assert call.headers["idempotency-key"] == ask.reply_requested.reply_id
    stored = await delivery(sessions, ask.reply_requested.reply_id)
    assert (stored.state, stored.attempts, stored.remote_id) == ("posted", 1, reply["id"])
    async with sessions() as s:
        [row] = (await s.execute(select(Reply))).scalars().all()
    assert (row.channel, row.remote_id, row.service_request_id) == (
        "mastodon",
        reply["id"],
        int(rid),
    )
    [posted] = await outbox(sessions, "reply-posted.v1")
    assert posted.reply_posted.remote_id == reply["id"]
    assert posted.reply_posted.public_url == reply["url"]


async def test_a_429_and_a_spent_budget_wait_for_the_reset_time(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    notify = PostReply(sessions, channels)
    first, ask1 = await citizen_request(sessions, mastodon)
    second, ask2 = await citizen_request(sessions, mastodon, "Un altre fanal apagat")
    await notify(ask1)
    await notify(ask2)
    limited = mastodon.rate_limited(1.5)
    mastodon.fail_next("POST", "/api/v1/statuses", 429, headers=limited)
    reset = datetime.fromisoformat(limited["X-RateLimit-Reset"])
    deliverer = Deliverer(sessions, channels, FAST)
    # The first gets the 429; the second waits too, without a call: the platform is paused.
    assert await deliverer.deliver_due() == 2
    waiting = await delivery(sessions, ask1.reply_requested.reply_id)
    assert (waiting.state, waiting.attempts) == ("pending", 0)  # a wait is no failed attempt
    assert abs((waiting.next_attempt_at - reset).total_seconds()) < 0.01
    assert "429" in (waiting.last_error or "")
    also = await delivery(sessions, ask2.reply_requested.reply_id)
    assert (also.state, also.attempts, also.next_attempt_at) == (
        "pending",
        0,
        waiting.next_attempt_at,
    )
    assert await deliverer.deliver_due() == 0  # nothing goes to Mastodon before the reset
    assert len(mastodon.seen("POST", "/api/v1/statuses")) == 1
    await deliver_until(deliverer, sessions, [ask1.reply_requested.reply_id], {"posted"})
    assert datetime.now(UTC) >= reset
    # Now the budget runs out on a success: X-RateLimit-Remaining 0 until the reset.
    mastodon.rate_remaining, mastodon.rate_reset_in = 0, 1.0
    await deliver_until(deliverer, sessions, [ask2.reply_requested.reply_id], {"posted"})
    assert len(mastodon.replies_to(first["id"])) == len(mastodon.replies_to(second["id"])) == 1


async def test_5xx_are_retried_and_a_refused_reply_holds_up_no_other(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    notify = PostReply(sessions, channels)
    asks = [
        await citizen_request(sessions, mastodon, f"Fanal {i} apagat al carrer de Verdi")
        for i in range(3)
    ]
    for _, ask in asks:
        await notify(ask)
    gone = asks[2][0]["id"]
    del mastodon.statuses[gone]  # the citizen deleted the post: 404, never sent
    mastodon.fail_next("POST", "/api/v1/statuses", 503, times=3)
    ids = [ask.reply_requested.reply_id for _, ask in asks]
    await deliver_until(Deliverer(sessions, channels, FAST), sessions, ids, {"posted", "withdrawn"})
    states = [(await delivery(sessions, r)) for r in ids]
    # Not a dead letter for a manager (it was "failed"): the post is withdrawn, by lookup.
    assert [d.state for d in states] == ["posted", "posted", "withdrawn"]
    [event] = await outbox(sessions, "post-withdrawn.v1")
    assert (event.post_withdrawn.post_id, event.post_withdrawn.channel) == (gone, "lookup")
    assert sum(d.attempts for d in states[:2]) >= 4  # 503s were retried
    for status, _ in asks[:2]:
        assert len(mastodon.replies_to(status["id"])) == 1
    # after a 5xx the outcome is unknown: the thread was searched before sending again
    assert mastodon.seen("GET", "/api/v1/statuses/")
    assert {s.attempts for s in states} <= set(range(1, FAST.max_attempts + 1))


async def test_a_citizen_who_blocked_the_city_keeps_their_post_and_the_reply_waits(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Mastodon answers the blocked account's 404 for a status its author blocked it from: Plaza
    # took that for a deletion and withdrew the post, words, photo and all.
    status, reply_id = await reply_asked(sessions, mastodon, channels)
    mastodon.blocks_the_city("marta")
    await deliver_until(Deliverer(sessions, channels, FAST), sessions, [reply_id], {"failed"})
    given_up = await delivery(sessions, reply_id)
    assert given_up.attempts == 1 and "blocked the city" in (given_up.last_error or "")
    assert await outbox(sessions, "post-withdrawn.v1") == []  # not withdrawn
    assert mastodon.replies_to(status["id"]) == []
    # Deleted, it is withdrawn as before: nobody sees it any more.
    deleted, gone = await reply_asked(
        sessions, mastodon, channels, "Fanal apagat a la plaça del Sol"
    )
    del mastodon.statuses[deleted["id"]]
    await deliver_until(Deliverer(sessions, channels, FAST), sessions, [gone], {"withdrawn"})
    [event] = await outbox(sessions, "post-withdrawn.v1")
    assert event.post_withdrawn.post_id == deleted["id"]


async def test_a_dead_letter_is_seen_and_retried_by_its_manager_through_the_api(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    status, reply_id = await reply_asked(sessions, mastodon, channels)
    mastodon.fail_next("POST", "/api/v1/statuses", 502, times=2)
    policy = DeliveryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.1)
    deliverer = Deliverer(sessions, channels, policy)
    given_up = REPLIES_DEAD_LETTERED.labels("mastodon")._value.get()
    await deliver_until(deliverer, sessions, [reply_id], {"failed"})
    assert (await delivery(sessions, reply_id)).attempts == 2
    assert REPLIES_DEAD_LETTERED.labels("mastodon")._value.get() == given_up + 1
    app = gateway(sessions)
    keys = {
        "gracia": await new_key(sessions, Role.MANAGER, ["06"]),
        "sarria": await new_key(sessions, Role.MANAGER, ["05"]),
        "city_hall": await new_key(sessions, Role.CITY_HALL),
    }
    async with client(app, keys["gracia"]) as gracia, client(app, keys["sarria"]) as sarria:
        failed = (await gracia.get("/api/v1/replies", params={"state": "failed"})).json()
        assert [(f["reply_id"], f["district_code"], f["attempts"]) for f in failed] == [
            (reply_id, "06", 2)
        ]
        assert "502" in failed[0]["last_error"]
        assert (await sarria.get("/api/v1/replies?state=failed")).json() == []
        refused = await sarria.post(f"/api/v1/replies/{reply_id}/retry")
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        retried = await gracia.post(f"/api/v1/replies/{reply_id}/retry")
        assert retried.status_code == 200 and retried.json()["state"] == "pending"
        again = await gracia.post(f"/api/v1/replies/{reply_id}/retry")
        assert again.status_code == 409  # only a failed reply is retried
    await deliver_until(deliverer, sessions, [reply_id], {"posted"})
    assert len(mastodon.replies_to(status["id"])) == 1
    async with client(app, keys["city_hall"]) as city_hall:
        posted = (await city_hall.get("/api/v1/replies?state=posted")).json()
        assert [p["reply_id"] for p in posted] == [reply_id]


async def test_the_resolution_photo_is_uploaded_and_attached(
    mastodon: FakeMastodon,
    local_photo_channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    status, ask = await citizen_request(sessions, mastodon, language="es")
    photo = f"{mastodon.base_url}/files/farola-arreglada.jpg"
    note = "Farola reparada. " + "Hemos cambiado la lámpara y el cableado. " * 20
    event = asked(ask, "resolved-1", ReplyKind.REPLY_KIND_RESOLVED, note=note, photo_url=photo)
    await PostReply(sessions, local_photo_channels)(event)
    await deliver_until(
        Deliverer(sessions, local_photo_channels, FAST), sessions, ["resolved-1"], {"posted"}
    )
    [reply] = mastodon.replies_to(status["id"])
    [media] = reply["media_attachments"]
    assert media["url"] and media["type"] == "image"
    [upload] = mastodon.uploads
    assert upload["bytes"] == PHOTO and upload["content_type"] == "image/jpeg"
    assert len(mastodon.seen("GET", "/api/v1/media/")) >= 2  # 206 while processing, then 200
    stored = await delivery(sessions, "resolved-1")
    assert photo not in stored.body  # attached, not linked
    assert len(stored.body) <= 500 and stored.body.endswith("…")  # the long note was shortened
    assert f"#{ask.reply_requested.service_request_id}" in stored.body
    assert stored.body.startswith(f"@marta@{mastodon.host} ")


async def test_a_photo_on_a_private_address_is_left_out_and_the_reply_still_posted(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A worker's photo_url on the city's network (here the local Mastodon's own photo, on
    127.0.0.1) is never fetched under the default settings: the reply goes at the first
    attempt, without media (and without the link: its text was worded for an attachment)."""
    status, ask = await citizen_request(sessions, mastodon, language="es")
    photo = f"{mastodon.base_url}/files/farola-arreglada.jpg"
    event = asked(ask, "resolved-1", ReplyKind.REPLY_KIND_RESOLVED, note="Hecho", photo_url=photo)
    await PostReply(sessions, channels)(event)
    await deliver_until(Deliverer(sessions, channels, FAST), sessions, ["resolved-1"], {"posted"})
    [reply] = mastodon.replies_to(status["id"])
    assert reply["media_attachments"] == [] and mastodon.uploads == []
    assert mastodon.seen("GET", "/files/") == []  # never fetched
    stored = await delivery(sessions, "resolved-1")
    assert (stored.state, stored.attempts) == ("posted", 1)
    assert photo not in stored.body


async def test_a_missed_resolve_deadline_tells_every_reporter_it_is_late(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(classified("late-1")))
    await route(as_event(classified("late-2", author="@pere@bcn.social")))  # joins it
    assert await SlaScanner(sessions).scan_once(POSTED_AT + timedelta(days=60)) >= 1
    delayed = [
        e.reply_requested
        for e in await outbox(sessions, "reply-requested.v1")
        if e.reply_requested.kind == ReplyKind.REPLY_KIND_DELAYED
    ]
    assert sorted(r.in_reply_to_post_id for r in delayed) == ["late-1", "late-2"]


@pytest.mark.kafka
async def test_a_notifier_killed_between_the_call_and_the_commit_never_replies_twice(
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    # Like GoToSocial, this server ignores Idempotency-Key: only the thread search can help.
    with FakeMastodon(honour_idempotency=False) as mastodon:
        status, ask = await citizen_request(sessions, mastodon)
        reply_id = ask.reply_requested.reply_id
        await publish_asked(kafka, kafka_namespace, ask)
        env = {
            **base_env(kafka.bootstrap, kafka_namespace, database_url),
            "PLAZA_MASTODON_BASE_URL": mastodon.base_url,
            "PLAZA_MASTODON_TOKEN": mastodon.token,
            "PLAZA_REPLY_SENDING_LEASE_SECONDS": "2",
        }
        # the status is created, the answer never comes
        await kill_notifier_while_held(mastodon, env, tmp_path)
        assert len(mastodon.replies_to(status["id"])) == 1  # it did post...
        sending = await delivery(sessions, reply_id)
        assert (sending.state, sending.maybe_sent) == ("sending", True)  # ...but never knew
        notifier = await notifier_until_posted(sessions, reply_id, env, tmp_path)
        done = await delivery(sessions, reply_id)
        [reply] = mastodon.replies_to(status["id"])  # exactly one status in the thread
        assert (done.state, done.remote_id) == ("posted", reply["id"])
        assert len(mastodon.seen("POST", "/api/v1/statuses")) == 1
        assert mastodon.seen("GET", f"/api/v1/statuses/{status['id']}/context")
        assert "was already in the thread" in notifier.log()
        assert mastodon.token not in notifier.log()


@pytest.mark.parametrize("visibility", ["direct", "private", "unlisted"])
async def test_a_reply_reaches_no_wider_than_the_mention_it_answers(
    mastodon: FakeMastodon,
    channels: dict[str, ReplyChannel],
    sessions: async_sessionmaker[AsyncSession],
    visibility: str,
) -> None:
    """A citizen's direct message to the city got a public reply naming them and their
    request; now a reply has the visibility of what it answers, as Mastodon's clients do."""
    status, ask = await citizen_request(sessions, mastodon, visibility=visibility)
    await PostReply(sessions, channels)(ask)
    await deliver_until(
        Deliverer(sessions, channels, FAST), sessions, [ask.reply_requested.reply_id], {"posted"}
    )
    [reply] = mastodon.replies_to(status["id"])
    assert reply["visibility"] == visibility
