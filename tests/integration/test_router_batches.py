"""The router's batches against its one-post-at-a-time path, on real PostgreSQL: the same seeded
stream of posts (geotagged neighbours, text-only reports in a barri, repeats by another channel,
thanks, answers in a request's thread, five days of them) routed both ways into two databases
gives the same requests with the same ids, the same reports, audit trail and outbox events."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import orjson
import pytest
from plaza.contracts import Envelope, decode, derive_event_id, envelope
from plaza.db import create_engine, session_factory
from plaza.db.models import OutboxRecord, RequestEvent, RequestReport, ServiceRequest
from plaza.worker import is_transient
from plaza_router.dedupe import DuplicatePolicy, Probe, candidates, first_times_locking
from plaza_router.handler import _LOCKED_AND_NEW_IDS, _REPORTED
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import TEMPLATE_DB, Postgres
from tests.integration.lifecycle_helpers import POSTED_AT, VERDI, as_event, classified, router

pytestmark = [pytest.mark.postgres]

TEXTS = (
    "El fanal del carrer de Verdi no funciona",
    "Fanal apagat al carrer de Verdi des d'ahir",
    "Hi ha brossa acumulada a la plaça del Sol",
    "Contenidors plens a la plaça del Sol",
    "Soroll de motos cada nit al carrer Gran",
)


def stream(seed: int, n: int) -> list[Envelope]:
    """n events as a busy Gràcia would send them, in the order they arrive."""
    rng = random.Random(seed)
    events: list[Envelope] = []
    for i in range(n):
        at = POSTED_AT + timedelta(minutes=rng.randrange(0, 5 * 24 * 60))
        kind = rng.random()
        if kind < 0.08 and events:  # the same post again, by another channel (another event id)
            again = rng.choice(events)
            events.append(
                envelope(
                    again.post_classified,
                    key=f"mastodon:{again.post_classified.post.post_id}",
                    event_id=derive_event_id("post-classified", "webhook", str(i)),
                    correlation_id="c",
                ).envelope
            )
            continue
        if kind < 0.14 and events:  # an answer in the thread of an earlier post
            parent = rng.choice(events).post_classified.post
            body = classified(
                f"p{i}",
                at=at,
                reply_to=parent.post_id,
                text="Encara no està arreglat",
                # its author's own (which may reopen it), or someone else's
                author=parent.author_handle if rng.random() < 0.5 else "",
            )
        elif kind < 0.22:
            body = classified(f"p{i}", at=at, actionable=False, text="Gràcies per la feina!")
        else:
            # A few spots, so that neighbours (within 60 m) and far ones both happen.
            spot = rng.randrange(40)
            latlon = (
                (VERDI[0] + 0.001 * spot + rng.uniform(-0.0006, 0.0006), VERDI[1])
                if rng.random() < 0.7
                else None
            )
            body = classified(
                f"p{i}",
                at=at,
                latlon=latlon,
                service_code=rng.choice(("streetlight", "cleaning")),
                text=rng.choice(TEXTS),
                barri=rng.choice(("31", "32")),
                author=f"@neighbour{rng.randrange(40)}@bcn.social",
                urgent=rng.random() < 0.1,
            )
            if rng.random() < 0.3:  # photos: the requests' media_urls
                body.post.media_urls.extend(f"https://img.example/{i}/{n}.jpg" for n in range(2))
        events.append(as_event(body))
    return events


async def outcome(sessions: async_sessionmaker[AsyncSession]) -> dict[str, object]:
    """Everything routing wrote, without the clock's readings."""
    async with sessions() as s:
        requests = (await s.execute(select(ServiceRequest).order_by(ServiceRequest.id))).scalars()
        reports = (await s.execute(select(RequestReport).order_by(RequestReport.post_id))).scalars()
        audit = (await s.execute(select(RequestEvent))).scalars()
        outbox = (await s.execute(select(OutboxRecord).order_by(OutboxRecord.id))).scalars()
        per_key: dict[str, list[str]] = {}
        for record in outbox:
            per_key.setdefault(record.key, []).append(decode(record.topic, record.payload).event_id)
        no_item = select(func.count()).where(ServiceRequest.queue_item.is_(None))
        return {
            "without_queue_item": await s.scalar(no_item),
            "requests": [
                (
                    r.id,
                    r.status,
                    r.service_code,
                    r.reporters_count,
                    r.version,
                    r.source_post_id,
                    r.queue,
                    r.urgency,
                    r.description,
                    r.expected_datetime,
                    r.media_url,
                    r.media_urls,
                )
                for r in requests
            ],
            "reports": [
                (r.service_request_id, r.post_id, r.merged, r.author_handle) for r in reports
            ],
            "audit": sorted(
                (
                    e.service_request_id,
                    e.version,
                    e.kind,
                    e.note or "",
                    repr(e.before),
                    repr(e.after),
                )
                for e in audit
            ),
            "outbox": per_key,
        }


