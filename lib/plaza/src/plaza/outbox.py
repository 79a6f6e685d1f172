"""The transactional outbox: events are written in the transaction of the change they announce,
and one relay publishes them to the bus in order, marking each published.

A crash between publishing and marking means the relay publishes those events again on restart,
with the same event ids, which consumers recognise (their inbox). Nothing is ever lost: an event
is either in the outbox, unpublished, or on the bus."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from plaza.bus import Bus, OutRecord
from plaza.contracts import Outgoing
from plaza.db.models import OutboxRecord
from plaza.db.rows import add_row

log = logging.getLogger(__name__)

RELAY_LOCK = 0x504C415A41  # pg advisory lock id ("PLAZA"): one active relay per database

PUBLISHED = Counter("plaza_outbox_published_total", "Outbox events published to the bus", ["topic"])
PENDING_AGE = Gauge(
    "plaza_outbox_oldest_pending_seconds", "Age of the oldest event not yet published"
)


_OLDEST_PENDING = text(
    "SELECT id, topic, key, payload, created_at FROM outbox"
    " WHERE published_at IS NULL ORDER BY id LIMIT :n"
)
# The same text for any number of events, so it is prepared once.
_MARK_PUBLISHED = text(
    "UPDATE outbox SET published_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"
)


def stage(session: AsyncSession, events: Sequence[Outgoing]) -> None:
    """Adds events to the outbox within the caller's transaction (the caller commits)."""
    for e in events:
        add_row(session, OutboxRecord, {"topic": e.topic, "key": e.key, "payload": e.encode()})


class Relay:
    """Publishes the outbox. Several may run; an advisory lock lets one work at a time.

    It looks for new events every `busy_interval` seconds while it finds some and every
    `idle_interval` when it does not: at 1,000 posts/s, rounds 10 ms apart cost the relay and
    PostgreSQL a fifth more per post than rounds 50 ms apart, for replies 40 ms sooner."""

    def __init__(
        self,
        bus: Bus,
        engine: AsyncEngine,
        *,
        batch: int = 1000,
        busy_interval: float = 0.05,
        idle_interval: float = 0.1,
        keep_published: float = 3600.0,
    ) -> None:
        self._bus = bus
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._batch = batch
        self._busy = busy_interval
        self._idle = idle_interval
        self._keep = keep_published
        self._stop = asyncio.Event()
        self.leading = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with self._engine.connect() as lock_conn:
            while not self._stop.is_set():
                got = (
                    await lock_conn.execute(
                        text("SELECT pg_try_advisory_lock(:k)"), {"k": RELAY_LOCK}
                    )
                ).scalar_one()
                await lock_conn.commit()
                if got:
                    break
                await self._sleep(1.0)
            if self._stop.is_set():
                return
            self.leading.set()
            log.info("outbox relay is publishing")
            try:
                rounds = 0
                while not self._stop.is_set():
                    try:
                        sent = await self.publish_once()
                        rounds += 1
                        if rounds % 1000 == 0:
                            await self._forget_published()
                    except Exception:
                        # The database or the broker is unreachable: what was not marked
                        # published is published again next round (with the same event ids).
                        log.exception("outbox relay round failed; retrying")
                        await self._sleep(1.0)
                        continue
                    await self._sleep(self._busy if sent else self._idle)
            finally:
                try:
                    await lock_conn.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": RELAY_LOCK}
                    )
                    await lock_conn.commit()
                except Exception as exc:  # its connection is gone, and the lock with it
                    log.warning("outbox relay could not release its lock: %s", exc)

    async def publish_once(self) -> int:
        """Publishes the oldest unpublished events; returns how many."""
        async with self._sessions() as session:
            rows = (await session.execute(_OLDEST_PENDING, {"n": self._batch})).all()
            if not rows:
                PENDING_AGE.set(0)
                return 0
            PENDING_AGE.set((datetime.now(UTC) - rows[0].created_at).total_seconds())
            await self._bus.publish([OutRecord(r.topic, r.key, r.payload) for r in rows])
            await session.execute(_MARK_PUBLISHED, {"ids": [r.id for r in rows]})
            await session.commit()
        for topic, n in collections.Counter(r.topic for r in rows).items():
            PUBLISHED.labels(topic).inc(n)
        return len(rows)

    async def _forget_published(self) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                delete(OutboxRecord).where(
                    OutboxRecord.published_at
                    < text(f"now() - interval '{int(self._keep)} seconds'")
                )
            )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
