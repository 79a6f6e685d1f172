"""The database layer on real PostgreSQL: migrations, the inbox, and idempotent handlers."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from plaza.contracts import (
    TOPICS,
    LocationSource,
    Placement,
    Post,
    PostClassified,
    ReplyKind,
    Urgency,
    derive_event_id,
    envelope,
    timestamp,
)
from plaza.db.inbox import first_time
from plaza.db.migrate import downgrade, upgrade
from plaza.db.models import Base, Reply, ServiceRequest
from plaza_notifier.handler import PostReply
from plaza_router.handler import RoutePost
from plaza_router.settings import NotActionableReply
from plaza_router.sla import SlaPolicy
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


def classified(
    post_id: str,
    *,
    district: str = "06",
    actionable: bool = True,
    urgent: bool = False,
    language: str = "ca",
) -> PostClassified:
    post = Post(
        platform="mastodon",
        post_id=post_id,
        author_handle="@marta@bcn.social",
        text="El fanal del carrer de Verdi no funciona",
        created_at=timestamp(datetime(2026, 5, 4, 10, 0, tzinfo=UTC)),
        latitude=41.4036,
        longitude=2.1566,
        channel="webhook",
    )
    place = (
        Placement(
            district_code=district,
            district_name="Gràcia",
            barri_code="31",
            barri_name="la Vila de Gràcia",
            source=LocationSource.LOCATION_SOURCE_GEO,
            confidence=1.0,
        )
        if district
        else Placement(source=LocationSource.LOCATION_SOURCE_NONE)
    )
    return PostClassified(
        post=post,
        service_code="streetlight",
        service_confidence=0.9,
        actionable=actionable,
        placement=place,
        language=language,
        urgency=Urgency.URGENCY_URGENT if urgent else Urgency.URGENCY_NORMAL,
    )


def as_event(body: PostClassified) -> object:
    return envelope(
        body,
        key=f"mastodon:{body.post.post_id}",
        event_id=derive_event_id("post-classified", body.post.post_id),
        correlation_id="c",
    ).envelope


async def count(sessions: async_sessionmaker[AsyncSession], model: type[Base]) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_migrations_match_the_models_and_go_down_and_up(
    database_url: str, engine: AsyncEngine
) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert diff == [], f"models and migrations differ: {diff}"
    await downgrade(database_url, "base")
    await upgrade(database_url)


async def test_inbox_recognises_a_redelivered_event(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as s:
        assert await first_time(s, "router", "e1") is True
    async with sessions.begin() as s:
        assert await first_time(s, "router", "e1") is False
        assert await first_time(s, "notifier", "e1") is True


async def test_routing_a_post_twice_opens_one_request_and_announces_the_same_events(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = RoutePost(sessions, SlaPolicy())
    event = as_event(classified("p1"))
    first = await route(event)  # type: ignore[arg-type]
    second = await route(event)  # type: ignore[arg-type]
    assert await count(sessions, ServiceRequest) == 1
    assert [o.envelope.event_id for o in first] == [o.envelope.event_id for o in second]
    assert [o.topic for o in first] == [TOPICS.REQUEST_CREATED.topic, TOPICS.REPLY_REQUESTED.topic]
    created = first[0].envelope.request_created
    async with sessions() as s:
        request = (await s.execute(select(ServiceRequest))).scalar_one()
    assert created.service_request_id == request.service_request_id
    assert request.queue == "06" and request.district_code == "06"
    assert request.agency_responsible == "Districte de Gràcia"
    assert request.expected_datetime == datetime(2026, 5, 7, 10, 0, tzinfo=UTC)
    assert first[1].key == request.service_request_id  # every event of a request on one key


async def test_router_puts_unlocated_posts_in_triage_and_ignores_chatter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = RoutePost(sessions, SlaPolicy())
    assert await route(as_event(classified("chat", actionable=False))) == []  # type: ignore[arg-type]
    out = await route(as_event(classified("nowhere", district="", urgent=True)))  # type: ignore[arg-type]
    async with sessions() as s:
        [request] = (await s.execute(select(ServiceRequest))).scalars().all()
    assert request.queue == "triage" and request.district_code is None
    assert request.urgency == "urgent"
    assert request.expected_datetime == datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    assert "district_name" not in out[1].envelope.reply_requested.params


async def test_notifier_records_each_reply_once_in_the_citizens_language(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = RoutePost(sessions, SlaPolicy())
    notify = PostReply(sessions)
    for pid, lang in (("ca1", "ca"), ("es1", "es"), ("en1", "en"), ("fr1", "other")):
        [_, reply_requested] = await route(as_event(classified(pid, language=lang)))  # type: ignore[arg-type]
        assert reply_requested.envelope.reply_requested.kind == ReplyKind.REPLY_KIND_ACKNOWLEDGED
        posted_once = await notify(reply_requested.envelope)
        posted_twice = await notify(reply_requested.envelope)
        assert posted_once[0].envelope.event_id == posted_twice[0].envelope.event_id
        assert (
            posted_once[0].envelope.reply_posted.text == posted_twice[0].envelope.reply_posted.text
        )
    async with sessions() as s:
        replies = {
            r.in_reply_to_post_id: r.text for r in (await s.execute(select(Reply))).scalars()
        }
        ids = {
            r.source_post_id: r.service_request_id
            for r in (await s.execute(select(ServiceRequest))).scalars()
        }
    assert len(replies) == 4
    assert replies["ca1"] == f"Rebut! Petició #{ids['ca1']}, districte de Gràcia."
    assert replies["es1"] == f"¡Recibido! Petición #{ids['es1']}, distrito de Gràcia."
    assert replies["en1"] == f"Received! Request #{ids['en1']}, Gràcia district."
    assert replies["fr1"].startswith("Rebut!")  # other languages get Barcelona's own


async def test_chatter_gets_a_polite_reply_only_when_the_city_wants_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    silent = RoutePost(sessions, SlaPolicy())
    polite = RoutePost(sessions, SlaPolicy(), NotActionableReply.ACKNOWLEDGE)
    notify = PostReply(sessions)
    thanks = as_event(classified("thanks-1", actionable=False, language="es"))
    assert await silent(thanks) == []  # type: ignore[arg-type]

    [ask] = await polite(thanks)  # type: ignore[arg-type]
    [again] = await polite(thanks)  # type: ignore[arg-type]
    assert ask.envelope.event_id == again.envelope.event_id
    assert ask.key == "mastodon:thanks-1"
    assert ask.envelope.reply_requested.kind == ReplyKind.REPLY_KIND_NOT_ACTIONABLE
    await notify(ask.envelope)
    [posted] = await notify(again.envelope)
    assert posted.envelope.reply_posted.text.startswith("¡Gracias por el mensaje!")
    assert await count(sessions, ServiceRequest) == 0
    async with sessions() as s:
        [reply] = (await s.execute(select(Reply))).scalars().all()
    assert reply.service_request_id is None and reply.in_reply_to_post_id == "thanks-1"


async def test_an_unsure_district_goes_to_triage_with_the_hint_kept(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = RoutePost(sessions, SlaPolicy(), min_location_confidence=0.6)
    unsure = classified("unsure-1")
    unsure.placement.confidence = 0.4  # two districts named in the text, say
    [_, reply] = await route(as_event(unsure))  # type: ignore[arg-type]
    async with sessions() as s:
        request = (await s.execute(select(ServiceRequest))).scalar_one()
    assert (request.queue, request.district_code) == ("triage", "06")
    assert request.agency_responsible == "Ajuntament de Barcelona"
    assert "district_name" not in reply.envelope.reply_requested.params
