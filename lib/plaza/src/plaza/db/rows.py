"""Rows nobody reads back in the transaction that writes them (reports, audit events, outbox
events, the router's new requests), written in bulk when a caller asks for it.

Outside `rows_in_bulk` a row is an ORM object added to the session, as usual. Inside it (the
router's batches) rows are kept as plain values and written at its end, after a flush of the
session's own objects, in one statement: an INSERT per table (its rows as one JSON document,
so the text does not change with their number and is prepared once), each a data-modifying
WITH query of that statement, together with any other bulk write the caller added
(`also_execute`). The ORM would insert each table's rows with RETURNING of their ids, in
statements whose text changes with the number of rows: each one prepared anew, and the largest
single cost of a batch; and a statement per table is a round trip per table, each waking the
database's backend once more."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import orjson
from sqlalchemy import JSON, String, Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

from plaza.db.models import Base

_PENDING = "plaza.rows_in_bulk"
_ALSO = "plaza.rows_in_bulk.also"
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


@dataclass(frozen=True, slots=True)
class BulkWrite:
    """A data-modifying statement (INSERT, UPDATE, DELETE without RETURNING) whose parameters
    are written `:{p}name`: the prefix keeps them apart from the other writes' in the one
    statement they end up in."""

    sql: str
    params: Mapping[str, object]


def also_execute(session: AsyncSession, write: BulkWrite) -> None:
    """Inside `rows_in_bulk`: executes `write` at its end, in the statement with the rows (after
    the session's flush, so it must not touch what the session has pending)."""
    if _PENDING not in session.info:
        raise RuntimeError("also_execute is for rows_in_bulk")
    session.info[_ALSO].append(write)


@asynccontextmanager
async def rows_in_bulk(session: AsyncSession) -> AsyncIterator[None]:
    """Within: add_row keeps rows; at the end: the session is flushed, then the rows are
    inserted, each table's in the order they were added (so an outbox keeps its events' order),
    in one statement with the writes given to `also_execute`. On an error nothing kept is
    written (the caller's transaction rolls back)."""
    if _PENDING in session.info:
        raise RuntimeError("rows_in_bulk does not nest")
    pending: dict[type[Base], list[dict[str, object]]] = {}
    also: list[BulkWrite] = []
    session.info[_PENDING] = pending
    session.info[_ALSO] = also
    try:
        yield
    finally:
        del session.info[_PENDING]
        del session.info[_ALSO]
    await session.flush()
    # Tables that others refer to first (new requests before their reports); within a table,
    # in the order added. In one statement the order between tables does not matter (foreign
    # keys are checked at its end), but it does in the fallback below.
    writes: list[BulkWrite] = []
    for model in sorted(pending, key=lambda m: _DEPENDENCY_ORDER[m.__tablename__]):
        table = cast(Table, model.__table__)
        runs = [list(run) for _, run in itertools.groupby(pending[model], key=tuple)]
        if len(runs) > 1:
            # Rows of different columns (not the router's): a statement per run of rows with
            # the same columns, one after the other, so that their ids follow the order added
            # (two INSERTs of one statement into one table could take them in either order).
            await _execute(session, tuple(writes))
            writes = []
            for run in runs:
                await _execute(session, (_rows(table, run),))
            continue
        writes.append(_rows(table, runs[0]))
    await _execute(session, (*writes, *also))


def _rows(table: Table, rows: list[dict[str, object]]) -> BulkWrite:
    return BulkWrite(_json_insert(table, tuple(rows[0])), {"rows": _document(rows)})


async def _execute(session: AsyncSession, writes: tuple[BulkWrite, ...]) -> None:
    if not writes:
        return
    params: dict[str, object] = {}
    for i, write in enumerate(writes):
        params.update({f"w{i}_{name}": value for name, value in write.params.items()})
    await session.execute(_combined(tuple(w.sql for w in writes)), params)


_PREFIX = re.compile(r":\{p\}")


@functools.cache
def _combined(statements: tuple[str, ...]) -> TextClause:
    """One statement of several writes: each a WITH query (PostgreSQL runs every
    data-modifying one to its end, referred to or not); one alone, as it is."""
    named = [_PREFIX.sub(f":w{i}_", sql) for i, sql in enumerate(statements)]
    if len(named) == 1:
        return text(named[0])
    return text("WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(named)) + " SELECT")


@functools.cache
def _json_insert(table: Table, names: tuple[str, ...]) -> str:
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
    return (
        f"INSERT INTO {table.name} ({quoted}) SELECT {', '.join(selected)}"
        f" FROM ROWS FROM (json_to_recordset(CAST(:{{p}}rows AS json)) AS ({', '.join(declared)}))"
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
