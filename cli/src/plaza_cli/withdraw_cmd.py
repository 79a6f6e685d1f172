"""`plaza withdraw PLATFORM POST_ID`: a post taken out of Plaza's records when its author asks
the city itself (a letter to its data-protection officer: GDPR's right to erasure), or an
Open311 request, which no platform deletes. The same withdrawal as a platform's deletion
(plaza.withdrawals), applied straight in the database (PLAZA_DATABASE_URL, or `make run`'s in
PLAZA_HOME), in one transaction, as the platform's word: the city has checked who asks
(`--dry-run` shows whose post it is, and changes nothing)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from plaza.db import create_engine, session_factory
from plaza.db.models import Open311Submission, RequestReport
from plaza.settings import load
from plaza.withdrawals import OPEN311, Outcome, Withdrawal, withdraw
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from plaza_cli.access_cmd import AccessCliSettings, database_of, no_data_here

_SAID: dict[Outcome, str] = {
    Outcome.WITHDRAWN: "withdrawn: {what} out of Plaza's records; its request stays",
    Outcome.ALREADY: "already withdrawn ({what} out before): nothing changed",
    Outcome.UNKNOWN: (
        "no report of it in Plaza (check the platform and the id): it is remembered, so it "
        "opens nothing and gets no reply if it comes"
    ),
}


def run(args: argparse.Namespace) -> int:
    platform, post_id = args.platform.strip().lower(), args.post_id.strip()
    if not platform or not post_id:
        print("plaza withdraw: name the post's platform and its id", file=sys.stderr)
        return 2
    settings = load(AccessCliSettings)
    if (missing := no_data_here(settings, "withdraw")) is not None:
        print(missing, file=sys.stderr)
        return 2
    url, server = database_of(settings)
    w = Withdrawal.by_the_city(platform, post_id, location_only=args.location_only)

    async def go() -> str:
        engine = create_engine(url, pool_size=1)
        try:
            async with session_factory(engine).begin() as session:
                if args.dry_run:
                    return await _described(session, w)
                return _said(w, await withdraw(session, w))
        finally:
            await engine.dispose()

    with server:
        said = asyncio.run(go())
    print(f"plaza withdraw: {platform} {post_id}: {said}")
    return 0


def _said(w: Withdrawal, outcome: Outcome) -> str:
    if w.location_only:
        what = "its point"
    elif w.platform == OPEN311:
        what = "its words, photos, point and the reporter's contact details"
    else:
        what = "its words, photos, handle and point"
    return _SAID[outcome].format(what=what)


async def _described(session: AsyncSession, w: Withdrawal) -> str:
    """Whose post it is and what it says, for the officer to check before withdrawing it."""
    report = (
        await session.execute(
            select(RequestReport).where(
                RequestReport.platform == w.platform, RequestReport.post_id == w.post_id
            )
        )
    ).scalar_one_or_none()
    if report is None:
        return "no report of it in Plaza (nothing changed; without --dry-run its id is remembered)"
    if report.withdrawn_at is not None:
        return (
            f"already withdrawn, a report of request {report.service_request_id} (nothing changed)"
        )
    who = report.author_handle or "(no handle)"
    if w.platform == OPEN311:
        contact = await session.get(Open311Submission, w.post_id)
        if contact is not None:
            named = " ".join(n for n in (contact.first_name, contact.last_name) if n)
            who = ", ".join(x for x in (named, contact.email, contact.phone) if x) or who
    words = report.text if len(report.text) <= 120 else report.text[:119] + "…"
    point = "with a point" if report.lat is not None else "no point"
    return (
        f"a report of request {report.service_request_id}, by {who}, {point}: {words!r} "
        "(nothing changed: without --dry-run it is withdrawn)"
    )
