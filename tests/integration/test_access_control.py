"""Access control on real PostgreSQL: every role against every endpoint. Nobody reads or changes
another district's data; tokens, keys, rate and size limits, CORS and problem+json."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from plaza.city import City
from plaza.db.models import RequestEvent, ServiceRequest
from plaza.lifecycle import Command, act
from plaza.policy import RoutingTable, SlaPolicy
from plaza.requests import Action
from plaza_api.access import AccessConfig
from plaza_api.auth import AuthConfig, Role
from plaza_api.limits import Limits
from plaza_router.sla_scanner import SlaScanner
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import PASSWORD, client, gateway, new_key, new_user
from tests.integration.lifecycle_helpers import as_event, classified, router

ROLES = (
    "anonymous",
    "civic_developer",
    "bridge",
    "worker",
    "manager_06",
    "manager_05",
    "city_hall",
    "admin",
)


@dataclass
class World:
    app: FastAPI
    app_clients: dict[str, httpx.AsyncClient]
    r06: int  # Gràcia, assigned to the worker @jordi
    r05: int  # Sarrià-Sant Gervasi
    triage: int
    hinted: int  # in triage, the classifier's unsure guess of Gràcia kept as a hint


def accepting_ingest() -> httpx.AsyncClient:
    """Ingest as a stub that accepts every post (the gateway's forwarding is what is tested)."""

    def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json={"status": "accepted"})

    return httpx.AsyncClient(transport=httpx.MockTransport(accept), base_url="http://ingest")


async def request_id(sessions: async_sessionmaker[AsyncSession], post_id: str) -> int:
    async with sessions() as s:
        return int(
            (
                await s.execute(
                    select(ServiceRequest.id).where(ServiceRequest.source_post_id == post_id)
                )
            ).scalar_one()
        )


