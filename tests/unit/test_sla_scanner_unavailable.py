"""The SLA scanner while PostgreSQL is away: one line saying so, again every 30 s at most (not a
traceback every 15 s round), a line when it is back, and scanning again by itself."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest
from plaza_router.sla_scanner import SlaScanner
from sqlalchemy.exc import OperationalError


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refused() -> OperationalError:
    """What SQLAlchemy raises when PostgreSQL refuses the connection."""
    return OperationalError(
        "SELECT pg_try_advisory_xact_lock($1)",
        {},
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    )


def scanner_failing(errors: list[BaseException], clock: _Clock) -> tuple[SlaScanner, list[int]]:
    """A scanner whose scans raise `errors` one by one, then succeed; each takes a 15 s round."""
    scanner = SlaScanner(None, interval=0, clock=clock)  # type: ignore[arg-type]
    scans: list[int] = []

    async def scan_once(now: datetime) -> int:
        clock.now += 15
        scans.append(len(scans))
        if errors:
            raise errors.pop(0)
        if len(scans) > 50:
            scanner.stop()
        return 0

    async def prune_inbox(now: datetime) -> int:
        return 0

    scanner.scan_once = scan_once  # type: ignore[method-assign]
    scanner.prune_inbox = prune_inbox  # type: ignore[method-assign]
    return scanner, scans


async def test_a_database_away_is_one_line_per_30_s_and_the_scanner_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    scanner, scans = scanner_failing([refused() for _ in range(20)], clock)  # 5 minutes away
    with caplog.at_level(logging.INFO, logger="plaza_router.sla_scanner"):
        await scanner.run()
    assert len(scans) > 20  # it scanned again, by itself, once the database was back
    lines = [r for r in caplog.records if r.name == "plaza_router.sla_scanner"]
    assert all(r.exc_info is None for r in lines)  # no traceback
    away = [r.getMessage() for r in lines if r.levelno == logging.WARNING]
    assert 5 <= len(away) <= 11  # 300 s: the first round, then one every 30 s
    assert away[0] == (
        "SLA scan: the database is unavailable (OperationalError: (builtins.ConnectionRefusedError)"
        " [Errno 111] Connect call failed ('127.0.0.1', 5432)); scanning again every 0s"
        " (1 rounds failed in 0s)"
    )
    assert [r.getMessage() for r in lines if r.levelno == logging.INFO] == [
        "SLA scan resumed: the database is back after 20 failed rounds in 300s"
    ]


async def test_any_other_failure_still_logs_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    scanner, _ = scanner_failing([KeyError("ack_due_at"), KeyError("ack_due_at")], clock)
    with caplog.at_level(logging.INFO, logger="plaza_router.sla_scanner"):
        await scanner.run()
    failed = [r for r in caplog.records if r.getMessage() == "SLA scan failed"]
    assert len(failed) == 2 and all(r.exc_info is not None for r in failed)
