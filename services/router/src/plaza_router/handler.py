"""The router's handler: post-classified in; a request in a queue, request-created and reply-requested out."""

from __future__ import annotations

from collections.abc import Sequence

from plaza.city import of_district
from plaza.contracts import (
    Envelope,
    LocationSource,
    Outgoing,
    PostClassified,
    ReplyKind,
    ReplyRequested,
    RequestCreated,
    Urgency,
    derive_event_id,
    envelope,
    from_timestamp,
    post_key,
    timestamp,
)
from plaza.db.inbox import first_time
from plaza.db.models import ServiceRequest
from plaza.requests import NEW, TRIAGE_QUEUE
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_router.repository import create_request, request_for_post
from plaza_router.settings import NotActionableReply, RouterSettings
from plaza_router.sla import SlaPolicy

GROUP = "plaza-router"
CITY_AGENCY = "Ajuntament de Barcelona"

_SOURCE_NAMES = {
    LocationSource.LOCATION_SOURCE_GEO: "geo",
    LocationSource.LOCATION_SOURCE_TEXT: "text",
}


class RoutePost:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sla: SlaPolicy,
        not_actionable_reply: NotActionableReply = NotActionableReply.NONE,
        min_location_confidence: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._sla = sla
        self._not_actionable_reply = not_actionable_reply
        self._min_location_confidence = min_location_confidence

    @classmethod
    def from_settings(
        cls, sessions: async_sessionmaker[AsyncSession], settings: RouterSettings
    ) -> RoutePost:
        return cls(
            sessions,
            settings.sla(),
            settings.not_actionable_reply,
            settings.min_location_confidence,
        )

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        classified = event.post_classified
        post = classified.post
        if not classified.actionable:
            # Praise, jokes, chatter: no request, no queue entry; at most a polite reply,
            # whose id derives from the post so that a redelivery cannot reply twice.
            if self._not_actionable_reply is NotActionableReply.NONE:
                return []
            return [self._acknowledge_chatter(event)]
        async with self._sessions.begin() as session:
            fresh = await first_time(session, GROUP, event.event_id)
            if fresh:
                request = await create_request(session, self._values(classified))
            else:
                # A redelivery: the request exists; announce it again with the same event ids.
                request = await request_for_post(session, post.platform, post.post_id)
        return self._announce(event, request, classified.placement.district_name)

    def _values(self, c: PostClassified) -> dict[str, object]:
        post = c.post
        place = c.placement
        requested_at = from_timestamp(post.created_at)
        district = place.district_code or None
        # A district the classifier is unsure of is only a hint: a person in triage decides.
        routed = district if place.confidence >= self._min_location_confidence else None
        return {
            "status": NEW,
            "service_code": c.service_code,
            "description": post.text,
            "requested_datetime": requested_at,
            "updated_datetime": requested_at,
            "expected_datetime": self._sla.due(requested_at, c.urgency),
            "address": post.address or None,
            "lat": post.latitude if post.HasField("latitude") else None,
            "long": post.longitude if post.HasField("longitude") else None,
            "media_url": post.media_urls[0] if post.media_urls else None,
            "media_urls": list(post.media_urls),
            "agency_responsible": (
                f"Districte {of_district('ca', place.district_name)}" if routed else CITY_AGENCY
            ),
            "district_code": district,
            "barri_code": place.barri_code or None,
            "location_source": _SOURCE_NAMES.get(place.source, "none"),
            "queue": routed or TRIAGE_QUEUE,
            "urgency": "urgent" if c.urgency == Urgency.URGENCY_URGENT else "normal",
            "language": c.language or post.language or "other",
            "service_confidence": c.service_confidence,
            "channel": post.channel or post.platform,
            "source_platform": post.platform,
            "source_post_id": post.post_id,
            "source_author_handle": post.author_handle,
            "source_public_url": post.public_url or None,
        }

    @staticmethod
    def _acknowledge_chatter(event: Envelope) -> Outgoing:
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

    @staticmethod
    def _announce(event: Envelope, request: ServiceRequest, district_name: str) -> list[Outgoing]:
        rid = request.service_request_id
        correlation = event.correlation_id or event.event_id
        created = RequestCreated(
            service_request_id=rid,
            status=request.status,
            service_code=request.service_code,
            queue=request.queue,
            placement=event.post_classified.placement,
            requested_at=timestamp(request.requested_datetime),
            urgency=event.post_classified.urgency,
            source_platform=request.source_platform,
            source_post_id=request.source_post_id,
            language=request.language,
        )
        if request.expected_datetime is not None:
            created.expected_at.CopyFrom(timestamp(request.expected_datetime))
        params = {"service_request_id": rid, "queue": request.queue}
        if district_name and request.queue != TRIAGE_QUEUE:
            params["district_name"] = district_name
        if request.expected_datetime is not None:
            params["expected_datetime"] = request.expected_datetime.isoformat()
        reply = ReplyRequested(
            reply_id=derive_event_id("reply", rid, "acknowledged"),
            service_request_id=rid,
            kind=ReplyKind.REPLY_KIND_ACKNOWLEDGED,
            language=request.language,
            platform=request.source_platform,
            in_reply_to_post_id=request.source_post_id,
            author_handle=request.source_author_handle,
            params=params,
        )
        return [
            envelope(
                created,
                key=rid,
                event_id=derive_event_id("request-created", rid),
                correlation_id=correlation,
            ),
            envelope(
                reply,
                key=rid,
                event_id=derive_event_id("reply-requested", reply.reply_id),
                correlation_id=correlation,
            ),
        ]
