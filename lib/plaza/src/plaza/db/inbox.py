"""The inbox: a consumer records each event id it handles, in the same transaction as its effects."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from plaza.db.models import ProcessedEvent


async def first_time(session: AsyncSession, consumer: str, event_id: str) -> bool:
    """Records (consumer, event_id); False if it was already there, i.e. a redelivery."""
    stmt = (
        insert(ProcessedEvent)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(ProcessedEvent.event_id)
    )
    return (await session.execute(stmt)).first() is not None
