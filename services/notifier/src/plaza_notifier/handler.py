"""The notifier's handler: reply-requested in; a recorded reply and reply-posted out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_notifier.channels import OutgoingReply, ReplyChannel, record_reply
from plaza_notifier.delivery import Delivery, enqueue
from plaza_notifier.metrics import REPLIES_FAILED, REPLIES_POSTED
from plaza_notifier.templates import TemplateError, Templates, compose, kind_name, render

GROUP = "plaza-notifier"


class PostReply:
    """Words the reply. To a platform with a channel it is handed to the delivery loop (a
    reply_deliveries row; its reply-posted event follows once it is posted); any other
    platform gets the log channel."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, ReplyChannel] | None = None,
        templates: Templates | None = None,
    ) -> None:
        self._sessions = sessions
        self._channels = channels or {}
        self._templates = templates

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
        channel = self._channels.get(req.platform)
        if channel is not None:
            await self._hand_over(event, channel)
            return []
        try:
            text, language = render(req.kind, req.language, req.params, self._templates)
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

    async def _hand_over(self, event: Envelope, channel: ReplyChannel) -> None:
        req = event.reply_requested
        photo = req.params.get("photo_url") or None
        try:
            text, language = compose(
                req.kind,
                req.language,
                req.params,
                platform=channel.platform,
                mention=req.author_handle if channel.mention_author else "",
                photo_attached=photo is not None,
                table=self._templates,
            )
        except (TemplateError, ValueError) as exc:
            raise Rejected(str(exc)) from exc
        delivery = Delivery(
            reply_id=req.reply_id,
            service_request_id=int(req.service_request_id) if req.service_request_id else None,
            kind=kind_name(req.kind),
            language=language,
            platform=req.platform,
            in_reply_to_post_id=req.in_reply_to_post_id,
            author_handle=req.author_handle,
            text=text,
            photo_url=photo,
            correlation_id=event.correlation_id or event.event_id,
        )
        async with self._sessions.begin() as session:
            await enqueue(session, delivery, datetime.now(UTC))
