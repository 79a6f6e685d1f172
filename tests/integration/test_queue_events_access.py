"""Who a queue's live updates (Server-Sent Events) reach while the stream lasts: a revoked key,
an expired token, a disabled user or a lost scope ends it; a request that left the caller's
scopes is named by its id alone, live and on replay."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from plaza.db.models import ApiKey, StaffUser
from plaza_api import manager
from plaza_api.access import AccessConfig
from plaza_api.auth import AuthConfig, Role, hash_api_key
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.api_helpers import PASSWORD, Server, gateway, new_key, new_user
from tests.integration.lifecycle_helpers import as_event, classified, router

EVENTS = "/api/v1/districts/06/queue/events"


def access(auth: AuthConfig | None = None) -> AccessConfig:
    return AccessConfig(auth=auth or AuthConfig(), sse_poll_seconds=0.05)


async def until_end(lines: AsyncIterator[str]) -> dict[str, object]:
    """The stream's last event (`event: end`), after which the stream must close."""
    name = None
    async for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: ") and name == "end":
            end: dict[str, object] = json.loads(line[len("data: ") :])
            assert [rest async for rest in lines if rest] == [], "the stream went on after end"
            return end
    raise AssertionError("the stream closed without an end event")


async def data_events(lines: AsyncIterator[str], n: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    async for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
            if len(events) == n:
                return events
    raise AssertionError(f"the stream ended after {len(events)} events")


async def login(http: httpx.AsyncClient, username: str) -> str:
    token = await http.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


async def test_a_revoked_key_ends_its_stream_within_the_key_cache_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Revoked elsewhere (the CLI, another gateway): within key_cache_seconds. Revoked on this
    gateway: at once, though the cache here is the default 30 s."""
    cached = await new_key(sessions, Role.MANAGER, ["06"], name="cached")
    here = await new_key(sessions, Role.MANAGER, ["06"], name="here")
    admin = await new_key(sessions, Role.ADMIN)
    async with (
        Server(gateway(sessions, access=access(AuthConfig(key_cache_seconds=0.5)))) as short,
        Server(gateway(sessions, access=access())) as default,
        httpx.AsyncClient(base_url=short.url, timeout=10) as http,
        httpx.AsyncClient(base_url=default.url, timeout=10) as other,
    ):
        async with http.stream("GET", f"{EVENTS}?access_token={cached}") as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 3000"
            async with sessions.begin() as session:  # as `plaza keys revoke` does
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.key_hash == hash_api_key(cached))
                    .values(revoked_at=datetime.now(UTC))
                )
            revoked = time.monotonic()
            end = await asyncio.wait_for(until_end(lines), 5)
            assert time.monotonic() - revoked < 0.5 + 1.5
        assert end == {"status": 401, "detail": "unknown or revoked API key"}
        again = await http.get(EVENTS, headers={"Authorization": f"Bearer {cached}"})
        assert again.status_code == 401  # so an EventSource reconnecting stops

        async with other.stream("GET", EVENTS, headers={"X-API-Key": here}) as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 3000"
            keys = (await other.get("/api/v1/admin/keys", headers={"X-API-Key": admin})).json()
            [key_id] = [k["id"] for k in keys if k["name"] == "here"]
            deleted = await other.delete(
                f"/api/v1/admin/keys/{key_id}", headers={"X-API-Key": admin}
            )
            assert deleted.status_code == 204
            end = await asyncio.wait_for(until_end(lines), 5)
        assert end["status"] == 401


async def test_a_token_ends_its_stream_at_its_expiry(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    app = gateway(sessions, access=access(AuthConfig(token_ttl=timedelta(seconds=2))))
    async with Server(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        token = await login(http, "maria")
        async with http.stream("GET", f"{EVENTS}?access_token={token}") as stream:
            assert stream.status_code == 200
            end = await asyncio.wait_for(until_end(stream.aiter_lines()), 6)
        assert end["status"] == 401 and "expired" in str(end["detail"])
        assert (await http.get(f"{EVENTS}?access_token={token}")).status_code == 401


async def test_a_disabled_user_s_stream_ends_and_may_not_reopen(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Their token is good until it expires (an hour here), but not for a stream."""
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    admin = {"X-API-Key": await new_key(sessions, Role.ADMIN)}
    app = gateway(sessions, access=access(AuthConfig(key_cache_seconds=0.3)))
    async with Server(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        token = await login(http, "maria")
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.stream("GET", EVENTS, headers=bearer) as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 3000"
            users = (await http.get("/api/v1/admin/users", headers=admin)).json()
            [maria] = [u["id"] for u in users if u["username"] == "maria"]
            assert (await http.delete(f"/api/v1/admin/users/{maria}", headers=admin)).is_success
            end = await asyncio.wait_for(until_end(lines), 5)
        assert end["status"] == 401 and "user 'maria' is disabled" in str(end["detail"])
        reopened = await http.get(EVENTS, headers=bearer)
        assert reopened.status_code == 401
        assert "user 'maria' is disabled" in reopened.json()["detail"]


async def test_a_stream_ends_when_the_queue_is_no_longer_in_the_callers_scopes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    key = await new_key(sessions, Role.MANAGER, ["06"], name="gracia")
    app = gateway(sessions, access=access(AuthConfig(key_cache_seconds=0.3)))
    async with Server(app) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        token = await login(http, "maria")
        for credential, row, which in (
            (token, StaffUser, StaffUser.username == "maria"),
            (key, ApiKey, ApiKey.name == "gracia"),
        ):
            async with http.stream("GET", f"{EVENTS}?access_token={credential}") as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == "retry: 3000"
                async with sessions.begin() as session:
                    await session.execute(update(row).where(which).values(scopes=["03"]))
                end = await asyncio.wait_for(until_end(lines), 5)
            assert end["status"] == 403, row
            assert str(end["detail"]).startswith("queue '06' is not yours: you are a manager of 03")


async def test_checking_credentials_again_costs_no_query_most_polls(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A key is read again once its cache time is up, a user's row once per cache time: over
    40 polls within that time, neither is read (the stream's opening read both)."""
    await new_user(sessions, "maria", Role.MANAGER, ["06"])
    key = await new_key(sessions, Role.MANAGER, ["06"])
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    async with (
        Server(gateway(sessions, access=access())) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        token = await login(http, "maria")
        for credential in (key, token):
            async with http.stream("GET", f"{EVENTS}?access_token={credential}") as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == "retry: 3000"
                await asyncio.sleep(0.1)  # the first poll is done
                event.listen(engine.sync_engine, "before_cursor_execute", record)
                try:
                    await asyncio.sleep(40 * 0.05)
                finally:
                    event.remove(engine.sync_engine, "before_cursor_execute", record)
    polls = [s for s in statements if "request_events" in s]
    assert len(polls) >= 2 * 20, len(polls)  # it did poll
    assert [s for s in statements if "api_keys" in s or "staff_users" in s] == []


async def test_a_request_that_left_the_callers_scopes_is_named_by_its_id_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Transferred from 06 to 03 and assigned there: 06's manager, who may no longer read it,
    learns that it changed and left, not where it went nor who has it, live or on replay."""
    gracia = {"X-API-Key": await new_key(sessions, Role.MANAGER, ["06"])}
    sants = {"X-API-Key": await new_key(sessions, Role.MANAGER, ["03"])}
    route = router(sessions)
    await route(as_event(classified("fanal", at=datetime.now(UTC))))  # request 1, in 06
    app = gateway(sessions, access=access())
    async with (
        Server(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("GET", EVENTS, headers=gracia) as live,
    ):
        lines = live.aiter_lines()
        await http.post("/api/v1/requests/1/actions/acknowledge", json={}, headers=gracia)
        [acknowledged] = await asyncio.wait_for(data_events(lines, 1), 10)
        transfer = {"note": "És de Sants", "district_code": "03"}
        moved = await http.post(
            "/api/v1/requests/1/actions/transfer", json=transfer, headers=gracia
        )
        assert moved.status_code == 200, moved.text
        [transferred] = await asyncio.wait_for(data_events(lines, 1), 10)
        assign = {"worker": "@worker_sants_secret"}
        assigned = await http.post("/api/v1/requests/1/actions/assign", json=assign, headers=sants)
        assert assigned.status_code == 200, assigned.text
        # a request still theirs is streamed whole, after the one that left
        await route(as_event(classified("banc", at=datetime.now(UTC), latlon=(41.41, 2.16))))
        [created] = await asyncio.wait_for(data_events(lines, 1), 10)

        assert (await http.get("/api/v1/requests/1", headers=gracia)).status_code == 403
        async with http.stream("GET", EVENTS, headers={**gracia, "Last-Event-ID": "0"}) as replay:
            replayed = await asyncio.wait_for(data_events(replay.aiter_lines(), 4), 10)
        async with http.stream(
            "GET", "/api/v1/districts/03/queue/events", headers={**sants, "Last-Event-ID": "0"}
        ) as theirs:
            [*_, in_sants] = await asyncio.wait_for(data_events(theirs.aiter_lines(), 4), 10)

    assert acknowledged["item"]["queue"] == "06"  # type: ignore[index]
    assert acknowledged["actor"] == "key:manager-06" and acknowledged["in_queue"] is True
    gone = {"service_request_id": "1"}
    assert transferred["kind"] == "transfer" and transferred["item"] == gone
    assert transferred["in_queue"] is False and transferred["actor"] is None
    assert created["item"]["source_post_id"] == "banc"  # type: ignore[index]
    assert [e["kind"] for e in replayed] == ["created", "acknowledge", "transfer", "created"]
    assert [e["item"] for e in replayed[:3]] == [gone, gone, gone]
    assert all(e["in_queue"] is False and e["actor"] is None for e in replayed[:3])
    assert "worker_sants_secret" not in json.dumps(replayed)
    assert replayed[3]["item"]["source_post_id"] == "banc"  # type: ignore[index]
    # where it is now, its manager sees it all
    assert in_sants["kind"] == "assign" and in_sants["actor"] == "key:manager-03"
    assert in_sants["item"]["assigned_worker"] == "@worker_sants_secret"  # type: ignore[index]


async def test_a_caller_has_a_bounded_number_of_streams(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream polls the database: one key held 400 of them. A closed stream frees its
    place."""
    monkeypatch.setattr(manager, "MAX_STREAMS_PER_CALLER", 2)
    key = await new_key(sessions, Role.MANAGER, ["06"])
    other = await new_key(sessions, Role.MANAGER, ["06"], name="other")
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        Server(gateway(sessions, access=access())) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        async with http.stream("GET", EVENTS, headers=headers) as one:
            assert one.status_code == 200
            async with http.stream("GET", EVENTS, headers=headers) as two:
                assert two.status_code == 200
                third = await http.get(EVENTS, headers=headers)
                assert third.status_code == 429 and "at most 2" in third.json()["detail"]
                async with http.stream(
                    "GET", EVENTS, headers={"Authorization": f"Bearer {other}"}
                ) as theirs:
                    assert theirs.status_code == 200  # a budget per key
        for _ in range(100):  # the server notices the closed streams
            async with http.stream("GET", EVENTS, headers=headers) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.05)
        assert again.status_code == 200