@pytest.fixture
async def second_sessions(postgres: Postgres) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await postgres.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    engine = create_engine(postgres.url(name))
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
        await postgres.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("seed", [1, 2])
async def test_batches_route_exactly_as_one_post_at_a_time(
    sessions: async_sessionmaker[AsyncSession],
    second_sessions: async_sessionmaker[AsyncSession],
    seed: int,
) -> None:
    events = stream(seed, 400)
    one_by_one = router(sessions)
    for event in events:
        await one_by_one(event)
    batched = router(second_sessions)
    rng = random.Random(seed)
    start = 0
    while start < len(events):
        size = rng.choice((1, 7, 50, 120))
        await batched.batch(events[start : start + size])
        start += size
    expected, got = await outcome(sessions), await outcome(second_sessions)
    requests = expected["requests"]
    assert isinstance(requests, list) and 80 < len(requests) < 250  # both new requests and merges
    reports = expected["reports"]
    assert isinstance(reports, list)
    # people, not posts: a neighbour who reported a request twice counts once
    assert sum(r[3] for r in requests) < len(reports)
    assert got["requests"] == requests
    assert got["without_queue_item"] == expected["without_queue_item"] == 0
    assert got["reports"] == expected["reports"]
    assert got["audit"] == expected["audit"]
    assert got["outbox"] == expected["outbox"]


async def test_a_value_too_long_fails_the_batch_and_is_never_cut_short(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Rows written in bulk are refused as one row at a time would be (the worker then takes
    the batch one by one and dead-letters the bad post), not stored cut to the column's size."""
    fine = as_event(classified("fine", latlon=(41.400, 2.15)))
    too_long = as_event(classified("long", latlon=(41.410, 2.15), service_code="x" * 100))
    with pytest.raises(DBAPIError, match="value too long"):
        await router(sessions).batch([fine, too_long])
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(ServiceRequest)) == 0
        assert await s.scalar(select(func.count()).select_from(RequestReport)) == 0


