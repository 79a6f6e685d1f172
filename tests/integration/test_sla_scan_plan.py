"""The SLA scanner's scan on real PostgreSQL reads the requests due, not the table: each
deadline's candidates come from its partial index (migration 0025), whatever the table's size
when the plan was made and whether or not it has statistics. Asked as one OR of both
deadlines, the planner walked the primary key through every request, closed ones included,
every 15 seconds: 40 ms at 100,000 requests, and a city keeps millions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from plaza_router.sla_scanner import _LOCK_AND_REPLAN, _OVERDUE, SCANNER_LOCK, SlaScanner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import POSTED_AT

pytestmark = [pytest.mark.postgres]

# Requests over every status, their deadlines from 250 hours before POSTED_AT to 250 after,
# with the breach the scanner recorded for those past a deadline (as in a city's database,
# where the scanner has long caught up), except one in 100: those are due.
_FILL = text(
    """
    INSERT INTO service_requests (status, service_code, description, requested_datetime,
        expected_datetime, ack_due_at, ack_breached_at, resolve_breached_at,
        agency_responsible, district_code, barri_code, location_source, queue, urgency,
        language, service_confidence, channel, source_platform, source_post_id,
        source_author_handle, media_urls)
    SELECT g.status, 'cleaning', 'contenidor ple ' || g.i, g.due - interval '300 hours',
        g.due, g.due - interval '100 hours',
        CASE WHEN g.i % 100 <> 0 AND g.status IN ('new', 'reopened', 'transferred')
              AND g.due - interval '100 hours' < g.at THEN g.due - interval '100 hours' END,
        CASE WHEN g.i % 100 <> 0 AND g.status NOT IN ('resolved', 'closed') AND g.due < g.at
             THEN g.due END,
        'IMI', '06', '31', 'geo', 'district-06', 'normal', 'ca', 0.9, 'webhook', 'plan',
        'p' || g.i, '@neighbour', '{}'
    FROM (SELECT i, CAST(:at AS timestamptz) AS at,
            CAST(:at AS timestamptz) + ((i * 7919) % 500 - 250) * interval '1 hour' AS due,
            (ARRAY['new', 'acknowledged', 'assigned', 'in_progress', 'resolved', 'closed',
                   'reopened', 'transferred'])[1 + i % 8] AS status
          FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i) AS g
    """
)
FILLED = 20_000
_ACK_DUE = """status IN ('new', 'reopened', 'transferred') AND ack_breached_at IS NULL
    AND ack_due_at < :at"""
_RESOLVE_DUE = """status NOT IN ('resolved', 'closed') AND resolve_breached_at IS NULL
    AND expected_datetime < :at"""
_DUE = text(f"SELECT count(*) FROM service_requests WHERE ({_ACK_DUE}) OR ({_RESOLVE_DUE})")
_DEADLINES_DUE = text(
    f"SELECT count(*) FILTER (WHERE {_ACK_DUE}) + count(*) FILTER (WHERE {_RESOLVE_DUE})"
    " FROM service_requests"
)


def rows_read(nodes: list[dict[str, Any]]) -> int:
    """The rows the nodes read: those they gave, and those their filters dropped."""
    return sum(
        (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"] for n in nodes
    )


def reads(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan that reads service_requests (the table or an index of it)."""
    if node.get("Relation Name") == "service_requests":
        yield node
    for child in node.get("Plans", ()):
        yield from reads(child)


