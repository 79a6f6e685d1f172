"""The connectors' durable cursors (table connector_cursors)."""

from __future__ import annotations

from plaza.db.models import ConnectorCursor
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


async def load_cursor(session: AsyncSession, connector: str) -> str | None:
    row = await session.execute(
        select(ConnectorCursor.cursor).where(ConnectorCursor.connector == connector)
    )
    return row.scalar_one_or_none()


async def save_cursor(session: AsyncSession, connector: str, cursor: str) -> None:
    stmt = insert(ConnectorCursor).values(connector=connector, cursor=cursor)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ConnectorCursor.connector],
            set_={"cursor": stmt.excluded.cursor, "updated_at": func.now()},
        )
    )
