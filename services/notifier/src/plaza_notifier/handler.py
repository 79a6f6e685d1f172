"""The notifier's handler: reply-requested in; a recorded reply and reply-posted out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from plaza.contracts import (
    Envelope,
    Outgoing,
    ReplyKind,
    ReplyPosted,
    derive_event_id,
    envelope,
    post_key,
    timestamp,
)
from plaza.db.models import Reply
from plaza.worker import Rejected
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_notifier.channels import OutgoingReply, record_reply
from plaza_notifier.templates import TemplateError, kind_name, render

GROUP = "plaza-notifier"

REPLIES_POSTED = Counter(
    "plaza_replies_posted_total",
    "Public replies posted to citizens (once each, redeliveries not counted), by platform and kind",
    ["platform", "kind"],
)
REPLIES_FAILED = Counter(
    "plaza_replies_failed_total",
    "Attempts to post a reply that failed, by platform and reason: rejected (it can never be "
    "posted; dead-lettered) or error (tried again)",
    ["platform", "reason"],
)


class PostReply:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        platform = event.reply_requested.platform or "none"
        try:
            return await self._post(event)
        except Rejected:
            REPLIES_FAILED.labels(platform, "rejected").inc()
            raise
        except Exception:
            REPLIES_FAILED.labels(platform, "error").inc()
            raise

    async def _post(self, event: Envelope) -> Sequence[Outgoing]:
        req = event.reply_requested
        if not req.reply_id:
            raise Rejected("reply-requested has no reply_id")
        if req.service_request_id and not req.service_request_id.isdigit():
            raise Rejected(f"service_request_id {req.service_request_id!r} is not a request id")
        if not req.service_request_id and req.kind != ReplyKind.REPLY_KIND_NOT_ACTIONABLE:
            raise Rejected(f"a {ReplyKind.Name(req.kind)} reply needs a service_request_id")
        try:
            text, language = render(req.kind, req.language, req.params)
        except TemplateError as exc:
            raise Rejected(str(exc)) from exc
        reply = OutgoingReply(
            reply_id=req.reply_id,
            service_request_id=req.service_request_id,
            kind=kind_name(req.kind),
            language=language,
            platform=req.platform,
            in_reply_to_post_id=req.in_reply_to_post_id,
            author_handle=req.author_handle,
            text=text,
        )
        async with self._sessions.begin() as session:
            posted_now = await record_reply(session, reply, datetime.now(UTC))
            # On a redelivery the stored reply is the truth: announce exactly what was posted.
            stored = (
                await session.execute(select(Reply).where(Reply.reply_id == req.reply_id))
            ).scalar_one()
        if posted_now:
            REPLIES_POSTED.labels(stored.platform, stored.kind).inc()
        posted = ReplyPosted(
            reply_id=stored.reply_id,
            service_request_id=req.service_request_id,
            platform=stored.platform,
            channel=stored.channel,
            text=stored.text,
            remote_id=stored.remote_id or "",
            posted_at=timestamp(stored.posted_at),
        )
        return [
            envelope(
                posted,
                key=req.service_request_id or post_key(req.platform, req.in_reply_to_post_id),
                event_id=derive_event_id("reply-posted", stored.reply_id),
                correlation_id=event.correlation_id or event.event_id,
            )
        ]
