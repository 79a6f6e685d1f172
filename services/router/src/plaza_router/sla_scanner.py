"""The SLA scanner: finds requests past their acknowledgement or resolution deadline, records the
breach, escalates them to city hall and counts them. One scanner works at a time (advisory lock).

Every `prune_interval` it also prunes the inbox (plaza.db.inbox): the rows older than
`inbox_retention`, which no redelivery can need, a batch a transaction, so that the table stops
growing with every event ever handled. Here because the scanner already runs periodically in
every router process and in `make run`, and off the path of the batches a worker handles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from plaza import metrics
from plaza.db import inbox
from plaza.db.models import ServiceRequest
from plaza.lifecycle import breach
from plaza.requests import OPEN_STATUSES, WAITING, sql_list
from plaza.worker import is_transient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

SCANNER_LOCK = 0x534C41  # "SLA"
UNAVAILABLE_LOG_INTERVAL = 30.0
"""While the database is away, seconds between two lines saying so (a worker's retries too)."""
PRUNE_INTERVAL = 600.0
"""Seconds between two prunings of the inbox (a few thousand rows each at a busy city's pace)."""
PRUNE_BATCH = 1000
"""Inbox rows deleted in one transaction: its row locks are on old rows no one else touches,
and it ends in milliseconds."""
PRUNE_BATCHES = 50
"""Transactions of pruning a round at most, so that a backlog (the first pruning of a table
that grew for months) delays the round's SLA scan by seconds, not minutes: the next round goes
on where this one stopped, without waiting for PRUNE_INTERVAL."""


# The statuses written out: a partial index's predicate is proven only by constants, not by
# the parameters a reused (generic) plan has.
_WAITING_SQL = f"status IN ({sql_list(WAITING)})"
_OPEN_SQL = f"status IN ({sql_list(OPEN_STATUSES)})"
# The requests past a deadline not yet recorded as breached, a batch at a time in id order,
# locked (those a manager is changing are left to the next round). Each deadline's candidates
# come first from its own partial index (ix_service_requests_ack_due, _resolve_due: migration
# 0025), which holds only the requests still waiting for it, in deadline order: the scan reads
# what is due, not the table. Asked of the whole table at once (an OR of both), the planner
# walked the primary key through every request, closed ones included, every 15 seconds: 40 ms
# at 100,000 requests, and a city keeps millions. The conditions are asked again of the locked
# row: one changed meanwhile (acknowledged, closed) is no longer overdue.
_ACK_OVERDUE = f"{_WAITING_SQL} AND ack_breached_at IS NULL AND ack_due_at < :now"
_RESOLVE_OVERDUE = f"{_OPEN_SQL} AND resolve_breached_at IS NULL AND expected_datetime < :now"
# The scanner's lock, and its scan planned afresh each time (set_config's `true`: until the
# transaction ends). A prepared statement keeps the plan it made on a new city's empty table
# until the table's first analyze, and that plan looked the due ids up in the whole table, read
# once a scan; planning costs a fraction of a millisecond every PLAZA_SLA_SCAN_INTERVAL.
_LOCK_AND_REPLAN = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true) IS NOT NULL"
    " AND pg_try_advisory_xact_lock(:k)"
)
# every column but the queue's JSON, which the ORM defers
_COLUMNS = ", ".join(c.name for c in ServiceRequest.__table__.columns if c.name != "queue_item")
_OVERDUE = text(
    f"""
    SELECT {_COLUMNS} FROM service_requests
    WHERE id IN (
        (SELECT id FROM service_requests WHERE {_ACK_OVERDUE} ORDER BY ack_due_at LIMIT :n)
        UNION
        (SELECT id FROM service_requests WHERE {_RESOLVE_OVERDUE}
         ORDER BY expected_datetime LIMIT :n)
    ) AND (({_ACK_OVERDUE}) OR ({_RESOLVE_OVERDUE}))
    ORDER BY id LIMIT :n
    FOR UPDATE SKIP LOCKED
    """
)


