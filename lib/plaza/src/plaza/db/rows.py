"""Rows nobody reads back in the transaction that writes them (reports, audit events, outbox
events, the router's new requests), written in bulk when a caller asks for it.

Outside `rows_in_bulk` a row is an ORM object added to the session, as usual. Inside it (the
router's batches) rows are kept as plain values and written at its end, one statement per table
(the rows as one JSON document: prepared once, whatever the number of rows), after a flush of the
session's own objects, tables referred to before those referring to them. The ORM would insert
each table's rows with RETURNING of their ids, in statements whose text changes with the number
of rows: each one prepared anew, and the largest single cost of a batch."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import orjson
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
        await session.execute(_json_insert(table, names), {"rows": _document(rows)})


@functools.cache
def _json_insert(table: Table, names: tuple[str, ...]) -> TextClause:
    """All the rows in one statement, from one JSON array of them: `INSERT ... SELECT FROM
    json_to_recordset(...) WITH ORDINALITY ORDER BY` it, so ids follow the order the rows were
    added. One text parameter, whatever the rows: as typed arrays (a column each), the driver
    checked every element against collections.abc on the way, a tenth of the router's time."""
    declared, selected = [], []
    for name in names:
        column_type = table.columns[name].type
        declared.append(f'"{name}" {_declared(column_type)}')
        if isinstance(column_type, JSON):
            # A JSON null arrives as SQL NULL; the ORM writes None as JSON's null.
            selected.append(f"COALESCE(u.\"{name}\", 'null'::jsonb)")
        else:
            selected.append(f'u."{name}"')
    quoted = ", ".join(f'"{name}"' for name in names)
    return text(
        f"INSERT INTO {table.name} ({quoted}) SELECT {', '.join(selected)}"
        f" FROM ROWS FROM (json_to_recordset(CAST(:rows AS json)) AS ({', '.join(declared)}))"
        f" WITH ORDINALITY AS u({quoted}, n) ORDER BY u.n"
    )


def _declared(column_type: TypeEngine[object]) -> str:
    """The type a column's values are read as from the JSON. Strings as text, never as
    varchar(n): were a cast to varchar(n) ever applied it would cut a longer value short,
    silently, where the INSERT's own assignment to the column refuses it (as one row at a time
    would). A JSON array becomes an SQL array of the column's type."""
    if isinstance(column_type, JSON):
        return "jsonb"
    if isinstance(column_type, ARRAY):
        return f"{_declared(column_type.item_type)}[]"
    if isinstance(column_type, String):
        return "text"
    return str(column_type.compile(_DIALECT))


def _bytes(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input
    raise TypeError(f"{type(value).__name__} is not a column value rows_in_bulk can write")


def _document(rows: list[dict[str, object]]) -> str:
    """The rows as one JSON array (orjson: datetimes as RFC 3339, naive ones as UTC as the
    driver takes them; bytes as bytea's hex). JSON has no NaN (orjson writes null): a post's
    point, the only float from outside, is refused with its event when decoded (contracts)."""
    return orjson.dumps(rows, default=_bytes, option=orjson.OPT_NAIVE_UTC).decode()
