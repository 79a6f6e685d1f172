"""The request lifecycle on real PostgreSQL: duplicates, manager actions with their audit trail,
SLA breaches, citizens reopening, and the outbox relay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError
from plaza.bus import OutRecord
from plaza.bus.memory import MemoryBus
from plaza.city import City
from plaza.contracts import TOPICS, PostClassified, ReplyKind, decode
from plaza.db.models import OutboxRecord, RequestReport, ServiceRequest
from plaza.lifecycle import Command, InvalidCommand, act, history, split_report
from plaza.outbox import Relay
from plaza.policy import RoutingTable, SlaPolicy
from plaza.requests import Action, InvalidTransition
from plaza_router.sla_scanner import SlaScanner
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.lifecycle_helpers import (
    POSTED_AT,
    VERDI,
    as_event,
    at_door,
    classified,
    outbox,
    router,
)

CITY = City.barcelona()
SLA = SlaPolicy.load()
ROUTING = RoutingTable.load()


async def requests(sessions: async_sessionmaker[AsyncSession]) -> list[ServiceRequest]:
    async with sessions() as s:
        return list((await s.execute(select(ServiceRequest).order_by(ServiceRequest.id))).scalars())


async def do(
    sessions: async_sessionmaker[AsyncSession],
    request_id: int,
    action: Action,
    at: datetime = POSTED_AT,
    **kw: object,
) -> ServiceRequest:
    async with sessions.begin() as s:
        return await act(
            s,
            request_id,
            Command(action, actor="manager-06", **kw),
            now=at,
            sla=SLA,
            routing=ROUTING,
            city=CITY,
        )  # type: ignore[arg-type]


async def test_a_nearby_report_of_the_same_service_joins_the_open_request(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(classified("first")))
    await route(
        as_event(classified("near", latlon=(VERDI[0] + 0.0002, VERDI[1]), author="@pau"))
    )  # ~22 m
    await route(as_event(classified("far", latlon=(VERDI[0] + 0.002, VERDI[1]))))  # ~220 m
    await route(as_event(classified("other-service", service_code="cleaning")))
    await route(as_event(classified("later", at=POSTED_AT + timedelta(days=4))))  # outside 72 h
    opened = await requests(sessions)
    assert [r.source_post_id for r in opened] == ["first", "far", "other-service", "later"]
    assert opened[0].reporters_count == 2
    [merged] = await outbox(sessions, "request-merged.v1")
    assert merged.request_merged.post_id == "near" and merged.request_merged.reporters_count == 2
    duplicate_reply = [e.reply_requested for e in await outbox(sessions, "reply-requested.v1")][1]
    assert duplicate_reply.kind == ReplyKind.REPLY_KIND_DUPLICATE
    assert duplicate_reply.in_reply_to_post_id == "near"
    assert duplicate_reply.params["service_request_id"] == opened[0].service_request_id


async def test_reporters_are_people_not_posts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A neighbour who reports the same problem again (angry, or on two platforms) is one
    reporter: the public "N neighbours reported it" counts people. Routed one post at a time
    and in a batch alike; marking a duplicate and splitting count people too."""
    near = (VERDI[0] + 0.0002, VERDI[1])
    first = [
        classified("a1", author="@anna"),
        classified("a2", author="@anna", latlon=near),
        classified("p1", author="@pau", latlon=near),
        classified("a3", author="@anna"),
    ]
    route = router(sessions)
    for post in first[:2]:
        await route(as_event(post))
    await route.batch([as_event(post) for post in first[2:]])
    [request] = await requests(sessions)
    assert request.reporters_count == 2
    counts = [e.request_merged.reporters_count for e in await outbox(sessions, "request-merged.v1")]
    assert counts == [1, 2, 2]
    # a batch that opens a request and merges its author's second post into it
    await route.batch(
        [
            as_event(classified("c1", author="@carles", service_code="cleaning")),
            as_event(classified("c2", author="@carles", service_code="cleaning", latlon=near)),
        ]
    )
    # another request, reported by anna and jordi, marked a duplicate of the first: 3 people
    far = (VERDI[0] + 0.003, VERDI[1])
    await route(as_event(classified("a4", author="@anna", latlon=far)))
    await route(as_event(classified("j1", author="@jordi", latlon=(far[0] + 0.0001, far[1]))))
    first_request, cleaning, second = await requests(sessions)
    assert (cleaning.reporters_count, second.reporters_count) == (1, 2)
    await do(sessions, second.id, Action.MARK_DUPLICATE, duplicate_of=first_request.id)
    assert (await requests(sessions))[0].reporters_count == 3  # anna, pau, jordi

    async def split_off(post_id: str) -> None:
        async with sessions.begin() as s:
            await split_report(
                s,
                first_request.id,
                "mastodon",
                post_id,
                actor="m",
                now=POSTED_AT,
                sla=SLA,
                routing=ROUTING,
                city=CITY,
            )

    # splitting off one of anna's posts leaves her among the reporters; jordi's, not
    await split_off("a2")
    assert (await requests(sessions))[0].reporters_count == 3
    [split] = [r for r in await requests(sessions) if r.source_post_id == "a2"]
    assert (split.district_code, split.location_source) == ("06", "geo")  # as where it left
    await split_off("j1")
    assert (await requests(sessions))[0].reporters_count == 2


