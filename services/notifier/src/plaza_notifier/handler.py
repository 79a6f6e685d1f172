"""The notifier's handler: reply-requested in; a recorded reply and reply-posted out."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from plaza.contracts import (
    REPLY_KIND_NOT_ACTIONABLE,
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
from plaza.metrics import on_commit
from plaza.requests import parse_id
from plaza.withdrawals import withdrawn_of
from plaza.worker import Rejected
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_notifier.channels import OutgoingReply, ReplyChannel, record_replies
from plaza_notifier.delivery import Delivery, enqueue, enqueue_all
from plaza_notifier.metrics import REPLIES_FAILED, REPLIES_POSTED
from plaza_notifier.templates import TemplateError, Templates, compose, kind_name, render

GROUP = "plaza-notifier"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Stored:
    """A recorded reply, as ReplyPosted announces it."""

    platform: str
    kind: str
    channel: str
    text: str
    remote_id: str | None
    posted_at: datetime


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

    async def batch(self, events: Sequence[Envelope]) -> Sequence[Outgoing]:
        """Several reply requests in one transaction (the worker's batch handler): the
        deliveries handed over and the log channel's replies, each kind in one statement. A
        request this cannot take fails the whole batch, which the worker then handles one by
        one (so only that one is dead-lettered)."""
        deliveries: dict[str, Delivery] = {}
        replies: dict[str, tuple[Envelope, OutgoingReply]] = {}
        for event in events:
            _check(event)
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            gone = await withdrawn_of(session, {_answered(e) for e in events})
            for event in events:
                if _answered(event) in gone:
                    _withheld(event)
                    continue
                channel = self._channels.get(event.reply_requested.platform)
                if channel is not None:
                    deliveries.setdefault(
                        event.reply_requested.reply_id, self._delivery(event, channel)
                    )
                else:
                    replies.setdefault(event.reply_requested.reply_id, (event, self._reply(event)))
            await enqueue_all(session, deliveries.values(), now)
            return await self._record(session, list(replies.values()), now)

    async def _post(self, event: Envelope) -> Sequence[Outgoing]:
        _check(event)
        async with self._sessions.begin() as session:
            if await withdrawn_of(session, [_answered(event)]):
                _withheld(event)
                return []
            channel = self._channels.get(event.reply_requested.platform)
            if channel is not None:
                await enqueue(session, self._delivery(event, channel), datetime.now(UTC))
                return []
            return await self._record(session, [(event, self._reply(event))], datetime.now(UTC))

    def _reply(self, event: Envelope) -> OutgoingReply:
        """The reply as the log channel records it, worded in the citizen's language."""
        req = event.reply_requested
        try:
            text, language = render(req.kind, req.language, req.params, self._templates)
        except TemplateError as exc:
            raise Rejected(str(exc)) from exc
        return OutgoingReply(
            reply_id=req.reply_id,
            service_request_id=req.service_request_id,
            kind=kind_name(req.kind),
            language=language,
            platform=req.platform,
            in_reply_to_post_id=req.in_reply_to_post_id,
            author_handle=req.author_handle,
            text=text,
        )

    @staticmethod
    async def _record(
        session: AsyncSession, replies: Sequence[tuple[Envelope, OutgoingReply]], now: datetime
    ) -> list[Outgoing]:
        """Records the log channel's replies and announces each as posted."""
        if not replies:
            return []
        posted_now = await record_replies(session, [r for _, r in replies], now)
        # On a redelivery the stored reply is the truth: announce exactly what was posted.
        stored = {
            r.reply_id: _Stored(r.platform, r.kind, "log", r.text, None, now)
            for _, r in replies
            if r.reply_id in posted_now
        }
        earlier = [r.reply_id for _, r in replies if r.reply_id not in posted_now]
        if earlier:
            found = await session.execute(
                select(
                    Reply.reply_id,
                    Reply.platform,
                    Reply.kind,
                    Reply.channel,
                    Reply.text,
                    Reply.remote_id,
                    Reply.posted_at,
                ).where(Reply.reply_id.in_(earlier))
            )
            stored.update({row[0]: _Stored(*row[1:]) for row in found})
        outgoing: list[Outgoing] = []
        for event, reply in replies:
            row = stored[reply.reply_id]
            if reply.reply_id in posted_now:
                # once the rows are committed: a batch that fails is redone one at a time
                on_commit(session, REPLIES_POSTED.labels(row.platform, row.kind).inc)
            req = event.reply_requested
            posted = ReplyPosted(
                reply_id=reply.reply_id,
                service_request_id=req.service_request_id,
                platform=row.platform,
                channel=row.channel,
                text=row.text,
                remote_id=row.remote_id or "",
                posted_at=timestamp(row.posted_at),
            )
            outgoing.append(
                envelope(
                    posted,
                    key=req.service_request_id or post_key(req.platform, req.in_reply_to_post_id),
                    event_id=derive_event_id("reply-posted", reply.reply_id),
                    correlation_id=event.correlation_id or event.event_id,
                )
            )
        return outgoing

    def _delivery(self, event: Envelope, channel: ReplyChannel) -> Delivery:
        """The reply worded for its platform, to hand over to the delivery loop."""
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
        return Delivery(
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
            reporter=req.reporter,
        )


def _answered(event: Envelope) -> tuple[str, str, str]:
    """The post a reply answers, and its author where the request names them: only their
    withdrawal (or their platform's) withholds it."""
    req = event.reply_requested
    return req.platform, req.in_reply_to_post_id, req.reporter


def _withheld(event: Envelope) -> None:
    """A reply to a post its author withdrew is never sent: it is gone from the platform (a
    reply to it would be refused), and the citizen took it back."""
    req = event.reply_requested
    log.info(
        "reply %s not sent: %s %s was withdrawn",
        req.reply_id,
        req.platform,
        req.in_reply_to_post_id,
    )


def _check(event: Envelope) -> None:
    """Rejects a reply request that can never be posted (it is dead-lettered)."""
    req = event.reply_requested
    if not req.reply_id:
        raise Rejected("reply-requested has no reply_id")
    if req.service_request_id and parse_id(req.service_request_id) is None:
        raise Rejected(f"service_request_id {req.service_request_id!r} is not a request id")
    if not req.service_request_id and req.kind != REPLY_KIND_NOT_ACTIONABLE:
        raise Rejected(f"a {ReplyKind.Name(req.kind)} reply needs a service_request_id")
