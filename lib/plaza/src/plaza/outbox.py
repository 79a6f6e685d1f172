"""The transactional outbox: events are written in the transaction of the change they announce,
and one relay publishes them to the bus in order, deleting each once the bus has it.

A crash between publishing and deleting means the relay publishes those events again on
restart, with the same event ids, which consumers recognise (their inbox). Nothing is ever lost:
an event is either in the outbox, unpublished, or on the bus. (A deleted row costs PostgreSQL
less than one marked published: an update writes the row, payload and all, again.)"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from plaza.bus import Bus, OutRecord
from plaza.contracts import TOPICS, Outgoing
from plaza.db.models import OutboxRecord
from plaza.db.rows import add_row

log = logging.getLogger(__name__)

RELAY_LOCK = 0x504C415A41  # pg advisory lock id ("PLAZA"): one active relay per database
NOTIFY_CHANNEL = "plaza_outbox"  # notified at the commit of every transaction that adds events

PUBLISHED = Counter("plaza_outbox_published_total", "Outbox events published to the bus", ["topic"])
# How old the oldest unpublished event is, the gateway reads from the database (plaza_api.backlog):
# a relay that is down, or that never gets the lock, could not report it.


# A round takes the oldest events out of the outbox in one statement and commits only once the
# bus has them: a round that fails, or a relay that dies, before its commit leaves them in. The
# ids are an array computed first, looked up in the primary key: `id IN (SELECT ...)` let the
# planner join the whole outbox to them, reading every event waiting at each round of a burst
# (a hundred million rows in a burst of 40,000 posts).
_TAKE_OLDEST = text(
    "DELETE FROM outbox WHERE id = ANY(ARRAY(SELECT id FROM outbox ORDER BY id LIMIT :n)) "
    "RETURNING id, topic, key, payload"
)


def stage(session: AsyncSession, events: Sequence[Outgoing]) -> None:
    """Adds events to the outbox within the caller's transaction (the caller commits)."""
    for e in events:
        add_row(session, OutboxRecord, {"topic": e.topic, "key": e.key, "payload": e.encode()})


class Relay:
    """Publishes the outbox. Several may run; an advisory lock lets one work at a time. The
    lock lives as long as the session that took it: a relay whose lock connection dies stops
    publishing within `lock_check_interval` and `idle_interval` (its next round) and competes
    for the lock again.

    A round starts when PostgreSQL says there are new events: a trigger on the outbox notifies
    NOTIFY_CHANNEL at each inserting transaction's commit (migration 0011), and the relay
    listens on its lock's connection. Rounds start at least `busy_interval` seconds apart, so a
    stream of commits is published a few transactions at a time (at 1,000 posts/s, rounds 10 ms
    apart cost the relay and PostgreSQL a fifth more per post than rounds 50 ms apart;
    the services set it from PLAZA_RELAY_INTERVAL_MS), and the
    relay also looks every `idle_interval` seconds unbidden. A relay whose connection cannot
    listen (a driver other than asyncpg) looks every `busy_interval` instead. (The lock needs a
    session of its own anyway, so a pooler in transaction mode can serve neither.)"""

    def __init__(
        self,
        bus: Bus,
        engine: AsyncEngine,
        *,
        batch: int = 1000,
        busy_interval: float = 0.02,
        idle_interval: float = 1.0,
        lock_check_interval: float = 1.0,
    ) -> None:
        self._bus = bus
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._batch = batch
        self._busy = busy_interval
        self._idle = idle_interval
        self._lock_check = lock_check_interval
        self._stop = asyncio.Event()
        self._news = asyncio.Event()  # set by a notification (and by stop())
        self.leading = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._news.set()

    async def run(self) -> None:
        """Competes for the relay lock and publishes while it holds it, until stop()."""
        for event_type in TOPICS.all():  # at 0 from the start, so rate() sees the first events
            PUBLISHED.labels(event_type.topic)
        try:
            while not self._stop.is_set():
                try:
                    async with self._engine.connect() as lock_conn:
                        if await self._acquire(lock_conn):
                            await self._lead(lock_conn)
                except Exception as exc:
                    # The lock's connection failed or is gone (PostgreSQL restarted, failed
                    # over, or ended the session), and a lock held with it: another relay may
                    # hold it now.
                    log.warning("outbox relay's lock connection failed (%s); trying again", exc)
                    await self._sleep(1.0)
                finally:
                    self.leading.clear()
        finally:
            # As a worker says it stopped: an operator reading a SIGTERM's log sees the relay
            # ended rather than went silent.
            log.info("outbox relay stopped")

    async def _acquire(self, lock_conn: AsyncConnection) -> bool:
        """Tries for the lock every second until it is this relay's (True) or stop() (False)."""
        while not self._stop.is_set():
            got = (
                await lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": RELAY_LOCK})
            ).scalar_one()
            await lock_conn.commit()
            if got:
                return True
            await self._sleep(1.0)
        return False

    async def _lead(self, lock_conn: AsyncConnection) -> None:
        """Publishes round after round while the lock's connection lives: it is asked every
        `lock_check_interval` seconds, and an error there ends the lead (run() competes
        again). A round that fails is retried: the database or the broker is unreachable,
        and what was not deleted is published again (with the same event ids)."""
        self.leading.set()
        log.info("outbox relay is publishing")
        unlisten = await self._listen(lock_conn)
        checked = time.monotonic()
        try:
            while not self._stop.is_set():
                if time.monotonic() - checked >= self._lock_check:
                    await lock_conn.execute(text("SELECT 1"))  # the session, and the lock, lives
                    await lock_conn.commit()
                    checked = time.monotonic()
                started = time.monotonic()
                self._news.clear()  # what is committed from here on notifies again
                try:
                    sent = await self.publish_once()
                except Exception:
                    log.exception("outbox relay round failed; retrying")
                    await self._sleep(1.0)
                    continue
                await self._sleep(started + self._busy - time.monotonic())
                if unlisten is not None and sent < self._batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._news.wait(), self._idle)
        finally:
            if unlisten is not None:
                await unlisten()
        try:
            await lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RELAY_LOCK})
            await lock_conn.commit()
        except Exception as exc:  # its connection is gone, and the lock with it
            log.warning("outbox relay could not release its lock: %s", exc)

    async def _listen(
        self, lock_conn: AsyncConnection
    ) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """Listens for NOTIFY_CHANNEL on the lock's connection; returns what stops listening,
        or None if the connection cannot listen (the relay then looks every busy_interval)."""

        def heard(*_: object) -> None:
            self._news.set()

        try:
            driver: Any = (await lock_conn.get_raw_connection()).driver_connection
            await driver.add_listener(NOTIFY_CHANNEL, heard)
        except Exception as exc:
            log.warning("outbox relay cannot listen for new events (%s); it polls instead", exc)
            return None

        async def unlisten() -> None:
            with contextlib.suppress(Exception):  # a dead connection listens to nothing
                await driver.remove_listener(NOTIFY_CHANNEL, heard)

        return unlisten

    async def publish_once(self) -> int:
        """Publishes the oldest unpublished events, in the order they were written; returns
        how many."""
        async with self._sessions() as session:
            taken = (await session.execute(_TAKE_OLDEST, {"n": self._batch})).all()
            if not taken:
                return 0
            rows = sorted(taken, key=lambda r: r.id)  # RETURNING's order is not the index's
            await self._bus.publish([OutRecord(r.topic, r.key, r.payload) for r in rows])
            await session.commit()
        for topic, n in collections.Counter(r.topic for r in rows).items():
            PUBLISHED.labels(topic).inc(n)
        return len(rows)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
