"""The gateway's hot reads (a district queue page): one statement on a bare asyncpg connection,
prepared once per connection and kept in asyncpg's statement cache, no ORM, in a session whose
time zone is UTC.

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


async def _keep(_: asyncpg.Connection) -> None:
    """Hands a connection back as it is: it only ran single reads in autocommit, so there is no
    session state to reset (asyncpg's default reset is one more round trip per query)."""


class PooledReads:
    """Reads on a pool of the gateway's own: `await PooledReads.open(url)`, `await close()`."""

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self._pool = pool
        # First come, first served: asyncpg's pool hands a released connection to whoever asks
        # next, and a waiter it woke that lost the race queues again at the back, so under load
        # some requests wait for seconds. asyncio.Semaphore wakes its waiters in order and lets
        # nobody overtake them.
        self._turns = asyncio.Semaphore(size)

    @classmethod
    async def open(cls, database_url: str, *, size: int = 4) -> PooledReads:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        # min_size 0: connects on first use, as the engine does.
        # Generic plans: a queue page's statement is planned once per connection, not on each
        # execution (planning cost more than running it; its shape already picks the index).
        settings = {"timezone": "UTC", "plan_cache_mode": "force_generic_plan"}
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=size, reset=_keep, server_settings=settings
        )
        return cls(pool, size)

    async def fetch(self, sql: str, *args: object) -> Sequence[asyncpg.Record]:
        async with self._turns, self._pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def close(self) -> None:
        await self._pool.close()