async def explained(session: AsyncSession, mode: str, batch: int) -> dict[str, Any]:
    """The scan's plan, as run, when the plan cache replans for each execution (custom) or
    reuses one plan (generic)."""
    await session.execute(text(f"SET LOCAL plan_cache_mode = force_{mode}_plan"))
    found = await session.scalar(
        text("EXPLAIN (ANALYZE, FORMAT JSON) " + _OVERDUE.text),
        {"now": POSTED_AT, "n": batch},
    )
    [root] = orjson.loads(found) if isinstance(found, str) else found
    return root["Plan"]


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_a_scan_reads_the_requests_due_through_their_deadlines_indexes(
    sessions: async_sessionmaker[AsyncSession], analyzed: bool
) -> None:
    async with sessions.begin() as s:
        await s.execute(text("ALTER TABLE service_requests SET (autovacuum_enabled = off)"))
        await s.execute(_FILL, {"at": POSTED_AT, "first": 1, "last": FILLED})
        due = await s.scalar(_DUE, {"at": POSTED_AT})
    assert due is not None and 50 < due < 200  # one in 100 of those past a deadline
    if analyzed:
        async with sessions.begin() as s:  # committed: the statistics ANALYZE writes with it
            await (await s.connection()).exec_driver_sql("ANALYZE service_requests")
    for mode in ("custom", "generic"):
        async with sessions.begin() as s:  # rolled back: nothing is breached
            plan = await explained(s, mode, batch=500)
            nodes = list(reads(plan))
            kinds = [(n["Node Type"], n.get("Index Name")) for n in nodes]
            # each deadline from its own index, then the rows by their ids (one by one, or as
            # a bitmap of the primary key's entries): never the table, nor its primary key
            # walked in order
            assert {"ix_service_requests_ack_due", "ix_service_requests_resolve_due"} <= {
                name for _, name in kinds
            }, (mode, kinds)
            assert "Seq Scan" not in {kind for kind, _ in kinds}, (mode, kinds)
            for node in nodes:
                if node.get("Index Name") == "pk_service_requests":
                    assert "Index Cond" in node, (mode, node)
            # what is due, each row at most once through each index and once by its id
            read = rows_read(nodes)
            assert read <= 3 * due, (mode, read, due)
            assert plan["Actual Rows"] == due, mode


async def test_a_scan_prepared_on_an_empty_table_reads_only_what_is_due_once_it_has_grown(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A router started on a new city's database prepares its scan on an empty table. Had the
    statement kept the generic plan it made then (until the table's first analyze), it would
    look the due ids up in the whole table, read once a scan; the scanner has each scan planned
    afresh, as its lock says (_LOCK_AND_REPLAN), so the same statement, even where the plan
    cache would keep generic plans, reads only what is due once the table holds 20,000."""
    async with sessions() as s:
        await s.execute(text("ALTER TABLE service_requests SET (autovacuum_enabled = off)"))
        await s.commit()
        driver = (await (await s.connection()).get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        statement = await driver.prepare(
            _OVERDUE.text.replace(":now", "$1::timestamptz").replace(":n", "$2::int")
        )
        assert await statement.fetch(POSTED_AT, 500) == []  # planned on the empty table
        # the same transaction on the same connection from here on
        await s.execute(_FILL, {"at": POSTED_AT, "first": 1, "last": FILLED})
        due = await s.scalar(_DUE, {"at": POSTED_AT})
        assert await s.scalar(_LOCK_AND_REPLAN, {"k": SCANNER_LOCK}) is True
        at = await driver.fetchval("SELECT quote_literal(CAST($1 AS timestamptz))", POSTED_AT)
        ran = await driver.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {statement.get_name()}({at}, 500)"
        )
        await s.rollback()
    [root] = orjson.loads(ran) if isinstance(ran, str) else ran
    nodes = list(reads(root["Plan"]))
    assert due is not None and root["Plan"]["Actual Rows"] == due
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}, nodes
    assert rows_read(nodes) <= 3 * due, nodes


async def test_the_scanner_breaches_every_request_due_a_batch_at_a_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """More requests due than a batch: the scanner goes on until none is left, each breached
    once, and a second scan finds nothing."""
    async with sessions.begin() as s:
        await s.execute(_FILL, {"at": POSTED_AT, "first": 1, "last": FILLED})
        deadlines = await s.scalar(_DEADLINES_DUE, {"at": POSTED_AT})
        due = await s.scalar(_DUE, {"at": POSTED_AT})
    assert due is not None and deadlines is not None and deadlines > due > 40  # some past both
    scanner = SlaScanner(sessions, batch=40)
    assert await scanner.scan_once(POSTED_AT) == deadlines  # each missed deadline, once
    async with sessions() as s:
        assert await s.scalar(_DUE, {"at": POSTED_AT}) == 0
        breaches = await s.scalar(
            text("SELECT count(*) FROM request_events WHERE kind = 'sla_breached'")
        )
    assert breaches == deadlines
    assert await scanner.scan_once(POSTED_AT) == 0  # not twice
