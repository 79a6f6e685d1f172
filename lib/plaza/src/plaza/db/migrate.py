"""Runs Alembic migrations from code, on an async engine (used by `plaza db upgrade` and tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def _run(url: str, migrate: Callable[[Config], None]) -> None:
    engine = create_async_engine(url)
    try:
        # Not begun here: Alembic begins the transaction, so that a migration can step out of
        # it (autocommit_block, for CREATE INDEX CONCURRENTLY), and commits it.
        async with engine.connect() as conn:
            await conn.run_sync(lambda c: migrate(alembic_config(c)))
            await conn.commit()
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    await _run(url, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(url: str, revision: str) -> None:
    await _run(url, lambda cfg: command.downgrade(cfg, revision))
