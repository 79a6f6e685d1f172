"""The router's handler: post-classified in; a new request in a queue, or a report merged into an
open one, or a reopened request. All its effects go through the outbox, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from plaza.city import City
from plaza.contracts import (
    Envelope,
    Outgoing,
    PostClassified,
    ReplyKind,
    ReplyRequested,
    Urgency,
    derive_event_id,
    envelope,
    from_timestamp,
    post_key,
)
from plaza.db.inbox import first_time, first_times
from plaza.db.models import Reply, RequestReport, ServiceRequest
from plaza.lifecycle import Command, NewReport, act, add_report, merge_report, open_request
from plaza.outbox import stage
from plaza.policy import RoutingTable, SlaPolicy
from plaza.requests import CLOSED_STATUSES, Action, Status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_router.dedupe import DuplicatePolicy, find_duplicate, lock_service
from plaza_router.settings import NotActionableReply, RouterSettings

GROUP = "plaza-router"


class RoutePost:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        city: City,
        *,
        sla: SlaPolicy,
        routing: RoutingTable,
        duplicates: DuplicatePolicy = DuplicatePolicy(),
        not_actionable_reply: NotActionableReply = NotActionableReply.NONE,
        min_location_confidence: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._city = city
        self._sla = sla
        self._routing = routing
        self._duplicates = duplicates
        self._not_actionable_reply = not_actionable_reply
        self._min_location_confidence = min_location_confidence

    @classmethod
    def from_settings(
        cls, sessions: async_sessionmaker[AsyncSession], city: City, settings: RouterSettings
    ) -> RoutePost:
        return cls(
            sessions,
            city,
            sla=SlaPolicy.load(settings.sla_config),
            routing=RoutingTable.load(settings.routing_config),
            duplicates=DuplicatePolicy(
                radius_m=settings.duplicate_radius_m,
                window=timedelta(hours=settings.duplicate_window_hours),
                text_similarity=settings.duplicate_text_similarity,
            ),
            not_actionable_reply=settings.not_actionable_reply,
            min_location_confidence=settings.min_location_confidence,
        )

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        classified = event.post_classified
        async with self._sessions.begin() as session:
            # Everything this event causes is committed with its inbox row: a redelivery finds
            # the row and does nothing, so each effect happens once.
            if not await first_time(session, GROUP, event.event_id):
                return []
            await self._route(session, event, classified)
        return []

    async def batch(self, events: Sequence[Envelope]) -> Sequence[Outgoing]:
        """Routes several events in one transaction (the worker's batch handler): one commit
        for them all. The services' dedupe locks are taken up front in one order, so two
        routers never wait for each other's locks in opposite orders."""
        async with self._sessions.begin() as session:
            fresh = await first_times(session, GROUP, [e.event_id for e in events])
            todo = [e for e in events if e.event_id in fresh]
            codes = {e.post_classified.service_code for e in todo if e.post_classified.actionable}
            for code in sorted(codes):
                await lock_service(session, code)
            for event in todo:
                if event.event_id in fresh:
                    fresh.discard(event.event_id)  # the same event twice in a batch: once
                    await self._route(session, event, event.post_classified)
        return []

    async def _route(self, session: AsyncSession, event: Envelope, c: PostClassified) -> None:
        post = c.post
        correlation = event.correlation_id or event.event_id
        if await self._already_reported(session, post.platform, post.post_id):
            return  # the same post reached us twice by different channels
        report = NewReport(
            platform=post.platform,
            post_id=post.post_id,
            author_handle=post.author_handle,
            text=post.text,
            language=c.language or post.language or "other",
            reported_at=from_timestamp(post.created_at),
            lat=post.latitude if post.HasField("latitude") else None,
            long=post.longitude if post.HasField("longitude") else None,
            address=post.address or None,
            public_url=post.public_url or None,
            channel=post.channel,
            media_urls=tuple(post.media_urls),
        )
        now = datetime.now(UTC)
        if post.reply_to_post_id and await self._follow_up(
            session, report, post.reply_to_post_id, now, correlation
        ):
            return
        if not c.actionable:
            if self._not_actionable_reply is NotActionableReply.ACKNOWLEDGE:
                stage(session, [self._thank(event)])
            return
        await lock_service(session, c.service_code)
        place = c.placement
        duplicate = await find_duplicate(
            session,
            self._duplicates,
            service_code=c.service_code,
            reported_at=report.reported_at,
            text_=report.text,
            lat=report.lat,
            lon=report.long,
            barri_code=place.barri_code or None,
        )
        if duplicate is not None:
            await merge_report(
                session,
                duplicate,
                report,
                actor="router",
                now=now,
                correlation_id=correlation,
                city=self._city,
            )
            return
        # A district the classifier is unsure of is only a hint: a person in triage decides.
        sure = place.district_code and place.confidence >= self._min_location_confidence
        route = self._routing.route(
            place.district_code if sure else None, place.district_name, c.service_code
        )
        await open_request(
            session,
            report,
            service_code=c.service_code,
            urgent=c.urgency == Urgency.URGENCY_URGENT,
            service_confidence=c.service_confidence,
            placement=place,
            route=route,
            sla=self._sla,
            actor="router",
            correlation_id=correlation,
        )

    @staticmethod
    async def _already_reported(session: AsyncSession, platform: str, post_id: str) -> bool:
        found = await session.execute(
            select(RequestReport.id).where(
                RequestReport.platform == platform, RequestReport.post_id == post_id
            )
        )
        return found.first() is not None

    async def _follow_up(
        self,
        session: AsyncSession,
        report: NewReport,
        reply_to: str,
        now: datetime,
        correlation: str,
    ) -> bool:
        """A citizen answering in a request's thread: a resolved request they reported is
        reopened; an open one gets the post as another report. False if not a known thread."""
        request_id = (
            await session.execute(
                select(RequestReport.service_request_id).where(
                    RequestReport.platform == report.platform, RequestReport.post_id == reply_to
                )
            )
        ).scalar_one_or_none()
        if request_id is None:
            request_id = (
                await session.execute(
                    select(Reply.service_request_id).where(
                        Reply.platform == report.platform, Reply.remote_id == reply_to
                    )
                )
            ).scalar_one_or_none()
        if request_id is None:
            return False
        request = await session.get(ServiceRequest, request_id, with_for_update=True)
        if request is None:
            return False
        while request.duplicate_of is not None:  # follow a merge to the request that lives on
            target = await session.get(ServiceRequest, request.duplicate_of, with_for_update=True)
            if target is None:
                break
            request = target
        reporters = set(
            (
                await session.execute(
                    select(RequestReport.author_handle).where(
                        RequestReport.service_request_id == request.id
                    )
                )
            ).scalars()
        )
        if request.status in CLOSED_STATUSES:
            if report.author_handle not in reporters or request.status not in (
                Status.RESOLVED,
                Status.CLOSED,
            ):
                return False  # someone else's closed request: treat the post as a new report
            await act(
                session,
                request.id,
                Command(Action.REOPEN, actor=f"citizen:{report.author_handle}", note=report.text),
                now=now,
                sla=self._sla,
                routing=self._routing,
                city=self._city,
            )
            add_report(session, request, report, merged=True)
            return True
        await merge_report(
            session,
            request,
            report,
            actor="router",
            now=now,
            correlation_id=correlation,
            city=self._city,
        )
        return True

    @staticmethod
    def _thank(event: Envelope) -> Outgoing:
        classified = event.post_classified
        post = classified.post
        key = post_key(post.platform, post.post_id)
        reply = ReplyRequested(
            reply_id=derive_event_id("reply", key, "not-actionable"),
            kind=ReplyKind.REPLY_KIND_NOT_ACTIONABLE,
            language=classified.language or post.language,
            platform=post.platform,
            in_reply_to_post_id=post.post_id,
            author_handle=post.author_handle,
        )
        return envelope(
            reply,
            key=key,
            event_id=derive_event_id("reply-requested", reply.reply_id),
            correlation_id=event.correlation_id or event.event_id,
        )
