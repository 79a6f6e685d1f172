"""The inbox is pruned: the SLA scanner deletes the rows older than the inbox's retention, a
batch a transaction, the oldest first, and nothing newer; a redelivered recent event is still
recognised, and the database is migrated down and up again with the index pruning uses."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from plaza.db import inbox
from plaza.db.inbox import first_time
from plaza.db.migrate import downgrade, upgrade
from plaza_router.dedupe import first_times_locking
from plaza_router.sla_scanner import SlaScanner
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

NOW = datetime.now(UTC)
RETENTION = timedelta(days=45)


async def handled(
    sessions: async_sessionmaker[AsyncSession], consumer: str, ids: list[str], days_ago: float
) -> None:
    """Records `ids` in `consumer`'s inbox as handled `days_ago`."""
    async with sessions.begin() as s:
        await s.execute(
            text(
                "INSERT INTO processed_events (consumer, event_id, processed_at)"
                " SELECT :c, e, :at FROM unnest(CAST(:ids AS text[])) AS e"
            ),
            {"c": consumer, "ids": ids, "at": NOW - timedelta(days=days_ago)},
        )


async def kept(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessions() as s:
        rows = await s.execute(text("SELECT consumer || ':' || event_id FROM processed_events"))
        return set(rows.scalars())


def pruned_total() -> float:
    return REGISTRY.get_sample_value("plaza_inbox_pruned_total") or 0.0


async def test_the_scanner_prunes_the_rows_past_the_retention_a_batch_at_a_time(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    old = [f"old{i}" for i in range(10)]
    await handled(sessions, "plaza-router", old, days_ago=60)
    await handled(sessions, "plaza-notifier", ["other-old"], days_ago=46)
    await handled(sessions, "plaza-router", ["a-month"], days_ago=31)  # a dead letter's age
    await handled(sessions, "plaza-router", ["yesterday"], days_ago=1)
    async with sessions.begin() as s:
        assert await first_times_locking(s, "plaza-router", [("now", "POTHOLE")]) == {"now"}

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    scanner = SlaScanner(
        sessions, inbox_retention=RETENTION, prune_batch=3, prune_batches=2, clock=clock
    )
    before = pruned_total()
    with caplog.at_level(logging.INFO, logger="plaza_router.sla_scanner"):
        await scanner.scan_round()  # the first round prunes: two batches of 3, the oldest
        assert len(await kept(sessions)) == 14 - 6
        await scanner.scan_round()  # a backlog: the next round goes on, interval or not
        assert await kept(sessions) == {
            "plaza-router:a-month",
            "plaza-router:yesterday",
            "plaza-router:now",
        }
        clock.now += 60
        await handled(sessions, "plaza-router", ["late"], days_ago=50)
        await scanner.scan_round()  # the last pruning was complete: not due for 10 minutes
        assert "plaza-router:late" in await kept(sessions)
        clock.now += 600
        await scanner.scan_round()
        assert "plaza-router:late" not in await kept(sessions)
    assert pruned_total() - before == 12
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("inbox:")]
    assert len(lines) == 3
    assert lines[0].startswith("inbox: pruned 6 events processed before ")
    assert lines[0].endswith(" (kept 45 days); more next round")
    assert lines[1].startswith("inbox: pruned 5 events") and lines[1].endswith("(kept 45 days)")

    # A redelivery of what is kept is still recognised, by either statement of the inbox.
    async with sessions.begin() as s:
        assert await first_times_locking(s, "plaza-router", [("now", "POTHOLE")]) == set()
        assert await first_time(s, "plaza-router", "yesterday") is False
        assert await first_time(s, "plaza-router", "a-month") is False


async def test_pruning_reads_the_index_and_skips_rows_another_pruner_holds(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await handled(sessions, "plaza-router", [f"e{i}" for i in range(20)], days_ago=60)
    async with sessions() as s:
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            (
                await s.execute(
                    text(f"EXPLAIN {inbox._PRUNE.text}"),
                    {"before": NOW - RETENTION, "n": 1000},
                )
            ).scalars()
        )
        assert "ix_processed_events_processed_at" in plan, plan
        assert "Seq Scan" not in plan, plan
        await s.rollback()
    async with sessions.begin() as first, sessions.begin() as second:
        assert await inbox.prune(first, before=NOW - RETENTION, limit=15) == 15
        # The rows the first holds are skipped, not waited for: the second takes the rest.
        assert await inbox.prune(second, before=NOW - RETENTION, limit=15) == 5
    assert await kept(sessions) == set()


async def test_the_migration_goes_down_and_up_with_rows_in_the_inbox(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handled(sessions, "plaza-router", ["e1"], days_ago=1)
    await downgrade(database_url, "0014")
    await upgrade(database_url)
    async with sessions() as s:
        index = await s.scalar(
            text(
                "SELECT indisvalid FROM pg_index WHERE indexrelid ="
                " 'ix_processed_events_processed_at'::regclass"
            )
        )
    assert index is True
    assert await kept(sessions) == {"plaza-router:e1"}
