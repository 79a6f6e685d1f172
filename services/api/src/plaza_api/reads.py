"""The gateway's hot reads (a district queue page, Open311's requests): one statement on a bare
asyncpg connection, prepared once per connection and kept in asyncpg's statement cache, no ORM,
in a session whose time zone is UTC.

`python -m plaza_api` gives the gateway its own small asyncpg pool (`PooledReads`): a checkout
there costs no round trip, where the SQLAlchemy engine's pings each connection it hands out
(BEGIN, `;`, ROLLBACK). Without one (tests, embedded mode) reads borrow the engine's connections
(`EngineReads`): the same statements, the same results."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine


class Reads(Protocol):
    """Runs one read statement in a session whose time zone is UTC."""

    async def fetch(self, sql: str, *args: object) -> Sequence[asyncpg.Record]: ...


class EngineReads:
    """Reads on the SQLAlchemy engine's pooled connections, through their asyncpg driver."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch(self, sql: str, *args: object) -> Sequence[asyncpg.Record]:
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            async with driver.transaction():  # its own, so the time zone is set for it alone
                await driver.execute("SET LOCAL timezone = 'UTC'")
                rows: list[asyncpg.Record] = await driver.fetch(sql, *args)
            return rows


# What a connection lost while idle raises on its next use.
_LOST = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError, OSError)


class PooledReads:
    """Reads on a few connections of the gateway's own: `PooledReads.open(url)`, `close()`.

    Deliberately small, rather than asyncpg's pool: a read needs no reset when it is handed
    back (it ran one statement in autocommit), and connections go first come, first served.
    asyncpg's pool hands a released connection to whoever asks next, and a waiter it woke that
    lost the race queues again at the back: under load some requests waited for seconds.
    asyncio.Semaphore wakes its waiters in order and lets nobody overtake them."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._turns = asyncio.Semaphore(size)
        self._idle: list[asyncpg.Connection] = []
        self._closed = False

    @classmethod
    async def open(cls, database_url: str, *, size: int = 4) -> PooledReads:
        """Connects on first use, as the engine does."""
        return cls(database_url.replace("postgresql+asyncpg://", "postgresql://", 1), size)

    async def _connect(self) -> asyncpg.Connection:
        # Generic plans: a queue page's statement is planned once per connection, not on each
        # execution (planning cost more than running it; its shape already picks the index).
        settings = {"timezone": "UTC", "plan_cache_mode": "force_generic_plan"}
        return await asyncpg.connect(self._dsn, server_settings=settings)

    async def fetch(self, sql: str, *args: object) -> Sequence[asyncpg.Record]:
        async with self._turns:
            if self._closed:
                raise RuntimeError("the gateway's reads are closed")
            if self._idle:
                conn = self._idle.pop()
                try:
                    return await self._fetch_on(conn, sql, args)
                except _LOST:
                    pass  # the server closed it while it was idle (a restart): once more, anew
            return await self._fetch_on(await self._connect(), sql, args)

    async def _fetch_on(
        self, conn: asyncpg.Connection, sql: str, args: tuple[object, ...]
    ) -> Sequence[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        except BaseException:
            # Failed or cancelled half way: its state is unknown, so it is not reused.
            conn.terminate()
            raise
        if self._closed:
            await conn.close()
        else:
            self._idle.append(conn)
        return rows

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
