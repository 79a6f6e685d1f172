"""The manager API's queue on real PostgreSQL: filters, due-time order, cursor pages, notes,
bulk actions, and live updates as Server-Sent Events over a real HTTP connection."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from plaza.db.models import ServiceRequest
from plaza.requests import OPEN_STATUSES, Status, extended_status, open311_status
from plaza_api.access import AccessConfig
from plaza_api.auth import Role
from plaza_api.manager import QueueItem
from plaza_api.open311 import w3c
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import Server, client, gateway, new_key
from tests.integration.lifecycle_helpers import as_event, classified, router


@pytest.fixture
async def api(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[httpx.AsyncClient]:
    key = await new_key(sessions, Role.MANAGER, ["06"])
    async with client(gateway(sessions), key) as c:
        yield c


async def open_requests(sessions: async_sessionmaker[AsyncSession], n: int) -> datetime:
    """n streetlight requests in Gràcia, 200 m apart (no duplicates), one every 10 minutes, and
    an urgent traffic one."""
    now = datetime.now(UTC)
    route = router(sessions)
    for i in range(n):
        at = now - timedelta(hours=80) + timedelta(minutes=10 * i)
        await route(as_event(classified(f"p{i}", at=at, latlon=(41.40 + 0.002 * i, 2.156))))
    await route(as_event(classified("urgent", at=now, urgent=True, service_code="traffic")))
    return now


async def test_filters_sort_and_cursor_pages(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await open_requests(sessions, 7)  # streetlight resolves in 72 h: the first ones are overdue

    async def page(**params: object) -> dict[str, object]:
        response = await api.get("/api/v1/districts/06/queue", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    everything = await page(limit=500)
    ids = [i["service_request_id"] for i in everything["items"]]  # type: ignore[attr-defined]
    dues = [i["expected_datetime"] for i in everything["items"]]  # type: ignore[attr-defined]
    assert len(ids) == 8 and dues == sorted(dues)
    # Cursor pages of 3 walk the same order without gaps or repeats.
    seen: list[str] = []
    cursor = None
    while True:
        got = await page(limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [i["service_request_id"] for i in got["items"]]  # type: ignore[attr-defined]
        cursor = got["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    latest_first = await page(sort="-due", limit=500)
    assert [i["service_request_id"] for i in latest_first["items"]] == ids[::-1]  # type: ignore[attr-defined]
    urgent = await page(urgency="urgent")
    assert [i["service_code"] for i in urgent["items"]] == ["traffic"]  # type: ignore[attr-defined]
    lights = await page(service_code="streetlight")
    assert lights["count"] == 7
    overdue = await page(overdue="true")
    assert overdue["count"] and all(i["overdue"] for i in overdue["items"])  # type: ignore[attr-defined]
    on_time = await page(overdue="false")
    assert overdue["count"] + on_time["count"] == 8  # type: ignore[operator]
    # a cursor continues the query that gave it: with another sort or filter it would skip
    # items, so it is refused
    next_page = (await page(limit=3))["next_cursor"]
    for other in ({"sort": "-due"}, {"overdue": "false"}, {"service_code": "traffic"}):
        mixed = await api.get(
            "/api/v1/districts/06/queue", params={"limit": 3, "cursor": next_page, **other}
        )
        assert mixed.status_code == 422 and "another query" in mixed.json()["detail"], other
    first, second = ids[0], ids[1]
    await api.post(f"/api/v1/requests/{second}/actions/assign", json={"worker": "jordi"})
    for handle in ("jordi", "@jordi"):  # as assignments store it
        theirs = await page(assigned_worker=handle)
        assert [i["service_request_id"] for i in theirs["items"]] == [second], handle  # type: ignore[attr-defined]
    assert (
        await api.get("/api/v1/districts/06/queue", params={"assigned_worker": "a b"})
    ).status_code == 422
    await api.post(f"/api/v1/requests/{first}/actions/acknowledge", json={})
    acknowledged = await page(status="acknowledged")
    assert [i["service_request_id"] for i in acknowledged["items"]] == [first]  # type: ignore[attr-defined]
    bad = await api.get("/api/v1/districts/06/queue", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    forged = await api.get("/api/v1/districts/06/queue", params={"cursor": "bm9wZQ"})
    assert forged.status_code == 422
    # well-formed cursors past what a bigint or a datetime holds: 422, not a 500
    for raw in (
        b'["2026-01-01T00:00:00+00:00", 99999999999999999999999, "0"]',
        b'["9999-12-31T23:59:59-23:59", 1, "0"]',
        b'[null, -1, "0"]',
        b'[null, true, "0"]',
    ):
        crafted = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer = await api.get("/api/v1/districts/06/queue", params={"cursor": crafted})
        assert answer.status_code == 422, raw


def expected_item(r: ServiceRequest, now: datetime) -> dict[str, object]:
    """A queue item as the API documents it, computed here from the request's own fields."""
    return {
        "service_request_id": str(r.id),
        "status": r.status,
        "open311_status": open311_status(r.status),
        "extended_status": extended_status(r.status),
        "service_code": r.service_code,
        "description": r.description,
        "district_code": r.district_code,
        "barri_code": r.barri_code,
        "queue": r.queue,
        "agency_responsible": r.agency_responsible,
        "location_source": r.location_source,
        "urgency": r.urgency,
        "language": r.language,
        "reporters_count": r.reporters_count,
        "assigned_worker": r.assigned_worker,
        "requested_datetime": w3c(r.requested_datetime),
        "ack_due_at": w3c(r.ack_due_at),
        "expected_datetime": w3c(r.expected_datetime),
        "escalated": r.escalated_at is not None,
        "source_platform": r.source_platform,
        "source_post_id": r.source_post_id,
        "author_handle": r.source_author_handle,
        # past resolve-by, or past acknowledge-by while not acknowledged
        "overdue": r.status in OPEN_STATUSES
        and (
            (r.expected_datetime is not None and r.expected_datetime < now)
            or (r.acknowledged_at is None and r.ack_due_at is not None and r.ack_due_at < now)
        ),
    }


