"""The inbox: a consumer records each event id it handles, in the same transaction as its effects."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
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


_FIRST_TIMES = text(
    "INSERT INTO processed_events (consumer, event_id)"
    " SELECT :consumer, e FROM unnest(CAST(:ids AS text[])) AS e"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


async def first_times(session: AsyncSession, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """first_time() of many events in one statement: the ids not seen before (an id given twice
    counts once). The statement's text is the same whatever the number of ids, so it is
    compiled and prepared once."""
    if not event_ids:
        return set()
    ids = list(dict.fromkeys(event_ids))
    return set((await session.execute(_FIRST_TIMES, {"consumer": consumer, "ids": ids})).scalars())
