"""X's batch compliance against the local X API v2 (tests/peers/x_api.py), real Kafka and
PostgreSQL: a citizen deletes their X post, and after the next compliance round its words, photo
and point are out of Open311 and the manager API, while a post still on X stays. A 429, an
upload refused and a failed job withdraw nothing and are tried again; a restart resumes the job
under way instead of starting another, and does not check again before the round is due."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from plaza.bus import Bus, Consumer
from plaza.city import City
from plaza.contracts import (
    TOPICS,
    Envelope,
    LocationSource,
    Placement,
    Post,
    PostClassified,
    decode,
)
from plaza.db.models import RequestReport
from plaza.withdrawals import WITHDRAWN_TEXT, Withdrawal, held_posts, withdraw
from plaza_api.auth import Role
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.cursors import save_cursor
from plaza_ingest.connectors.published import remember_published
from plaza_ingest.connectors.x import Backoff, XMentions
from plaza_ingest.connectors.x_compliance import JobPolling, Progress, XCompliance, held_in
from plaza_router.withdrawals import WithdrawPost
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import client, gateway, new_key
from tests.integration.lifecycle_helpers import as_event, router
from tests.integration.social_helpers import (  # the fixtures `bus` and `received` too
    Received,
    cursor_of,
    post_received_bus,  # noqa: F401
    received_posts,  # noqa: F401
    running,
)
from tests.peers.x_api import FakeX

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
JOBS = "/2/compliance/jobs"
VERDI = (41.4036, 2.1566)
FAST = Backoff(
    network_step=0.5, network_max=1, http_first=1.5, http_max=3, rate_first=1.5, rate_max=3
)
QUICK_JOBS = JobPolling(first=0.05, most=0.2)


@pytest.fixture
def x() -> Iterator[FakeX]:
    with FakeX(heartbeat=0.2) as server:
        yield server


def compliance(
    server: FakeX,
    http: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    every: float = 3600.0,
) -> XCompliance:
    return XCompliance(server.account(), http, held_in(sessions), every=every, polling=QUICK_JOBS)


def rounds(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("plaza_x_compliance_rounds_total", labels) or 0.0


def streetlight(post: Post) -> PostClassified:
    place = Placement(
        district_code="06",
        district_name=City.barcelona().districts["06"].name,
        barri_code="31",
        source=LocationSource.LOCATION_SOURCE_GEO,
        confidence=1.0,
    )
    return PostClassified(
        post=post,
        service_code="streetlight",
        service_confidence=0.9,
        actionable=True,
        placement=place,
        language="ca",
    )


async def withdrawals(consumer: Consumer, *, until: int, settle: float = 1.0) -> list[Envelope]:
    """The post-withdrawn events, once `until` have come (or 30 s), and whatever comes next."""
    loop = asyncio.get_running_loop()
    events: list[Envelope] = []
    deadline = loop.time() + 30
    while len(events) < until and loop.time() < deadline:
        events += [decode(r.topic, r.value) for r in await consumer.fetch(10, 0.1)]
    end = loop.time() + settle
    while loop.time() < end:
        events += [decode(r.topic, r.value) for r in await consumer.fetch(10, 0.1)]
    return events


async def until(condition: object, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def published(sessions: async_sessionmaker[AsyncSession], *post_ids: str) -> None:
    """Posts ingest put on the bus, not routed yet: Plaza holds them by their ids."""
    async with sessions.begin() as s:
        await remember_published(s, [("x", i) for i in post_ids], datetime.now(UTC))


async def request_id_of(sessions: async_sessionmaker[AsyncSession], post_id: str) -> int:
    async with sessions() as s:
        report = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == post_id))
        ).scalar_one()
        return report.service_request_id


async def withdrawals_of(bus: Bus) -> Consumer:
    await bus.create_topics([TOPICS.POST_WITHDRAWN.topic], 3)
    return await bus.subscribe("test-withdrawals", [TOPICS.POST_WITHDRAWN.topic])


async def routed_mentions(
    x: FakeX,
    http: httpx.AsyncClient,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
    tweet: Callable[[], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The posts `tweet` makes on X, read by the mentions connector and routed as streetlights."""
    mentions = XMentions(x.account(), http, backoff=FAST, stall_timeout=2.0)
    async with running(ConnectorRunner(mentions, bus, sessions)):
        tweets = tweet()
        posts = await received.until(len(tweets))
    for post in posts:
        await router(sessions)(as_event(streetlight(post)))
    return tweets


