"""The router's handler of post-withdrawn: the author deleted their post, and Plaza's records of
it go (plaza.withdrawals) in one transaction with its inbox row."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from plaza.contracts import Envelope, Outgoing, from_timestamp
from plaza.db.inbox import first_time
from plaza.withdrawals import Outcome, Withdrawal, withdraw
from plaza.worker import Rejected
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

# A group of its own: withdrawals never wait behind a backlog of posts to route.
GROUP = "plaza-router-withdrawals"


class WithdrawPost:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        body = event.post_withdrawn
        if not body.platform or not body.post_id:
            raise Rejected("post-withdrawn names no platform and post_id")
        at = body.withdrawn_at if body.HasField("withdrawn_at") else event.occurred_at
        w = Withdrawal(
            platform=body.platform,
            post_id=body.post_id,
            author_id=body.author_id,
            author_handle=body.author_handle,
            withdrawn_at=from_timestamp(at),
            location_only=body.location_only,
        )
        async with self._sessions.begin() as session:
            if not await first_time(session, GROUP, event.event_id):
                return []
            outcome = await withdraw(session, w)
        if outcome is Outcome.WITHDRAWN:
            what = "its location" if w.location_only else "it"
            log.info(
                "%s %s: %s withdrawn by its author (%s)", w.platform, w.post_id, what, body.channel
            )
        return []