async def test_a_post_dated_in_the_future_is_reported_when_it_arrives(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A clock ahead (or a made-up created_at) would start the SLA clock years from now."""
    before = datetime.now(UTC)
    await router(sessions)(as_event(classified("f", at=datetime(2030, 1, 1, tzinfo=UTC))))
    [request] = await requests(sessions)
    assert before <= request.requested_datetime <= datetime.now(UTC)
    assert request.expected_datetime is not None
    assert request.expected_datetime < before + timedelta(days=30)


async def test_a_city_wide_request_is_acknowledged_with_its_team_not_a_district(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(classified("bike", service_code="mobility")))
    [request] = await requests(sessions)
    assert request.queue == "city-mobility" and request.district_code == "06"
    [ack] = [e.reply_requested for e in await outbox(sessions, "reply-requested.v1")]
    assert ack.kind == ReplyKind.REPLY_KIND_ACKNOWLEDGED
    assert ack.params["team"] == "Barcelona de Serveis Municipals (BSM)"
    assert "district_name" not in ack.params


async def test_without_coordinates_similar_text_in_the_same_barri_is_a_duplicate(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    text = "Fanal apagat al carrer de Verdi, davant del número 20"
    await route(as_event(classified("a", latlon=None, text=text)))
    await route(
        as_event(
            classified("b", latlon=None, text="fanal apagat al carrer Verdi davant del numero 20!")
        )
    )
    await route(
        as_event(classified("c", latlon=None, text="Un contenidor cremat a la plaça del Sol"))
    )
    await route(as_event(classified("d", latlon=None, text=text, barri="32")))
    assert [(r.source_post_id, r.reporters_count) for r in await requests(sessions)] == [
        ("a", 2),
        ("c", 1),
        ("d", 1),
    ]


@pytest.mark.parametrize("batched", [False, True])
async def test_without_coordinates_the_same_street_and_number_is_the_same_place(
    sessions: async_sessionmaker[AsyncSession], batched: bool
) -> None:
    """Posts with no point and no barri, whose text names a street of the register (the
    classifier's street_address), were compared with nothing: now the same street and number is
    one request whatever the words, and another street, or numbers far apart, another request
    however alike the words; a post's own address is read the same way."""
    route = router(sessions)
    bins = "Contenedor desbordado en c/ Aragó, 250"

    def at(post_id: str, text: str, street: str = "", address: str = "") -> PostClassified:
        return at_door(post_id, street, text=text, address=address)

    first = at("aragó", bins, "Carrer d'Aragó 250")
    posts = [
        at("same", "Contenidor ple fa dies, fa pudor", "Carrer d'Aragó 250"),
        at("far", bins.replace("250", "400"), "Carrer d'Aragó 400"),
        at("other", bins.replace("Aragó", "Mallorca"), "Carrer de Mallorca 250"),
        at("far-again", "Bins overflowing on Aragó Street 400", "Carrer d'Aragó 400"),
        at("given", "Contenidors plens", address="Carrer d'Aragó 250"),
    ]
    if batched:
        await route.batch([as_event(first)])
        await route.batch([as_event(p) for p in posts])
    else:
        for p in [first, *posts]:
            await route(as_event(p))
    assert [(r.source_post_id, r.address, r.reporters_count) for r in await requests(sessions)] == [
        ("aragó", "Carrer d'Aragó 250", 3),
        ("far", "Carrer d'Aragó 400", 2),
        ("other", "Carrer de Mallorca 250", 1),
    ]


async def test_a_report_merged_by_its_address_and_split_off_keeps_that_address(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A manager splits off a report joined by its address alone (no point, no barri): the new
    # request had no address, nowhere for its manager or the duplicate search to go by.
    route = router(sessions)
    for post_id, street in (("door-a", "Carrer d'Aragó 250"), ("door-b", "c/ Aragó, 250")):
        await route(as_event(at_door(post_id, street)))
    [request] = await requests(sessions)
    async with sessions.begin() as s:
        await split_report(
            s,
            request.id,
            "mastodon",
            "door-b",
            actor="m",
            now=POSTED_AT,
            sla=SLA,
            routing=ROUTING,
            city=CITY,
        )
    _, split = await requests(sessions)
    assert (split.source_post_id, split.address) == ("door-b", "c/ Aragó, 250")
    assert split.address_key == "018505 250"


async def test_in_a_barri_another_street_is_another_place_however_alike_the_words(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Without a point, a barri's reports were told apart by their words alone: two alike texts
    at different streets were one request."""
    route = router(sessions)
    text = "Fanal apagat al carrer de {street}, fa dies que no funciona"
    await route(
        as_event(
            classified(
                "verdi",
                latlon=None,
                text=text.format(street="Verdi 12"),
                street_address="Carrer de Verdi 12",
            )
        )
    )
    await route(
        as_event(
            classified(
                "torrent",
                latlon=None,
                text=text.format(street="Torrent de l'Olla 12"),
                street_address="Carrer del Torrent de l'Olla 12",
            )
        )
    )
    await route(as_event(classified("verdi-again", latlon=None, text=text.format(street="Verdi"))))
    assert [(r.source_post_id, r.reporters_count) for r in await requests(sessions)] == [
        ("verdi", 2),
        ("torrent", 1),
    ]


@pytest.mark.parametrize("batched", [False, True])
async def test_two_problems_of_one_service_close_together_are_two_requests(
    sessions: async_sessionmaker[AsyncSession], batched: bool
) -> None:
    """`traffic` covers signs and abandoned cars: a stop sign knocked down 40 m from an abandoned
    car is another request, whatever the radius; the same problem in other words and another
    language, and a post naming nothing more specific, still join."""
    route = router(sessions)
    north = (VERDI[0] + 0.00036, VERDI[1])  # 40 m
    posts = [
        classified("car", service_code="traffic", text="Un cotxe abandonat fa mesos al carrer"),
        classified(
            "sign",
            author="@veina",
            service_code="traffic",
            latlon=north,
            text="The stop sign on the corner was knocked down last night",
        ),
        classified(
            "car2",
            author="@jordi",
            service_code="traffic",
            latlon=(VERDI[0] + 0.00005, VERDI[1]),
            text="Coche abandonado con las ruedas pinchadas desde hace meses",
        ),
        classified(
            "vague",
            author="@anna",
            service_code="traffic",
            latlon=(north[0] + 0.00005, north[1]),
            text="Això fa setmanes que està així, algú ho pot mirar?",
        ),
    ]
    if batched:
        await route.batch([as_event(p) for p in posts])
    else:
        for p in posts:
            await route(as_event(p))
    assert [(r.source_post_id, r.reporters_count) for r in await requests(sessions)] == [
        ("car", 2),
        ("sign", 2),
    ]


async def test_a_manager_works_a_request_through_its_life_and_every_step_is_audited(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(classified("p")))
    await router(sessions)(
        as_event(classified("q", latlon=(VERDI[0] + 0.0001, VERDI[1]), author="@veina"))
    )
    [request] = await requests(sessions)
    t = POSTED_AT + timedelta(hours=1)
    await do(sessions, request.id, Action.ACKNOWLEDGE, t)
    await do(sessions, request.id, Action.ASSIGN, t, worker="@electricista_jun")
    await do(sessions, request.id, Action.START, t)
    with pytest.raises(InvalidCommand, match="public note"):
        await do(sessions, request.id, Action.RESOLVE, t)
    done = await do(
        sessions,
        request.id,
        Action.RESOLVE,
        t,
        note="Fanal reparat.",
        photo_url="https://x.example/f.jpg",
    )
    assert (done.status, done.resolution_photo_url, done.status_notes) == (
        "resolved",
        "https://x.example/f.jpg",
        "Fanal reparat.",
    )
    with pytest.raises(InvalidTransition) as refused:
        await do(sessions, request.id, Action.START, t)
    assert refused.value.allowed == [Action.CLOSE, Action.REOPEN]
    await do(sessions, request.id, Action.CLOSE, t)

    async with sessions() as s:
        trail = await history(s, request.id)
    assert [e.kind for e in trail] == [
        "created",
        "merged",
        "acknowledge",
        "assign",
        "start",
        "resolve",
        "close",
    ]
    assert [e.version for e in trail] == list(range(1, 8))
    assign = trail[3]
    assert (assign.actor, assign.before["status"], assign.after["status"]) == (
        "manager-06",
        "acknowledged",
        "assigned",
    )
    assert assign.after["assigned_worker"] == "@electricista_jun"
    changes = await outbox(sessions, "request-status-changed.v1")
    assert [c.request_status_changed.to_status for c in changes] == [
        "acknowledged",
        "assigned",
        "in_progress",
        "resolved",
        "closed",
    ]
    replies = [e.reply_requested for e in await outbox(sessions, "reply-requested.v1")]
    # both reporters hear that the worker was sent, and that it was fixed, with the photo
    sent = [
        (r.kind, r.in_reply_to_post_id)
        for r in replies
        if r.kind in (ReplyKind.REPLY_KIND_ASSIGNED, ReplyKind.REPLY_KIND_RESOLVED)
    ]
    assert sorted(sent) == sorted(
        [
            (k, p)
            for k in (ReplyKind.REPLY_KIND_ASSIGNED, ReplyKind.REPLY_KIND_RESOLVED)
            for p in ("p", "q")
        ]
    )
    assert {
        r.params.get("photo_url") for r in replies if r.kind == ReplyKind.REPLY_KIND_RESOLVED
    } == {"https://x.example/f.jpg"}


async def test_transfer_moves_the_request_to_another_district_with_a_reason(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(classified("p")))
    [request] = await requests(sessions)
    with pytest.raises(InvalidCommand, match="reason"):
        await do(sessions, request.id, Action.TRANSFER, district_code="05")
    with pytest.raises(InvalidCommand, match="no district"):
        await do(sessions, request.id, Action.TRANSFER, district_code="42", note="wrong")
    moved = await do(
        sessions, request.id, Action.TRANSFER, district_code="05", note="El carrer és a Sarrià"
    )
    assert (moved.status, moved.queue, moved.agency_responsible) == (
        "transferred",
        "05",
        "Districte de Sarrià-Sant Gervasi",
    )
    assert moved.ack_due_at == POSTED_AT + timedelta(hours=24)


async def test_marking_a_duplicate_moves_its_reporters_and_a_wrong_merge_can_be_split(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(as_event(classified("a")))
    await route(as_event(classified("b", latlon=(41.41, 2.16))))
    a, b = await requests(sessions)
    with pytest.raises(InvalidCommand, match="itself"):
        await do(sessions, b.id, Action.MARK_DUPLICATE, duplicate_of=b.id)
    await do(sessions, b.id, Action.MARK_DUPLICATE, duplicate_of=a.id)
    a, b = await requests(sessions)
    assert (b.status, b.duplicate_of, a.reporters_count) == ("duplicate", a.id, 2)
    async with sessions() as s:
        moved = (
            (
                await s.execute(
                    select(RequestReport.post_id).where(RequestReport.service_request_id == a.id)
                )
            )
            .scalars()
            .all()
        )
    assert sorted(moved) == ["a", "b"]
    async with sessions.begin() as s:
        with pytest.raises(InvalidCommand, match="opened the request"):
            await split_report(
                s,
                a.id,
                "mastodon",
                "a",
                actor="m",
                now=POSTED_AT,
                sla=SLA,
                routing=ROUTING,
                city=CITY,
            )
    async with sessions.begin() as s:
        new = await split_report(
            s, a.id, "mastodon", "b", actor="m", now=POSTED_AT, sla=SLA, routing=ROUTING, city=CITY
        )
        new_id = new.id
    a = (await requests(sessions))[0]
    assert a.reporters_count == 1
    async with sessions() as s:
        split = await s.get(ServiceRequest, new_id)
        assert split is not None and split.source_post_id == "b"
        assert (split.district_code, split.location_source) == ("06", a.location_source)
        assert a.location_source == "geo"
        assert [e.kind for e in await history(s, a.id)][-1] == "split"


async def test_the_scanner_records_each_breach_once_and_escalates_to_city_hall(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    await route(
        as_event(classified("late", urgent=True, service_code="traffic"))
    )  # ack 15 min, resolve 4 h
    await route(as_event(classified("fine", latlon=(41.39, 2.17))))  # ack 24 h
    scanner = SlaScanner(sessions)
    assert await scanner.scan_once(POSTED_AT + timedelta(minutes=10)) == 0
    assert await scanner.scan_once(POSTED_AT + timedelta(minutes=20)) == 1
    assert await scanner.scan_once(POSTED_AT + timedelta(minutes=30)) == 0  # not twice
    late, fine = await requests(sessions)
    assert late.ack_breached_at is not None and late.escalated_at is not None
    assert fine.escalated_at is None
    assert await scanner.scan_once(POSTED_AT + timedelta(hours=5)) == 1  # now the resolve deadline
    [ack, resolve] = await outbox(sessions, "request-sla-breached.v1")
    assert (ack.request_sla_breached.deadline, resolve.request_sla_breached.deadline) == (
        "acknowledge",
        "resolve",
    )
    assert ack.request_sla_breached.escalated_to == "city-hall"
    async with sessions() as s:
        assert [e.kind for e in await history(s, late.id)][-2:] == ["sla_breached", "sla_breached"]
    # acknowledged in time, a request no longer runs the acknowledgement clock
    await do(sessions, fine.id, Action.ACKNOWLEDGE, POSTED_AT + timedelta(hours=1))
    assert await scanner.scan_once(POSTED_AT + timedelta(hours=30)) == 0


async def test_a_citizen_answering_a_resolved_request_reopens_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    marta = "@marta@bcn.social"
    await route(as_event(classified("orig", author=marta)))
    [request] = await requests(sessions)
    await do(sessions, request.id, Action.ACKNOWLEDGE)
    await do(sessions, request.id, Action.RESOLVE, note="Arreglat")
    answer = classified(
        "answer", text="Encara no funciona!", reply_to="orig", latlon=None, author=marta
    )
    await route(as_event(answer))
    [request] = await requests(sessions)
    assert request.status == "reopened" and request.resolved_at is None
    assert request.status_notes is None  # "Arreglat" no longer holds
    async with sessions() as s:
        trail = await history(s, request.id)
    assert (trail[-1].kind, trail[-1].actor) == ("reopen", "citizen:@marta@bcn.social")
    # someone else's answer to a resolved request does not reopen it: only a reporter may.
    # "Torna a estar apagat" names neither service nor place (the classifier said `other`,
    # nowhere): it is a new request of the thread's service and place, linked both ways.
    await do(sessions, request.id, Action.ACKNOWLEDGE)
    await do(sessions, request.id, Action.RESOLVE, note="Ara sí")
    thanks = classified(
        "thanks", reply_to="orig", author="@veina", actionable=False, text="Gràcies!"
    )
    await route(as_event(thanks))
    assert [r.status for r in await requests(sessions)] == ["resolved"]
    again = classified(
        "stranger",
        reply_to="orig",
        author="@veina",
        text="Torna a estar apagat",
        service_code="other",
        district="",
        latlon=None,
    )
    await route(as_event(again))
    resolved, follow_up = await requests(sessions)
    assert (resolved.status, follow_up.status) == ("resolved", "new")
    assert follow_up.source_post_id == "stranger"
    assert (follow_up.service_code, follow_up.district_code, follow_up.barri_code) == (
        "streetlight",
        "06",
        "31",
    )
    assert (follow_up.lat, follow_up.long) == (resolved.lat, resolved.long)
    assert follow_up.queue == "06" and follow_up.expected_datetime is not None
    async with sessions() as s:
        assert f"follow-up of #{resolved.id}" in ((await history(s, follow_up.id))[-1].note or "")
        assert f"#{follow_up.id} opened" in ((await history(s, resolved.id))[-1].note or "")
    [*_, ack] = [e.reply_requested for e in await outbox(sessions, "reply-requested.v1")]
    assert (ack.in_reply_to_post_id, ack.params["service_request_id"]) == (
        "stranger",
        str(follow_up.id),
    )


async def test_a_follow_up_naming_another_door_is_not_placed_at_the_first_ones_point(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Someone else answers a resolved request's thread about the streetlight at Verdi 40: the
    # follow-up had Verdi 40's address and Verdi 12's point, another door's pin on the console's
    # map and in Open311's lat and long. One naming the same door, written another way, is
    # placed at the request's point as an answer naming none is.
    route = router(sessions)
    await route(as_event(classified("door-12", street_address="Carrer de Verdi 12")))
    [request] = await requests(sessions)
    await do(sessions, request.id, Action.ACKNOWLEDGE)
    await do(sessions, request.id, Action.RESOLVE, note="Arreglat")
    answers = {
        "door-40": "Carrer de Verdi 40",
        "door-12-again": "c/ Verdi, 12",
    }
    for post_id, street in answers.items():
        answer = classified(
            post_id,
            reply_to="door-12",
            author=f"@{post_id}@bcn.social",
            text=f"El fanal de {street} també està apagat",
            latlon=None,
            street_address=street,
        )
        await route(as_event(answer))
    resolved, other_door, same_door = await requests(sessions)
    assert resolved.address_key == same_door.address_key == "356803 12"
    assert (other_door.address, other_door.address_key) == ("Carrer de Verdi 40", "356803 40")
    assert (other_door.lat, other_door.long) == (None, None)
    assert (other_door.district_code, other_door.barri_code) == ("06", "31")  # the thread's
    assert (same_door.lat, same_door.long) == (resolved.lat, resolved.long) != (None, None)


async def test_reporters_are_accounts_not_handles(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A handle changes, and passes to someone else: where the channel gives the account's id,
    that is who reported. Without one, handles compare as platforms compare them (any case)."""
    near = (VERDI[0] + 0.0002, VERDI[1])
    route = router(sessions)
    await route(as_event(classified("a1", author="@anna@bcn.social", author_id="109")))
    # anna moved to another instance (same account id): still one reporter
    await route(
        as_event(classified("a2", author="@anna@other.social", author_id="109", latlon=near))
    )
    [request] = await requests(sessions)
    assert request.reporters_count == 1
    # someone else now holds her old handle: another reporter
    await route(as_event(classified("x1", author="@anna@bcn.social", author_id="555", latlon=near)))
    # no id: "@Pau" and "@pau" are one account
    await route(as_event(classified("p1", author="@Pau@bcn.social", latlon=near)))
    await route(as_event(classified("p2", author="@pau@BCN.social", latlon=near)))
    [request] = await requests(sessions)
    assert request.reporters_count == 3
    # resolved, an answer from anna's first handle, held now by an account that never reported
    # it, does not reopen it (a new report); anna's, under a new handle, does
    await do(sessions, request.id, Action.ACKNOWLEDGE)
    await do(sessions, request.id, Action.RESOLVE, note="Arreglat")
    await route(
        as_event(
            classified(
                "x2",
                text="No!",
                reply_to="a1",
                latlon=None,
                author="@anna@bcn.social",
                author_id="777",
            )
        )
    )
    assert [r.status for r in await requests(sessions)] == ["resolved", "new"]
    await route(
        as_event(
            classified(
                "a3",
                text="Encara no",
                reply_to="a1",
                latlon=None,
                author="@anna@new.social",
                author_id="109",
            )
        )
    )
    assert [r.status for r in await requests(sessions)] == ["reopened", "new"]


async def first_to_lead(relays: Sequence[Relay]) -> Relay:
    """The relay that took the outbox's lock: either may win it, whichever connects first."""
    leading = {asyncio.create_task(relay.leading.wait()): relay for relay in relays}
    done, pending = await asyncio.wait(leading, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()
    assert done, "no relay took the lock in 10 s"
    return leading[next(iter(done))]


async def test_the_relay_publishes_the_outbox_in_order_exactly_once_per_leader(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    route = router(sessions)
    for n in range(30):
        await route(as_event(classified(f"p{n}", latlon=(41.38 + 0.001 * n, 2.17))))
    bus = MemoryBus()
    relays = [Relay(bus, engine, batch=7), Relay(bus, engine, batch=7)]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    leader = await first_to_lead(relays)
    [follower] = [relay for relay in relays if relay is not leader]
    for _ in range(100):
        async with sessions() as s:
            left = (await s.execute(select(func.count()).select_from(OutboxRecord))).scalar_one()
        if left == 0:
            break
        await asyncio.sleep(0.05)
    assert left == 0
    assert not follower.leading.is_set()  # one relay at a time
    leader.stop()
    follower.stop()
    await asyncio.gather(*tasks)
    consumer = await bus.subscribe("probe", [TOPICS.REQUEST_CREATED.topic])
    records = await consumer.fetch(1000, 0.1)
    ids = [
        int(decode(r.topic, r.value).request_created.service_request_id)
        for r in sorted(records, key=lambda r: r.timestamp_ms)
    ]
    assert sorted(ids) == list(range(1, 31))
    by_partition: dict[int, list[int]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(
            int(decode(r.topic, r.value).request_created.service_request_id)
        )
    assert all(seq == sorted(seq) for seq in by_partition.values())


class _BrokerAwayOnce(MemoryBus):
    """A bus whose first publish fails, as when the broker is unreachable for a round."""

    def __init__(self) -> None:
        super().__init__(default_partitions=1)  # one log: its order is the order published
        self.refused = 0

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if not self.refused:
            self.refused = len(records)
            raise KafkaConnectionError("the broker is away")
        await super().publish(records)


async def test_a_round_the_bus_refused_leaves_its_events_for_the_next(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """A round takes its events out of the outbox and commits only once the bus has them: one
    that fails leaves every event in, and the next round publishes them, in order."""
    route = router(sessions)
    for n in range(12):
        await route(as_event(classified(f"p{n}", latlon=(41.38 + 0.001 * n, 2.17))))
    async with sessions() as s:
        staged = (await s.execute(select(func.count()).select_from(OutboxRecord))).scalar_one()
    bus = _BrokerAwayOnce()
    relay = Relay(bus, engine, batch=5)
    with pytest.raises(KafkaConnectionError):
        await relay.publish_once()
    assert bus.refused == 5
    async with sessions() as s:
        left = (await s.execute(select(func.count()).select_from(OutboxRecord))).scalar_one()
    assert left == staged  # nothing taken out by the failed round
    while await relay.publish_once():
        pass
    consumer = await bus.subscribe("probe", [TOPICS.REQUEST_CREATED.topic])
    records = await consumer.fetch(1000, 0.1)
    ids = [int(decode(r.topic, r.value).request_created.service_request_id) for r in records]
    assert ids == list(range(1, 13))  # in the order they were written


@pytest.mark.parametrize("listens", [True, False], ids=["notified", "polling"])
async def test_the_relay_publishes_a_new_event_without_waiting_for_its_unbidden_look(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    listens: bool,
) -> None:
    """The outbox's trigger notifies the relay at commit; a relay that cannot listen looks every
    busy_interval instead. Here its unbidden look is a minute away."""
    if not listens:

        async def cannot_listen(self: Relay, lock_conn: object) -> None:
            return None

        monkeypatch.setattr(Relay, "_listen", cannot_listen)
    bus = MemoryBus()
    relay = Relay(bus, engine, idle_interval=60)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.leading.wait(), 10)
        await asyncio.sleep(0.5)  # its first round found nothing
        await router(sessions)(as_event(classified("wake up", latlon=VERDI)))
        consumer = await bus.subscribe("probe", [TOPICS.REQUEST_CREATED.topic])
        records = []
        async with asyncio.timeout(10):
            while not records:
                records = await consumer.fetch(10, 0.1)
        assert len(records) == 1
    finally:
        relay.stop()
        await task


async def test_a_batch_routes_as_one_post_at_a_time_would_in_one_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    events = [
        as_event(classified("first")),
        as_event(classified("near", latlon=(VERDI[0] + 0.0002, VERDI[1]), author="@pau")),
        as_event(classified("far", latlon=(VERDI[0] + 0.002, VERDI[1]))),
        as_event(classified("other-service", service_code="cleaning")),
        as_event(classified("thanks", actionable=False)),
    ]
    route = router(sessions)
    await route.batch([*events, events[0]])  # the same event twice in a batch counts once
    opened = await requests(sessions)
    # the repeat within the same batch found the request its neighbour had just opened
    assert [r.source_post_id for r in opened] == ["first", "far", "other-service"]
    assert opened[0].reporters_count == 2
    [merged] = await outbox(sessions, "request-merged.v1")
    assert merged.request_merged.post_id == "near"
    staged = len(await outbox(sessions))

    await route.batch(events)  # a redelivered batch (a crash before the offsets were committed)
    assert [r.source_post_id for r in await requests(sessions)] == ["first", "far", "other-service"]
    assert len(await outbox(sessions)) == staged  # nothing staged twice


async def test_a_transfer_hands_the_request_on_whole(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """To another district: the worker sent is off it (they were the old district's), the
    barri with them, the new hands get an acknowledge window; a deadline missed before stays
    recorded and city hall keeps watching. To its own district and team: refused (it would
    only reset the clock). To an agency: the citizen is told which."""
    route = router(sessions)
    await route(as_event(classified("t1")))
    [request] = await requests(sessions)
    await do(sessions, request.id, Action.ASSIGN, worker="@jordi")
    with pytest.raises(InvalidCommand, match="already with district 06"):
        async with sessions.begin() as s:
            await act(
                s,
                request.id,
                Command(Action.TRANSFER, actor="m", note="x", district_code="6"),
                now=POSTED_AT,
                sla=SLA,
                routing=ROUTING,
                city=CITY,
            )
    escalated = SlaScanner(sessions)
    assert await escalated.scan_once(POSTED_AT + timedelta(days=30)) >= 1
    late = POSTED_AT + timedelta(days=30, hours=1)
    moved = await do(
        sessions, request.id, Action.TRANSFER, late, note="És a l'Eixample", district_code="2"
    )
    assert (moved.district_code, moved.queue, moved.barri_code) == ("02", "02", None)
    async with sessions() as s:
        trail = await history(s, request.id)
    assert (trail[-1].before["barri_code"], trail[-1].after["barri_code"]) == ("31", None)
    assert moved.assigned_worker is None and moved.acknowledged_at is None
    assert moved.ack_due_at is not None and moved.ack_due_at > late
    assert moved.escalated_at is not None and moved.resolve_breached_at is not None
    handed = await do(
        sessions, request.id, Action.TRANSFER, late, note="Xarxa elèctrica", agency="Endesa"
    )
    assert (handed.district_code, handed.agency_responsible) == ("02", "Endesa")
    told = [e.reply_requested for e in await outbox(sessions, "reply-requested.v1")]
    transfers = [r for r in told if r.kind == ReplyKind.REPLY_KIND_TRANSFERRED]
    assert [dict(r.params) for r in transfers] == [
        {"service_request_id": request.service_request_id, "district_name": "Eixample"},
        {"service_request_id": request.service_request_id, "team": "Endesa"},
    ]


async def test_a_thank_you_in_a_resolved_thread_does_not_reopen_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    marta = "@marta@bcn.social"
    await route(as_event(classified("orig", author=marta)))
    [request] = await requests(sessions)
    await do(sessions, request.id, Action.ASSIGN, worker="@jordi")
    await do(sessions, request.id, Action.RESOLVE, note="Arreglat")
    thanks = classified(
        "thanks",
        text="Moltes gràcies! 👏",
        reply_to="orig",
        latlon=None,
        author=marta,
        actionable=False,
    )
    await route(as_event(thanks))
    [request] = await requests(sessions)
    assert request.status == "resolved"
    async with sessions() as s:
        kept = await s.scalar(select(RequestReport).where(RequestReport.post_id == "thanks"))
    assert kept is not None and kept.service_request_id == request.id  # kept, not lost
    # still broken: reopened, waiting for a manager with nobody sent and no photo
    await route(
        as_event(
            classified("again", text="Torna a fallar", reply_to="orig", latlon=None, author=marta)
        )
    )
    [request] = await requests(sessions)
    assert request.status == "reopened"
    assert request.assigned_worker is None and request.resolution_photo_url is None


async def test_not_responsible_tells_the_citizen_who_is(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await router(sessions)(as_event(classified("n1")))
    [request] = await requests(sessions)
    await do(sessions, request.id, Action.NOT_RESPONSIBLE, note="És d'Endesa: 800 760 706")
    [reply] = [
        e.reply_requested
        for e in await outbox(sessions, "reply-requested.v1")
        if e.reply_requested.kind == ReplyKind.REPLY_KIND_NOT_RESPONSIBLE
    ]
    assert reply.params["note"] == "És d'Endesa: 800 760 706" and reply.in_reply_to_post_id == "n1"


async def test_a_request_revived_by_a_split_tells_its_citizen_its_number(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Marked a duplicate, a request's citizen was told theirs is the other one; split off
    again, they are told its own number."""
    route = router(sessions)
    await route(as_event(classified("k1")))
    await route(as_event(classified("k2", latlon=(VERDI[0] + 0.003, VERDI[1]))))
    first, second = await requests(sessions)
    await do(sessions, second.id, Action.MARK_DUPLICATE, duplicate_of=first.id)
    async with sessions.begin() as s:
        revived = await split_report(
            s,
            first.id,
            "mastodon",
            "k2",
            actor="m",
            now=POSTED_AT,
            sla=SLA,
            routing=ROUTING,
            city=CITY,
        )
    assert revived.id == second.id and revived.status == "new"
    acks = [
        e.reply_requested
        for e in await outbox(sessions, "reply-requested.v1")
        if e.reply_requested.kind == ReplyKind.REPLY_KIND_ACKNOWLEDGED
        and e.reply_requested.in_reply_to_post_id == "k2"
    ]
    assert len(acks) == 2  # on arrival, and once split off
    assert acks[-1].params == {
        "service_request_id": second.service_request_id,
        "district_name": "Gràcia",
    }


async def test_the_audit_trail_says_when_plaza_opened_a_request(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    before = datetime.now(UTC)
    await router(sessions)(as_event(classified("h1")))  # posted at POSTED_AT, long ago
    [request] = await requests(sessions)
    async with sessions() as s:
        [created] = await history(s, request.id)
    assert created.kind == "created" and created.at >= before
    assert request.requested_datetime == POSTED_AT


def _counted(metric: str, deadline: str, district: str) -> float:
    labels = {"deadline": deadline, "district": district, "service_code": "streetlight"}
    return REGISTRY.get_sample_value(metric, {**labels, "urgency": "normal"}) or 0.0


async def test_new_hands_and_a_reopen_have_their_acknowledge_deadline_counted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """City hall's compliance counts each acknowledge deadline a request is given: a transfer's
    fresh one is missed (and counted) on its own, not hidden by the miss before it; a reopened
    request acknowledged in time counts as met."""
    route = router(sessions)
    await route(as_event(classified("c1")))
    [request] = await requests(sessions)
    window = SLA.window("streetlight", False)
    scanner = SlaScanner(sessions)
    await scanner.scan_once(POSTED_AT + window.acknowledge + timedelta(minutes=1))
    missed = _counted("plaza_sla_breaches_total", "acknowledge", "02")
    moved_at = POSTED_AT + window.acknowledge + timedelta(hours=1)
    await do(sessions, request.id, Action.TRANSFER, moved_at, note="Eixample", district_code="02")
    found = await scanner.scan_once(moved_at + window.acknowledge + timedelta(minutes=1))
    assert found >= 1
    assert _counted("plaza_sla_breaches_total", "acknowledge", "02") == missed + 1
    await do(sessions, request.id, Action.ACKNOWLEDGE, moved_at + window.acknowledge * 2)
    done = moved_at + window.acknowledge * 3
    await do(sessions, request.id, Action.RESOLVE, done, note="Fet")
    reopened = await do(sessions, request.id, Action.REOPEN, done + timedelta(hours=1))
    assert reopened.acknowledged_at is None
    met = _counted("plaza_sla_met_total", "acknowledge", "02")
    await do(sessions, request.id, Action.ACKNOWLEDGE, done + timedelta(hours=1, minutes=5))
    assert _counted("plaza_sla_met_total", "acknowledge", "02") == met + 1


async def test_a_relay_says_it_stopped(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGTERM's stop() ends the relay with one line, leader or not, as a worker's does."""
    bus = MemoryBus()
    relays = [Relay(bus, engine), Relay(bus, engine)]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    await first_to_lead(relays)
    assert sum(relay.leading.is_set() for relay in relays) == 1
    with caplog.at_level("INFO", logger="plaza.outbox"):
        for relay in relays:
            relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    stopped = [r for r in caplog.records if r.getMessage() == "outbox relay stopped"]
    assert len(stopped) == 2


async def test_a_placeless_request_takes_the_place_of_the_duplicate_merged_into_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A request opened from a post that named no place, merged with one geotagged in its
    district: the request now has that point and its barri (the queue, the map and Open311
    show where it is); one with its own place keeps it; a point in another district is not
    taken (a merge moves no request)."""
    route = router(sessions)
    await route(as_event(classified("vague", latlon=None, barri="", text="Fanal apagat")))
    await route(as_event(classified("here", at=POSTED_AT + timedelta(minutes=5))))
    vague, here = await requests(sessions)
    assert (vague.lat, vague.long, vague.barri_code) == (None, None, None)
    await do(sessions, here.id, Action.MARK_DUPLICATE, duplicate_of=vague.id)
    vague, _ = await requests(sessions)
    located = CITY.locate(*VERDI)
    assert located is not None and located.barri is not None
    assert (vague.lat, vague.long) == VERDI
    assert (vague.district_code, vague.barri_code) == ("06", located.barri.code)
    async with sessions() as s:
        # the merge's audit entry shows the barri it gained (the history holds no exact point:
        # Open311 publishes points on a grid only)
        [merged] = [e for e in await history(s, vague.id) if e.kind == "merged"]
    assert (merged.before["barri_code"], merged.after["barri_code"]) == (None, located.barri.code)

    # a duplicate that names a door gives its address to a request without one
    await route(as_event(classified("bins", latlon=None, barri="", service_code="cleaning")))
    await route(
        as_event(
            classified(
                "door",
                latlon=None,
                barri="",
                service_code="cleaning",
                text="Contenidors plens al carrer de Verdi 12",
                street_address="Carrer de Verdi 12",
            )
        )
    )
    *_, bins, door = await requests(sessions)
    assert (bins.address, door.address) == (None, "Carrer de Verdi 12")
    await do(sessions, door.id, Action.MARK_DUPLICATE, duplicate_of=bins.id)
    bins = next(r for r in await requests(sessions) if r.id == bins.id)
    assert (bins.address, bins.address_key) == (door.address, door.address_key)
    assert (bins.lat, bins.long) == (None, None)

    # a request with its own point keeps it
    elsewhere = (VERDI[0] + 0.002, VERDI[1])
    await route(as_event(classified("own", latlon=elsewhere, service_code="cleaning")))
    await route(as_event(classified("dup", service_code="cleaning")))
    *_, own, dup = await requests(sessions)
    await do(sessions, dup.id, Action.MARK_DUPLICATE, duplicate_of=own.id)
    own = next(r for r in await requests(sessions) if r.id == own.id)
    assert (own.lat, own.long) == elsewhere

    # a point in another district (les Corts, 04) is not taken by a request of Gràcia's
    await route(as_event(classified("g", latlon=None, barri="", service_code="graffiti")))
    await route(
        as_event(
            classified(
                "corts", district="04", barri="", service_code="graffiti", latlon=(41.3851, 2.1303)
            )
        )
    )
    *_, gracia, corts = await requests(sessions)
    assert corts.district_code == "04"
    await do(sessions, corts.id, Action.MARK_DUPLICATE, duplicate_of=gracia.id)
    gracia = next(r for r in await requests(sessions) if r.id == gracia.id)
    assert (gracia.district_code, gracia.lat, gracia.long) == ("06", None, None)


async def split_off(
    sessions: async_sessionmaker[AsyncSession], request_id: int, post_id: str
) -> ServiceRequest:
    async with sessions.begin() as s:
        return await split_report(
            s,
            request_id,
            "mastodon",
            post_id,
            actor="manager-06",
            now=POSTED_AT,
            sla=SLA,
            routing=ROUTING,
            city=CITY,
        )


async def test_a_split_takes_back_the_place_its_merge_gave_and_leaves_the_requests_own(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A wrong merge undone: the request is placed again by the reports it keeps, not where the
    duplicate that left it was (the map and Open311 showed it at the other problem's door)."""
    route = router(sessions)
    await route(as_event(classified("s-vague", latlon=None, barri="", text="Fanal apagat")))
    await route(as_event(classified("s-here", at=POSTED_AT + timedelta(minutes=5))))
    vague, here = await requests(sessions)
    await do(sessions, here.id, Action.MARK_DUPLICATE, duplicate_of=vague.id)
    assert ((await requests(sessions))[0].lat) == VERDI[0]

    revived = await split_off(sessions, vague.id, "s-here")

    vague, _ = await requests(sessions)
    assert (vague.lat, vague.long) == (None, None)
    assert (revived.id, revived.lat, revived.long) == (here.id, *VERDI)

    # and the address a merge gave goes back with its report too
    await route(as_event(classified("s-bins", latlon=None, barri="", service_code="cleaning")))
    await route(
        as_event(
            classified(
                "s-door",
                latlon=None,
                barri="",
                service_code="cleaning",
                text="Contenidors plens al carrer de Verdi 12",
                street_address="Carrer de Verdi 12",
            )
        )
    )
    *_, bins, door = await requests(sessions)
    await do(sessions, door.id, Action.MARK_DUPLICATE, duplicate_of=bins.id)
    *_, bins, _ = await requests(sessions)
    assert bins.address == "Carrer de Verdi 12"

    await split_off(sessions, bins.id, "s-door")

    *_, bins, door = await requests(sessions)
    assert (bins.address, bins.address_key) == (None, None)
    assert (door.address, door.status) == ("Carrer de Verdi 12", "new")
