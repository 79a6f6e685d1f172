"""The database layer: async engine and sessions, models, migrations and the inbox of processed events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(
    url: str, *, pool_size: int = 5, echo: bool = False, pre_ping: bool = True
) -> AsyncEngine:
    """An engine for `url` (postgresql+asyncpg://...). Connects lazily, on first use.

    pre_ping tests each connection as it leaves the pool, so that one PostgreSQL closed (a
    restart, a failover) is replaced before it fails a request: three round trips a transaction
    with asyncpg (BEGIN, an empty statement, ROLLBACK). Loops that retry a failed transaction
    themselves (the workers, the relay) go without it: a dead connection fails one attempt, the
    pool drops every connection as old as it, and the retry connects anew."""
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping, echo=echo
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