async def test_a_batch_merging_into_requests_does_not_wait_for_replies_being_recorded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The notifier records replies to several requests in one transaction, each insert taking a
    KEY SHARE lock on its request. A batch that merges reports into those requests locks them
    FOR NO KEY UPDATE, which those locks do not block: with FOR UPDATE the two waited for each
    other (a deadlock, when each held one the other wanted)."""
    route = router(sessions)
    far = (41.4036, 2.1566), (41.3900, 2.1700)
    await route.batch([as_event(classified(f"first{n}", latlon=at)) for n, at in enumerate(far)])
    async with sessions() as s:
        requests = list(
            (await s.execute(select(ServiceRequest.id).order_by(ServiceRequest.id))).scalars()
        )
    assert len(requests) == 2
    async with sessions() as notifier, notifier.begin():
        for rid in reversed(requests):  # holds both, as a reply batch would, until it commits
            await notifier.execute(
                text(
                    "INSERT INTO replies (reply_id, service_request_id, kind, language, platform,"
                    " channel, in_reply_to_post_id, text, posted_at)"
                    " VALUES (:id, :rid, 'acknowledged', 'ca', 'mastodon', 'log', 'p', 't', now())"
                ),
                {"id": f"reply-{rid}", "rid": rid},
            )
        again = [as_event(classified(f"again{n}", latlon=at)) for n, at in enumerate(far)]
        await asyncio.wait_for(route.batch(again), timeout=20)  # FOR UPDATE: blocked until then
    async with sessions() as s:
        counts = (await s.execute(select(ServiceRequest.reporters_count))).scalars().all()
    assert sorted(counts) == [2, 2]


async def test_a_batch_locks_the_services_of_its_new_actionable_events_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The inbox statement also takes the dedupe locks (deciding "new or duplicate" for a
    service is serialised across routers): the services of the events not seen before that
    are actionable, held until the transaction ends; a redelivered event's service is not
    locked, nor is anything when no event is new."""

    async def held_elsewhere(code: str) -> bool:
        async with sessions() as other:
            got = await other.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": f"dedupe:{code}"}
            )
            await other.rollback()
            return not got

    async with sessions.begin() as s:
        assert await first_times_locking(s, "router", [("old", "POTHOLE")]) == {"old"}
    assert not await held_elsewhere("POTHOLE")  # released with the transaction

    async with sessions.begin() as s:
        fresh = await first_times_locking(
            s,
            "router",
            [
                ("old", "POTHOLE"),
                ("new", "STREET_LIGHT"),
                ("new", "GRAFFITI"),  # the same event twice: its first service counts
                ("thanks", None),
                ("also-new", "WASTE_CONTAINER"),
            ],
        )
        assert fresh == {"new", "thanks", "also-new"}
        assert await held_elsewhere("STREET_LIGHT")
        assert await held_elsewhere("WASTE_CONTAINER")
        assert not await held_elsewhere("POTHOLE")
        assert not await held_elsewhere("GRAFFITI")
    assert not await held_elsewhere("STREET_LIGHT")

    async with sessions.begin() as s:
        assert await first_times_locking(s, "router", [("new", "STREET_LIGHT")]) == set()
        assert not await held_elsewhere("STREET_LIGHT")
        assert await first_times_locking(s, "router", []) == set()


def nodes_reading(node: dict[str, object], table: str) -> list[dict[str, object]]:
    """Every node of an EXPLAIN plan that reads `table` (the table or an index of it)."""
    found = [node] if node.get("Relation Name") == table else []
    for child in node.get("Plans", ()):  # type: ignore[attr-defined]
        found += nodes_reading(child, table)
    return found


async def requests_reported_by_many(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """100 requests with 300 reports each, by 300 people (some of whom report every request);
    request_reports without statistics until a test analyzes it (autovacuum off for it)."""
    async with sessions.begin() as s:
        ids = (
            await s.scalars(
                text(
                    """
                    INSERT INTO service_requests (status, service_code, description,
                        requested_datetime, agency_responsible, district_code, location_source,
                        queue, urgency, language, service_confidence, channel, source_platform,
                        source_post_id, source_author_handle, media_urls)
                    SELECT 'new', 'streetlight', 'fanal apagat', now(), 'IMI', '06', 'none',
                        'district-06', 'normal', 'ca', 0.9, 'webhook', 'mastodon', 'p' || i,
                        '@n0', '{}'
                    FROM generate_series(1, 100) AS i
                    RETURNING id
                    """
                )
            )
        ).all()
        await s.execute(
            text(
                """
                INSERT INTO request_reports (service_request_id, platform, post_id,
                    author_handle, reporter, text, language, reported_at, merged)
                SELECT r, 'mastodon', r || '-' || i, '@n' || i, 'mastodon:' || i, 'fanal', 'ca',
                    now(), i > 0
                FROM unnest(CAST(:ids AS bigint[])) AS r, generate_series(0, 299) AS i
                """
            ),
            {"ids": ids},
        )
        await s.execute(text("ALTER TABLE request_reports SET (autovacuum_enabled = false)"))
    return list(ids)


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_a_merge_reads_only_its_own_authors_reports_of_a_request(
    sessions: async_sessionmaker[AsyncSession], analyzed: bool
) -> None:
    """Whether a merged report's author reported the request already is read through the index
    on (service_request_id, reporter), whether or not the table has statistics yet: the request
    a whole street reports has hundreds of reports, and reading them all at every merge made
    each merge cost more than the last."""
    ids = await requests_reported_by_many(sessions)
    if analyzed:
        async with sessions.begin() as s:  # committed: the statistics ANALYZE writes with it
            await (await s.connection()).exec_driver_sql("ANALYZE request_reports")
    request_id = ids[40]
    batch = {
        "ids": [request_id],
        "n": 0,
        "pair_ids": [request_id, request_id],
        "pair_reporters": ["mastodon:7", "mastodon:someone-new"],
    }
    async with sessions.begin() as s:
        [row] = (await s.execute(_LOCKED_AND_NEW_IDS, batch)).all()
        assert set(row.authors) == {"mastodon:7"}
        explained = await s.scalar(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + _LOCKED_AND_NEW_IDS.text), batch
        )
    [root] = orjson.loads(explained) if isinstance(explained, str) else explained
    reads = nodes_reading(root["Plan"], "request_reports")
    assert reads, root
    # each pair is one probe of the index by both columns, not a walk over the request's reports
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in reads) <= 2, reads
    assert all(
        "service_request_id" in str(n.get("Index Cond")) and "reporter" in str(n.get("Index Cond"))
        for n in reads
    ), reads


