"""A post withdrawn by its author, on real PostgreSQL: its words, photos, handle and point leave
every table Plaza keeps them in, the request stays (at the place its other reports give), only
the author withdraws, nothing changes twice, and a reply to it is never sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from plaza.bus.memory import MemoryBus
from plaza.city import City
from plaza.contracts import (
    REPLY_KIND_NOT_ACTIONABLE,
    Envelope,
    PostClassified,
    PostWithdrawn,
    ReplyRequested,
    decode,
    derive_event_id,
    envelope,
)
from plaza.contracts import timestamp as ts
from plaza.db.models import (
    Open311Submission,
    OutboxRecord,
    PublishedPost,
    Reply,
    ReplyDelivery,
    RequestEvent,
    RequestReport,
    ServiceRequest,
    WithdrawnPost,
)
from plaza.lifecycle import Command, act
from plaza.policy import RoutingTable, SlaPolicy
from plaza.posts import PostIn
from plaza.requests import Action
from plaza.withdrawals import (
    POST_LOCKS,
    WITHDRAWN_STATE,
    WITHDRAWN_TEXT,
    Outcome,
    Withdrawal,
    held_posts,
    lock_posts,
    was_withdrawn,
    withdraw,
)
from plaza_api.auth import Role, create_api_key
from plaza_ingest.connectors.base import Batch, Deletion
from plaza_ingest.connectors.published import KEPT
from plaza_ingest.connectors.runner import ConnectorRunner
from plaza_notifier.delivery import Delivery, enqueue
from plaza_notifier.handler import PostReply
from plaza_router.settings import NotActionableReply
from plaza_router.withdrawals import WithdrawPost
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import client, gateway, new_key
from tests.integration.lifecycle_helpers import (
    VERDI,
    as_event,
    at_door,
    classified,
    outbox,
    router,
)
from tests.integration.test_monthly_report import plaza
from tests.unit.test_withdrawals import withdrawn_events

pytestmark = pytest.mark.postgres

WORDS = "El fanal de davant del número 12 del carrer de Verdi no s'encén"
MARTA = "@marta.withdraws@bcn.social"
PHOTO = "https://files.bcn.social/media/fanal-verdi.jpg"
NEARBY = (41.40365, 2.15665)  # 7 m from VERDI: the same streetlight


def withdrawn(post_id: str, author_id: str = "") -> PostWithdrawn:
    return PostWithdrawn(
        platform="mastodon",
        post_id=post_id,
        author_id=author_id,
        withdrawn_at=ts(datetime.now(UTC)),
        channel="stream",
    )


def as_withdrawal(body: PostWithdrawn, event_id: str = "") -> Envelope:
    return envelope(
        body,
        key=f"mastodon:{body.post_id}",
        event_id=event_id or derive_event_id("post-withdrawn", body.post_id),
        correlation_id="c",
    ).envelope


def count_withdrawn() -> float:
    return REGISTRY.get_sample_value("plaza_posts_withdrawn_total", {"platform": "mastodon"}) or 0


def opening(post_id: str) -> PostClassified:
    c = classified(post_id, text=WORDS, author=MARTA, author_id="42")
    c.post.media_urls.append(PHOTO)
    c.post.address = "Carrer de Verdi, 12, 3r 2a"
    c.post.public_url = f"https://bcn.social/@marta/{post_id}"
    return c


async def the_request(sessions: async_sessionmaker[AsyncSession], post_id: str) -> ServiceRequest:
    async with sessions() as s:
        report = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == post_id))
        ).scalar_one()
        request = await s.get(ServiceRequest, report.service_request_id)
        assert request is not None
        return request


async def manage(
    sessions: async_sessionmaker[AsyncSession], request_id: int, action: Action, **kw: object
) -> None:
    async with sessions.begin() as s:
        await act(
            s,
            request_id,
            Command(action, actor="manager-06", **kw),  # type: ignore[arg-type]
            now=datetime.now(UTC),
            sla=SlaPolicy.load(),
            routing=RoutingTable.load(),
            city=City.barcelona(),
        )


async def resolve(sessions: async_sessionmaker[AsyncSession], request_id: int) -> None:
    for action in (Action.ACKNOWLEDGE, Action.RESOLVE):
        await manage(sessions, request_id, action, note="Arreglat")


def acknowledgement(request_id: int, post_id: str, text: str) -> Delivery:
    """The city's acknowledgement of Marta's post, a Mastodon reply that mentions her."""
    return Delivery(
        reply_id=f"ack-{post_id}",
        service_request_id=request_id,
        kind="acknowledged",
        language="ca",
        platform="mastodon",
        in_reply_to_post_id=post_id,
        author_handle=MARTA,
        text=text,
        photo_url=None,
        correlation_id="c",
    )


async def traces(sessions: async_sessionmaker[AsyncSession], *needles: str) -> dict[str, int]:
    """Rows of every table of Plaza's database that hold one of `needles` (the outbox's
    protobuf payloads decoded), by table."""
    found: dict[str, int] = {}
    async with sessions() as s:
        tables = (
            await s.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        ).scalars()
        for table in tables:
            for needle in needles:
                n = (
                    await s.execute(
                        text(f'SELECT count(*) FROM "{table}" t WHERE t::text ILIKE :p'),
                        {"p": f"%{needle}%"},
                    )
                ).scalar_one()
                if n:
                    found[table] = found.get(table, 0) + n
        rows = (await s.execute(select(OutboxRecord))).scalars().all()
    for row in rows:
        event = str(decode(row.topic, row.payload))
        if any(needle in event for needle in needles):
            found["outbox (decoded)"] = found.get("outbox (decoded)", 0) + 1
    return found


async def test_the_opening_post_withdrawn_leaves_the_request_without_its_traces(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(opening("wd-1")))
    other = classified("wd-2", text="Fanal apagat a Verdi", latlon=NEARBY, author_id="43")
    await route(as_event(other))
    before = await the_request(sessions, "wd-1")
    assert before.reporters_count == 2 and before.description == WORDS
    async with sessions.begin() as s:  # the acknowledgement, on its way to Mastodon
        await enqueue(
            s,
            Delivery(
                reply_id="ack-wd-1",
                service_request_id=before.id,
                kind="acknowledged",
                language="ca",
                platform="mastodon",
                in_reply_to_post_id="wd-1",
                author_handle=MARTA,
                text=f"{MARTA} Gràcies",
                photo_url=None,
                correlation_id="c",
            ),
            datetime.now(UTC),
        )
    assert await traces(sessions, WORDS, "marta.withdraws", "fanal-verdi")  # all over, so far
    handler = WithdrawPost(sessions)
    counted = count_withdrawn()

    # Somebody else cannot withdraw Marta's post.
    await handler(as_withdrawal(withdrawn("wd-1", author_id="99"), "not-hers"))
    assert (await the_request(sessions, "wd-1")).description == WORDS

    await handler(as_withdrawal(withdrawn("wd-1", author_id="42")))

    request = await the_request(sessions, "wd-1")
    assert await traces(sessions, WORDS, "marta.withdraws", "fanal-verdi") == {}
    assert request.description == WITHDRAWN_TEXT
    assert request.media_urls == [] and request.media_url is None
    assert request.address is None and request.source_public_url is None
    # nor is it found at that door by the duplicate search (its key, "356803 12", is gone too)
    assert request.address_key is None
    assert request.source_author_handle == ""
    # Its place: the other report's point; its district and barri stay.
    assert (request.lat, request.long) == NEARBY
    assert (request.district_code, request.barri_code) == (before.district_code, before.barri_code)
    # The request stays, in its queue, waiting for a manager (as before).
    assert (request.status, request.queue) == (before.status, before.queue)
    assert request.reporters_count == 2 and request.withdrawn_at is not None
    assert request.version == before.version + 1
    async with sessions() as s:
        reports = {
            r.post_id: r
            for r in (
                await s.execute(
                    select(RequestReport).where(RequestReport.service_request_id == request.id)
                )
            ).scalars()
        }
        delivery = await s.get(ReplyDelivery, "ack-wd-1")
        kinds = (
            await s.execute(
                select(RequestEvent.kind).where(RequestEvent.service_request_id == request.id)
            )
        ).scalars()
        remembered = await s.get(WithdrawnPost, ("mastodon", "wd-1", "mastodon:42"))
        queue_item = (
            await s.execute(
                text("SELECT queue_item FROM service_requests WHERE id = :id"), {"id": request.id}
            )
        ).scalar_one()
    mine, theirs = reports["wd-1"], reports["wd-2"]
    assert (mine.text, mine.author_handle, mine.lat, mine.long) == (WITHDRAWN_TEXT, "", None, None)
    assert mine.withdrawn_at is not None and mine.reporter != "mastodon:42"
    assert theirs.text == "Fanal apagat a Verdi" and theirs.withdrawn_at is None
    assert delivery is not None and delivery.state == WITHDRAWN_STATE  # never sent
    assert "withdrawn" in list(kinds)
    assert remembered is not None
    assert WITHDRAWN_TEXT in queue_item  # the console's queue reads this
    assert count_withdrawn() == counted + 1

    # Again (a redelivery), or from another channel (the bridge as well as the stream): once.
    await handler(as_withdrawal(withdrawn("wd-1", author_id="42")))
    await handler(as_withdrawal(withdrawn("wd-1"), "from-the-stream-too"))
    assert (await the_request(sessions, "wd-1")).version == request.version
    assert count_withdrawn() == counted + 1


async def test_a_lone_report_withdrawn_keeps_its_request_for_a_manager_at_its_district(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(opening("wd-lone")))
    before = await the_request(sessions, "wd-lone")
    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-lone", author_id="42")))
    request = await the_request(sessions, "wd-lone")
    assert request.status == "new" and request.queue == before.queue  # a manager decides
    assert request.lat is None and request.long is None  # no other point is known
    assert request.district_code == before.district_code and request.barri_code
    assert request.description == WITHDRAWN_TEXT
    # The acknowledgement still in the outbox is dropped: it answers a post that is gone.
    asks = await outbox(sessions, "reply-requested.v1")
    assert [a for a in asks if a.reply_requested.in_reply_to_post_id == "wd-lone"] == []


async def test_a_post_withdrawn_before_it_is_routed_opens_nothing_and_gets_no_reply(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    counted = count_withdrawn()
    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-early", author_id="42")))
    assert count_withdrawn() == counted  # nothing of it was kept: nothing withdrawn
    early = classified("wd-early", text=WORDS, author=MARTA, author_id="42")
    await router(sessions)(as_event(early))
    async with sessions() as s:
        reports = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == "wd-early"))
        ).scalars()
        assert list(reports) == []
    # A reply asked for it anyway (a thank-you already on the bus) is not recorded nor sent.
    thanks = envelope(
        ReplyRequested(
            reply_id="thanks-wd-early",
            kind=REPLY_KIND_NOT_ACTIONABLE,
            language="ca",
            platform="mastodon",
            in_reply_to_post_id="wd-early",
            author_handle=MARTA,
        ),
        key="mastodon:wd-early",
        event_id="e-thanks-wd-early",
        correlation_id="c",
    ).envelope
    notifier = PostReply(sessions)
    assert await notifier(thanks) == []
    assert await notifier.batch([thanks]) == []
    async with sessions() as s:
        assert await s.get(Reply, "thanks-wd-early") is None


async def test_an_answer_that_reopened_the_request_leaves_its_note_and_history(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(classified("wd-r1", author=MARTA, author_id="42")))
    request = await the_request(sessions, "wd-r1")
    await resolve(sessions, request.id)
    answer = "Encara no funciona, truqueu-me al 612 345 678"
    await route(
        as_event(classified("wd-r2", text=answer, reply_to="wd-r1", author=MARTA, author_id="42"))
    )
    reopened = await the_request(sessions, "wd-r1")
    assert reopened.status == "reopened"
    assert await traces(sessions, answer)  # the reopening's note in the history, the report

    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-r2", author_id="42")))

    assert await traces(sessions, answer, "citizen:" + MARTA) == {}
    after = await the_request(sessions, "wd-r1")
    assert after.status == "reopened"
    # The post that opened it was not withdrawn: its words stay.
    assert after.description == "El fanal del carrer de Verdi no funciona"
    async with sessions() as s:
        actors = set(
            (
                await s.execute(
                    select(RequestEvent.actor).where(RequestEvent.service_request_id == after.id)
                )
            ).scalars()
        )
    assert "citizen" in actors


async def test_a_withdrawal_while_its_post_is_routed_waits_and_takes_the_new_report(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The router has written the post's report and request, not yet committed, when the
    # withdrawal comes: it found no report, remembered only the ids, and the post stayed.
    route = router(sessions)
    routed, go_on = asyncio.Event(), asyncio.Event()
    route_run = route._route_run

    async def paused(session: AsyncSession, run: Any) -> None:
        await route_run(session, run)
        routed.set()
        await go_on.wait()

    monkeypatch.setattr(route, "_route_run", paused)
    routing = asyncio.create_task(route.batch([as_event(opening("wd-race-1"))]))
    await asyncio.wait_for(routed.wait(), 10)
    withdrawing = asyncio.create_task(
        WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-race-1", author_id="42")))
    )
    await asyncio.sleep(0.5)
    assert not withdrawing.done()  # it waits for the post's routing to end
    go_on.set()
    await asyncio.wait_for(asyncio.gather(routing, withdrawing), 10)
    request = await the_request(sessions, "wd-race-1")
    assert request.description == WITHDRAWN_TEXT and request.address is None
    async with sessions() as s:
        report = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == "wd-race-1"))
        ).scalar_one()
    assert report.text == WITHDRAWN_TEXT and report.withdrawn_at is not None


async def test_a_post_routed_while_its_withdrawal_is_applied_waits_and_opens_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The withdrawal found no report (the post not routed yet) and has not committed when the
    # router reads which posts were withdrawn: the router opened the request all the same.
    async with sessions.begin() as held:
        w = Withdrawal("mastodon", "wd-race-2", "42", "", datetime.now(UTC))
        assert await withdraw(held, w) is Outcome.UNKNOWN
        routing = asyncio.create_task(router(sessions)(as_event(opening("wd-race-2"))))
        await asyncio.sleep(0.5)
        assert not routing.done()  # it waits for the withdrawal to end
    await asyncio.wait_for(routing, 10)
    async with sessions() as s:
        found = await s.execute(select(RequestReport).where(RequestReport.post_id == "wd-race-2"))
        assert list(found.scalars()) == []


async def test_somebody_else_withdrawing_a_post_not_yet_routed_does_not_keep_it_out(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A bridge names another account as the author of a post still on its way: the router then
    # dropped the post, and its author's own deletion afterwards was taken for a repeat.
    handler = WithdrawPost(sessions)
    await handler(as_withdrawal(withdrawn("wd-claim-1", author_id="666"), "not-the-author-1"))
    await router(sessions)(as_event(opening("wd-claim-1")))
    request = await the_request(sessions, "wd-claim-1")
    assert request.description == WORDS  # routed as if nobody had asked
    async with sessions() as s:
        claims = await s.execute(select(WithdrawnPost).where(WithdrawnPost.post_id == "wd-claim-1"))
        assert list(claims.scalars()) == []  # nor is a reply to it dropped
    # Its author's own withdrawal, sent after the stranger's, before the post was routed.
    await handler(as_withdrawal(withdrawn("wd-claim-2", author_id="666"), "not-the-author-2"))
    await handler(as_withdrawal(withdrawn("wd-claim-2", author_id="42"), "the-author-2"))
    await router(sessions)(as_event(opening("wd-claim-2")))
    async with sessions() as s:
        found = await s.execute(select(RequestReport).where(RequestReport.post_id == "wd-claim-2"))
        assert list(found.scalars()) == []


async def test_a_request_keeps_the_address_its_other_reports_give(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Two posts naming c/ Aragó 250 and no point are one request, by the address's key. The
    # first one's withdrawal took the address out of the request, as its point falls back to
    # another report's: the request was left nowhere (a street places no district), and the
    # next post about that door opened a request of its own.
    route = router(sessions)

    def at(post_id: str, street: str, author_id: str) -> PostClassified:
        return at_door(post_id, street, author_id=author_id)

    await route(as_event(at("wd-a1", "Carrer d'Aragó 250", "41")))
    await route(as_event(at("wd-a2", "c/ Aragó, 250", "42")))
    request = await the_request(sessions, "wd-a1")
    assert (await the_request(sessions, "wd-a2")).id == request.id
    assert request.address_key == "018505 250"

    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-a1", author_id="41")))

    request = await the_request(sessions, "wd-a2")
    assert (request.address, request.address_key) == ("c/ Aragó, 250", "018505 250")
    async with sessions() as s:
        first = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == "wd-a1"))
        ).scalar_one()
    assert (first.address, first.address_key) == (None, None)  # the withdrawn post's own
    await route(as_event(at("wd-a3", "Carrer d'Aragó 250", "43")))
    assert (await the_request(sessions, "wd-a3")).id == request.id


async def test_a_follow_up_placed_by_the_withdrawn_post_loses_its_address_and_point(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Someone else's answer in the thread of a resolved request opens a follow-up, placed where
    # the request was (its answer named no place): the opening post's address and point. Its
    # withdrawal took them out of the request and left them in the follow-up.
    route = router(sessions)
    await route(as_event(opening("wd-f1")))
    request = await the_request(sessions, "wd-f1")
    assert request.address == "Carrer de Verdi, 12, 3r 2a" and request.lat is not None
    await resolve(sessions, request.id)
    answer = classified(
        "wd-f2", text="El fanal torna a estar apagat", reply_to="wd-f1", author_id="77", latlon=None
    )
    await route(as_event(answer))
    follow_up = await the_request(sessions, "wd-f2")
    assert follow_up.id != request.id and follow_up.address == request.address
    assert follow_up.address_key == request.address_key == "356803 12"  # Carrer de Verdi 12

    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-f1", author_id="42")))

    follow_up = await the_request(sessions, "wd-f2")
    assert (follow_up.address, follow_up.lat, follow_up.long) == (None, None, None)
    assert follow_up.address_key is None
    assert follow_up.description == "El fanal torna a estar apagat"  # its own words stay
    assert follow_up.barri_code and follow_up.district_code == request.district_code


async def test_a_reply_posted_to_the_withdrawn_post_keeps_no_mention_of_its_author(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Mastodon's replies begin with their author's handle: the deliveries lost the handle's
    # column, while the reply's text, in the manager API's replies too, kept it.
    await router(sessions)(as_event(opening("wd-m1")))
    request = await the_request(sessions, "wd-m1")
    posted = f"{MARTA} Hem rebut la incidència #{request.id}"
    async with sessions.begin() as s:
        await enqueue(s, acknowledgement(request.id, "wd-m1", posted), datetime.now(UTC))
        await s.execute(
            text("UPDATE reply_deliveries SET state = 'posted' WHERE reply_id = 'ack-wd-m1'")
        )
        s.add(
            Reply(
                reply_id="ack-wd-m1",
                service_request_id=request.id,
                kind="acknowledged",
                language="ca",
                platform="mastodon",
                channel="mastodon",
                in_reply_to_post_id="wd-m1",
                text=posted,
                remote_id="109",
                posted_at=datetime.now(UTC),
            )
        )
    assert await traces(sessions, "marta.withdraws")

    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wd-m1", author_id="42")))

    assert await traces(sessions, "marta.withdraws") == {}
    async with sessions() as s:
        reply = await s.get(Reply, "ack-wd-m1")
        delivery = await s.get(ReplyDelivery, "ack-wd-m1")
    assert reply is not None and delivery is not None
    assert reply.text == delivery.body == f"Hem rebut la incidència #{request.id}"
    assert delivery.state == "posted"


@pytest.mark.parametrize(
    "deleted_at", [datetime(2099, 1, 1, tzinfo=UTC), datetime(1971, 1, 1, tzinfo=UTC)]
)
async def test_a_withdrawal_dated_by_a_wrong_clock_moves_no_request_in_time(
    sessions: async_sessionmaker[AsyncSession], deleted_at: datetime
) -> None:
    # A bridge's deleted_at became the request's updated_datetime as it was: 2099 put it first
    # in every list sorted by its last change, 1971 last, behind its own creation.
    post_id = f"wd-clock-{deleted_at.year}"
    await router(sessions)(as_event(opening(post_id)))
    before = await the_request(sessions, post_id)
    body = withdrawn(post_id, author_id="42")
    body.withdrawn_at.CopyFrom(ts(deleted_at))
    await WithdrawPost(sessions)(as_withdrawal(body))
    after = await the_request(sessions, post_id)
    assert after.description == WITHDRAWN_TEXT
    assert before.updated_datetime <= after.updated_datetime <= datetime.now(UTC)
    assert after.withdrawn_at is not None and after.withdrawn_at <= datetime.now(UTC)


async def test_a_batch_of_posts_holds_a_bounded_number_of_locks(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A lock per post: a router's batch of 1,000 held 1,000 of the lock table's slots (64 per
    # connection by default, shared), and a few routers ran PostgreSQL out of shared memory.
    async with sessions.begin() as s:
        await lock_posts(s, [("mastodon", f"batch-{i}") for i in range(1000)])
        held = (
            await s.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = pg_backend_pid()"
                )
            )
        ).scalar_one()
    assert 0 < held <= POST_LOCKS


class _WithdrawnWhileSending:
    """A Mastodon channel whose post is deleted, and the deletion applied, while the city's
    reply to it is on its way (the delivery is "sending": the withdrawal leaves it alone)."""

    platform = "mastodon"
    mention_author = True

    def __init__(self, sessions: async_sessionmaker[AsyncSession], post_id: str) -> None:
        self.sessions, self.post_id = sessions, post_id
        self.sent: list[str] = []

    async def post(self, reply: Any) -> Any:
        from plaza_notifier.channels import PostedReply

        async with self.sessions() as s:
            state = (
                await s.execute(
                    select(ReplyDelivery.state).where(ReplyDelivery.reply_id == reply.reply_id)
                )
            ).scalar_one()
        assert state == "sending"
        await WithdrawPost(self.sessions)(as_withdrawal(withdrawn(self.post_id, author_id="42")))
        self.sent.append(reply.text)
        return PostedReply(remote_id="110", public_url="https://bcn.social/@bcn/110")

    async def find(self, reply: Any) -> Any:
        return None


async def test_a_reply_being_sent_when_its_post_is_withdrawn_keeps_no_mention_once_posted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The withdrawal leaves a reply being sent to finish; once it was posted, its recorded
    # text, its delivery and its reply-posted event kept "@marta… " at their start.
    from plaza_notifier.delivery import Deliverer, DeliveryPolicy

    await router(sessions)(as_event(opening("wd-s1")))
    request = await the_request(sessions, "wd-s1")
    said = f"Hem rebut la incidència #{request.id}"
    async with sessions.begin() as s:
        await enqueue(s, acknowledgement(request.id, "wd-s1", f"{MARTA} {said}"), datetime.now(UTC))
    channel = _WithdrawnWhileSending(sessions, "wd-s1")
    policy = DeliveryPolicy(base_delay=0.05, max_delay=0.2, poll_interval=0.05)
    assert await Deliverer(sessions, {"mastodon": channel}, policy).deliver_due() == 1  # type: ignore[dict-item]

    assert channel.sent == [f"{MARTA} {said}"]  # it had gone out with the mention
    async with sessions() as s:
        reply = await s.get(Reply, "ack-wd-s1")
        delivery = await s.get(ReplyDelivery, "ack-wd-s1")
        report = (
            await s.execute(select(RequestReport).where(RequestReport.post_id == "wd-s1"))
        ).scalar_one()
    assert report.withdrawn_at is not None
    assert reply is not None and delivery is not None
    assert (delivery.state, delivery.remote_id) == ("posted", "110")
    assert reply.text == delivery.body == said
    assert delivery.author_handle == ""
    [event] = [
        e
        for e in await outbox(sessions, "reply-posted.v1")
        if e.reply_posted.reply_id == "ack-wd-s1"
    ]
    assert event.reply_posted.text == said
    assert await traces(sessions, "marta.withdraws") == {}


class _Mastodon:
    """A reply channel as the notifier's consumer sees it (nothing is sent here)."""

    platform = "mastodon"
    mention_author = True


