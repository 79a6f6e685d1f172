"""The posts the connectors put on the bus (table published_posts), by their ids: a deletion
seen after a restart is Plaza's business if its post is among them, routed yet or not."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Final

from plaza.bus.journal import RETENTION
from plaza.db.models import PublishedPost
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

# As long as the bus keeps a post: one still not routed by then never will be, and one routed
# is known by its report or its reply.
KEPT: Final = RETENTION


async def remember_published(
    session: AsyncSession, keys: Collection[tuple[str, str]], now: datetime
) -> None:
    """Records these posts (platform, post id) as published, in one statement."""
    if keys:
        rows = [{"platform": p, "post_id": i, "published_at": now} for p, i in keys]
        stmt = insert(PublishedPost)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[PublishedPost.platform, PublishedPost.post_id],
                set_={"published_at": stmt.excluded.published_at},
            ),
            rows,
        )


async def forget_published(session: AsyncSession, now: datetime | None = None) -> int:
    """Forgets the posts published longer than KEPT ago; how many."""
    cutoff = (now or datetime.now(UTC)) - KEPT
    result = await session.execute(delete(PublishedPost).where(PublishedPost.published_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
