"""The inbox: a consumer records each event id it handles, in the same transaction as its effects,
and the rows older than any redelivery are pruned."""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from plaza.db.models import ProcessedEvent

RETENTION = timedelta(days=45)
"""How long an inbox row is kept by default. A redelivery comes from the bus's log only: a
record not committed, a group whose offsets expired reading from the start, or a dead letter
replayed (`plaza dead-letters replay`, with its event id) while another copy of the event was
handled. Kafka keeps a record at least its topic's retention (7 days; dead-letter topics 30),
and deletes it with its whole segment, which may be a segment roll (log.roll.hours, 7 days by
default) later: 37 days at the most, before the log retention check's minutes."""

PRUNED = Counter(
    "plaza_inbox_pruned_total",
    "Inbox rows (processed_events) deleted as older than any redelivery (by the SLA scanner)",
)

# The oldest rows first, through ix_processed_events_processed_at; rows another pruner is
# deleting are skipped rather than waited for. A TID scan deletes what the subquery locked.
_PRUNE = text(
    """
    DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM processed_events WHERE processed_at < :before
        ORDER BY processed_at LIMIT :n FOR UPDATE SKIP LOCKED
    ))
    """
)


async def first_time(session: AsyncSession, consumer: str, event_id: str) -> bool:
    """Records (consumer, event_id); False if it was already there, i.e. a redelivery."""
    stmt = (
        insert(ProcessedEvent)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(ProcessedEvent.event_id)
    )
    return (await session.execute(stmt)).first() is not None


async def prune(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Deletes up to `limit` inbox rows processed before `before`, the oldest first; returns
    how many. One batch: the caller commits it, and calls again while a batch comes back full."""
    result = await session.execute(_PRUNE, {"before": before, "n": limit})
    return int(result.rowcount)  # type: ignore[attr-defined]
