"""The database layer on real PostgreSQL: migrations, the inbox, and idempotent handlers."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from plaza.contracts import ReplyKind, derive_event_id
from plaza.db.inbox import first_time
from plaza.db.migrate import downgrade, upgrade
from plaza.db.models import (
    Base,
    OutboxRecord,
    Reply,
    ReplyDelivery,
    RequestEvent,
    RequestReport,
    ServiceRequest,
)
from plaza.db.rows import BulkWrite, add_row, also_execute, rows_in_bulk
from plaza.worker import Rejected
from plaza_notifier.handler import PostReply
from plaza_router.settings import NotActionableReply
from prometheus_client import REGISTRY
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import as_event, classified, outbox, router


async def count(sessions: async_sessionmaker[AsyncSession], model: type[Base]) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_migrations_match_the_models_and_go_down_and_up(
    database_url: str, engine: AsyncEngine
) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert diff == [], f"models and migrations differ: {diff}"
    await downgrade(database_url, "base")
    await upgrade(database_url)


async def test_inbox_recognises_a_redelivered_event(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as s:
        assert await first_time(s, "router", "e1") is True
    async with sessions.begin() as s:
        assert await first_time(s, "router", "e1") is False
        assert await first_time(s, "notifier", "e1") is True


async def test_routing_a_post_twice_opens_one_request_and_stages_its_events_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    event = as_event(classified("p1"))
    assert await route(event) == []  # everything goes through the outbox
    assert await route(event) == []
    assert await count(sessions, ServiceRequest) == 1
    assert await count(sessions, RequestReport) == 1
    staged = await outbox(sessions)
    assert [e.event_type for e in staged] == ["request-created", "reply-requested"]
    async with sessions() as s:
        request = (await s.execute(select(ServiceRequest))).scalar_one()
    assert staged[0].request_created.service_request_id == request.service_request_id
    assert request.queue == "06" and request.district_code == "06"
    assert request.agency_responsible == "Districte de Gràcia"
    # streetlight: acknowledge within 24 h, resolve within 72 h (plaza/config/sla.toml)
    assert request.ack_due_at == datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    assert request.expected_datetime == datetime(2026, 5, 7, 10, 0, tzinfo=UTC)


async def test_the_same_post_by_another_channel_changes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    body = classified("p1")
    await route(as_event(body))
    again = as_event(body)
    again.event_id = "another-event-id-for-the-same-post"
    await route(again)
    assert await count(sessions, ServiceRequest) == 1 and len(await outbox(sessions)) == 2


async def test_router_puts_unlocated_posts_in_triage_and_ignores_chatter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(classified("chat", actionable=False)))
    await route(
        as_event(
            classified("nowhere", district="", latlon=None, urgent=True, service_code="traffic")
        )
    )
    async with sessions() as s:
        [request] = (await s.execute(select(ServiceRequest))).scalars().all()
    assert request.queue == "triage" and request.district_code is None
    assert request.urgency == "urgent"
    # urgent traffic: acknowledge in 15 minutes, resolve in 4 hours
    assert request.ack_due_at == datetime(2026, 5, 4, 10, 15, tzinfo=UTC)
    assert request.expected_datetime == datetime(2026, 5, 4, 14, 0, tzinfo=UTC)
    [ask] = await outbox(sessions, "reply-requested.v1")
    assert "district_name" not in ask.reply_requested.params


async def test_city_wide_services_go_to_their_city_queue(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(classified("bicing", service_code="mobility")))
    async with sessions() as s:
        request = (await s.execute(select(ServiceRequest))).scalar_one()
    assert (request.queue, request.district_code) == ("city-mobility", "06")
    assert request.agency_responsible == "Barcelona de Serveis Municipals (BSM)"


async def test_notifier_records_each_reply_once_in_the_citizens_language(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    notify = PostReply(sessions)
    for n, (pid, lang) in enumerate(
        (("ca1", "ca"), ("es1", "es"), ("en1", "en"), ("fr1", "other"))
    ):
        # 200 m apart, so that none is a duplicate of another
        await route(
            as_event(
                classified(
                    pid,
                    language=lang,
                    latlon=(41.400 + 0.002 * n, 2.15),
                    at=datetime.now(UTC),  # its due time ahead, and in the reply
                )
            )
        )
    for ask in await outbox(sessions, "reply-requested.v1"):
        assert ask.reply_requested.kind == ReplyKind.REPLY_KIND_ACKNOWLEDGED
        once, twice = await notify(ask), await notify(ask)
        assert once[0].envelope.event_id == twice[0].envelope.event_id
        assert once[0].envelope.reply_posted == twice[0].envelope.reply_posted  # as stored
    async with sessions() as s:
        replies = {
            r.in_reply_to_post_id: r.text for r in (await s.execute(select(Reply))).scalars()
        }
        ids = {
            r.source_post_id: r.service_request_id
            for r in (await s.execute(select(ServiceRequest))).scalars()
        }
    assert len(replies) == 4
    # ...with the due time, in the city's time (12/05 18:30)
    assert re.fullmatch(
        rf"Rebut! Petició #{ids['ca1']}, districte de Gràcia\. Previsió: \d\d/\d\d \d\d:\d\d\.",
        replies["ca1"],
    )
    assert replies["es1"].startswith(f"¡Recibido! Petición #{ids['es1']}, distrito de Gràcia.")
    assert replies["en1"].startswith(f"Received! Request #{ids['en1']}, Gràcia district.")
    assert " Expected by " in replies["en1"]
    assert replies["fr1"].startswith("Rebut!")  # other languages get Barcelona's own


async def test_a_reply_is_counted_as_posted_once_its_row_is_committed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A batch whose transaction fails is redone one reply at a time: counting a reply when
    its row was written, not when it was committed, counted it twice."""
    await router(sessions)(as_event(classified("count")))
    [ask] = await outbox(sessions, "reply-requested.v1")
    notify = PostReply(sessions)
    labels = {"platform": "mastodon", "kind": "acknowledged"}

    def posted() -> float:
        return REGISTRY.get_sample_value("plaza_replies_posted_total", labels) or 0.0

    before = posted()
    session = sessions()
    await session.begin()
    await notify._record(session, [(ask, notify._reply(ask))], datetime.now(UTC))
    await session.rollback()
    await session.close()
    assert posted() == before  # the batch failed: nothing was posted
    await notify(ask)
    assert posted() == before + 1
    await notify(ask)  # a redelivery posts nothing new
    assert posted() == before + 1