async def test_each_item_is_its_request_in_every_status_whoever_wrote_it(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The stored item JSON (a trigger's, migration 0006) agrees with QueueItem, field by field and
    in its order, with the request's own fields after every kind of write, in every status, and
    whatever time zone the writing session had."""
    await open_requests(sessions, 3)
    for n, status in enumerate(Status):
        async with sessions.begin() as session:
            await session.execute(text("SET LOCAL timezone = 'America/Lima'"))
            await session.execute(
                update(ServiceRequest)
                .where(ServiceRequest.id == 1)
                .values(
                    status=status.value,
                    assigned_worker=f"@worker{n}" if n % 2 else None,
                    escalated_at=datetime.now(UTC) if n % 3 == 0 else None,
                    description=f'Fanal "{n}" \\ apagat\nùltima nit',
                    expected_datetime=None
                    if n == 4
                    else datetime.now(UTC) + timedelta(hours=n - 5),
                    reporters_count=n + 1,
                    # past acknowledge-by in some statuses, acknowledged in some
                    ack_due_at=datetime.now(UTC) + timedelta(hours=1 if n % 4 else -1),
                    acknowledged_at=datetime.now(UTC) if n % 8 == 4 else None,
                )
            )
        response = await api.get(
            "/api/v1/districts/06/queue", params={"status": status.value, "limit": 500}
        )
        assert response.status_code == 200, response.text
        [item] = [i for i in response.json()["items"] if i["service_request_id"] == "1"]
        async with sessions() as session:
            row = await session.get_one(ServiceRequest, 1)
        assert list(item) == list(QueueItem.model_fields), status
        assert item == expected_item(row, datetime.now(UTC)), status


async def test_internal_notes_stay_internal_and_bulk_actions_report_each_request(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await open_requests(sessions, 2)
    internal = await api.post("/api/v1/requests/1/notes", json={"note": "Veí conflictiu"})
    assert internal.status_code == 201
    public = await api.post("/api/v1/requests/1/notes", json={"note": "Hi anem", "public": True})
    notes = public.json()["notes"]
    assert [(n["note"], n["public"]) for n in notes] == [
        ("Veí conflictiu", False),
        ("Hi anem", True),
    ]
    open311 = (await api.get("/open311/v2/requests/1.json?extensions=true")).text
    assert "Hi anem" in open311 and "conflictiu" not in open311
    history = (await api.get("/api/v1/requests/1/history")).json()
    assert [h["kind"] for h in history][-2:] == ["note", "note"]
    bulk = await api.post(
        "/api/v1/requests/actions/acknowledge", json={"service_request_ids": [1, 2, 1, 42]}
    )
    body = bulk.json()
    assert (body["succeeded"], body["failed"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == [200, 200, 404]
    again = await api.post(
        "/api/v1/requests/actions/acknowledge", json={"service_request_ids": [1]}
    )
    [refused] = again.json()["results"]
    assert refused["status"] == 409 and "cannot acknowledge" in refused["detail"]


async def read_events(lines: AsyncIterator[str], n: int) -> list[dict[str, object]]:
    """The next n events of a stream's lines (one iterator for the stream's whole life)."""
    events: list[dict[str, object]] = []
    async for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
            if len(events) == n:
                return events
    raise AssertionError(f"the stream ended after {len(events)} events")


async def test_a_queue_streams_its_changes_as_server_sent_events(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app = gateway(sessions, access=AccessConfig(sse_poll_seconds=0.05))
    manager = await new_key(sessions, Role.MANAGER, ["06"])
    headers = {"Authorization": f"Bearer {manager}"}
    await open_requests(sessions, 1)
    async with Server(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        refused = await http.get("/api/v1/districts/05/queue/events", headers=headers)
        assert refused.status_code == 403
        # a Last-Event-ID that is no event id ("²" is a digit to str.isdigit, not to int, or
        # past a bigint) streams from now on, as none does
        for odd in ("²".encode("latin-1"), b"99999999999999999999"):
            async with http.stream(
                "GET",
                "/api/v1/districts/06/queue/events",
                headers={**headers, "Last-Event-ID": odd},
            ) as resumed:
                assert resumed.status_code == 200, odd
        async with http.stream(
            "GET", f"/api/v1/districts/06/queue/events?access_token={manager}"
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            events = []
            # Each change is read before the next is made, so each shows the request as it was.
            await http.post("/api/v1/requests/1/actions/acknowledge", json={}, headers=headers)
            events += await asyncio.wait_for(read_events(lines, 1), 10)
            await http.post(
                "/api/v1/requests/1/actions/transfer",
                json={"note": "És de Sarrià", "district_code": "05"},
                headers=headers,
            )
            events += await asyncio.wait_for(read_events(lines, 1), 10)
            await router(sessions)(as_event(classified("new-one", at=datetime.now(UTC))))
            events += await asyncio.wait_for(read_events(lines, 1), 10)
    assert [e["kind"] for e in events] == ["acknowledge", "transfer", "created"]
    assert events[0]["in_queue"] is True and events[0]["actor"] == "key:manager-06"
    assert events[1]["in_queue"] is False  # transferred to 05: it left this queue
    assert events[2]["item"]["source_post_id"] == "new-one"  # type: ignore[index]


async def test_changes_before_a_request_left_the_queue_are_streamed_even_in_one_poll(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Acknowledged, then transferred away before the stream's next poll: both are announced
    in the queue it left (the acknowledgement was a change to one of its requests)."""
    app = gateway(sessions, access=AccessConfig(sse_poll_seconds=2.0))
    manager = await new_key(sessions, Role.MANAGER, ["06"])
    headers = {"Authorization": f"Bearer {manager}"}
    await open_requests(sessions, 1)
    url = f"/api/v1/districts/06/queue/events?access_token={manager}"
    async with (
        Server(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("GET", url) as stream,
    ):
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 3000"  # connected: the first poll is under way
        await http.post("/api/v1/requests/1/actions/acknowledge", json={}, headers=headers)
        await http.post(
            "/api/v1/requests/1/actions/transfer",
            json={"note": "És de Sarrià", "district_code": "05"},
            headers=headers,
        )
        events = await asyncio.wait_for(read_events(lines, 2), 10)
    assert [e["kind"] for e in events] == ["acknowledge", "transfer"]
    assert events[1]["in_queue"] is False


async def test_the_escalated_filter_and_a_requests_photos_and_address(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """What the console shows: escalated requests picked out (plain and validated parameters
    alike), and a request's photos, address and first post."""
    await open_requests(sessions, 3)
    async with sessions.begin() as session:
        await session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == 2)
            .values(
                escalated_at=datetime.now(UTC),
                media_urls=["https://media.example/a.jpg"],
                address="Carrer de Verdi 20",
                source_public_url="https://bcn.social/@marta/1",
            )
        )
    for extra in ({}, {"urgency": "normal"}, {"limit": "07"}):  # "07": FastAPI's own path
        found = await api.get("/api/v1/districts/06/queue", params={"escalated": "true", **extra})
        assert [i["service_request_id"] for i in found.json()["items"]] == ["2"], extra
        rest = await api.get("/api/v1/districts/06/queue", params={"escalated": "false", **extra})
        assert "2" not in [i["service_request_id"] for i in rest.json()["items"]], extra
        assert rest.json()["count"] == (2 if "urgency" in extra else 3)  # and the urgent one
    assert (
        await api.get("/api/v1/districts/06/queue", params={"escalated": "maybe"})
    ).status_code == 422
    detail = (await api.get("/api/v1/requests/2")).json()
    assert detail["media_urls"] == ["https://media.example/a.jpg"]
    assert detail["address"] == "Carrer de Verdi 20"
    assert detail["source_public_url"] == "https://bcn.social/@marta/1"
    assert (await api.get("/api/v1/requests/1")).json()["media_urls"] == []


async def test_a_queues_places_are_all_its_requests_with_their_points_and_its_filters(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The console's map: every request of the queue at once (not a page), with its point, or
    the address or barri it was placed by, the queue's filters applied; not another's queue."""
    await open_requests(sessions, 3)  # the first streetlights are overdue; the urgent one is not
    await router(sessions)(as_event(classified("no-point", at=datetime.now(UTC), latlon=None)))
    async with sessions.begin() as session:
        await session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == 5)
            .values(address="Carrer de Verdi 20")
        )

    async def places(**params: object) -> dict[str, object]:
        answer = await api.get("/api/v1/districts/06/queue/places", params=params)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    every = await places()
    queue = (await api.get("/api/v1/districts/06/queue", params={"limit": 500})).json()
    items = {i["service_request_id"]: i for i in every["items"]}  # type: ignore[attr-defined]
    # the same requests, in the queue's order
    assert list(items) == [i["service_request_id"] for i in queue["items"]]
    assert (every["count"], every["more"]) == (5, False)
    assert (items["1"]["lat"], items["1"]["long"]) == (41.40, 2.156)
    assert (items["5"]["lat"], items["5"]["address"], items["5"]["barri_code"]) == (
        None,
        "Carrer de Verdi 20",
        "31",
    )
    overdue = {i["service_request_id"] for i in queue["items"] if i["overdue"]}
    assert overdue and {k for k, i in items.items() if i["overdue"]} == overdue
    assert items["4"]["urgency"] == "urgent" and items["4"]["service_code"] == "traffic"
    only = await places(service_code="traffic")
    assert [i["service_request_id"] for i in only["items"]] == ["4"]  # type: ignore[attr-defined]
    late = await places(overdue="true")
    assert {i["service_request_id"] for i in late["items"]} == overdue  # type: ignore[attr-defined]
    assert (await places(status="resolved"))["items"] == []
    first = await places(limit=2)
    assert (first["count"], first["more"]) == (2, True)
    refused = await api.get("/api/v1/districts/05/queue/places")
    assert refused.status_code == 403 and "not yours" in refused.json()["detail"]
    unknown = await api.get("/api/v1/districts/06/queue/places", params={"status": "lost"})
    assert unknown.status_code == 422 and "status: unknown ['lost']" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"status": "lost"}, "status", "unknown ['lost']"),
        ({"service_code": "lamps"}, "service_code", "unknown ['lamps']"),
        ({"assigned_worker": "jordi garcia"}, "assigned_worker", "not a public handle"),
        ({"cursor": "garbage"}, "cursor", "not a cursor this API gave"),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),  # pydantic's, as before
    ],
)
async def test_a_bad_queue_filter_is_named_as_every_invalid_parameter_is(
    api: httpx.AsyncClient, params: dict[str, str], field: str, says: str
) -> None:
    """The filters the queue checks itself answered `about:blank`, "Unprocessable Entity" and no
    `errors`, where `limit=0` got the validation problem with `errors[].field`: a client had to
    read two shapes of one 422."""
    paths = ["/api/v1/districts/06/queue", "/api/v1/districts/06/queue/places"]
    for path in paths[:1] if field == "cursor" else paths:  # the map has no pages
        response = await api.get(path, params=params)
        assert response.status_code == 422
        problem = response.json()
        assert problem["type"] == "https://plaza.example/problems/validation"
        assert problem["title"] == "Invalid request"
        assert problem["detail"].startswith(f"{field}: ") and says in problem["detail"]
        assert [e["field"] for e in problem["errors"]] == [field]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_workers_assignments_stream_their_changes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A worker sees a new assignment at once, as a manager her queue (the console polled every
    30 s): assigned to them (in), changed, assigned to another (out); nobody else's."""
    app = gateway(sessions, access=AccessConfig(sse_poll_seconds=0.05))
    manager = bearer(await new_key(sessions, Role.MANAGER, ["06"]))
    worker = await new_key(sessions, Role.WORKER, worker_handle="@jordi")
    other = await new_key(sessions, Role.WORKER, worker_handle="@pere")
    await open_requests(sessions, 2)
    async with Server(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        refused = await http.get("/api/v1/assignments/events", headers=manager)
        assert refused.status_code == 403 and "only workers" in refused.json()["detail"]
        acknowledged = await http.post(
            "/api/v1/requests/1/actions/acknowledge", json={}, headers=manager
        )
        assert acknowledged.status_code == 200, acknowledged.text
        async with (
            http.stream("GET", "/api/v1/assignments/events", headers=bearer(worker)) as stream,
            http.stream("GET", "/api/v1/assignments/events", headers=bearer(other)) as others,
        ):
            assert stream.status_code == 200 and others.status_code == 200
            lines, not_his = stream.aiter_lines(), others.aiter_lines()
            assert await anext(lines) == "retry: 3000"
            assert await anext(not_his) == "retry: 3000"
            events = []
            done = await http.post(
                "/api/v1/requests/1/actions/assign", json={"worker": "@jordi"}, headers=manager
            )
            assert done.status_code == 200, done.text
            events += await asyncio.wait_for(read_events(lines, 1), 10)
            await http.post("/api/v1/requests/1/notes", json={"note": "Grua"}, headers=manager)
            events += await asyncio.wait_for(read_events(lines, 1), 10)
            moved = await http.post(
                "/api/v1/requests/1/actions/assign", json={"worker": "@pere"}, headers=manager
            )
            assert moved.status_code == 200, moved.text
            events += await asyncio.wait_for(read_events(lines, 1), 10)
            # @pere's stream: only his own assignment, none of @jordi's
            (his,) = await asyncio.wait_for(read_events(not_his, 1), 10)
    assert [e["kind"] for e in events] == ["assign", "note", "assign"]
    assert [e["in_queue"] for e in events] == [True, True, False]
    assert events[0]["item"]["assigned_worker"] == "@jordi"  # type: ignore[index]
    assert (his["kind"], his["in_queue"]) == ("assign", True)
    assert his["item"]["assigned_worker"] == "@pere"  # type: ignore[index]
