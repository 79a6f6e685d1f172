"""Runs one connector inside the ingest process: publishes its posts, then stores its cursor.

The cursor rule: a cursor is stored only after every post up to it is durably on the bus
(`Bus.publish` returns once acknowledged), so a restart resumes exactly there: nothing is
missed, and nothing is published twice except what was on the bus but not yet in the cursor
when the process died; those carry the same event id (derived from (platform, post_id)), which
the router's inbox recognises. Within a run, repeats (catch-up and stream overlap) are dropped
before publishing. A post is recorded as published (published_posts) before it goes on the bus,
so that its deletion is recognised after a restart, before the router has it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Final

from plaza.bus import Bus
from plaza.contracts import post_key
from plaza.withdrawals import known_among, pointless_among
from plaza.worker import RetryPolicy
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_ingest.connectors.base import Batch, Connector, RetryAfter
from plaza_ingest.connectors.cursors import load_cursor, save_cursor
from plaza_ingest.connectors.published import forget_published, remember_published
from plaza_ingest.publish import post_received, post_withdrawn, publish

log = logging.getLogger(__name__)

CHANNEL = "stream"
# Seconds between two clean-ups of the posts published longer ago than the bus keeps them.
FORGET_EVERY: Final = 3600.0

CONNECTOR_POSTS = Counter(
    "plaza_connector_posts_total",
    "Posts a connector published to the bus (repeats within a run not counted), by platform",
    ["platform"],
)
CONNECTOR_DELETIONS = Counter(
    "plaza_connector_deletions_total",
    "Deletions of posts Plaza has that a connector published to the bus (post-withdrawn), "
    "by platform",
    ["platform"],
)
CONNECTOR_RECONNECTS = Counter(
    "plaza_connector_reconnects_total",
    "Times a connector lost its connection (or failed to connect) and reconnected, by platform",
    ["platform"],
)


class RecentPosts:
    """The most recent post keys published in this run (bounded); the connectors of one process
    share it, so a post that both mentions the city and carries a followed hashtag goes once."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)


class ConnectorRunner:
    """Keeps one connector connected for as long as the process runs."""

    def __init__(
        self,
        connector: Connector,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        *,
        backoff: RetryPolicy = RetryPolicy(base_delay=0.5, max_delay=60.0),
        seen: RecentPosts | None = None,
    ) -> None:
        self.connector = connector
        self._bus = bus
        self._sessions = sessions
        self._backoff = backoff
        self._seen = seen if seen is not None else RecentPosts()
        self.connected = asyncio.Event()  # set while caught up and following the live stream
        self.connections = 0
        self._forgotten_at: float | None = None  # monotonic time of the last clean-up

    async def run(self) -> None:
        """Until cancelled: connect, publish, store the cursor; on a loss, wait and reconnect."""
        failures = 0
        while True:
            try:
                self.connections += 1
                await self._follow()
                wait = self._backoff.delay(1)  # the stream ended cleanly: reconnect soon
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                wait = exc.seconds
                log.warning("connector %s: %s", self.connector.name, exc)
            except Exception as exc:
                # A connection that had caught up starts a new streak of failures.
                failures = 1 if self.connected.is_set() else failures + 1
                wait = self._backoff.delay(min(failures, 16))
                log.warning(
                    "connector %s lost its connection (%s: %s); reconnecting in %.1fs",
                    self.connector.name,
                    type(exc).__name__,
                    exc,
                    wait,
                )
            else:
                failures = 0
            self.connected.clear()
            CONNECTOR_RECONNECTS.labels(self.connector.platform).inc()
            await asyncio.sleep(wait)

    async def _follow(self) -> None:
        async with self._sessions() as session:
            cursor = await load_cursor(session, self.connector.name)
        log.info("connector %s connecting from cursor %s", self.connector.name, cursor)
        async for batch in self.connector.batches(cursor):
            await self._publish(batch)
            if batch.cursor != cursor:
                async with self._sessions.begin() as session:
                    await save_cursor(session, self.connector.name, batch.cursor)
                cursor = batch.cursor
            if not batch.posts and not batch.deletions:
                self.connected.set()

    async def _publish(self, batch: Batch) -> None:
        await self._publish_posts(batch)
        if batch.deletions:
            await self._publish_deletions(batch)

    async def _publish_deletions(self, batch: Batch) -> None:
        """The deletions of posts Plaza has (published in this run, or before it, or kept in
        its records): a platform's stream carries every deletion, of which the city's are a
        few."""
        platform = self.connector.platform
        ids = {d.post_id for d in batch.deletions if d.platform == platform}
        mine = {i for i in ids if post_key(platform, i) in self._seen}
        if ids - mine:
            async with self._sessions() as session:
                mine |= await known_among(session, platform, ids - mine)
        located = {d.post_id for d in batch.deletions if d.location_only and d.post_id in mine}
        pointless: set[str] = set()
        if located:  # a point taken out already: X says so again at every round
            async with self._sessions() as session:
                pointless = await pointless_among(session, platform, located)
        events = [
            post_withdrawn(
                d.platform,
                d.post_id,
                channel=CHANNEL,
                author_id=d.author_id,
                withdrawn_at=d.deleted_at,
                location_only=d.location_only,
            )
            for d in batch.deletions
            if d.platform == platform
            and d.post_id in mine
            and not (d.location_only and d.post_id in pointless)
        ]
        if events:
            await publish(self._bus, events)
            CONNECTOR_DELETIONS.labels(platform).inc(len(events))

    async def _publish_posts(self, batch: Batch) -> None:
        fresh, keys = [], set()
        for post in batch.posts:
            key = post_key(post.platform, post.post_id)
            if key not in self._seen and key not in keys:
                keys.add(key)
                fresh.append(post)
        if not fresh:
            return
        # Claimed before the await, so another connector of this process skips them meanwhile.
        for key in keys:
            self._seen.add(key)
        try:
            await self._remember([(p.platform, p.post_id) for p in fresh])
            await publish(self._bus, [post_received(p, channel=CHANNEL) for p in fresh])
        except BaseException:
            for key in keys:
                self._seen.discard(key)
            raise
        CONNECTOR_POSTS.labels(self.connector.platform).inc(len(fresh))

    async def _remember(self, posts: list[tuple[str, str]]) -> None:
        """Records the posts as published before they go on the bus (a restart forgets
        RecentPosts, and the router may not have them yet), and forgets, hourly, those the bus
        no longer keeps."""
        now = datetime.now(UTC)
        tick = time.monotonic()
        async with self._sessions.begin() as session:
            await remember_published(session, posts, now)
            if self._forgotten_at is None or tick - self._forgotten_at >= FORGET_EVERY:
                await forget_published(session, now)
                self._forgotten_at = tick