async def test_a_post_deleted_on_x_leaves_open311_and_the_manager_api_after_a_round(
    x: FakeX,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    consumer = await withdrawals_of(bus)
    words = "El fanal del carrer de Verdi fa pampallugues des de dilluns"
    async with httpx.AsyncClient() as http:
        gone, kept = await routed_mentions(
            x,
            http,
            bus,
            received,
            sessions,
            lambda: [
                x.citizen_posts(words, photos=1, point=VERDI),
                x.citizen_posts("I el de la plaça de la Virreina també", username="jordi"),
            ],
        )
        api = gateway(sessions)
        key = await new_key(sessions, Role.ADMIN)
        gone_request = await request_id_of(sessions, gone["id"])
        async with client(api, key) as plaza:
            [before] = (await plaza.get(f"/open311/v2/requests/{gone_request}.json")).json()
        assert words in before["description"] and before["media_url"]

        x.deletes(gone["id"])
        checker = compliance(x, http, sessions)
        async with running(ConnectorRunner(checker, bus, sessions)):
            events = await withdrawals(consumer, until=1)
        await consumer.close()

    [event] = events  # the post still on X is not withdrawn
    w = event.post_withdrawn
    # The platform's word, as its own stream would say it: no author named.
    assert (w.platform, w.post_id, w.author_id, w.author_handle, w.channel) == (
        "x",
        gone["id"],
        "",
        "",
        "stream",
    )
    [job] = x.jobs.values()
    assert job["type"] == "tweets" and job["status"] == "complete"
    assert sorted(x.uploaded[job["id"]]) == sorted([gone["id"], kept["id"]])
    # The signed storage URLs get no bearer token; X's API does.
    [upload] = x.seen("PUT", "/compliance/upload/")
    [download] = x.seen("GET", "/compliance/download/")
    assert "authorization" not in upload.headers and "authorization" not in download.headers
    assert upload.headers["content-type"].startswith("text/plain")
    assert all(c.headers["authorization"] == "Bearer x-app-token" for c in x.seen("GET", JOBS))
    progress = json.loads(await cursor_of(sessions, checker.name) or "{}")
    assert progress["job"] == "" and datetime.fromisoformat(progress["due"]) > datetime.now(UTC)

    await WithdrawPost(sessions)(event)
    async with client(api, key) as plaza:
        [after] = (await plaza.get(f"/open311/v2/requests/{gone_request}.json")).json()
        managed = (await plaza.get(f"/api/v1/requests/{gone_request}")).json()
        kept_request = await request_id_of(sessions, kept["id"])
        [other] = (await plaza.get(f"/open311/v2/requests/{kept_request}.json")).json()
    assert after["description"] == WITHDRAWN_TEXT
    assert not after.get("media_url") and not after.get("lat") and not after.get("address")
    assert managed["withdrawn"] is True and managed["description"] == WITHDRAWN_TEXT
    assert "Virreina" in other["description"]

    # The next round leaves the withdrawn post out: Plaza no longer holds it.
    async with sessions() as s:
        assert await held_posts(s, "x") == [kept["id"]]


async def test_a_location_taken_off_a_post_on_x_leaves_open311_and_its_words_stay(
    x: FakeX,
    bus: Bus,
    received: Received,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    consumer = await withdrawals_of(bus)
    words = "El fanal del carrer de Verdi fa pampallugues des de dilluns"
    async with httpx.AsyncClient() as http:
        [placed] = await routed_mentions(
            x,
            http,
            bus,
            received,
            sessions,
            lambda: [x.citizen_posts(words, photos=1, point=VERDI)],
        )
        api = gateway(sessions)
        key = await new_key(sessions, Role.ADMIN)
        request = await request_id_of(sessions, placed["id"])
        async with client(api, key) as plaza:
            [before] = (await plaza.get(f"/open311/v2/requests/{request}.json")).json()
        assert before["lat"] and before["long"]

        x.compliance_event(placed["id"], "scrub_geo", "scrub_geo")
        checker = compliance(x, http, sessions)
        async with running(ConnectorRunner(checker, bus, sessions)):
            events = await withdrawals(consumer, until=1)
        await consumer.close()

    [event] = events
    w = event.post_withdrawn
    assert (w.post_id, w.location_only) == (placed["id"], True)
    await WithdrawPost(sessions)(event)
    async with client(api, key) as plaza:
        [after] = (await plaza.get(f"/open311/v2/requests/{request}.json")).json()
        managed = (await plaza.get(f"/api/v1/requests/{request}")).json()
    assert after.get("lat") is None and after.get("long") is None
    assert after["description"] == before["description"] and words in after["description"]
    assert after["media_url"] == before["media_url"]
    assert managed["withdrawn"] is False and managed["lat"] is None
    # Still Plaza's, and still asked about: its author may delete it yet.
    async with sessions() as s:
        assert await held_posts(s, "x") == [placed["id"]]


async def test_the_posts_asked_about_are_those_plaza_holds_and_has_not_withdrawn(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await published(sessions, "1", "2", "3")
    now = datetime.now(UTC)
    async with sessions.begin() as s:
        await withdraw(s, Withdrawal("x", "2", "", "", now))  # X's word, before it was routed
        await withdraw(s, Withdrawal("x", "3", "999", "", now))  # not its author's: refused
    async with sessions() as s:
        assert await held_posts(s, "x") == ["1", "3"]
        assert await held_posts(s, "mastodon") == []


async def test_a_429_a_refused_upload_and_a_failed_job_are_tried_again_and_withdraw_nothing(
    x: FakeX,
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await bus.create_topics([TOPICS.POST_WITHDRAWN.topic], 3)
    consumer = await bus.subscribe("test-withdrawals", [TOPICS.POST_WITHDRAWN.topic])
    gone = x.citizen_posts("La font de la plaça del Sol no raja")
    kept = x.citizen_posts("Hi ha un forat a la vorera del carrer Gran", username="jordi")
    await published(sessions, gone["id"], kept["id"])
    x.deletes(gone["id"])
    x.fail_next("POST", JOBS, 429, headers=x.rate_limited(1))
    x.fail_next("PUT", "/compliance/upload/", 403)
    x.job_outcomes.append("failed")
    before = {o: rounds(o) for o in ("rate_limited", "upload_refused", "failed", "complete")}
    async with httpx.AsyncClient() as http:
        checker = compliance(x, http, sessions, every=0.3)
        async with running(ConnectorRunner(checker, bus, sessions)):
            events = await withdrawals(consumer, until=1, settle=0.5)
    await consumer.close()

    assert {o: rounds(o) - before[o] for o in before} == {
        "rate_limited": 1,
        "upload_refused": 1,
        "failed": 1,
        "complete": checker.rounds,
    }
    assert checker.rounds >= 1
    # Only the deleted post, and only once its job completed.
    assert {e.post_withdrawn.post_id for e in events} == {gone["id"]}
    posted = x.seen("POST", JOBS)
    # The 429's reset was honoured (whole seconds, a second ahead at least).
    assert posted[1].at - posted[0].at >= 0.9
    # The job whose upload was refused was uploaded to again, not left blocking a new one.
    first, *_ = x.jobs
    assert x.uploaded[first] and len(x.seen("PUT", "/compliance/upload/")) >= 2


async def test_a_restart_resumes_the_job_under_way_and_waits_for_the_round_due(
    x: FakeX,
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await bus.create_topics([TOPICS.POST_WITHDRAWN.topic], 3)
    consumer = await bus.subscribe("test-withdrawals", [TOPICS.POST_WITHDRAWN.topic])
    gone = x.citizen_posts("El contenidor del carrer de Verdi crema")
    await published(sessions, gone["id"])
    x.deletes(gone["id"])
    x.polls_to_complete = 10**6  # X takes its time
    async with httpx.AsyncClient() as http:
        first = compliance(x, http, sessions)
        async with running(ConnectorRunner(first, bus, sessions)):
            await until(lambda: len(x.seen("GET", f"{JOBS}/")) >= 2)
        [job] = x.jobs
        progress = json.loads(await cursor_of(sessions, first.name) or "{}")
        assert progress["job"] == job

        x.polls_to_complete = 1
        async with running(ConnectorRunner(compliance(x, http, sessions), bus, sessions)):
            events = await withdrawals(consumer, until=1)
        assert [e.post_withdrawn.post_id for e in events] == [gone["id"]]
        assert len(x.seen("POST", JOBS)) == 1 and len(x.seen("PUT", "/compliance/")) == 1

        # Restarted once more: the round is hours away, nothing is asked of X.
        calls = len(x.requests)
        async with running(ConnectorRunner(compliance(x, http, sessions), bus, sessions)):
            await asyncio.sleep(1.0)
        assert len(x.requests) == calls
    await consumer.close()


async def test_a_job_x_no_longer_knows_is_replaced_at_once(
    x: FakeX,
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await bus.create_topics([TOPICS.POST_WITHDRAWN.topic], 3)
    consumer = await bus.subscribe("test-withdrawals", [TOPICS.POST_WITHDRAWN.topic])
    gone = x.citizen_posts("Els gronxadors de la plaça del Diamant estan trencats")
    await published(sessions, gone["id"])
    x.deletes(gone["id"])
    async with httpx.AsyncClient() as http:
        checker = compliance(x, http, sessions)
        stale = Progress(datetime.now(UTC), "1372966999991541762")  # a week-old job, say
        async with sessions.begin() as s:
            await save_cursor(s, checker.name, stale.dump())
        async with running(ConnectorRunner(checker, bus, sessions)):
            events = await withdrawals(consumer, until=1, settle=0.2)
    await consumer.close()
    assert [e.post_withdrawn.post_id for e in events] == [gone["id"]]
    first_asked, *_ = x.seen("GET", JOBS)
    assert first_asked.path == f"{JOBS}/{stale.job}"
    assert len(x.jobs) == 1 and checker.rounds == 1
