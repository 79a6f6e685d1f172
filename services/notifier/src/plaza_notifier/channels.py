"""Reply channels. The log channel keeps every reply in the database (and the log) instead of
posting it to a social platform; platform channels come with the social connectors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from plaza.db.models import Reply
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingReply:
    reply_id: str
    service_request_id: str
    kind: str
    language: str
    platform: str
    in_reply_to_post_id: str
    author_handle: str
    text: str


async def record_reply(session: AsyncSession, reply: OutgoingReply, posted_at: datetime) -> bool:
    """The log channel: stores the reply once (by reply_id). False if it was already recorded."""
    stmt = (
        insert(Reply)
        .values(
            reply_id=reply.reply_id,
            service_request_id=int(reply.service_request_id) if reply.service_request_id else None,
            kind=reply.kind,
            language=reply.language,
            platform=reply.platform,
            channel="log",
            in_reply_to_post_id=reply.in_reply_to_post_id,
            text=reply.text,
            remote_id=None,
            posted_at=posted_at,
        )
        .on_conflict_do_nothing(index_elements=[Reply.reply_id])
        .returning(Reply.reply_id)
    )
    created = (await session.execute(stmt)).first() is not None
    if created:
        log.info(
            "reply %s to %s on %s: %s",
            reply.reply_id,
            reply.author_handle,
            reply.platform,
            reply.text,
        )
    return created