@pytest.fixture
async def world(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[World]:
    now = datetime.now(UTC)
    route = router(sessions)
    await route(as_event(classified("g1", at=now, service_code="traffic", urgent=True)))
    await route(
        as_event(classified("s1", at=now, district="05", latlon=(41.4010, 2.1300), barri="25"))
    )
    await route(as_event(classified("t1", at=now, district="", latlon=None)))
    await route(
        as_event(classified("t2", at=now, latlon=None, confidence=0.3, service_code="cleaning"))
    )
    r06, r05, triage, hinted = (
        await request_id(sessions, "g1"),
        await request_id(sessions, "s1"),
        await request_id(sessions, "t1"),
        await request_id(sessions, "t2"),
    )
    async with sessions.begin() as s:
        await act(
            s,
            r06,
            Command(Action.ASSIGN, actor="setup", worker="@jordi"),
            now=now,
            sla=SlaPolicy.load(),
            routing=RoutingTable.load(),
            city=City.barcelona(),
        )
    await SlaScanner(sessions).scan_once(now + timedelta(hours=5))  # r06 escalates to city hall
    app = gateway(sessions, accepting_ingest())
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    async with client(app) as anonymous:
        login = await anonymous.post(
            "/api/v1/auth/token", data={"username": "maria", "password": PASSWORD}
        )
    assert login.status_code == 200, login.text
    credentials = {
        "anonymous": None,
        "civic_developer": await new_key(sessions, Role.CIVIC_DEVELOPER),
        "bridge": await new_key(sessions, Role.BRIDGE),
        "worker": await new_key(sessions, Role.WORKER, worker_handle="@jordi"),
        "manager_06": login.json()["access_token"],  # a logged-in user's JWT
        "manager_05": await new_key(sessions, Role.MANAGER, ["05"]),  # a manager's API key
        "city_hall": await new_key(sessions, Role.CITY_HALL),
        "admin": await new_key(sessions, Role.ADMIN),
    }
    clients = {role: client(app, key) for role, key in credentials.items()}
    yield World(app, clients, r06, r05, triage, hinted)
    for c in clients.values():
        await c.aclose()


def expect(*allowed: str, denied: int = 403, ok: int = 200) -> dict[str, int]:
    """The status each role gets: `ok` for the allowed, 401 for anonymous, `denied` for others."""
    return {
        role: ok if role in allowed else (401 if role == "anonymous" else denied) for role in ROLES
    }


EVERY_QUEUE = ("city_hall", "admin")


def matrix(w: World) -> list[tuple[str, str, dict[str, object] | None, dict[str, int]]]:
    """(method, path, JSON body, expected status per role) for every endpoint."""
    r06, r05, tr = w.r06, w.r05, w.triage
    return [
        # queues: a manager only theirs; triage and city-hall only city-wide roles
        ("GET", "/api/v1/districts/06/queue", None, expect("manager_06", *EVERY_QUEUE)),
        ("GET", "/api/v1/districts/05/queue", None, expect("manager_05", *EVERY_QUEUE)),
        ("GET", "/api/v1/districts/triage/queue", None, expect(*EVERY_QUEUE)),
        ("GET", "/api/v1/districts/city-hall/queue", None, expect(*EVERY_QUEUE)),
        ("GET", "/api/v1/districts/city-mobility/queue", None, expect(*EVERY_QUEUE)),
        (
            "GET",
            "/api/v1/districts/06/queue/events",
            None,
            expect("manager_06", *EVERY_QUEUE, ok=-1),
        ),
        (
            "GET",
            "/api/v1/districts/05/queue/events",
            None,
            expect("manager_05", *EVERY_QUEUE, ok=-1),
        ),
        # one request: its manager, its worker, city-wide roles
        ("GET", f"/api/v1/requests/{r06}", None, expect("worker", "manager_06", *EVERY_QUEUE)),
        ("GET", f"/api/v1/requests/{r05}", None, expect("manager_05", *EVERY_QUEUE)),
        ("GET", f"/api/v1/requests/{tr}", None, expect(*EVERY_QUEUE)),
        # a district guessed in triage is no scope: the manager of 06 does not see it
        ("GET", f"/api/v1/requests/{w.hinted}", None, expect(*EVERY_QUEUE)),
        (
            "POST",
            f"/api/v1/requests/{w.hinted}/actions/acknowledge",
            {},
            expect(*EVERY_QUEUE, ok=-1),
        ),
        (
            "GET",
            f"/api/v1/requests/{r06}/history",
            None,
            expect("worker", "manager_06", *EVERY_QUEUE),
        ),
        ("GET", f"/api/v1/requests/{r05}/history", None, expect("manager_05", *EVERY_QUEUE)),
        ("GET", "/api/v1/assignments", None, expect("worker")),
        ("GET", "/api/v1/assignments/events", None, expect("worker", ok=-1)),
        # a queue's places (the console's map): as its queue
        ("GET", "/api/v1/districts/06/queue/places", None, expect("manager_06", *EVERY_QUEUE)),
        ("GET", "/api/v1/districts/triage/queue/places", None, expect(*EVERY_QUEUE)),
        ("GET", "/api/v1/sla", None, expect("manager_06", "manager_05", *EVERY_QUEUE)),
        ("GET", "/api/v1/reports/monthly", None, expect(*EVERY_QUEUE)),
        ("GET", "/api/v1/admin/keys", None, expect("admin")),
        ("GET", "/api/v1/admin/users", None, expect("admin")),
        ("GET", "/api/v1/me", None, {**expect(*ROLES), "anonymous": 200}),
        # changes to another district's request are refused, and change nothing
        (
            "POST",
            f"/api/v1/requests/{r05}/actions/acknowledge",
            {},
            expect("manager_05", *EVERY_QUEUE, ok=-1),
        ),
        (
            "POST",
            f"/api/v1/requests/{r05}/notes",
            {"note": "x"},
            expect("manager_05", *EVERY_QUEUE, ok=-1),
        ),
        (
            "POST",
            f"/api/v1/requests/{r05}/split",
            {"platform": "mastodon", "post_id": "s1"},
            expect("manager_05", *EVERY_QUEUE, ok=-1),
        ),
        (
            "POST",
            f"/api/v1/requests/{r06}/actions/mark_duplicate",
            {"duplicate_of": r05},
            expect(*EVERY_QUEUE, ok=-1),
        ),
        (
            "POST",
            f"/api/v1/requests/{r06}/actions/close",
            {},
            expect("manager_06", *EVERY_QUEUE, ok=-1),
        ),
        # bulk: the call itself is staff-only; each item is checked (below)
        (
            "POST",
            "/api/v1/requests/actions/acknowledge",
            {"service_request_ids": [r05]},
            expect("worker", "manager_06", "manager_05", *EVERY_QUEUE, ok=-1),
        ),
        (
            "POST",
            "/api/v1/admin/keys",
            {"name": "x", "role": "civic_developer"},
            expect("admin", ok=-1),
        ),
        (
            "POST",
            "/api/v1/admin/users",
            {"username": "x", "password": "0123456789ab", "role": "city_hall"},
            expect("admin", ok=-1),
        ),
        ("DELETE", "/api/v1/admin/keys/1", None, expect("admin", ok=-1)),
        ("DELETE", "/api/v1/admin/users/1", None, expect("admin", ok=-1)),
        ("PATCH", "/api/v1/admin/users/1", {"scopes": ["05"]}, expect("admin", ok=-1)),
        # a post erased at its author's request to the city: admins only
        (
            "POST",
            "/api/v1/admin/withdrawals",
            {"platform": "x", "post_id": "no-such-post"},
            expect("admin"),
        ),
        # replies on their way to the platforms: managers (their districts' only), city-wide roles
        (
            "GET",
            "/api/v1/replies?state=failed",
            None,
            expect("manager_06", "manager_05", *EVERY_QUEUE),
        ),
        (
            "POST",
            "/api/v1/replies/no-such-reply/retry",
            None,
            expect("manager_06", "manager_05", *EVERY_QUEUE, ok=404),
        ),
        # the bridges' webhook
        (
            "POST",
            "/api/v1/posts",
            {"platform": "x", "post_id": "1", "author_handle": "@a", "text": "t"},
            expect("bridge", "admin", ok=202),
        ),
        (
            "POST",
            "/api/v1/posts/withdrawals",
            {"platform": "x", "post_id": "1", "author_handle": "@a"},
            expect("bridge", "admin", ok=202),
        ),
        # Open311 reads are public
        ("GET", "/open311/v2/requests.json", None, dict.fromkeys(ROLES, 200)),
        ("GET", f"/open311/v2/requests/{r05}.json", None, dict.fromkeys(ROLES, 200)),
        ("GET", "/open311/v2/discovery.json", None, dict.fromkeys(ROLES, 200)),
        ("GET", "/open311/v2/services.json", None, dict.fromkeys(ROLES, 200)),
        ("GET", "/open311/v2/services/streetlight.json", None, dict.fromkeys(ROLES, 200)),
        ("GET", "/open311/v2/tokens/no-such-token.json", None, dict.fromkeys(ROLES, 404)),
        ("GET", "/open311/v2/servicerequestupdates.json", None, dict.fromkeys(ROLES, 200)),
        # Open311's POST needs an app's key (Open311 answers a missing one with its own 403)
        (
            "POST",
            "/open311/v2/requests.json",
            None,
            {**expect("civic_developer", *EVERY_QUEUE, ok=-1), "anonymous": 403},
        ),
        # no credentials at all: a username and a password (none here: 422 for everyone)
        ("POST", "/api/v1/auth/token", None, dict.fromkeys(ROLES, 422)),
        ("GET", "/healthz", None, dict.fromkeys(ROLES, 200)),
    ]


async def test_the_matrix_has_every_route_of_the_app(world: World) -> None:
    """A route added without a row in the matrix (who may call it) fails here."""
    covered = [(method, path.partition("?")[0]) for method, path, _, _ in matrix(world)]
    missing = []
    for template, operations in world.app.openapi()["paths"].items():
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        for method in operations:
            if not any(m == method.upper() and pattern.match(p) for m, p in covered):
                missing.append(f"{method.upper()} {template}")
    assert missing == [], "routes without a row in matrix(): " + ", ".join(missing)


async def snapshot(sessions: async_sessionmaker[AsyncSession], rid: int) -> tuple[object, ...]:
    async with sessions() as s:
        r = await s.get(ServiceRequest, rid)
        assert r is not None
        events = (
            await s.execute(
                select(func.count())
                .select_from(RequestEvent)
                .where(RequestEvent.service_request_id == rid)
            )
        ).scalar_one()
        return (r.status, r.version, r.reporters_count, r.queue, events)


async def test_every_role_against_every_endpoint(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    before_05 = await snapshot(sessions, world.r05)
    wrong: list[str] = []
    for method, path, body, expected in matrix(world):
        for role in ROLES:
            want = expected[role]
            if want == -1:
                continue  # allowed, but it would change the data (or stream): tested below
            response = await world.app_clients[role].request(method, path, json=body)
            if response.status_code != want:
                wrong.append(f"{role} {method} {path}: {response.status_code}, wanted {want}")
            elif want >= 400:
                problem = response.headers["content-type"]
                if path.startswith("/open311/"):
                    assert isinstance(response.json(), list)
                elif problem != "application/problem+json":
                    wrong.append(f"{role} {method} {path}: {problem}, not problem+json")
    assert wrong == [], "\n".join(wrong)
    assert await snapshot(sessions, world.r05) == before_05, "a refused change changed data"


async def test_a_manager_sees_only_their_districts_requests(world: World) -> None:
    queue = (await world.app_clients["manager_06"].get("/api/v1/districts/06/queue")).json()
    assert {i["district_code"] for i in queue["items"]} == {"06"}
    assert [i["service_request_id"] for i in queue["items"]] == [str(world.r06)]
    bulk = await world.app_clients["manager_06"].post(
        "/api/v1/requests/actions/assign",
        json={"service_request_ids": [world.r06, world.r05, 999], "worker": "@anna"},
    )
    results = {r["service_request_id"]: r["status"] for r in bulk.json()["results"]}
    assert results == {str(world.r06): 200, str(world.r05): 403, "999": 404}
    duplicate = await world.app_clients["manager_06"].post(
        f"/api/v1/requests/{world.r06}/actions/mark_duplicate", json={"duplicate_of": world.r05}
    )
    assert duplicate.status_code == 403
    assert duplicate.json()["detail"] == (
        f"request {world.r05}, its duplicate, is in queue '05', district 05; "
        "you are a manager of 06"
    )
    other = await world.app_clients["manager_06"].get(f"/api/v1/requests/{world.r05}")
    assert other.json()["detail"] == (
        f"request {world.r05} is in queue '05', district 05; you are a manager of 06"
    )


async def test_a_worker_starts_and_resolves_only_what_is_theirs(world: World) -> None:
    worker = world.app_clients["worker"]
    mine = (await worker.get("/api/v1/assignments")).json()
    assert [i["service_request_id"] for i in mine["items"]] == [str(world.r06)]
    refused = await worker.post(
        f"/api/v1/requests/{world.r06}/actions/transfer", json={"note": "x", "district_code": "05"}
    )
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "a worker may resolve or start a request assigned to them, not transfer it"
    )
    started = await worker.post(f"/api/v1/requests/{world.r06}/actions/start", json={})
    assert started.status_code == 200 and started.json()["status"] == "in_progress"
    resolved = await worker.post(
        f"/api/v1/requests/{world.r06}/actions/resolve", json={"note": "Semàfor reparat"}
    )
    assert resolved.json()["status"] == "resolved"
    history = (await worker.get(f"/api/v1/requests/{world.r06}/history")).json()
    assert history[-1]["actor"] == "key:worker-@jordi"  # the caller, not a claimed name
    other = await worker.post(f"/api/v1/requests/{world.r05}/actions/start", json={})
    assert other.status_code == 403
    assert other.json()["detail"].endswith("you are the worker @jordi: what is assigned to you")


async def test_admins_manage_keys_and_users_and_revoked_keys_stop_working(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admin = world.app_clients["admin"]
    made = await admin.post(
        "/api/v1/admin/keys", json={"name": "app", "role": "manager", "scopes": ["05"]}
    )
    assert made.status_code == 201
    key = made.json()["key"]
    assert key.startswith("plz_") and made.json()["prefix"] == key[:10]
    listed = (await admin.get("/api/v1/admin/keys")).json()
    assert all("key" not in k and "key_hash" not in k for k in listed)
    app = world.app
    async with client(app, key) as new:
        assert (await new.get("/api/v1/districts/05/queue")).status_code == 200
        assert (await admin.delete(f"/api/v1/admin/keys/{made.json()['id']}")).status_code == 204
        gone = await new.get("/api/v1/districts/05/queue")
        assert gone.status_code == 401
    bad = await admin.post("/api/v1/admin/keys", json={"name": "m", "role": "manager"})
    assert bad.status_code == 422 and "scope" in bad.json()["detail"]
    # a worker's handle is stored as assignments store it, with its @
    worker = await admin.post(
        "/api/v1/admin/keys", json={"name": "w", "role": "worker", "worker_handle": "pere"}
    )
    assert worker.status_code == 201 and worker.json()["worker_handle"] == "@pere"
    spaced = await admin.post(
        "/api/v1/admin/keys", json={"name": "w", "role": "worker", "worker_handle": "pere pi"}
    )
    assert spaced.status_code == 422 and "not a public handle" in spaced.json()["detail"]
    user = await admin.post(
        "/api/v1/admin/users",
        json={"username": "pau", "password": "a long passphrase", "role": "city_hall"},
    )
    assert user.status_code == 201
    async with client(app) as anonymous:
        token = await anonymous.post(
            "/api/v1/auth/token", data={"username": "pau", "password": "a long passphrase"}
        )
        assert token.status_code == 200 and token.json()["token_type"] == "bearer"
        wrong = await anonymous.post(
            "/api/v1/auth/token", data={"username": "pau", "password": "not it at all"}
        )
        assert wrong.status_code == 401
        assert wrong.headers["content-type"] == "application/problem+json"
    # A password with a non-ASCII character, sent as raw UTF-8 bytes (as `curl -d` does), not
    # percent-encoded: read as UTF-8, not as Latin-1.
    accented = await admin.post(
        "/api/v1/admin/users",
        json={"username": "núria", "password": "contrasenya amb ñ i ç", "role": "city_hall"},
    )
    assert accented.status_code == 201
    async with client(app) as anonymous:
        raw = await anonymous.post(
            "/api/v1/auth/token",
            content="username=núria&password=contrasenya amb ñ i ç".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert raw.status_code == 200, raw.text
    issued = token.json()["access_token"]
    async with client(app, issued) as pau:
        assert (await pau.get("/api/v1/districts/06/queue")).status_code == 200
        assert (await admin.delete(f"/api/v1/admin/users/{user.json()['id']}")).status_code == 204
        # the token issued before stops working too (within the key cache's 30 s on other
        # gateways; at once on this one, which disabled the user)
        stopped = await pau.get("/api/v1/districts/06/queue")
        assert stopped.status_code == 401 and stopped.json()["detail"] == "user 'pau' is disabled"
    async with client(app) as anonymous:
        disabled = await anonymous.post(
            "/api/v1/auth/token", data={"username": "pau", "password": "a long passphrase"}
        )
        assert disabled.status_code == 401


VALID_SCOPES = (
    "01 (Ciutat Vella), 02 (Eixample), 03 (Sants-Montjuïc), 04 (Les Corts), "
    "05 (Sarrià-Sant Gervasi), 06 (Gràcia), 07 (Horta-Guinardó), 08 (Nou Barris), "
    "09 (Sant Andreu), 10 (Sant Martí), triage, city-mobility"
)


async def test_a_managers_scopes_are_queues_of_the_city(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A scope that is no queue (a 403 on every queue later) is refused when the key or user is
    made, naming it and listing the queues; a district's number without its zero is its code."""
    app = gateway(sessions)
    async with client(app, await new_key(sessions, Role.ADMIN)) as admin:
        for path, body in (
            ("/api/v1/admin/keys", {"name": "k"}),
            ("/api/v1/admin/users", {"username": "u", "password": "a long passphrase"}),
        ):
            for scopes, bad in (
                (["99"], "scope '99' is not a queue"),
                (["06", "gracia", "city hall"], "scopes 'gracia', 'city hall' are not queues"),
                (["city-hall"], "the escalated requests are city hall's (role city_hall)"),
            ):
                refused = await admin.post(path, json={**body, "role": "manager", "scopes": scopes})
                assert refused.status_code == 422, (path, scopes, refused.text)
                assert refused.headers["content-type"] == "application/problem+json"
                detail = refused.json()["detail"]
                assert bad in detail and detail.endswith(VALID_SCOPES), detail
            none = await admin.post(path, json={**body, "role": "manager"})
            assert none.status_code == 422 and none.json()["detail"].endswith(VALID_SCOPES)
        made = await admin.post(
            "/api/v1/admin/keys", json={"name": "gracia", "role": "manager", "scopes": ["6"]}
        )
        assert made.status_code == 201 and made.json()["scopes"] == ["06"], made.text
        user = await admin.post(
            "/api/v1/admin/users",
            json={
                "username": "maria",
                "password": PASSWORD,
                "role": "manager",
                "scopes": ["triage", "city-mobility", "5"],
            },
        )
        assert user.json()["scopes"] == ["05", "city-mobility", "triage"], user.text
        listed = (await admin.get("/api/v1/admin/keys")).json()
        assert [k["name"] for k in listed] == ["admin-all", "gracia"]  # nothing refused was made
    async with client(app, made.json()["key"]) as gracia:
        assert (await gracia.get("/api/v1/districts/06/queue")).status_code == 200
    async with client(app) as anonymous:
        token = await anonymous.post(
            "/api/v1/auth/token", data={"username": "maria", "password": PASSWORD}
        )
    async with client(app, token.json()["access_token"]) as maria:
        assert (await maria.get("/api/v1/districts/05/queue")).status_code == 200


async def test_the_keys_roles_are_refused_for_users(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app = gateway(sessions)
    async with client(app, await new_key(sessions, Role.ADMIN)) as admin:
        for role in ("civic_developer", "bridge"):
            refused = await admin.post(
                "/api/v1/admin/users",
                json={"username": "app", "password": "a long passphrase", "role": role},
            )
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["detail"] == (
                f"role: role {role} is for API keys (apps and bridges), not users; "
                "a user is one of: worker, manager, city_hall, admin"
            )
            key = await admin.post("/api/v1/admin/keys", json={"name": role, "role": role})
            assert key.status_code == 201  # for a key, the same role is right
        assert (await admin.get("/api/v1/admin/users")).json() == []


async def test_a_key_without_bearer_is_told_what_authorization_takes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A key without "Bearer ", or another scheme, is a 401 that says what Authorization takes
    (not "this needs credentials", nor a quiet anonymous call)."""
    app = gateway(sessions)
    key = await new_key(sessions, Role.CITY_HALL)
    async with client(app) as anonymous:
        for authorization, had in (
            (key, "no scheme (a bare key or token)"),
            (f"Basic {key}", "the scheme 'Basic'"),
            ("Bearer ", "no credential"),
        ):
            for path in (
                "/api/v1/districts/06/queue",  # the queue's short way in
                "/api/v1/districts/06/queue?overdue=1",  # its FastAPI handler
                "/api/v1/me",  # open to anonymous callers: still no quiet downgrade
            ):
                refused = await anonymous.get(path, headers={"Authorization": authorization})
                assert refused.status_code == 401, (authorization, path, refused.text)
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.json()["detail"] == (
                    f"Authorization must be 'Bearer <key or token>'; it had {had}"
                )
                assert key not in refused.text
        both = await anonymous.get(
            "/api/v1/me", headers={"Authorization": "Basic eDp5", "X-API-Key": key}
        )
        assert both.status_code == 200 and both.json()["role"] == "city_hall"
        # a token (or anything but a key) in X-API-Key is told so, not "invalid bearer token"
        for header_key in ("not-a-key", "a.b.c"):
            wrong = await anonymous.get("/api/v1/me", headers={"X-API-Key": header_key})
            assert wrong.status_code == 401, wrong.text
            detail = wrong.json()["detail"]
            assert detail.startswith("X-API-Key is not an API key"), detail
            assert "plz_" in detail and "bearer token" not in detail and header_key not in detail


async def test_a_json_login_is_told_the_endpoint_takes_a_form(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await new_user(sessions, "jan", Role.CITY_HALL)
    async with client(gateway(sessions)) as anonymous:
        as_json = await anonymous.post(
            "/api/v1/auth/token", json={"username": "jan", "password": PASSWORD}
        )
        assert as_json.status_code == 415, as_json.text
        assert as_json.headers["content-type"] == "application/problem+json"
        detail = as_json.json()["detail"]
        assert "username and password form-encoded" in detail, detail
        assert "application/x-www-form-urlencoded" in detail, detail
        as_form = await anonymous.post(
            "/api/v1/auth/token", data={"username": "jan", "password": PASSWORD}
        )
        assert as_form.status_code == 200


async def test_bad_tokens_are_refused_not_downgraded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await new_user(sessions, "jan", Role.CITY_HALL)
    app = gateway(sessions, access=AccessConfig(auth=AuthConfig(token_ttl=timedelta(seconds=-1))))
    async with client(app) as anonymous:
        expired = (
            await anonymous.post(
                "/api/v1/auth/token", data={"username": "jan", "password": PASSWORD}
            )
        ).json()["access_token"]
    other_app = gateway(sessions)  # another secret: its tokens mean nothing here
    for token in (expired, "plz_not-a-key", "not.a.jwt"):
        async with client(app, token) as c:
            response = await c.get("/open311/v2/requests.json")
            assert response.status_code == 403, token  # Open311 says 403 for a bad key
            response = await c.get("/api/v1/districts/06/queue")
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
    async with client(other_app) as anonymous:
        fresh = (
            await anonymous.post(
                "/api/v1/auth/token", data={"username": "jan", "password": PASSWORD}
            )
        ).json()["access_token"]
    async with client(app, fresh) as c:
        assert (await c.get("/api/v1/districts/06/queue")).status_code == 401


async def test_rate_limits_answer_429_with_retry_after(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app = gateway(
        sessions, access=AccessConfig(limits=Limits(per_key_per_minute=3, anonymous_per_minute=2))
    )
    key = await new_key(sessions, Role.CITY_HALL)
    async with client(app, key) as c:
        statuses = [(await c.get("/api/v1/districts/06/queue")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await c.get("/api/v1/districts/06/queue")
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["detail"].startswith(
            "rate limit exceeded: 3 requests a minute for key:city_hall-all; retry in"
        )
    other = await new_key(sessions, Role.CITY_HALL, name="another")
    async with client(app, other) as c:  # a budget per key
        assert (await c.get("/api/v1/districts/06/queue")).status_code == 200
    async with client(app) as anonymous:
        await anonymous.get("/open311/v2/services.json")
        await anonymous.get("/open311/v2/services.json")
        limited = await anonymous.get("/open311/v2/services.json")
        assert limited.status_code == 429 and "retry-after" in limited.headers
        assert limited.json()[0]["code"] == 429  # Open311's format under /open311/
        assert (
            "2 requests a minute without credentials, per address"
            in (limited.json()[0]["description"])
        )


async def test_a_users_failed_logins_are_counted_from_every_address_together(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Each address had its own budget alone: a password guessed from many addresses got 120
    tries a minute from each. A user name's failures are counted together, and once they are
    spent the right password waits too (a 200 among 429s would tell which guess was right)."""
    limits = Limits(anonymous_per_minute=2, failed_logins_per_user=3)
    app = gateway(sessions, access=AccessConfig(limits=limits))
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    await new_user(sessions, "anna", Role.MANAGER, ["05"])

    async def login(address: str, username: str, password: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(address, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://plaza") as c:
            return await c.post(
                "/api/v1/auth/token", data={"username": username, "password": password}
            )

    guesses = [(await login(f"198.51.100.{n}", "maria", f"guess-{n}")) for n in range(5)]
    assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
    assert "too many failed logins for 'maria'" in guesses[3].json()["detail"]
    assert int(guesses[3].headers["retry-after"]) > 0
    assert (await login("203.0.113.1", "maria", PASSWORD)).status_code == 429
    assert (await login("203.0.113.1", "anna", PASSWORD)).status_code == 200


async def test_a_key_rides_in_a_url_only_to_the_live_updates(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """URLs end up in proxies' logs and browsers' history: ?api_key= and ?access_token= are
    for EventSource's live updates alone, which cannot send headers."""
    app = gateway(sessions)
    key = await new_key(sessions, Role.CITY_HALL)
    async with client(app) as anonymous:
        for name in ("api_key", "access_token"):
            refused = await anonymous.get("/api/v1/districts/06/queue", params={name: key})
            assert refused.status_code == 401, name
            assert "only for live updates" in refused.json()["detail"]
    async with client(app, key) as bearer:
        assert (await bearer.get("/api/v1/districts/06/queue")).status_code == 200


async def test_a_bridge_with_scopes_posts_for_its_platforms_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A bridge chooses the platform, post and author it hands over, so the city's accounts
    answer whatever it says; a key can be bound to the platforms its bridge serves."""
    app = gateway(sessions, accepting_ingest())
    admin = await new_key(sessions, Role.ADMIN)
    async with client(app, admin) as c:
        made = await c.post(
            "/api/v1/admin/keys", json={"name": "m", "role": "bridge", "scopes": ["mastodon"]}
        )
        assert made.status_code == 201 and made.json()["scopes"] == ["mastodon"]
        wrong = await c.post(
            "/api/v1/admin/keys", json={"name": "m", "role": "bridge", "scopes": ["open311"]}
        )
        assert wrong.status_code == 422 and "platforms it posts for" in wrong.json()["detail"]
    post = {"post_id": "1", "author_handle": "@a", "text": "Fanal apagat"}
    async with client(app, made.json()["key"]) as bridge:
        ok = await bridge.post("/api/v1/posts", json={**post, "platform": "mastodon"})
        assert ok.status_code == 202
        other = await bridge.post("/api/v1/posts", json={**post, "platform": "x"})
        assert other.status_code == 403
        assert other.json()["detail"] == "this bridge key posts for mastodon, not for 'x'"
        # Bodies ingest's parser reads and the gateway's (orjson) does not: a byte order mark,
        # a lone surrogate. Forwarded unread, the first was ingest's post for X from a Mastodon
        # bridge.
        for unread in (
            b'\xef\xbb\xbf{"platform": "x", "post_id": "2", "author_handle": "@a", "text": "t"}',
            b'{"platform": "x", "post_id": "3", "author_handle": "@a", "text": "\\ud800"}',
        ):
            sneaked = await bridge.post(
                "/api/v1/posts", content=unread, headers={"content-type": "application/json"}
            )
            assert sneaked.status_code == 422, sneaked.text
            assert "posts for mastodon only" in sneaked.json()["detail"]
        # A post deleted: the same scopes (a Mastodon bridge withdraws no X post).
        withdrawal = {"platform": "x", "post_id": "1", "author_id": "9"}
        refused = await bridge.post("/api/v1/posts/withdrawals", json=withdrawal)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "this bridge key posts for mastodon, not for 'x'"
        sneaked = await bridge.post(
            "/api/v1/posts/withdrawals",
            content=b'\xef\xbb\xbf{"platform": "x", "post_id": "1", "author_id": "9"}',
            headers={"content-type": "application/json"},
        )
        assert sneaked.status_code == 422, sneaked.text
        mine = await bridge.post(
            "/api/v1/posts/withdrawals", json={**withdrawal, "platform": "mastodon"}
        )
        assert mine.status_code == 202, mine.text
    async with client(app, await new_key(sessions, Role.BRIDGE)) as any_platform:
        assert (
            await any_platform.post("/api/v1/posts", json={**post, "platform": "x"})
        ).status_code == 202


async def test_an_ingest_that_dies_mid_request_is_a_503_not_a_500(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Killing ingest under load tore connections down inside httpcore, which raised an
    AttributeError, not an httpx error: the gateway answered 500."""

    def torn(request: httpx.Request) -> httpx.Response:
        raise AttributeError("'NoneType' object has no attribute 'getpeername'")

    ingest = httpx.AsyncClient(transport=httpx.MockTransport(torn), base_url="http://ingest")
    app = gateway(sessions, ingest)
    post = {"platform": "mastodon", "post_id": "1", "author_handle": "@a", "text": "Fanal"}
    async with client(app, await new_key(sessions, Role.BRIDGE)) as bridge:
        answer = await bridge.post("/api/v1/posts", json=post)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["detail"] == "ingest is unavailable: AttributeError"
    form = {"service_code": "streetlight", "lat": "41.4036", "long": "2.1566"}
    async with client(app) as civic:
        posted = await civic.post(
            "/open311/v2/requests.json",
            data={**form, "api_key": await new_key(sessions, Role.CIVIC_DEVELOPER)},
        )
    assert posted.status_code == 503 and posted.json()[0]["code"] == 503
    await ingest.aclose()


async def test_guessing_keys_costs_the_address_its_budget(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Wrong keys are rate limited per address as anonymous calls are: 400 guesses used to get
    400 answers of 401 (each a query), never a 429."""
    app = gateway(sessions, access=AccessConfig(limits=Limits(anonymous_per_minute=2)))
    statuses = []
    for n in range(3):
        async with client(app, f"plz_guess{n}") as guess:
            statuses.append((await guess.get("/api/v1/districts/06/queue")).status_code)
    async with client(app) as guess:
        wrong = await guess.get("/open311/v2/services.json", params={"api_key": "plz_guess"})
    assert statuses == [401, 401, 429] and wrong.status_code == 429


async def test_oversized_bodies_are_refused_and_cors_is_for_public_reads_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app = gateway(sessions, access=AccessConfig(limits=Limits(max_body_bytes=2048)))
    key = await new_key(sessions, Role.BRIDGE)
    async with client(app, key) as c:
        big = {"platform": "x", "post_id": "1", "author_handle": "@a", "text": "x" * 5000}
        response = await c.post("/api/v1/posts", json=big)
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        form = await c.post("/open311/v2/requests.xml", data={"description": "x" * 5000})
        assert form.status_code == 413 and form.text.endswith("</errors>")
        preflight = await c.options(
            "/open311/v2/requests.json",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        public = await c.get("/open311/v2/services.json", headers={"Origin": "https://a.example"})
        assert public.headers["access-control-allow-origin"] == "*"
        private = await c.get("/api/v1/me", headers={"Origin": "https://a.example"})
        assert "access-control-allow-origin" not in private.headers


async def test_every_answer_has_the_security_headers_and_staff_data_is_never_stored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Answers had no security headers at all: a token's answer, a request's reports or an
    admin's list of keys could be kept in a browser's or a proxy's cache, any page could frame
    the API, and a live updates URL (its token in ?access_token=) went out as a Referer."""
    app = gateway(sessions, access=AccessConfig(limits=Limits(max_body_bytes=2048)))
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    key = await new_key(sessions, Role.ADMIN)
    async with client(app) as anonymous:
        login = await anonymous.post(
            "/api/v1/auth/token", data={"username": "maria", "password": PASSWORD}
        )
        answers = {
            "login": login,
            "wrong login": await anonymous.post(
                "/api/v1/auth/token", data={"username": "maria", "password": "wrong-one"}
            ),
            "open311": await anonymous.get("/open311/v2/services.json"),
            "413": await anonymous.post("/open311/v2/requests.json", content=b"x" * 5000),
        }
    async with client(app, key) as admin:
        answers["keys"] = await admin.get("/api/v1/admin/keys")
        answers["queue"] = await admin.get("/api/v1/districts/06/queue")
        answers["docs"] = await admin.get("/docs")
    assert [answers["login"].status_code, answers["413"].status_code] == [200, 413]
    for name, answer in answers.items():
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert answer.headers.get("x-frame-options") == "DENY", name
        assert answer.headers.get("content-security-policy") == "frame-ancestors 'none'", name
        assert answer.headers.get("referrer-policy") == "no-referrer", name
        assert "strict-transport-security" not in answer.headers, name  # no https public URL
        stored = answer.headers.get("cache-control")
        assert (stored is None) if name in ("open311", "413", "docs") else stored == "no-store", (
            name
        )
    https = AccessConfig(public_url="https://plaza.example.org")
    async with client(gateway(sessions, access=https)) as anonymous:
        healthz = await anonymous.get("/healthz")
    assert healthz.headers["strict-transport-security"] == "max-age=31536000"


def plaza(
    database_url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from plaza_cli.main import main; main()", *args],
        env={**os.environ, "PLAZA_DATABASE_URL": database_url, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_makes_keys_and_users_that_the_gateway_accepts(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    made = await asyncio.to_thread(
        plaza,
        database_url,
        "keys",
        "create",
        "--name",
        "gracia",
        "--role",
        "manager",
        "--scope",
        "06",
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # the key alone on the last line
    assert key.startswith("plz_") and " " not in key
    user = await asyncio.to_thread(
        plaza,
        database_url,
        "users",
        "create",
        "anna",
        "--role",
        "worker",
        "--worker-handle",
        "@anna",
        "--password-stdin",
        stdin="una contrasenya llarga\n",
    )
    assert user.returncode == 0, user.stderr
    refused = await asyncio.to_thread(
        plaza, database_url, "keys", "create", "--name", "m", "--role", "manager"
    )
    assert refused.returncode == 2 and "scope" in refused.stderr
    listed = await asyncio.to_thread(plaza, database_url, "keys", "list")
    assert "gracia" in listed.stdout and key not in listed.stdout
    app = gateway(sessions)
    async with client(app, key) as manager:
        assert (await manager.get("/api/v1/districts/06/queue")).status_code == 200
        assert (await manager.get("/api/v1/districts/05/queue")).status_code == 403
    async with client(app) as anonymous:
        token = await anonymous.post(
            "/api/v1/auth/token", data={"username": "anna", "password": "una contrasenya llarga"}
        )
        assert token.status_code == 200


async def test_the_cli_refuses_scopes_and_roles_the_gateway_would_not_honour(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """One line on stderr and exit 2, before any password is asked for; "6" is Gràcia's 06."""
    for args, said in (
        (
            ("keys", "create", "--name", "t", "--role", "manager", "--scope", "gracia"),
            "plaza keys: scope 'gracia' is not a queue of the city; a manager's scopes are: ",
        ),
        (
            ("users", "create", "m", "--role", "manager", "--scope", "99"),
            "plaza users: scope '99' is not a queue of the city; a manager's scopes are: ",
        ),
        (
            ("users", "create", "b", "--role", "bridge"),
            "plaza users: role bridge is for API keys (apps and bridges), not users; "
            "a user is one of: worker, manager, city_hall, admin",
        ),
    ):
        refused = await asyncio.to_thread(plaza, database_url, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert refused.stderr.startswith(said) and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stdout == ""
        if "manager" in args:
            assert refused.stderr.rstrip().endswith(VALID_SCOPES), refused.stderr
    made = await asyncio.to_thread(
        plaza, database_url, "keys", "create", "--name", "t", "--role", "manager", "--scope", "6"
    )
    assert made.returncode == 0, made.stderr
    assert "role manager, scopes 06" in made.stdout
    async with client(gateway(sessions), made.stdout.strip().splitlines()[-1]) as manager:
        assert (await manager.get("/api/v1/districts/06/queue")).status_code == 200
    listed = await asyncio.to_thread(plaza, database_url, "users", "list")
    assert listed.stdout == ""  # nothing refused was made


async def test_a_first_start_gets_one_admin_key_that_the_gateway_accepts(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """`plaza keys first-admin` (what `make up` runs): on a database with no keys and no users an
    admin key in PLAZA_HOME/admin_key; on every later start, the same key and nothing new."""
    home = {"PLAZA_HOME": str(tmp_path), "PLAZA_PORT": "8123"}
    first = await asyncio.to_thread(plaza, database_url, "keys", "first-admin", env=home)
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "admin_key"
    key = saved.read_text().strip()
    assert key.startswith("plz_") and key in first.stdout
    assert "http://127.0.0.1:8123/api/v1/districts/06/queue" in first.stdout
    assert saved.stat().st_mode & 0o077 == 0  # the owner's alone
    again = await asyncio.to_thread(plaza, database_url, "keys", "first-admin", env=home)
    assert again.returncode == 0 and key not in again.stdout
    assert saved.read_text().strip() == key
    listed = await asyncio.to_thread(plaza, database_url, "keys", "list")
    assert listed.stdout.count("\t") == 5 and "embedded-admin\tadmin" in listed.stdout  # one key
    async with client(gateway(sessions), key) as admin:
        assert (await admin.get("/api/v1/admin/keys")).status_code == 200

    elsewhere = tmp_path / "elsewhere"  # a database that has keys already: no new one
    made = await asyncio.to_thread(
        plaza, database_url, "keys", "first-admin", env={"PLAZA_HOME": str(elsewhere)}
    )
    assert made.returncode == 0 and not (elsewhere / "admin_key").exists()
    assert "plaza keys create" in made.stdout
