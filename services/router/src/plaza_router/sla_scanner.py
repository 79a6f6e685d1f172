"""The SLA scanner: finds requests past their acknowledgement or resolution deadline, records the
breach, escalates them to city hall and counts them. One scanner works at a time (advisory lock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from plaza import metrics
from plaza.db.models import ServiceRequest
from plaza.lifecycle import breach
from plaza.requests import OPEN_STATUSES, WAITING
from plaza.worker import is_transient
from sqlalchemy import and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

SCANNER_LOCK = 0x534C41  # "SLA"
UNAVAILABLE_LOG_INTERVAL = 30.0
"""While the database is away, seconds between two lines saying so (a worker's retries too)."""


class SlaScanner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 15.0,
        batch: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._batch = batch
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
        """One round of run(): a scan, whose failure is logged and tried again next round (a
        breach found a round late beats a dead scanner)."""
        try:
            await self.scan_once(datetime.now(UTC))
        except Exception as exc:
            if not is_transient(exc):
                log.exception("SLA scan failed")
                return
            # The database is away (restarting, failing over): no fault of the scanner's, and
            # a traceback every round buried the lines that said what happened. One line,
            # again every UNAVAILABLE_LOG_INTERVAL while it lasts.
            now = self._clock()
            self._away_rounds += 1
            if self._away_since is None:
                self._away_since = self._away_logged_at = now
            elif now - self._away_logged_at < UNAVAILABLE_LOG_INTERVAL:
                return
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
            return
        if self._away_since is not None:
            log.info(
                "SLA scan resumed: the database is back after %d failed rounds in %.0fs",
                self._away_rounds,
                self._clock() - self._away_since,
            )
            self._away_since, self._away_rounds = None, 0

    async def scan_once(self, now: datetime) -> int:
        """Records every breach due by `now`; returns how many it found."""
        found = 0
        while True:
            async with self._sessions.begin() as session:
                locked = (
                    await session.execute(
                        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SCANNER_LOCK}
                    )
                ).scalar_one()
                if not locked:
                    return found  # another scanner is at it
                overdue = (
                    (
                        await session.execute(
                            select(ServiceRequest)
                            .where(
                                or_(
                                    and_(
                                        ServiceRequest.status.in_(WAITING),
                                        ServiceRequest.ack_breached_at.is_(None),
                                        ServiceRequest.ack_due_at < now,
                                    ),
                                    and_(
                                        ServiceRequest.status.in_(OPEN_STATUSES),
                                        ServiceRequest.resolve_breached_at.is_(None),
                                        ServiceRequest.expected_datetime < now,
                                    ),
                                )
                            )
                            .order_by(ServiceRequest.id)
                            .limit(self._batch)
                            .with_for_update(skip_locked=True)
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
