"""The plan of the router's duplicate search (plaza_router.dedupe.CANDIDATES) on real PostgreSQL:
each probe reads only its own band of latitude, its own barri or its own address, through the
index made for it, whether or not the table has statistics yet (a new city, a burst before
autovacuum's next analyze), for the plan a prepared statement reuses (generic) as for one
planned with the values (custom), and for the plan the router's statement made while the table
was still empty or small and keeps until the table's first analyze. Reading every open request
instead cost 10-60 ms a batch, not 1-2; every open request of a probe's service, 200-400."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from plaza.city import City
from plaza_router.dedupe import (
    _CANDIDATES_NUMBERED,
    CANDIDATES,
    DuplicatePolicy,
    Probe,
    candidates,
    probe_columns,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import POSTED_AT

pytestmark = [pytest.mark.postgres]

SERVICES = ("streetlight", "cleaning", "noise", "potholes", "graffiti")
NEAR = "ix_service_requests_dedupe_near"
BARRI = "ix_service_requests_dedupe_barri"
ADDRESS = "ix_service_requests_dedupe_address_key"
STREETS = City.barcelona().streets

# 20,000 open requests over four days: two in three with a point in the city, the rest placed
# by a barri named in their text, and half of those with an address their text named (and its
# key, as the router records it: Carrer d'Aragó is 018505 in the register).
_FILL = text(
    """
    INSERT INTO service_requests (status, service_code, description, requested_datetime, lat,
        long, agency_responsible, district_code, barri_code, location_source, queue, urgency,
        language, service_confidence, channel, source_platform, source_post_id,
        source_author_handle, media_urls, address, address_key)
    SELECT 'new', (CAST(:services AS text[]))[1 + i % 5], 'fanal apagat ' || i,
        CAST(:at AS timestamptz) - (i % 5760) * interval '1 minute',
        CASE WHEN i % 3 = 0 THEN NULL ELSE 41.35 + (i * 7919 % 1000) * 0.0001 END,
        CASE WHEN i % 3 = 0 THEN NULL ELSE 2.10 + (i * 104729 % 1000) * 0.0001 END,
        'IMI', '06', lpad(CAST(1 + i % 73 AS text), 2, '0'), 'geo', 'district-06', 'normal',
        'ca', 0.9, 'webhook', 'plan', 'p' || i, '@neighbour', '{}',
        CASE WHEN i % 6 = 0 THEN 'Carrer d''Aragó ' || (i % 600) END,
        CASE WHEN i % 6 = 0 THEN '018505 ' || (i % 600) END
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i
    """
)
FILLED = 20_000


def probes(seed: int) -> list[Probe]:
    rng = random.Random(seed)
    out = []
    for n in range(120):
        at = POSTED_AT - timedelta(minutes=rng.randrange(0, 5760))
        if n % 2:
            point = (41.35 + rng.random() * 0.1, 2.10 + rng.random() * 0.1)
            out.append(Probe(rng.choice(SERVICES), at, "fanal", *point, "31"))
        elif n % 4 == 0:
            out.append(
                Probe(rng.choice(SERVICES), at, "fanal", None, None, f"{rng.randrange(73):02}")
            )
        else:  # an address, and a barri or none
            barri = f"{rng.randrange(73):02}" if n % 3 else None
            # written as citizens write it: searched by its key, as the requests are stored
            spelling = rng.choice(("Carrer d'Aragó {}", "c/ Aragó, {}", "Calle Aragón {}, 2º 1ª"))
            address = spelling.format(rng.randrange(600))
            out.append(
                Probe(rng.choice(SERVICES), at, "fanal", None, None, barri, address, STREETS)
            )
    return out


def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan that reads service_requests (a table or an index of it; a bitmap
    index scan names only its index)."""
    if node.get("Relation Name") == "service_requests" or (
        node["Node Type"] == "Bitmap Index Scan"
        and node["Index Name"].startswith(("ix_service_requests_", "pk_service_requests"))
    ):
        yield node
    for child in node.get("Plans", ()):
        yield from scans(child)


def fill(first: int, last: int) -> dict[str, object]:
    """_FILL's parameters for the requests numbered first to last."""
    return {"services": list(SERVICES), "at": POSTED_AT, "first": first, "last": last}


async def literals(driver: Any, columns: dict[str, list[object]]) -> list[str]:
    """The probes' columns as SQL literals: EXPLAIN EXECUTE takes no bound parameters."""
    types = dict(re.findall(r"CAST\(:(\w+) AS ([\w\[\]]+)\)", CANDIDATES.text))
    return [
        await driver.fetchval(f"SELECT quote_literal(CAST($1 AS {types[name]}))", values)
        + f"::{types[name]}"
        for name, values in columns.items()
    ]


