"""A town upgrades Plaza (git pull, make run) on a database with months of requests in it: every
migration since 0005 (the first with every table a town fills: requests, reports, the audit
trail, users, keys, the inbox, the outbox) runs over rows, what they add is filled in as today's
code writes it, and nothing the town had is lost or changed."""

from __future__ import annotations

from plaza.db.migrate import downgrade, upgrade
from plaza_api.auth import Role, create_api_key, create_user
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import VERDI, as_event, classified, router

OLDEST = "0005"

# Every table a town's data is in, compared whole: the columns added since OLDEST too, which
# their migrations fill in.
TABLES = (
    "service_requests",
    "request_reports",
    "request_events",
    "staff_users",
    "api_keys",
    "processed_events",
    "outbox",
    "open311_submissions",
    "connector_cursors",
)


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    """Each table's rows as text, in a stable order."""
    rows: dict[str, list[str]] = {}
    async with sessions() as s:
        for table in TABLES:
            result = await s.execute(text(f"SELECT * FROM {table}"))
            rows[table] = sorted(repr(tuple(row)) for row in result.all())
    return rows


async def test_an_upgrade_from_an_old_schema_keeps_every_row_and_fills_what_it_adds(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    route = router(sessions)
    near = (VERDI[0] + 0.0001, VERDI[1])
    for body in (
        classified("p1"),
        classified("p2", latlon=near, author="@Veina@bcn.social"),  # merged into p1's
        classified("p3", district="07", barri="32", latlon=(41.4245, 2.1711), urgent=True),
        classified("p4", service_code="graffiti", text="Pintades a la paret de l'escola"),
        # an address and its key (0019's backfill keys the open requests as the router does)
        classified(
            "p6",
            service_code="cleaning",
            text="Contenidors plens",
            district="",
            barri="",
            latlon=None,
            address="Calle Aragón, 250, 2º 1ª",
        ),
    ):
        await route(as_event(body))
    async with sessions.begin() as s:
        await create_user(s, username="alcaldesa", password="x" * 16, role=Role.ADMIN)
        await create_user(
            s, username="manolo", password="y" * 16, role=Role.WORKER, worker_handle="@manolo"
        )
        await create_api_key(s, name="mastodon-bridge", role=Role.BRIDGE, scopes=["mastodon"])
        await s.execute(
            text("INSERT INTO connector_cursors (connector, cursor) VALUES ('mastodon', '1093')")
        )
    before = await snapshot(sessions)
    assert len(before["service_requests"]) == 4 and len(before["request_reports"]) == 5
    assert any("'018505 250'" in row for row in before["service_requests"])

    await downgrade(database_url, OLDEST)
    async with sessions() as s:
        assert await s.scalar(text("SELECT version_num FROM alembic_version")) == OLDEST
        assert await s.scalar(text("SELECT count(*) FROM request_reports")) == 5
    await upgrade(database_url)

    assert await snapshot(sessions) == before
    # The upgraded Plaza goes on: a post it had routed opens nothing again (the inbox), a new
    # neighbour's report of the same streetlight joins the request the old schema held.
    await route(as_event(classified("p1")))
    await route(as_event(classified("p5", latlon=near)))
    async with sessions() as s:
        assert await s.scalar(text("SELECT count(*) FROM service_requests")) == 4
        merged = await s.scalar(
            text("SELECT reporters_count FROM service_requests WHERE source_post_id = 'p1'")
        )
    assert merged == 3
