"""The relay's round on real PostgreSQL reads the events it takes, not the outbox: in a burst the
relay falls behind and tens of thousands of events wait, and a round every 20 ms that read them
all would read a hundred million rows in a burst of 40,000 posts (as `id IN (SELECT ...)` did,
joining the whole outbox to the ids it wanted once the table's statistics showed it large)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from plaza.outbox import _TAKE_OLDEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.test_sla_scan_plan import rows_read

pytestmark = [pytest.mark.postgres]

WAITING = 20_000
ROUND = 1_000
_FILL = text(
    "INSERT INTO outbox (topic, key, payload)"
    " SELECT 'request-created.v1', i::text, convert_to(repeat('x', 300), 'UTF8')"
    " FROM generate_series(1, :n) AS i"
)


def reads(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan that reads the outbox (the table or its index), not the DELETE's."""
    if node.get("Relation Name") == "outbox" and node["Node Type"] != "ModifyTable":
        yield node
    for child in node.get("Plans", ()):
        yield from reads(child)


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_a_round_reads_only_the_events_it_takes_however_many_wait(
    sessions: async_sessionmaker[AsyncSession], analyzed: bool
) -> None:
    async with sessions.begin() as s:
        await s.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = off)"))
        await s.execute(_FILL, {"n": WAITING})
    if analyzed:
        async with sessions.begin() as s:  # committed: the statistics ANALYZE writes with it
            await (await s.connection()).exec_driver_sql("ANALYZE outbox")
    for mode in ("custom", "generic"):
        async with sessions.begin() as s:  # rolled back: the next mode finds the same outbox
            await s.execute(text(f"SET LOCAL plan_cache_mode = force_{mode}_plan"))
            found = await s.scalar(
                text("EXPLAIN (ANALYZE, FORMAT JSON) " + _TAKE_OLDEST.text), {"n": ROUND}
            )
            [root] = orjson.loads(found) if isinstance(found, str) else found
            plan = root["Plan"]
            nodes = list(reads(plan))
            kinds = [(n["Node Type"], n.get("Index Name")) for n in nodes]
            assert "Seq Scan" not in {kind for kind, _ in kinds}, (mode, kinds)
            assert plan["Actual Rows"] == ROUND, mode
            # the oldest ids through the primary key, then each of them by its id
            assert rows_read(nodes) <= 3 * ROUND, (mode, rows_read(nodes), kinds)
            await s.rollback()


async def test_a_round_takes_the_oldest_events_and_leaves_the_rest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as s:
        await s.execute(_FILL, {"n": 2_500})
        taken = (await s.execute(_TAKE_OLDEST, {"n": ROUND})).all()
    assert sorted(r.key for r in taken) == sorted(str(i) for i in range(1, ROUND + 1))
    async with sessions() as s:
        left = (await s.execute(text("SELECT key FROM outbox ORDER BY id"))).scalars().all()
    assert left == [str(i) for i in range(ROUND + 1, 2_501)]
