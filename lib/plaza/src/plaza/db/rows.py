"""Rows nobody reads back in the transaction that writes them (reports, audit events, outbox
events, the router's new requests), written in bulk when a caller asks for it.

Outside `rows_in_bulk` a row is an ORM object added to the session, as usual. Inside it (the
router's batches) rows are kept as plain values and written at its end, one statement per table
(asyncpg's executemany: prepared once, whatever the number of rows), after a flush of the
session's own objects, tables referred to before those referring to them. The ORM would insert
each table's rows with RETURNING of their ids, in statements whose text changes with the number
of rows: each one prepared anew, and the largest single cost of a batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from plaza.db.models import Base

_PENDING = "plaza.rows_in_bulk"
_DEPENDENCY_ORDER = {t.name: i for i, t in enumerate(Base.metadata.sorted_tables)}


def add_row(session: AsyncSession, model: type[Base], values: dict[str, object]) -> None:
    """Adds a row of `model` (its column names as keys) to the session's transaction."""
    pending: dict[type[Base], list[dict[str, object]]] | None = session.info.get(_PENDING)
    if pending is None:
        session.add(model(**values))
    else:
        pending.setdefault(model, []).append(values)


def in_bulk(session: AsyncSession) -> bool:
    """Whether the session is inside `rows_in_bulk` (add_row keeps its rows for the end)."""
    return _PENDING in session.info


@asynccontextmanager
async def rows_in_bulk(session: AsyncSession) -> AsyncIterator[None]:
    """Within: add_row keeps rows; at the end: the session is flushed, then each table's rows
    are inserted in the order they were added (so an outbox keeps its events' order). On an
    error nothing kept is written (the caller's transaction rolls back)."""
    if _PENDING in session.info:
        raise RuntimeError("rows_in_bulk does not nest")
    pending: dict[type[Base], list[dict[str, object]]] = {}
    session.info[_PENDING] = pending
    try:
        yield
    finally:
        del session.info[_PENDING]
    await session.flush()
    # Tables that others refer to first (new requests before their reports); within a table,
    # in the order added.
    for model in sorted(pending, key=lambda m: _DEPENDENCY_ORDER[m.__tablename__]):
        await session.execute(insert(cast(Table, model.__table__)), pending[model])
