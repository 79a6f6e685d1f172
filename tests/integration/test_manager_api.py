"""The manager API over HTTP (in process) on real PostgreSQL: actions, 409s, history, queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from plaza.city import City
from plaza_api.app import create_app
from plaza_api.auth import Role
from plaza_api.manager import Queue
from plaza_router.sla_scanner import SlaScanner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import new_key
from tests.integration.lifecycle_helpers import as_event, classified, router


@pytest.fixture
async def api(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[httpx.AsyncClient]:
    ingest = httpx.AsyncClient(base_url="http://ingest.invalid")
    app = create_app(sessions, ingest, City.barcelona())
    key = await new_key(sessions, Role.CITY_HALL)  # sees every queue; roles: test_access_control
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://plaza",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client
    await ingest.aclose()


async def open_request(
    sessions: async_sessionmaker[AsyncSession], post_id: str = "p1", **kw: object
) -> str:
    now = datetime.now(UTC)
    await router(sessions)(as_event(classified(post_id, at=now, **kw)))  # type: ignore[arg-type]
    return "1"


async def test_a_manager_acknowledges_assigns_and_resolves_through_the_api(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rid = await open_request(sessions)
    detail = (await api.get(f"/api/v1/requests/{rid}")).json()
    assert detail["allowed_actions"] == [
        "acknowledge",
        "assign",
        "transfer",
        "mark_duplicate",
        "not_responsible",
    ]
    ok = await api.post(f"/api/v1/requests/{rid}/actions/acknowledge")  # needs no body
    assert ok.status_code == 200 and ok.json()["status"] == "acknowledged"
    assigned = await api.post(
        f"/api/v1/requests/{rid}/actions/assign", json={"actor": "manager-06", "worker": "jordi"}
    )
    assert assigned.json()["assigned_worker"] == "@jordi"  # as the worker's key has it
    assert assigned.json()["extended_status"] == "ACTION_SCHEDULED"
    internal = await api.post(
        f"/api/v1/requests/{rid}/actions/resolve",
        json={"note": "El veí és conflictiu", "public": False},
    )
    assert internal.status_code == 422 and "note is public" in internal.json()["detail"]
    resolved = await api.post(
        f"/api/v1/requests/{rid}/actions/resolve",
        json={
            "actor": "manager-06",
            "note": "Fanal canviat",
            "photo_url": "https://x.example/f.jpg",
        },
    )
    body = resolved.json()
    assert (body["status"], body["open311_status"], body["resolution_photo_url"]) == (
        "resolved",
        "closed",
        "https://x.example/f.jpg",
    )
    history = (await api.get(f"/api/v1/requests/{rid}/history")).json()
    assert [h["kind"] for h in history] == ["created", "acknowledge", "assign", "resolve"]
    assert (
        history[2]["before"]["status"] == "acknowledged"
        and history[2]["after"]["assigned_worker"] == "@jordi"
    )


async def test_a_refused_action_is_a_409_problem_listing_the_allowed_ones(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rid = await open_request(sessions)
    refused = await api.post(f"/api/v1/requests/{rid}/actions/close", json={"actor": "manager-06"})
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status_now"] == "new"
    assert problem["allowed_actions"] == [
        "acknowledge",
        "assign",
        "transfer",
        "mark_duplicate",
        "not_responsible",
    ]
    assert "cannot close a request that is new" in problem["detail"]


@pytest.mark.parametrize(
    ("action", "body", "says", "field"),
    [
        ("assign", {"actor": "m"}, "needs a worker", "worker"),
        ("transfer", {"actor": "m", "district_code": "05"}, "reason", "note"),
        ("transfer", {"actor": "m", "note": "x"}, "a district_code or an agency", "district_code"),
        ("transfer", {"note": "x", "district_code": "11"}, "no district '11'", "district_code"),
        # the request is in 06 (Gràcia) already: a transfer there would only reset its clock
        (
            "transfer",
            {"note": "x", "district_code": "06"},
            "already with district 06",
            "district_code",
        ),
        (
            "transfer",
            {"note": "x", "district_code": "6"},
            "already with district 06",
            "district_code",
        ),
        ("assign", {"wroker": "@jordi"}, "wroker", "wroker"),  # misspelt: not silently ignored
        ("fly", {"actor": "m"}, "action", "action"),
        ("acknowledge", {"public": "sometimes"}, "public", "public"),
        ("assign", {"worker": "jordi garcia"}, "not a public handle such as @jordi", "worker"),
        ("assign", {"worker": "@"}, "not a public handle", "worker"),
        (
            "mark_duplicate",
            {"duplicate_of": 99999999999999999999999},
            "duplicate_of",
            "duplicate_of",
        ),
        ("mark_duplicate", {}, "needs duplicate_of", "duplicate_of"),
        ("mark_duplicate", {"duplicate_of": 1}, "cannot duplicate itself", "duplicate_of"),
        ("mark_duplicate", {"duplicate_of": 7}, "no service request 7", "duplicate_of"),
        ("not_responsible", {}, "needs a public note", "note"),
        # what the citizen is told cannot be internal
        ("not_responsible", {"note": "És de l'AMB", "public": False}, "note is public", "public"),
    ],
)
async def test_bad_actions_are_explained(
    api: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    action: str,
    body: dict[str, object],
    says: str,
    field: str,
) -> None:
    """Each refusal names the field at fault, in `detail` ("worker: ...") and `errors`, as a
    validation error does: a missing worker or note said only "assign needs a worker", and a
    newcomer's client (or the console, which marks the field) could not tell which field."""
    rid = await open_request(sessions)
    response = await api.post(f"/api/v1/requests/{rid}/actions/{action}", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert says in problem["detail"] and problem["detail"].startswith(f"{field}: ")
    assert problem["errors"][0]["field"] == field


async def test_a_split_names_the_report_it_cannot_find(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rid = await open_request(sessions)
    response = await api.post(
        f"/api/v1/requests/{rid}/split", json={"platform": "mastodon", "post_id": "nope"}
    )
    assert response.status_code == 422 and response.json()["title"] == "Cannot split"
    # a title of its own needs a type of its own (RFC 9457: about:blank's is the status phrase)
    assert response.json()["type"] == "https://plaza.example/problems/invalid-split"
    assert response.json()["detail"] == f"post_id: request {rid} has no report mastodon:nope"
    assert response.json()["errors"][0]["field"] == "post_id"


async def test_unknown_requests_and_queues_are_404_problems(api: httpx.AsyncClient) -> None:
    for path in (
        "/api/v1/requests/77",
        "/api/v1/requests/abc/history",
        "/api/v1/requests/%C2%B2",  # a digit to str.isdigit, not to int
        "/api/v1/requests/99999999999999999999",  # past a bigint
        "/api/v1/districts/11/queue",
    ):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    missing = await api.post("/api/v1/requests/77/actions/acknowledge", json={"actor": "m"})
    assert missing.status_code == 404


async def test_an_overdue_request_shows_in_the_city_hall_queue(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await open_request(sessions, urgent=True, service_code="traffic")
    assert (await api.get("/api/v1/districts/city-hall/queue")).json()["count"] == 0
    await SlaScanner(sessions).scan_once(datetime.now(UTC) + timedelta(minutes=20))
    queue = (await api.get("/api/v1/districts/city-hall/queue")).json()
    assert queue["count"] == 1 and queue["items"][0]["escalated"] is True
    district = (await api.get("/api/v1/districts/06/queue")).json()
    assert district["items"][0]["escalated"] is True  # still the district's to fix
    # the queue is serialised by hand for speed: it must still be what the OpenAPI docs say
    assert Queue.model_validate(district).items[0].service_code == "traffic"


async def test_a_wrong_merge_is_split_through_the_api(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rid = await open_request(sessions)
    await router(sessions)(as_event(classified("p2", at=datetime.now(UTC), author="@other")))
    detail = (await api.get(f"/api/v1/requests/{rid}")).json()
    assert detail["reporters_count"] == 2 and [r["merged"] for r in detail["reports"]] == [
        False,
        True,
    ]
    split = await api.post(
        f"/api/v1/requests/{rid}/split",
        json={"actor": "m", "platform": "mastodon", "post_id": "p2"},
    )
    assert split.status_code == 201
    assert split.json()["source_post_id"] == "p2" and split.json()["service_request_id"] != rid
    assert (await api.get(f"/api/v1/requests/{rid}")).json()["reporters_count"] == 1
    again = await api.post(
        f"/api/v1/requests/{rid}/split",
        json={"actor": "m", "platform": "mastodon", "post_id": "p1"},
    )
    assert again.status_code == 422


async def test_two_managers_merging_two_requests_into_each_other_at_once(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Each locks both requests, the lower id first: one merge wins, the other is refused
    (the request it joins is no longer open, or its own is no longer there to merge); neither
    deadlocks into a 500."""
    now = datetime.now(UTC)
    route = router(sessions)
    await route(as_event(classified("d1", at=now)))
    await route(as_event(classified("d2", at=now, latlon=(41.4036 + 0.003, 2.1566))))
    for _ in range(3):
        async with sessions() as s:
            ids = sorted((await s.execute(text("SELECT id FROM service_requests"))).scalars())
        one, two = ids[-2:]
        answers = await asyncio.gather(
            api.post(f"/api/v1/requests/{one}/actions/mark_duplicate", json={"duplicate_of": two}),
            api.post(f"/api/v1/requests/{two}/actions/mark_duplicate", json={"duplicate_of": one}),
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 200 and statuses[1] in (409, 422), [a.text for a in answers]
        for a in answers:
            assert a.headers["content-type"].startswith("application/")  # json or problem+json
        await route(as_event(classified(f"d{one}a", at=now, latlon=(41.40 - 0.003 * one, 2.15))))
        await route(as_event(classified(f"d{one}b", at=now, latlon=(41.40 + 0.003 * one, 2.16))))


async def test_after_a_transfer_the_old_districts_worker_is_off_the_request(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rid = await open_request(sessions)
    app = create_app(
        sessions, httpx.AsyncClient(base_url="http://ingest.invalid"), City.barcelona()
    )
    worker_key = await new_key(sessions, Role.WORKER, worker_handle="@jordi")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://plaza",
        headers={"Authorization": f"Bearer {worker_key}"},
    ) as jordi:
        await api.post(f"/api/v1/requests/{rid}/actions/assign", json={"worker": "@jordi"})
        assert len((await jordi.get("/api/v1/assignments")).json()["items"]) == 1
        # what a worker is shown they may do is what they may do
        shown = (await jordi.get(f"/api/v1/requests/{rid}")).json()["allowed_actions"]
        assert set(shown) == {"start", "resolve"}
        await router(sessions)(
            as_event(classified("w2", at=datetime.now(UTC), latlon=(41.4036 + 0.004, 2.1566)))
        )
        other = "2"
        await api.post(f"/api/v1/requests/{other}/actions/assign", json={"worker": "@jordi"})
        await jordi.post(f"/api/v1/requests/{other}/actions/start")
        twice = await jordi.post(f"/api/v1/requests/{other}/actions/start")
        assert twice.status_code == 409 and twice.json()["allowed_actions"] == ["resolve"]
        moved = await api.post(
            f"/api/v1/requests/{rid}/actions/transfer",
            json={"note": "És de l'Eixample", "district_code": "02"},
        )
        assert moved.status_code == 200 and moved.json()["assigned_worker"] is None
        left = (await jordi.get("/api/v1/assignments")).json()["items"]
        assert [i["service_request_id"] for i in left] == [other]
        refused = await jordi.post(f"/api/v1/requests/{rid}/actions/resolve", json={"note": "Fet"})
        assert refused.status_code == 403


async def test_a_request_past_its_acknowledge_time_is_overdue(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Not acknowledged in time is overdue too, though its resolve-by time is days away."""
    await router(sessions)(as_event(classified("o1", at=datetime.now(UTC) - timedelta(hours=30))))
    page = (await api.get("/api/v1/districts/06/queue", params={"overdue": "true"})).json()
    assert [i["source_post_id"] for i in page["items"]] == ["o1"]
    [item] = page["items"]
    assert item["overdue"] and item["expected_datetime"] > datetime.now(UTC).isoformat()
    await api.post(f"/api/v1/requests/{item['service_request_id']}/actions/acknowledge")
    page = (await api.get("/api/v1/districts/06/queue", params={"overdue": "true"})).json()
    assert page["items"] == []


async def test_if_match_keeps_a_manager_from_undoing_what_they_did_not_see(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two managers read the request and each sends a worker: with the ETag of their read in
    If-Match, the second is told it changed (412) instead of sending a second worker."""
    rid = await open_request(sessions)
    read = await api.get(f"/api/v1/requests/{rid}")
    etag = read.headers["etag"]
    assert etag == f'"{read.json()["version"]}"'
    first = await api.post(
        f"/api/v1/requests/{rid}/actions/assign",
        json={"worker": "@jordi"},
        headers={"If-Match": etag},
    )
    assert first.status_code == 200 and first.headers["etag"] != etag
    second = await api.post(
        f"/api/v1/requests/{rid}/actions/assign",
        json={"worker": "@anna"},
        headers={"If-Match": etag},
    )
    assert (
        second.status_code == 412 and second.headers["content-type"] == "application/problem+json"
    )
    assert second.json()["version"] == first.json()["version"]
    assert (await api.get(f"/api/v1/requests/{rid}")).json()["assigned_worker"] == "@jordi"
    anyway = await api.post(
        f"/api/v1/requests/{rid}/actions/assign",
        json={"worker": "@anna"},
        headers={"If-Match": "*"},
    )
    assert anyway.status_code == 200
    bad = await api.post(f"/api/v1/requests/{rid}/actions/start", headers={"If-Match": '"seven"'})
    assert bad.status_code == 400 and "If-Match" in bad.json()["detail"]
    bulk = await api.post(
        "/api/v1/requests/actions/start",
        json={"service_request_ids": [int(rid)]},
        headers={"If-Match": etag},
    )
    assert bulk.status_code == 400 and "one request's version" in bulk.json()["detail"]
    # the same worker again would tell the citizen twice who was sent
    again = await api.post(f"/api/v1/requests/{rid}/actions/assign", json={"worker": "anna"})
    assert again.status_code == 422 and "already assigned to @anna" in again.json()["detail"]


async def test_a_published_photo_is_at_a_public_address(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rid = await open_request(sessions)
    await api.post(f"/api/v1/requests/{rid}/actions/acknowledge")
    for private in (
        "http://127.0.0.1:8000/a.jpg",
        "http://10.1.2.3/a.jpg",
        "http://[::1]/a.jpg",
        "http://localhost/a.jpg",
        "http://fotos.intranet/a.jpg",
        "http://nas/a.jpg",
    ):
        refused = await api.post(
            f"/api/v1/requests/{rid}/actions/resolve", json={"note": "Fet", "photo_url": private}
        )
        assert refused.status_code == 422, private
        assert "public address" in refused.json()["detail"], private
    done = await api.post(
        f"/api/v1/requests/{rid}/actions/resolve",
        json={"note": "Fet", "photo_url": "https://fotos.bcn.cat/a.jpg"},
    )
    assert done.status_code == 200


async def test_the_webhook_documents_the_post_it_takes(api: httpx.AsyncClient) -> None:
    """The gateway forwards the raw body to ingest, yet /docs shows the post's fields, what they
    take and the answer, as for every other endpoint."""
    operation = (await api.get("/openapi.json")).json()["paths"]["/api/v1/posts"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"platform", "post_id", "author_handle", "author_id", "text", "lat", "long"} <= set(
        schema["properties"]
    )
    assert set(schema["required"]) >= {"platform", "post_id", "author_handle", "text"}
    assert schema["additionalProperties"] is False  # a misspelt field is refused
    accepted = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert {"status", "post_id", "event_id"} <= set(accepted["properties"])
