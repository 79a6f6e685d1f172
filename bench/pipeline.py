"""Drives posts through the running pipeline and reads, from PostgreSQL, when each was routed
and when its reply was recorded.

Times: a post's ingest time is the wall clock when the bench hands it to the Kafka producer
(its created_at is stamped then too). Routed is `processed_events.processed_at` of the router's
inbox row for that post's post-classified event: PostgreSQL's now(), the start of the router's
transaction that opened the request or merged the report (or decided it was not actionable), so
it is early by that one transaction's duration. Reply recorded is `replies.posted_at`, stamped by
the notifier just before it inserts the reply. Bench and database share one clock.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from plaza.bus.kafka import GroupLag, KafkaBus
from plaza.contracts import TOPICS, Outgoing, derive_event_id, post_key
from plaza.posts import PostIn
from plaza_classifier.handler import GROUP as CLASSIFIER
from plaza_ingest.publish import post_received, publish
from plaza_notifier.handler import GROUP as NOTIFIER
from plaza_router.handler import GROUP as ROUTER  # also its inbox's consumer

from bench.cpu import CpuMeter
from bench.posts import BenchPost, PostMix
from bench.stack import Stack

STALL_SECONDS = 90.0  # no post routed for this long: the rest are counted lost
# How often the bench counts what is done: its queries take PostgreSQL's CPU from the pipeline,
# and the times measured are the rows' own (processed_at, posted_at), not when they were seen.
POLL_SECONDS = 0.5


def raw_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def event_for(post: BenchPost, created_at: datetime) -> Outgoing:
    return post_received(
        PostIn(
            platform=post.platform,
            post_id=post.post_id,
            author_handle=post.author_handle,
            text=post.text,
            lang=post.lang,
            lat=post.lat,
            long=post.long,
            created_at=created_at,
        ),
        "replay",
    )


def classified_id(received_event_id: str) -> str:
    """The router's inbox key for a post: the classifier derives it from the received event."""
    return derive_event_id("post-classified", received_event_id)


def post_classified_id(post: BenchPost) -> str:
    return classified_id(derive_event_id("post-received", post_key(post.platform, post.post_id)))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


@dataclass
class PhaseResult:
    published: int
    distinct: int
    publish_seconds: float
    routed: int
    lost: int
    seconds_to_routed: float
    routed_ms: list[float] = field(default_factory=list)
    reply_ms: list[float] = field(default_factory=list)
    requests_opened: int = 0
    reports_merged: int = 0
    not_actionable: int = 0
    replies: int = 0
    # CPU seconds by process from the first publish until the pipeline was through (its
    # replies recorded), before the bench's own lookups; empty without a meter
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.published / self.seconds_to_routed if self.seconds_to_routed else 0.0

    @property
    def offered_rate(self) -> float:
        return self.published / self.publish_seconds if self.publish_seconds else 0.0