async def test_a_batchs_lookups_of_reports_probe_their_indexes_without_statistics(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A new city's request_reports has no statistics until autovacuum's first analyze, a
    minute or more into its first storm: the posts already reported and the authors of merged
    reports are still one index probe each, not the whole table hashed for every batch (which
    the planner chose for a join: 9 and 25 ms a batch with 60,000 reports, growing with each)."""
    ids = await requests_reported_by_many(sessions)
    posts = [f"{ids[i % 100]}-{i}" if i % 2 else f"new-{i}" for i in range(250)]
    reported = {
        "platforms": ["mastodon"] * 250,
        "posts": posts,
        "reporters": [f"mastodon:{i}" for i in range(250)],
    }
    merged = {
        "ids": ids[:100],
        "n": 150,
        "pair_ids": [ids[i % 100] for i in range(120)],
        "pair_reporters": [f"mastodon:{i * 3}" for i in range(120)],
    }
    async with sessions.begin() as s:
        for statement, params, probes in (
            (_REPORTED, reported, 250),
            (_LOCKED_AND_NEW_IDS, merged, 120),
        ):
            explained = await s.scalar(
                text("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.text), params
            )
            [root] = orjson.loads(explained) if isinstance(explained, str) else explained
            reads = nodes_reading(root["Plan"], "request_reports")
            assert reads and all("Index" in str(n["Node Type"]) for n in reads), reads
            assert sum(n["Actual Loops"] for n in reads) == probes, reads
            assert sum(n["Actual Rows"] * n["Actual Loops"] for n in reads) <= probes, reads
        # and the answers: the odd posts were reported, and the first 100 pairs' authors
        # (mastodon:0 to mastodon:297) reported their requests
        found = (await s.execute(_REPORTED, reported)).all()
        assert sorted(r.post_id for r in found) == sorted(posts[1::2])
        rows = (await s.execute(_LOCKED_AND_NEW_IDS, merged)).all()
        assert sum(len(r.authors or ()) for r in rows) == 100


@pytest.mark.parametrize(
    ("lost", "raised"),
    [
        # its SQLSTATE says so, or (when the goodbye meets the next statement) it is said as
        # a lost connection
        ("terminated by the server", (asyncpg.PostgresError, ConnectionError)),
        ("closed under the driver", ConnectionError),  # asyncpg's InterfaceError, said as one
    ],
)
async def test_a_connection_lost_during_the_duplicate_search_is_transient(
    sessions: async_sessionmaker[AsyncSession],
    lost: str,
    raised: type[Exception] | tuple[type[Exception], ...],
) -> None:
    """The candidates come straight from asyncpg: a connection lost meanwhile must still read as
    the database being away (the worker retries the batch), never as a bad record (which the
    worker would dead-letter)."""
    probe = Probe("cleaning", POSTED_AT, "contenidor ple", None, None, "06", None, None)
    async with sessions() as s, s.begin():
        driver = (await (await s.connection()).get_raw_connection()).driver_connection
        assert await candidates(s, DuplicatePolicy(), [probe]) == [[]]  # the statement works
        if lost == "terminated by the server":
            pid = driver.get_server_pid()
            async with sessions() as other:
                await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        else:
            driver.terminate()
        with pytest.raises(raised) as failed:
            await candidates(s, DuplicatePolicy(), [probe])
        assert is_transient(failed.value), repr(failed.value)
        await s.invalidate()
