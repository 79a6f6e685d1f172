"""Rows nobody reads back in the transaction that writes them (reports, audit events, outbox
events, the router's new requests), written in bulk when a caller asks for it.

Outside `rows_in_bulk` a row is an ORM object added to the session, as usual. Inside it (the
router's batches) rows are kept as plain values and written at its end, one statement per table
(the rows as arrays, unnested: prepared once, whatever the number of rows), after a flush of the
session's own objects, tables referred to before those referring to them. The ORM would insert
each table's rows with RETURNING of their ids, in statements whose text changes with the number
of rows: each one prepared anew, and the largest single cost of a batch."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from sqlalchemy import JSON, String, Table, TextClause, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

from plaza.db.models import Base

_PENDING = "plaza.rows_in_bulk"
_DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
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
        table, rows = cast(Table, model.__table__), pending[model]
        names = tuple(rows[0])
        if any(row.keys() != rows[0].keys() for row in rows):
            await session.execute(insert(table), rows)  # rows of different columns
            continue
        await session.execute(
            _unnested_insert(table, names),
            {f"c{i}": _column(table, name, rows) for i, name in enumerate(names)},
        )


@functools.cache
def _unnested_insert(table: Table, names: tuple[str, ...]) -> TextClause:
    """All the rows in one statement, a column as an array each: `INSERT ... SELECT FROM
    unnest(...) WITH ORDINALITY ORDER BY` it, so ids follow the order the rows were added.
    executemany runs the statement once per row, each with its executor's start and end: a
    third of the cost of an audit or report row."""
    casts, selected = [], []
    for i, name in enumerate(names):
        column_type = table.columns[name].type
        if isinstance(column_type, ARRAY):
            # unnest would flatten an array of arrays: each row's array travels as JSON.
            casts.append(f"CAST(:c{i} AS jsonb[])")
            element = _array_element(column_type.item_type)
            selected.append(
                f"CASE WHEN u.c{i} IS NULL THEN NULL ELSE"
                f" ARRAY(SELECT jsonb_array_elements_text(u.c{i}))::{element}[] END"
            )
            continue
        casts.append(f"CAST(:c{i} AS {_array_element(column_type)}[])")
        selected.append(f"u.c{i}")
    listed = ", ".join(names)
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    return text(
        f"INSERT INTO {table.name} ({listed}) SELECT {', '.join(selected)}"
        f" FROM unnest({', '.join(casts)}) WITH ORDINALITY AS u({aliases}, n) ORDER BY u.n"
    )


def _array_element(column_type: TypeEngine[object]) -> str:
    """The type of the array a column's values travel in. Strings go as text, never as
    varchar(n): an explicit cast to varchar(n) cuts a longer value short, silently, where
    the INSERT's own assignment to the column refuses it (as one row at a time would)."""
    if isinstance(column_type, JSON):
        return "jsonb"
    if isinstance(column_type, String):
        return "text"
    return str(column_type.compile(_DIALECT))


def _column(table: Table, name: str, rows: list[dict[str, object]]) -> list[object]:
    """One column of the rows, as the array its unnest reads."""
    column_type = table.columns[name].type
    if isinstance(column_type, ARRAY):
        return [None if row[name] is None else json.dumps(row[name]) for row in rows]
    if isinstance(column_type, JSON):
        return [json.dumps(row[name]) for row in rows]  # as the ORM writes it: None is null
    return [row[name] for row in rows]