class Driver:
    """Publishes posts onto plaza.post-received.v1 the way `plaza replay` does."""

    def __init__(self, stack: Stack, bootstrap: str) -> None:
        self._stack = stack
        self.bootstrap = bootstrap
        self._bus = KafkaBus(bootstrap, namespace=stack.namespace, client_id="plaza-bench")
        self.published_at: dict[str, float] = {}  # post-classified id -> first publish time

    async def __aenter__(self) -> Driver:
        await self._bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._bus.close()

    def _stamp(self, posts: Sequence[BenchPost]) -> list[Outgoing]:
        now = time.time()
        events = [event_for(p, datetime.fromtimestamp(now, UTC)) for p in posts]
        for e in events:
            self.published_at.setdefault(classified_id(e.envelope.event_id), now)
        return events

    async def burst(self, mix: PostMix, batch: int = 500) -> float:
        """Everything as fast as the producer takes it; returns the seconds it took. The events
        are built beforehand (as the raw chain's records are), so the bench's own encoding does
        not take CPU from the pipeline; each is stamped when its batch is handed over."""
        built = [event_for(p, datetime.now(UTC)) for p in mix.posts]
        start = time.time()
        for i in range(0, len(built), batch):
            events = built[i : i + batch]
            now = time.time()
            for e in events:
                self.published_at.setdefault(classified_id(e.envelope.event_id), now)
            await publish(self._bus, events)
        return time.time() - start

    async def at_rate(self, mix: PostMix, rate: float) -> float:
        """Posts at `rate` per second, in 10 ms ticks, each stamped when it is sent."""
        start = time.monotonic()
        sent = 0
        pending: list[asyncio.Task[None]] = []
        while sent < len(mix.posts):
            due = min(len(mix.posts), int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                events = self._stamp(mix.posts[sent:due])
                pending.append(asyncio.create_task(publish(self._bus, events)))
                sent = due
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
        return time.monotonic() - start


# The router's inbox rows of a phase's posts, by its primary key (consumer, event_id): a join
# with the ids, not `event_id = ANY($2)`, which a plan may test against every id of the array
# for every row of a table it scans (40,000 ids against 160,000 rows).
_ROUTED = """
    FROM unnest($2::text[]) AS i(id)
    JOIN processed_events AS p ON p.consumer = $1 AND p.event_id = i.id
"""


async def routed_times(conn: asyncpg.Connection, ids: list[str]) -> dict[str, float]:
    rows = await conn.fetch(
        "SELECT p.event_id, extract(epoch FROM p.processed_at)::float8 AS at" + _ROUTED,
        ROUTER,
        ids,
    )
    return {r["event_id"]: r["at"] for r in rows}


class Lag:
    """Records consumer groups have not yet committed (handled), read from the broker as the
    gateway reads them (plaza.bus.kafka.GroupLag): what the bench watches while a phase runs,
    since every query of its own would take PostgreSQL's CPU from the pipeline (a count of the
    router's inbox for a burst's 40,000 ids read 230,000 index pages once the table had
    statistics). A partition a group has never committed on is not counted: the warm-up has
    every group commit on every partition before the first phase."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        self.namespace = namespace
        self._groups = GroupLag(bootstrap, namespace=namespace, client_id="plaza-bench")

    async def __aenter__(self) -> Lag:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._groups.close()

    async def behind(self, group: str, topic: str) -> int:
        """How many records of topic the group has not yet committed."""
        return self._sum(await self._groups.read(), group, topic)

    async def routing(self) -> int:
        """Posts not yet through the router: the classifier's backlog and the router's, from
        one reading (whose ends are read after every group's offsets, so a post the classifier
        handed on meanwhile is counted in one backlog or the other, never in neither)."""
        lag = await self._groups.read()
        return self._sum(lag, CLASSIFIER, TOPICS.POST_RECEIVED.topic) + self._sum(
            lag, ROUTER, TOPICS.POST_CLASSIFIED.topic
        )

    @staticmethod
    def _sum(lag: dict[tuple[str, str, int], int], group: str, topic: str) -> int:
        return sum(n for (g, t, _), n in lag.items() if g == group and t == topic)


async def wait_routed(stack: Stack, conn: asyncpg.Connection, lag: Lag, ids: list[str]) -> int:
    """Polls until every post is routed or nothing moved for STALL_SECONDS; returns how many.
    The posts are looked up by id only once the classifier and the router have committed all
    they were given (a worker commits after handling), or when they stop moving."""
    done, last_change = 0, time.monotonic()
    while True:
        waiting = await lag.routing()
        if waiting == 0 or time.monotonic() - last_change > STALL_SECONDS / 2:
            n = await conn.fetchval("SELECT count(*)" + _ROUTED, ROUTER, ids)
        else:
            n = -waiting  # a backlog that shrinks is a router that moves
        if n != done:
            done, last_change = n, time.monotonic()
        if done >= len(ids) or time.monotonic() - last_change > STALL_SECONDS:
            return max(int(done), 0)
        stack.check_alive()
        await asyncio.sleep(POLL_SECONDS)


async def wait_replies(
    stack: Stack, conn: asyncpg.Connection, lag: Lag, timeout: float = 120
) -> None:
    """Until the relay has published the whole outbox (it deletes what it published) and the
    notifier has handled every reply asked for (its group's committed offsets are at the end of
    the reply-requested topic: it commits after recording the replies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the oldest row, through the primary key: a count would read every dead row the relay
        # left since autovacuum's last pass
        unpublished = await conn.fetchval("SELECT id FROM outbox ORDER BY id LIMIT 1")
        if unpublished is None and await lag.behind(NOTIFIER, TOPICS.REPLY_REQUESTED.topic) == 0:
            return
        stack.check_alive()
        await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"replies not all recorded within {timeout}s")


async def measure(
    stack: Stack,
    conn: asyncpg.Connection,
    driver: Driver,
    mix: PostMix,
    publish_seconds: float,
    lag: Lag,
    meter: CpuMeter | None = None,
) -> PhaseResult:
    received = {post_classified_id(p): p for p in mix.posts}
    ids = list(received)
    routed = await wait_routed(stack, conn, lag, ids)
    await wait_replies(stack, conn, lag)
    cpu = meter.stop() if meter is not None else {}
    at = await routed_times(conn, ids)
    first = min(driver.published_at[i] for i in ids)
    last = max(at.values()) if at else time.time()
    routed_ms = [(at[i] - driver.published_at[i]) * 1000 for i in ids if i in at]
    platform = mix.posts[0].platform
    replies = await conn.fetch(
        "SELECT in_reply_to_post_id, min(extract(epoch FROM posted_at))::float8 AS at"
        " FROM replies WHERE platform = $1 GROUP BY in_reply_to_post_id",
        platform,
    )
    by_post = {p.post_id: i for i, p in received.items()}
    reply_ms = [
        (r["at"] - driver.published_at[by_post[r["in_reply_to_post_id"]]]) * 1000
        for r in replies
        if r["in_reply_to_post_id"] in by_post
    ]
    reports = await conn.fetch(
        "SELECT merged, count(*) AS n FROM request_reports WHERE platform = $1 GROUP BY merged",
        platform,
    )
    counts = {r["merged"]: int(r["n"]) for r in reports}
    return PhaseResult(
        published=len(mix.posts),
        distinct=len(ids),
        publish_seconds=publish_seconds,
        routed=routed,
        lost=len(ids) - routed,
        seconds_to_routed=last - first,
        routed_ms=routed_ms,
        reply_ms=reply_ms,
        requests_opened=counts.get(False, 0),
        reports_merged=counts.get(True, 0),
        not_actionable=routed - sum(counts.values()),
        replies=len(reply_ms),
        cpu=cpu,
    )


async def burst_phase(
    stack: Stack, bootstrap: str, mix: PostMix, meter: CpuMeter | None = None
) -> PhaseResult:
    return await _phase(stack, bootstrap, mix, None, meter)


async def rate_phase(
    stack: Stack, bootstrap: str, mix: PostMix, rate: float, meter: CpuMeter | None = None
) -> PhaseResult:
    return await _phase(stack, bootstrap, mix, rate, meter)


async def _phase(
    stack: Stack, bootstrap: str, mix: PostMix, rate: float | None, meter: CpuMeter | None
) -> PhaseResult:
    """Publishes the posts (at once, or at `rate` a second) and measures them; `meter` is
    read from the first publish until the pipeline is through (PhaseResult.cpu), so that the
    bench's own lookups afterwards are not counted as the pipeline's."""
    conn = await asyncpg.connect(raw_dsn(stack.database_url))
    try:
        async with Driver(stack, bootstrap) as driver, Lag(bootstrap, stack.namespace) as lag:
            if meter is not None:
                meter.start()
            seconds = await (driver.burst(mix) if rate is None else driver.at_rate(mix, rate))
            return await measure(stack, conn, driver, mix, seconds, lag, meter)
    finally:
        await conn.close()
