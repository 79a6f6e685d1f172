"""Session-wide fixtures: real Kafka and PostgreSQL for integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from plaza.db import create_engine, session_factory
from plaza.db.migrate import upgrade
from plaza_cli.postgres import EmbeddedPostgres
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.infra import SHARED_DATA, KafkaBroker, start_kafka

# One template per pytest-xdist worker (`make test` runs two): on a server the workers share
# (PLAZA_TEST_DATABASE_URL), one worker dropping and migrating its template while the other clones
# it would fail both.
TEMPLATE_DB = f"plaza_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"reference data not found at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    # Outside pytest's basetemp, which another pytest session may prune while this one runs.
    data = Path(tempfile.mkdtemp(prefix="plaza-test-kafka-"))
    try:
        yield from start_kafka(data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def kafka_namespace() -> str:
    """A topic and group prefix of this test's own, so tests sharing the broker never meet."""
    return f"t{uuid.uuid4().hex[:10]}."


class Postgres:
    """The test session's PostgreSQL; each test gets a fresh database cloned from a migrated template."""

    def __init__(self, server: EmbeddedPostgres | None, base_url: str) -> None:
        self.server = server
        self.base_url = base_url

    def url(self, database: str) -> str:
        head, _, tail = self.base_url.partition("?")
        head = head.rsplit("/", 1)[0] + "/" + database
        return f"{head}?{tail}" if tail else head

    async def execute(self, sql: str) -> None:
        await self.fetchval(sql)

    async def fetchval(self, sql: str) -> object:
        """The first value of `sql`'s first row (None without rows), on the postgres database."""
        import asyncpg

        raw = self.url("postgres").replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(raw)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    existing = os.environ.get("PLAZA_TEST_DATABASE_URL")
    if existing:
        pg = Postgres(None, existing)
    else:
        # Not under pytest's basetemp: pytest resets that tree to mode 0700 whenever a session
        # starts, which would lock out the server's own (non-root) user mid-run.
        data = Path(tempfile.mkdtemp(prefix="plaza-test-pg-"))
        # PostgreSQL's own 128MB: the tests' databases are small and many, and DROP DATABASE
        # reads every buffer's header (18 ms more for each of the tests' databases with 1GB).
        server = EmbeddedPostgres(data / "data", shared_buffers=128 * 1024 * 1024)
        pg = Postgres(server, server.url("postgres"))
    asyncio.run(_prepare_template(pg))
    try:
        yield pg
    finally:
        if pg.server is not None:
            pg.server.stop()
            shutil.rmtree(pg.server.data_dir.parent, ignore_errors=True)


async def _prepare_template(pg: Postgres) -> None:
    await pg.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
    await pg.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    await upgrade(pg.url(TEMPLATE_DB))


@pytest.fixture
async def database_url(postgres: Postgres) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await postgres.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    yield postgres.url(name)
    await postgres.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)