class SlaScanner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 15.0,
        batch: int = 500,
        inbox_retention: timedelta = inbox.RETENTION,
        prune_interval: float = PRUNE_INTERVAL,
        prune_batch: int = PRUNE_BATCH,
        prune_batches: int = PRUNE_BATCHES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._batch = batch
        self._inbox_retention = inbox_retention
        self._prune_interval = prune_interval
        self._prune_batch = prune_batch
        self._prune_batches = prune_batches
        self._pruned_at: float | None = None  # never yet: the first round prunes
        self._prune_more = False  # the last pruning stopped at PRUNE_BATCHES
        self._clock = clock
        self._stop = asyncio.Event()
        self._away_since: float | None = None  # the first round the database was away
        self._away_logged_at = 0.0
        self._away_rounds = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.scan_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def scan_round(self) -> None:
        """One round of run(): a scan, and the inbox's pruning when it is due. A failure is
        logged and tried again (a breach found a round late beats a dead scanner)."""
        if await self._scan():
            await self._prune_if_due()

    async def _scan(self) -> bool:
        """Scans; False when the scan failed."""
        try:
            await self.scan_once(datetime.now(UTC))
        except Exception as exc:
            if not is_transient(exc):
                log.exception("SLA scan failed")
                return False
            # The database is away (restarting, failing over): no fault of the scanner's, and
            # a traceback every round buried the lines that said what happened. One line,
            # again every UNAVAILABLE_LOG_INTERVAL while it lasts.
            now = self._clock()
            self._away_rounds += 1
            if self._away_since is None:
                self._away_since = self._away_logged_at = now
            elif now - self._away_logged_at < UNAVAILABLE_LOG_INTERVAL:
                return False
            self._away_logged_at = now
            log.warning(
                "SLA scan: the database is unavailable (%s: %s); scanning again every %gs "
                "(%d rounds failed in %.0fs)",
                type(exc).__name__,
                (str(exc).splitlines() or [""])[0],
                self._interval,
                self._away_rounds,
                now - self._away_since,
            )
            return False
        if self._away_since is not None:
            log.info(
                "SLA scan resumed: the database is back after %d failed rounds in %.0fs",
                self._away_rounds,
                self._clock() - self._away_since,
            )
            self._away_since, self._away_rounds = None, 0
        return True

    async def _prune_if_due(self) -> None:
        now = self._clock()
        if not (
            self._prune_more
            or self._pruned_at is None
            or now - self._pruned_at >= self._prune_interval
        ):
            return
        self._pruned_at = now  # a failed pruning waits for the next interval too
        try:
            await self.prune_inbox(datetime.now(UTC))
        except Exception as exc:
            self._prune_more = False
            if is_transient(exc):  # the next scan says so, once
                log.warning(
                    "inbox pruning failed, the database is unavailable (%s: %s); again in %gs",
                    type(exc).__name__,
                    (str(exc).splitlines() or [""])[0],
                    self._prune_interval,
                )
            else:
                log.exception("inbox pruning failed")

    async def prune_inbox(self, now: datetime) -> int:
        """Deletes the inbox rows processed before `now` - inbox_retention, `prune_batch` a
        transaction and at most `prune_batches` transactions (the next round goes on); returns
        how many."""
        before = now - self._inbox_retention
        pruned = 0
        self._prune_more = True
        for _ in range(self._prune_batches):
            if self._stop.is_set():
                break
            async with self._sessions.begin() as session:
                deleted = await inbox.prune(session, before=before, limit=self._prune_batch)
            inbox.PRUNED.inc(deleted)
            pruned += deleted
            if deleted < self._prune_batch:
                self._prune_more = False
                break
        if pruned:
            log.info(
                "inbox: pruned %d events processed before %s (kept %g days)%s",
                pruned,
                before.isoformat(timespec="seconds"),
                self._inbox_retention / timedelta(days=1),
                "; more next round" if self._prune_more else "",
            )
        return pruned

    async def scan_once(self, now: datetime) -> int:
        """Records every breach due by `now`; returns how many it found."""
        found = 0
        while True:
            async with self._sessions.begin() as session:
                locked = (await session.execute(_LOCK_AND_REPLAN, {"k": SCANNER_LOCK})).scalar_one()
                if not locked:
                    return found  # another scanner is at it
                overdue = (
                    (
                        await session.execute(
                            select(ServiceRequest).from_statement(_OVERDUE),
                            {"now": now, "n": self._batch},
                        )
                    )
                    .scalars()
                    .all()
                )
                for request in overdue:
                    for deadline in self._missed(request, now):
                        await breach(session, request, deadline, now=now)
                        breached = metrics.SLA_BREACHES.labels(
                            deadline,
                            metrics.district_label(request.district_code),
                            request.service_code,
                            request.urgency,
                        )
                        metrics.on_commit(session, breached.inc)
                        found += 1
            if len(overdue) < self._batch:
                return found

    @staticmethod
    def _missed(request: ServiceRequest, now: datetime) -> list[str]:
        missed = []
        if (
            request.status in WAITING
            and request.ack_breached_at is None
            and request.ack_due_at is not None
            and request.ack_due_at < now
        ):
            missed.append("acknowledge")
        if (
            request.resolve_breached_at is None
            and request.expected_datetime is not None
            and request.expected_datetime < now
        ):
            missed.append("resolve")
        return missed
