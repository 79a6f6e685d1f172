"""Builders shared by the lifecycle tests: classified posts, the router under test, the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plaza.city import City
from plaza.contracts import (
    Envelope,
    LocationSource,
    Placement,
    Post,
    PostClassified,
    Urgency,
    decode,
    derive_event_id,
    envelope,
    timestamp,
)
from plaza.db.models import OutboxRecord
from plaza.policy import RoutingTable, SlaPolicy
from plaza_router.dedupe import DuplicatePolicy
from plaza_router.handler import RoutePost
from plaza_router.settings import NotActionableReply
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# Read once: a crash test classifies thousands of posts.
DISTRICT_NAMES = {code: d.name for code, d in City.barcelona().districts.items()}

POSTED_AT = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
VERDI = (41.4036, 2.1566)  # carrer de Verdi, la Vila de Gràcia


def classified(
    post_id: str,
    *,
    district: str = "06",
    actionable: bool = True,
    urgent: bool = False,
    language: str = "ca",
    service_code: str = "streetlight",
    text: str = "El fanal del carrer de Verdi no funciona",
    at: datetime = POSTED_AT,
    latlon: tuple[float, float] | None = VERDI,
    barri: str = "31",
    confidence: float = 1.0,
    author: str = "",
    author_id: str = "",
    reply_to: str = "",
    address: str = "",
    street_address: str = "",
) -> PostClassified:
    post = Post(
        platform="mastodon",
        post_id=post_id,
        # each post by a neighbour of its own unless the test says who
        author_handle=author or f"@neighbour-{post_id}@bcn.social",
        author_id=author_id,
        text=text,
        created_at=timestamp(at),
        channel="webhook",
        reply_to_post_id=reply_to,
        address=address,
    )
    if latlon is not None:
        post.latitude, post.longitude = latlon
    place = (
        Placement(
            district_code=district,
            district_name=DISTRICT_NAMES[district],
            barri_code=barri,
            source=LocationSource.LOCATION_SOURCE_GEO
            if latlon
            else LocationSource.LOCATION_SOURCE_TEXT,
            confidence=confidence,
        )
        if district
        else Placement(source=LocationSource.LOCATION_SOURCE_NONE)
    )
    return PostClassified(
        post=post,
        service_code=service_code,
        service_confidence=0.9,
        actionable=actionable,
        placement=place,
        language=language,
        urgency=Urgency.URGENCY_URGENT if urgent else Urgency.URGENCY_NORMAL,
        street_address=street_address,
    )


def at_door(
    post_id: str, street: str, *, text: str = "", address: str = "", author_id: str = ""
) -> PostClassified:
    """A cleaning post with no point nor place that names a door (the classifier's
    street_address, `street`), as posts about a street's bins are: found by the address's key."""
    return classified(
        post_id,
        district="",
        barri="",
        latlon=None,
        service_code="cleaning",
        text=text or f"Contenidor ple a {street}",
        street_address=street,
        address=address,
        author_id=author_id,
    )


def as_event(body: PostClassified) -> Envelope:
    return envelope(
        body,
        key=f"mastodon:{body.post.post_id}",
        event_id=derive_event_id("post-classified", body.post.post_id),
        correlation_id="c",
    ).envelope


def router(
    sessions: async_sessionmaker[AsyncSession],
    *,
    duplicates: DuplicatePolicy | None = None,
    not_actionable_reply: NotActionableReply = NotActionableReply.NONE,
    min_location_confidence: float = 0.5,
) -> RoutePost:
    return RoutePost(
        sessions,
        City.barcelona(),
        sla=SlaPolicy.load(),
        routing=RoutingTable.load(),
        duplicates=duplicates or DuplicatePolicy(radius_m=60, window=timedelta(hours=72)),
        not_actionable_reply=not_actionable_reply,
        min_location_confidence=min_location_confidence,
    )


async def outbox(
    sessions: async_sessionmaker[AsyncSession], topic_suffix: str = ""
) -> list[Envelope]:
    """The events staged so far, oldest first (optionally only one topic, by its name)."""
    async with sessions() as s:
        rows = (await s.execute(select(OutboxRecord).order_by(OutboxRecord.id))).scalars().all()
    return [decode(r.topic, r.payload) for r in rows if r.topic.endswith(topic_suffix)]
