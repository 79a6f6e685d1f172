"""What a PostgreSQL error says: its SQLSTATE, and whether the database is only away for now.

Duck-typed on the errors' `sqlstate` (asyncpg's, or SQLAlchemy's wrapping of one), so that a
process without a database (ingest) can read them without importing a driver."""

from __future__ import annotations

from typing import Final

# SQLSTATE classes of a database that cannot serve now but will: 08 connection exception, 53
# insufficient resources (too many connections, disk full, out of memory).
_UNAVAILABLE_CLASSES: Final = frozenset({"08", "53"})
# Operator intervention: an administrator's or a crash's shutdown, and "the database system is
# starting up" (or recovering after a crash, which takes seconds to minutes): every connection
# attempt during a restart answers this one.
_UNAVAILABLE: Final = frozenset({"57P01", "57P02", "57P03"})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, raised by asyncpg itself or wrapped by SQLAlchemy
    (whose adapted error carries asyncpg's as its cause); None for any other error."""
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def database_unavailable(exc: BaseException) -> bool:
    """True for an error saying PostgreSQL is away for now (restarting, recovering, shutting
    down, out of connections or disk), which says nothing about the work that met it."""
    state = sqlstate(exc)
    return state is not None and (state in _UNAVAILABLE or state[:2] in _UNAVAILABLE_CLASSES)
