"""A report merged into its open request updates the request in place (a HOT update: no new entry
in any of the table's indexes), as most posts of a busy city are merged (migration 0026). An
index on a column a merge changes, or pages without room, would make every merge a full update
again: PostgreSQL's own counters say which it was."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from plaza.db.models import ServiceRequest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import POSTED_AT, as_event, classified, router

pytestmark = [pytest.mark.postgres]

PLACES = 40


async def updates(engine: AsyncEngine, database_url: str, at_least: int) -> tuple[int, int]:
    """service_requests' updates and HOT updates so far, once they reach `at_least`: a backend
    reports its counters when it ends (the engine's connections are closed first) or within a
    second."""
    await engine.dispose()
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for _ in range(100):
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            row = await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                " WHERE relname = 'service_requests'"
            )
            assert row is not None
            if row[0] >= at_least:
                return row[0], row[1]
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError(f"service_requests: {row[0]} updates counted, {at_least} expected")


async def test_a_merge_updates_its_request_in_place(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, database_url: str
) -> None:
    route = router(sessions)
    # requests 200 m apart over the city, of which the merges find one in ten, as a city's
    # merges find requests spread over the table's pages, not a page's every request
    grid = [(41.37 + 0.002 * (n // 20), 2.13 + 0.0025 * (n % 20)) for n in range(10 * PLACES)]
    places = grid[::10]
    for first in range(0, len(grid), 100):
        await route.batch(
            [as_event(classified(f"first{n}", latlon=p)) for n, p in enumerate(grid)][
                first : first + 100
            ]
        )
    before, hot_before = await updates(engine, database_url, 0)
    async with sessions.begin() as s:  # the BRIN's ranges summarized, as autosummarize does
        options = await s.scalar(
            text("SELECT reloptions FROM pg_class WHERE relname = 'ix_service_requests_updated'")
        )
        assert options == ["autosummarize=on"]
        await s.execute(text("SELECT brin_summarize_new_values('ix_service_requests_updated')"))
    # a neighbour's report of each an hour later, in a batch, then one more of each, one post
    # at a time
    later = POSTED_AT + timedelta(hours=1)
    await route.batch(
        [as_event(classified(f"again{n}", latlon=p, at=later)) for n, p in enumerate(places)]
    )
    for n, p in enumerate(places):
        await route(as_event(classified(f"third{n}", latlon=p, at=later)))
    async with sessions() as s:
        counts = (await s.execute(select(func.sum(ServiceRequest.reporters_count)))).scalar()
        opened = (await s.execute(select(func.count()).select_from(ServiceRequest))).scalar()
    assert (opened, counts) == (len(grid), len(grid) + 2 * PLACES)  # each later report merged
    after, hot_after = await updates(engine, database_url, before + 2 * PLACES)
    assert after - before == 2 * PLACES  # one update a merge
    assert hot_after - hot_before == after - before, "merges were not HOT updates"
    # Open311's updated_after through the BRIN finds them: a HOT update widens the summary of
    # its row's range (PostgreSQL 16), so the index is not left thinking the row older
    async with sessions.begin() as s:
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        query = text(
            "SELECT source_post_id FROM service_requests WHERE updated_datetime > :t"
            " ORDER BY source_post_id"
        )
        plan = "\n".join((await s.execute(text("EXPLAIN " + query.text), {"t": later})).scalars())
        assert "ix_service_requests_updated" in plan, plan
        found = (await s.execute(query, {"t": later - timedelta(minutes=30)})).scalars().all()
    assert found == sorted(f"first{n}" for n in range(0, len(grid), 10))