def assert_each_part_reads_its_own_index(root: dict[str, Any], why: object) -> None:
    scanned = list(scans(root["Plan"]))
    # A bitmap heap scan reads the rows its bitmap index scan found (the planner's choice for
    # a barri's few requests once the table has statistics): the index scan is the read.
    for heap in (n for n in scanned if n["Node Type"] == "Bitmap Heap Scan"):
        assert [c["Node Type"] for c in heap["Plans"]] == ["Bitmap Index Scan"], (why, heap)
    read = [n for n in scanned if n["Node Type"] != "Bitmap Heap Scan"]
    kinds = [(n["Node Type"], n.get("Index Name")) for n in read]
    assert sorted(name for _, name in kinds) == sorted([NEAR, BARRI, ADDRESS]), (why, kinds)
    assert {kind for kind, _ in kinds} <= {"Index Scan", "Bitmap Index Scan"}, (why, kinds)
    for node in read:
        # A probe's own band or barri is where the index scan starts: its conditions are
        # index conditions, not filters over the service's whole window.
        condition = node["Index Cond"]
        if node["Index Name"] == NEAR:
            # the longitude too: the band of latitude crosses the city, and its requests
            # outside the probe's box are passed over in the index, not read from the table
            assert "service_code" in condition and "lat >=" in condition, condition
            assert "long >=" in condition and "long <=" in condition, condition
        elif node["Index Name"] == BARRI:
            assert "barri_code" in condition and "service_code" in condition, condition
        else:
            assert "address_key" in condition and "service_code" in condition, condition


async def plan(session: AsyncSession, columns: dict[str, list[object]], mode: str) -> Any:
    """The plan PostgreSQL runs the statement with, prepared as the driver prepares it, when the
    plan cache replans for each execution's values (custom) or reuses one plan (generic)."""
    numbered = CANDIDATES.text
    for n, name in enumerate(columns, start=1):
        numbered = numbered.replace(f":{name} ", f"${n} ")
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None
    values = await literals(driver, columns)
    await driver.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
    await driver.execute(f"PREPARE candidates_plan AS {numbered}")
    try:
        found = await driver.fetchval(
            f"EXPLAIN (FORMAT JSON) EXECUTE candidates_plan({', '.join(values)})"
        )
    finally:
        await driver.execute("DEALLOCATE candidates_plan")
    return orjson.loads(found) if isinstance(found, str) else found


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_each_probe_reads_its_own_band_or_barri(
    sessions: async_sessionmaker[AsyncSession], analyzed: bool
) -> None:
    async with sessions.begin() as s:
        await s.execute(_FILL, fill(1, FILLED))
    if analyzed:
        async with sessions.begin() as s:  # committed: the statistics ANALYZE writes with it
            await (await s.connection()).exec_driver_sql("ANALYZE service_requests")
    policy = DuplicatePolicy()
    _, columns = probe_columns(policy, probes(1))
    async with sessions.begin() as s:
        for mode in ("custom", "generic"):
            [root] = await plan(s, columns, mode)
            assert_each_part_reads_its_own_index(root, mode)


@pytest.mark.parametrize("before", [0, 10, 200])
async def test_a_plan_made_while_the_table_was_small_still_reads_each_probes_own_index(
    sessions: async_sessionmaker[AsyncSession], before: int
) -> None:
    """The router's prepared statement keeps the generic plan it made with the table's size
    then, until the table's first analyze. With indexes that held every open request, a plan
    made on an empty table read a point's probes through the address's index by service_code
    alone, and one made at 200 requests an address's probes through the point's: at 20,000
    requests, 200 ms a batch instead of 6 (migration 0024)."""
    async with sessions.begin() as s:
        # no analyze meanwhile, as during a new city's first minutes
        await s.execute(text("ALTER TABLE service_requests SET (autovacuum_enabled = off)"))
        if before:
            await s.execute(_FILL, fill(1, before))
    _, columns = probe_columns(DuplicatePolicy(), probes(1))
    async with sessions() as s:
        driver = (await (await s.connection()).get_raw_connection()).driver_connection
        assert driver is not None
        # the plan cache's own choice between custom and generic plans is a matter of cost:
        # the generic plan is the one a statement may keep
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        statement = await driver.prepare(_CANDIDATES_NUMBERED)
        await statement.fetch(*columns.values())
        await s.commit()
    async with sessions.begin() as s:
        await s.execute(_FILL, fill(before + 1, FILLED))
    async with sessions() as s:
        kept = await driver.fetchval(
            f"EXPLAIN (FORMAT JSON) EXECUTE {statement.get_name()}"
            f"({', '.join(await literals(driver, columns))})"
        )
        [root] = orjson.loads(kept) if isinstance(kept, str) else kept
        assert_each_part_reads_its_own_index(root, f"planned at {before} requests")


async def test_a_request_several_probes_find_comes_back_once_for_all_of_them(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A batch's posts about one street find the same open requests: each request is one row
    of the statement, with the probes that found it, and every probe gets what it would get
    searched alone (a probe twice when its barri and its address both find the request)."""
    async with sessions.begin() as s:
        await s.execute(_FILL, fill(1, FILLED))
    policy = DuplicatePolicy()
    asked = probes(1)
    asked += asked[:40]  # the same places again, as neighbours reporting one pothole
    async with sessions() as s, s.begin():
        together = await candidates(s, policy, asked)
        alone = [(await candidates(s, policy, [p]))[0] for p in asked]
        _, columns = probe_columns(policy, asked)
        driver = (await (await s.connection()).get_raw_connection()).driver_connection
        assert driver is not None
        rows = await driver.fetch(_CANDIDATES_NUMBERED, *columns.values())
    assert [sorted(f.id for f in found) for found in together] == [
        sorted(f.id for f in found) for found in alone
    ]
    by_id = {row[0]: row for row in rows}
    assert len(by_id) == len(rows)  # one row a request
    shared = sum(len(found) for found in together) - len(rows)
    assert shared > 1000, shared  # many requests were found by more than one probe
    for found in together:
        for f in found:  # each with its own request's columns
            row = by_id[f.id]
            assert (f.lat, f.long, f.description, f.address) == (row[1], row[2], row[3], row[4])