async def test_a_reply_asked_for_no_request_id_is_rejected_with_the_reason(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Dead-lettered at once, saying why, not failed (and retried) at recording it."""
    await router(sessions)(as_event(classified("odd-id")))
    [ask] = await outbox(sessions, "reply-requested.v1")
    notify = PostReply(sessions)
    # "²" is a digit to str.isdigit and not to int; the other is past a bigint
    for bad in ("abc", "²", "99999999999999999999"):
        ask.reply_requested.service_request_id = bad
        with pytest.raises(Rejected, match="is not a request id"):
            await notify(ask)
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Reply))).scalar_one() == 0


async def test_a_notifier_batch_records_and_hands_over_as_one_at_a_time_would(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    """The notifier's batch handler: log-channel replies and hand-overs to a platform channel
    in one transaction, the same events out as one at a time, once each however often given;
    a request it cannot take fails the batch (the worker then goes one by one)."""
    route = router(sessions)
    for n, pid in enumerate(("a", "b", "c", "d")):
        await route(as_event(classified(pid, latlon=(41.400 + 0.002 * n, 2.15))))
    asks = await outbox(sessions, "reply-requested.v1")
    asks[3].reply_requested.platform = "x"  # this one goes through a platform channel

    class Channel:  # only what handing over reads; it never posts here
        platform, mention_author = "x", True

    notify = PostReply(sessions, {"x": Channel()})  # type: ignore[dict-item]
    caplog.set_level(logging.INFO, "plaza_notifier")
    out = await notify.batch([*asks, asks[0]])
    assert [e.envelope.event_id for e in out] == [
        derive_event_id("reply-posted", a.reply_requested.reply_id) for a in asks[:3]
    ]
    # the log channel's replies, one log record with a line each
    [logged] = [r.getMessage() for r in caplog.records if r.name == "plaza_notifier.channels"]
    assert logged.splitlines()[0] == "recorded 3 replies:"
    assert logged.splitlines()[1:] == [
        f"  reply {e.envelope.reply_posted.reply_id} to {a.reply_requested.author_handle}"
        f" on {e.envelope.reply_posted.platform}: {e.envelope.reply_posted.text}"
        for a, e in zip(asks[:3], out, strict=True)
    ]
    caplog.clear()
    again = await notify.batch(asks)  # redelivered: nothing new, the same announcements
    assert not [r for r in caplog.records if r.name == "plaza_notifier.channels"]
    assert [e.envelope.reply_posted.text for e in again] == [
        e.envelope.reply_posted.text for e in out
    ]
    assert await count(sessions, Reply) == 3
    async with sessions() as s:
        [handed] = (await s.execute(select(ReplyDelivery))).scalars().all()
    assert handed.reply_id == asks[3].reply_requested.reply_id
    assert handed.body.startswith(f"{asks[3].reply_requested.author_handle} ")  # a mention
    broken = asks[1].__class__()
    broken.CopyFrom(asks[1])
    broken.reply_requested.reply_id = ""
    with pytest.raises(Rejected, match="no reply_id"):
        await notify.batch([asks[0], broken])


async def test_chatter_gets_a_polite_reply_only_when_the_city_wants_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    thanks = as_event(classified("thanks-1", actionable=False, language="es"))
    await router(sessions)(thanks)
    assert await outbox(sessions) == []
    polite = router(sessions, not_actionable_reply=NotActionableReply.ACKNOWLEDGE)
    thanks.event_id = "second-delivery-with-a-polite-router"
    await polite(thanks)
    await polite(thanks)
    [ask] = await outbox(sessions)
    assert ask.reply_requested.kind == ReplyKind.REPLY_KIND_NOT_ACTIONABLE
    notify = PostReply(sessions)
    await notify(ask)
    [posted] = await notify(ask)
    assert posted.key == "mastodon:thanks-1"
    assert posted.envelope.reply_posted.text.startswith("¡Gracias por el mensaje!")
    assert await count(sessions, ServiceRequest) == 0
    async with sessions() as s:
        [reply] = (await s.execute(select(Reply))).scalars().all()
    assert reply.service_request_id is None and reply.in_reply_to_post_id == "thanks-1"


async def test_an_unsure_district_goes_to_triage_with_the_hint_kept(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions, min_location_confidence=0.6)(
        as_event(classified("unsure-1", confidence=0.4))
    )
    async with sessions() as s:
        request = (await s.execute(select(ServiceRequest))).scalar_one()
    assert (request.queue, request.district_code) == ("triage", "06")
    assert request.agency_responsible == "Ajuntament de Barcelona"
    [ask] = await outbox(sessions, "reply-requested.v1")
    assert "district_name" not in ask.reply_requested.params


async def test_rows_written_in_bulk_are_the_rows_the_orm_writes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """rows_in_bulk sends a table's rows as one JSON document: every kind of value (bytes, JSON
    and its null, arrays, floats, naive and aware times, quotes, accents, newlines) is stored
    as the ORM stores it, in the order added."""
    at = datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC)
    request: dict[str, object] = {
        "status": "open",
        "service_code": "STREET_LIGHT",
        "description": 'Fanal apagat a l\'"Eixample" \u2014 \u00e7a ne marche pas\n\\',
        "requested_datetime": at,
        "updated_datetime": at.replace(tzinfo=None),  # naive: the driver takes it as UTC
        "lat": 41.387_917_123_456_78,
        "long": 2.169_919,
        "media_urls": ["https://example.org/a.jpg", "https://example.org/b c.jpg"],
        "service_confidence": 0.1 + 0.2,
        "address": None,
        "agency_responsible": "Districte de l'Eixample",
        "district_code": "02",
        "location_source": "gps",
        "queue": "district-02",
        "urgency": "normal",
        "language": "ca",
        "channel": "social",
        "source_platform": "mastodon",
        "source_author_handle": "@veïna@example.social",
        "reporters_count": 1,
        "version": 1,
    }
    events: list[dict[str, object]] = [
        {
            "version": 1,
            "kind": "created",
            "actor": "router",
            "at": at,
            "public": True,
            "before": None,
            "after": {"status": "open", "nested": [1, None, "x", 0.5]},
            "note": None,
        },
        {
            "version": 2,
            "kind": "merged",
            "actor": "router",
            "at": at,
            "public": False,
            "before": {"status": "open"},
            "after": None,
            "note": "dup",
        },
    ]
    payloads = [bytes(range(256)), b"", b"\x00\\x00"]

    async def write(bulk: bool) -> int:
        async with sessions() as s, s.begin():
            request_id = int(
                await s.scalar(
                    text("SELECT nextval(pg_get_serial_sequence('service_requests', 'id'))")
                )
            )
            rows: list[tuple[type[Base], dict[str, object]]] = [
                (ServiceRequest, {"id": request_id, "source_post_id": f"{bulk}", **request}),
                *((RequestEvent, {"service_request_id": request_id, **e}) for e in events),
                *(
                    (OutboxRecord, {"topic": "t", "key": f"{request_id}", "payload": p})
                    for p in payloads
                ),
            ]
            if bulk:
                async with rows_in_bulk(s):
                    for model, values in rows:
                        add_row(s, model, values)
            else:
                for model, values in rows:
                    add_row(s, model, values)
                    await s.flush()  # the ORM orders tables only along relationships
            return request_id

    async def stored(request_id: int) -> list[object]:
        async with sessions() as s:
            req = await s.get_one(ServiceRequest, request_id)
            skip = {"id", "created_at", "queue_item", "source_post_id"}
            values: list[object] = [
                getattr(req, c.key) for c in ServiceRequest.__table__.columns if c.key not in skip
            ]
            item = await s.scalar(
                select(ServiceRequest.queue_item).where(ServiceRequest.id == request_id)
            )
            assert item is not None
            own = (f'"service_request_id":"{request_id}"', f'"{req.source_post_id}"')
            values.append(item.replace(own[0], "<id>").replace(own[1], "<post>"))
            audit = await s.execute(
                select(
                    RequestEvent.version,
                    RequestEvent.kind,
                    RequestEvent.public,
                    RequestEvent.at,
                    RequestEvent.note,
                    func.jsonb_typeof(RequestEvent.before),
                    RequestEvent.before,
                    func.jsonb_typeof(RequestEvent.after),
                    RequestEvent.after,
                )
                .where(RequestEvent.service_request_id == request_id)
                .order_by(RequestEvent.id)
            )
            sent = await s.execute(
                select(OutboxRecord.payload)
                .where(OutboxRecord.key == str(request_id))
                .order_by(OutboxRecord.id)
            )
            return [*values, *map(tuple, audit), *sent.scalars()]

    by_orm, in_bulk = await stored(await write(bulk=False)), await stored(await write(bulk=True))
    assert in_bulk == by_orm
    assert in_bulk[-len(payloads) :] == payloads
    assert ("null", None) in [(row[5], row[6]) for row in in_bulk if isinstance(row, tuple)]


def a_request(request_id: int, post: str, **columns: object) -> dict[str, object]:
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    return {
        "id": request_id,
        "status": "new",
        "service_code": "STREET_LIGHT",
        "description": "Fanal apagat",
        "requested_datetime": at,
        "updated_datetime": at,
        "agency_responsible": "Districte de l'Eixample",
        "location_source": "text",
        "queue": "district-02",
        "urgency": "normal",
        "language": "ca",
        "service_confidence": 0.9,
        "channel": "social",
        "source_platform": "mastodon",
        "source_post_id": post,
        "source_author_handle": "@vei@example.social",
        "media_urls": [],
        **columns,
    }


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_rows_in_bulk_are_written_in_one_statement_with_the_writes_added_to_it(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A batch's rows of every table, and an update given to also_execute, reach the database
    as one statement (one round trip); a new request's report and audit rows refer to it in
    that same statement. Rows of one table with different columns fall back to a statement
    per run of the same columns, tables referred to first."""

    async def next_id(s: AsyncSession) -> int:
        return int(
            await s.scalar(text("SELECT nextval(pg_get_serial_sequence('service_requests', 'id'))"))
        )

    async with sessions.begin() as s:
        old = await next_id(s)
        add_row(s, ServiceRequest, a_request(old, "old"))
    bump = """UPDATE service_requests SET reporters_count = reporters_count + :{p}by
        WHERE id = ANY(CAST(:{p}ids AS bigint[]))"""

    async with sessions.begin() as s:
        new = await next_id(s)
        with statements_sent(engine) as sent:
            async with rows_in_bulk(s):
                add_row(s, ServiceRequest, a_request(new, "new"))
                for n in (1, 2):
                    add_row(
                        s,
                        RequestEvent,
                        {
                            "service_request_id": new,
                            "version": n,
                            "kind": "created",
                            "actor": "router",
                            "at": datetime.now(UTC),
                            "public": True,
                            "before": None,
                            "after": {"status": "new"},
                        },
                    )
                add_row(s, OutboxRecord, {"topic": "t", "key": "a", "payload": b"1"})
                add_row(s, OutboxRecord, {"topic": "t", "key": "b", "payload": b"2"})
                also_execute(s, BulkWrite(bump, {"by": 4, "ids": [old]}))
        assert len(sent) == 1, sent
        assert sent[0].startswith("WITH w0 AS (")
        for write in ("INSERT INTO service_requests", "INSERT INTO request_events", "UPDATE"):
            assert write in sent[0]

    async with sessions() as s:
        assert (
            await s.scalar(select(ServiceRequest.reporters_count).where(ServiceRequest.id == old))
            == 5
        )
        assert (
            await s.scalar(select(func.count()).where(RequestEvent.service_request_id == new)) == 2
        )
        keys = (await s.execute(select(OutboxRecord.key).order_by(OutboxRecord.id))).scalars()
        assert list(keys) == ["a", "b"]

    # Two new requests, one with an address and one without: the fallback, in order.
    async with sessions.begin() as s:
        first, second = await next_id(s), await next_id(s)
        with statements_sent(engine) as sent:
            async with rows_in_bulk(s):
                add_row(
                    s,
                    RequestReport,
                    {
                        "service_request_id": first,
                        "platform": "mastodon",
                        "post_id": "r1",
                        "author_handle": "@a@example.social",
                        "reporter": "mastodon:@a@example.social",
                        "text": "Fanal apagat",
                        "language": "ca",
                        "reported_at": datetime.now(UTC),
                        "merged": False,
                    },
                )
                add_row(s, ServiceRequest, a_request(first, "p1", address="Carrer Gran 1"))
                add_row(s, ServiceRequest, a_request(second, "p2"))
                also_execute(s, BulkWrite(bump, {"by": 1, "ids": [first, second]}))
        assert len(sent) == 3, sent  # each new request on its own, then the report and update
    async with sessions() as s:
        counts = await s.execute(
            select(ServiceRequest.reporters_count)
            .where(ServiceRequest.id.in_([first, second]))
            .order_by(ServiceRequest.id)
        )
        assert list(counts.scalars()) == [2, 2]
        assert await s.scalar(select(func.count()).select_from(RequestReport)) == 1