async def test_somebody_elses_claim_on_a_thanked_post_leaves_its_thanks_to_go_out(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A post that opens no request has no report to tell its author by: a bridge naming another
    # account as its author dropped the router's thank-you from the outbox, had the notifier
    # withhold it, and took it out of the deliveries, as the author's own deletion does.
    route = router(sessions, not_actionable_reply=NotActionableReply.ACKNOWLEDGE)
    post = classified(
        "wd-thanks-1", actionable=False, text="Bon dia!", author=MARTA, author_id="42"
    )
    await route.batch([as_event(post)])
    handler = WithdrawPost(sessions)
    await handler(as_withdrawal(withdrawn("wd-thanks-1", author_id="666"), "not-hers-1"))

    [thanks] = [
        e
        for e in await outbox(sessions, "reply-requested.v1")
        if e.reply_requested.in_reply_to_post_id == "wd-thanks-1"
    ]
    notifier = PostReply(sessions, {"mastodon": _Mastodon()})  # type: ignore[dict-item]
    await notifier.batch([thanks])
    assert await PostReply(sessions)(thanks) != []  # one at a time (the log channel) too
    await handler(as_withdrawal(withdrawn("wd-thanks-1", author_id="667"), "not-hers-2"))
    async with sessions() as s:
        delivery = await s.get(ReplyDelivery, thanks.reply_requested.reply_id)
    assert delivery is not None and delivery.state == "pending"
    assert delivery.author_handle == MARTA
    async with sessions() as s:  # nor does its mention leave it as it is recorded posted
        assert not await was_withdrawn(s, "mastodon", "wd-thanks-1", delivery.reporter)

    # Its author's own deletion still keeps it from being sent.
    await handler(as_withdrawal(withdrawn("wd-thanks-1", author_id="42"), "hers"))
    async with sessions() as s:
        delivery = await s.get(ReplyDelivery, thanks.reply_requested.reply_id)
    assert delivery is not None and delivery.state == WITHDRAWN_STATE


class _Jetstream:
    """A Bluesky connector as the runner sees it (the runner is handed its batches here)."""

    name = "bluesky:withdrawals"
    platform = "bluesky"

    async def batches(self, cursor: str | None) -> AsyncIterator[Batch]:
        return
        yield


async def test_ingest_restarted_hands_on_the_deletion_of_a_post_it_published_not_yet_routed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Ingest knew the posts it had published from memory: restarted before the router had the
    # post (no report of it, no reply), it took its author's deletion for somebody else's post.
    did = "did:plc:marta2222222222222222222"
    mine, theirs = f"at://{did}/app.bsky.feed.post/3kwd1", "at://did:plc:other/app.bsky.feed.post/3"
    bus = MemoryBus()
    post = PostIn(platform="bluesky", post_id=mine, author_handle="@marta.test", text="Fanal")
    await ConnectorRunner(_Jetstream(), bus, sessions)._publish(Batch([post], "1"))

    restarted = ConnectorRunner(_Jetstream(), bus, sessions)  # remembers nothing of its own
    at = datetime.now(UTC)
    await restarted._publish(
        Batch([], "2", [Deletion("bluesky", mine, did, at), Deletion("bluesky", theirs, "x", at)])
    )
    [event] = await withdrawn_events(bus)  # and none for the firehose's other deletions
    assert (event.post_withdrawn.post_id, event.post_withdrawn.author_id) == (mine, did)

    # Only the posts published within the bus's retention are kept: a post still not routed
    # by then is off the bus for good.
    async with sessions.begin() as s:
        s.add_all(
            [
                PublishedPost(platform="bluesky", post_id="at://old", published_at=at - KEPT * 2),
                PublishedPost(
                    platform="bluesky", post_id="at://recent", published_at=at - KEPT / 2
                ),
            ]
        )
    later = PostIn(
        platform="bluesky", post_id="at://later", author_handle="@m.test", text="Bon dia"
    )
    await ConnectorRunner(_Jetstream(), bus, sessions)._publish(Batch([later], "3"))
    async with sessions() as s:
        kept = set((await s.execute(select(PublishedPost.post_id))).scalars())
    assert kept == {mine, "at://recent", "at://later"}


# --- a post's location only (X's scrub_geo) ----------------------------------------------------


def location_withdrawn(post_id: str, author_id: str = "") -> PostWithdrawn:
    body = withdrawn(post_id, author_id)
    body.location_only = True
    return body


def count_unlocated() -> float:
    labels = {"platform": "mastodon"}
    return REGISTRY.get_sample_value("plaza_post_locations_withdrawn_total", labels) or 0


async def report_of(sessions: async_sessionmaker[AsyncSession], post_id: str) -> RequestReport:
    async with sessions() as s:
        found = await s.execute(select(RequestReport).where(RequestReport.post_id == post_id))
        return found.scalar_one()


async def test_a_posts_location_withdrawn_takes_its_point_out_and_keeps_what_it_said(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(opening("wl-1")))
    other = classified("wl-2", text="Fanal apagat a Verdi", latlon=NEARBY, author_id="43")
    await route(as_event(other))
    before = await the_request(sessions, "wl-1")
    assert (before.lat, before.long) == VERDI and before.reporters_count == 2
    handler = WithdrawPost(sessions)
    unlocated, withdrawn_posts = count_unlocated(), count_withdrawn()

    await handler(as_withdrawal(location_withdrawn("wl-1", author_id="99"), "not-hers"))
    assert (await report_of(sessions, "wl-1")).lat is not None  # only its author's word counts

    await handler(as_withdrawal(location_withdrawn("wl-1", author_id="42"), "her-location"))

    mine = await report_of(sessions, "wl-1")
    assert (mine.lat, mine.long) == (None, None)
    assert (mine.text, mine.author_handle) == (WORDS, MARTA)  # what she said stays hers
    assert mine.address == "Carrer de Verdi, 12, 3r 2a" and mine.withdrawn_at is None
    request = await the_request(sessions, "wl-1")
    assert (request.lat, request.long) == NEARBY  # the other report's point
    assert request.description == WORDS and request.media_urls == [PHOTO]
    assert request.address == before.address and request.withdrawn_at is None
    assert (request.district_code, request.barri_code) == (before.district_code, before.barri_code)
    assert request.version == before.version + 1
    async with sessions() as s:
        [entry] = (
            await s.execute(
                select(RequestEvent).where(
                    RequestEvent.service_request_id == request.id,
                    RequestEvent.kind == "location_withdrawn",
                )
            )
        ).scalars()
        remembered = (await s.execute(select(WithdrawnPost))).scalars().all()
    assert (entry.actor, entry.public, entry.note) == ("citizen", False, "mastodon:wl-1")
    assert remembered == []  # a routed post's report says it all
    # The acknowledgement of her post still goes out: the post is still there.
    asks = await outbox(sessions, "reply-requested.v1")
    assert [a for a in asks if a.reply_requested.in_reply_to_post_id == "wl-1"]
    assert count_unlocated() == unlocated + 1 and count_withdrawn() == withdrawn_posts

    # Again, or from another channel: nothing changes twice.
    await handler(as_withdrawal(location_withdrawn("wl-1"), "from-the-stream"))
    assert (await the_request(sessions, "wl-1")).version == request.version
    assert count_unlocated() == unlocated + 1

    # Her deleting the post afterwards takes the rest.
    await handler(as_withdrawal(withdrawn("wl-1", author_id="42")))
    request = await the_request(sessions, "wl-1")
    assert request.description == WITHDRAWN_TEXT and (request.lat, request.long) == NEARBY


async def test_a_lone_posts_location_withdrawn_leaves_its_request_and_follow_up_at_the_door(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A resolved request answered by someone else: the follow-up is placed where the request
    # was, the opening post's point and address. The point goes from both; the address (her
    # words name the door) and the district and barri stay.
    route = router(sessions)
    await route(as_event(opening("wl-f1")))
    request = await the_request(sessions, "wl-f1")
    await resolve(sessions, request.id)
    answer = classified(
        "wl-f2", text="El fanal torna a estar apagat", reply_to="wl-f1", author_id="77", latlon=None
    )
    await route(as_event(answer))
    follow_up = await the_request(sessions, "wl-f2")
    assert (follow_up.lat, follow_up.long) == (request.lat, request.long) == VERDI

    await WithdrawPost(sessions)(as_withdrawal(location_withdrawn("wl-f1", author_id="42")))

    for post_id in ("wl-f1", "wl-f2"):
        placed = await the_request(sessions, post_id)
        assert (placed.lat, placed.long) == (None, None), post_id
        assert placed.address == "Carrer de Verdi, 12, 3r 2a", post_id
        assert (placed.district_code, placed.barri_code) == ("06", request.barri_code), post_id
    assert (await the_request(sessions, "wl-f1")).description == WORDS


async def test_a_post_whose_location_went_before_it_was_routed_is_routed_without_its_point(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handler = WithdrawPost(sessions)
    # The platform's word (X's compliance names no author), before the router has the post.
    await handler(as_withdrawal(location_withdrawn("wl-early"), "early-location"))
    route = router(sessions)
    await route(as_event(classified("wl-early", text=WORDS, author=MARTA, author_id="42")))
    report = await report_of(sessions, "wl-early")
    request = await the_request(sessions, "wl-early")
    assert (report.lat, report.long, request.lat, request.long) == (None, None, None, None)
    assert report.text == WORDS and request.description == WORDS  # routed, with its words
    assert request.district_code == "06"  # where the classifier placed it
    async with sessions() as s:
        assert "wl-early" in await held_posts(s, "mastodon")  # still asked about

    # A location's withdrawal, then the post's: the post is kept out; the other way round, the
    # later location's withdrawal does not let it in.
    await handler(as_withdrawal(location_withdrawn("wl-gone", author_id="42"), "gone-location"))
    await handler(as_withdrawal(withdrawn("wl-gone", author_id="42"), "gone-post"))
    await handler(as_withdrawal(withdrawn("wl-gone2", author_id="42"), "gone2-post"))
    await handler(as_withdrawal(location_withdrawn("wl-gone2", author_id="42"), "gone2-location"))
    for post_id in ("wl-gone", "wl-gone2"):
        await route(as_event(classified(post_id, author=MARTA, author_id="42")))
    async with sessions() as s:
        found = await s.execute(
            select(RequestReport).where(RequestReport.post_id.in_(("wl-gone", "wl-gone2")))
        )
        assert list(found.scalars()) == []
        assert await was_withdrawn(s, "mastodon", "wl-gone", "mastodon:42")
        assert not await was_withdrawn(s, "mastodon", "wl-early")  # its location only


async def test_a_withdrawn_post_takes_back_the_point_its_merge_gave_a_request(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A request opened by a post naming no place took the point of the geotagged duplicate a
    # manager merged into it. That post's withdrawal left the point on the request, as only
    # the opening post's place was taken back.
    route = router(sessions)
    await route(as_event(classified("wl-vague", latlon=None, barri="", text="Fanal apagat")))
    await route(as_event(classified("wl-here", author=MARTA, author_id="42")))
    vague, here = await the_request(sessions, "wl-vague"), await the_request(sessions, "wl-here")
    assert vague.id != here.id
    await manage(sessions, here.id, Action.MARK_DUPLICATE, duplicate_of=vague.id)
    merged = await the_request(sessions, "wl-vague")
    assert (merged.lat, merged.long) == VERDI

    await WithdrawPost(sessions)(as_withdrawal(withdrawn("wl-here", author_id="42")))

    vague = await the_request(sessions, "wl-vague")
    assert (vague.lat, vague.long) == (None, None)
    assert vague.description == "Fanal apagat"  # it did not open it: its words are the first's


# --- at the author's request to the city: `plaza withdraw` -----------------------------------


async def test_plaza_withdraw_erases_a_post_and_an_open311_requests_contact_details(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A citizen writes to the city's data-protection officer: their Mastodon post, and the
    Open311 request they sent with their email and phone (no platform deletes that one)."""
    route = router(sessions)
    await route(as_event(opening("wc-1")))
    async with sessions.begin() as s:
        key, _ = await create_api_key(s, name="app", role=Role.CIVIC_DEVELOPER)
        s.add(
            Open311Submission(
                token="tok-wc-2",
                api_key_id=key.id,
                service_code="streetlight",
                email="marta@example.org",
                phone="+34 612 345 678",
                first_name="Marta",
                last_name="Puig",
                device_id="device-1",
                account_id="acct-1",
                attributes={"floor": "3r"},
                submitted_at=datetime.now(UTC),
            )
        )
    by_form = classified("tok-wc-2", text="Fanal apagat davant de casa", latlon=NEARBY)
    by_form.post.platform = "open311"
    await route(as_event(by_form))

    # First, whose post it is (the officer checks who asks): nothing changes.
    shown = await asyncio.to_thread(
        plaza, database_url, "withdraw", "mastodon", "wc-1", "--dry-run"
    )
    assert shown.returncode == 0, shown.stderr
    assert MARTA in shown.stdout and "with a point" in shown.stdout and "Verdi" in shown.stdout
    assert (await the_request(sessions, "wc-1")).description == WORDS
    shown = await asyncio.to_thread(
        plaza, database_url, "withdraw", "open311", "tok-wc-2", "--dry-run"
    )
    assert "Marta Puig, marta@example.org" in shown.stdout, shown.stdout + shown.stderr

    said = await asyncio.to_thread(plaza, database_url, "withdraw", "mastodon", "wc-1")
    assert said.returncode == 0, said.stderr
    assert "mastodon wc-1: withdrawn" in said.stdout
    assert (await the_request(sessions, "wc-1")).description == WITHDRAWN_TEXT
    again = await asyncio.to_thread(plaza, database_url, "withdraw", "mastodon", "wc-1")
    assert "already withdrawn" in again.stdout

    said = await asyncio.to_thread(plaza, database_url, "withdraw", "open311", "tok-wc-2")
    assert "contact details" in said.stdout, said.stdout + said.stderr
    assert await traces(sessions, "marta@example.org", "612 345 678", "Puig", "acct-1") == {}
    async with sessions() as s:
        kept = await s.get(Open311Submission, "tok-wc-2")
    assert kept is not None and kept.attributes == {}  # tokens/{token} still answers
    assert (await the_request(sessions, "tok-wc-2")).description == WITHDRAWN_TEXT

    # A mistyped id changes nothing but is said so; a location only keeps the words.
    guessed = await asyncio.to_thread(
        plaza, database_url, "withdraw", "mastodon", "wc-typo", "--dry-run"
    )
    assert "no report of it in Plaza (nothing changed" in guessed.stdout
    async with sessions() as s:
        assert await s.get(WithdrawnPost, ("mastodon", "wc-typo", "")) is None
    unknown = await asyncio.to_thread(plaza, database_url, "withdraw", "mastodon", "wc-typo")
    assert "no report of it in Plaza" in unknown.stdout
    async with sessions() as s:
        assert await s.get(WithdrawnPost, ("mastodon", "wc-typo", "")) is not None
    await route(as_event(classified("wc-3", author_id="45")))
    located = await asyncio.to_thread(
        plaza, database_url, "withdraw", "mastodon", "wc-3", "--location-only"
    )
    assert "its point" in located.stdout
    request = await the_request(sessions, "wc-3")
    assert request.lat is None and request.description != WITHDRAWN_TEXT


async def test_an_admin_erases_a_post_through_the_api_and_nobody_else_may(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(opening("wa-1")))
    app = gateway(sessions)
    body = {"platform": "mastodon", "post_id": "wa-1"}
    async with client(app, await new_key(sessions, Role.MANAGER, ["06"])) as manager:
        refused = await manager.post("/api/v1/admin/withdrawals", json=body)
    assert refused.status_code == 403
    assert (await the_request(sessions, "wa-1")).description == WORDS
    async with client(app, await new_key(sessions, Role.ADMIN)) as admin:
        located = await admin.post(
            "/api/v1/admin/withdrawals", json={**body, "location_only": True}
        )
        erased = await admin.post("/api/v1/admin/withdrawals", json=body)
        again = await admin.post("/api/v1/admin/withdrawals", json=body)
        bad = await admin.post("/api/v1/admin/withdrawals", json={**body, "platform": "X!"})
    assert located.json() == {**body, "location_only": True, "outcome": "withdrawn"}
    assert (erased.json()["outcome"], again.json()["outcome"]) == ("withdrawn", "already")
    request = await the_request(sessions, "wa-1")
    assert request.description == WITHDRAWN_TEXT and request.lat is None
    assert bad.status_code == 422 and "platform" in bad.text
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_ingest_hands_on_a_posts_location_withdrawal_until_its_point_is_gone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # X reports a post's scrub_geo at every compliance round, for as long as Plaza holds the
    # post: each round handed on another withdrawal that changed nothing.
    located = classified("3kwl", author_id="did:plc:marta")
    located.post.platform = "bluesky"
    await router(sessions)(as_event(located))
    bus = MemoryBus()
    runner = ConnectorRunner(_Jetstream(), bus, sessions)
    at = datetime.now(UTC)
    scrubbed = Deletion("bluesky", "3kwl", deleted_at=at, location_only=True)
    await runner._publish(Batch([], "1", [scrubbed]))
    [event] = await withdrawn_events(bus)
    assert event.post_withdrawn.location_only
    await WithdrawPost(sessions)(event)
    assert (await report_of(sessions, "3kwl")).lat is None

    bus = MemoryBus()
    again = ConnectorRunner(_Jetstream(), bus, sessions)
    await again._publish(Batch([], "2", [scrubbed]))
    assert await withdrawn_events(bus) == []  # nothing left to take
    # its deletion still goes, in the same batch as X's repeated word on its location
    await again._publish(Batch([], "3", [scrubbed, Deletion("bluesky", "3kwl", deleted_at=at)]))
    [deleted] = await withdrawn_events(bus)
    assert not deleted.post_withdrawn.location_only
