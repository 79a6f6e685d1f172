"""Admins maintain users on real PostgreSQL: PATCH /api/v1/admin/users/{id} and `plaza users
update` change a user's grant, password and state, checked as on creation; the tokens already
issued follow; names and worker handles are never shared, and each 409 says what to do."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from fastapi import FastAPI
from plaza.db.models import StaffUser
from plaza_api.auth import AccessConflict, Role, create_user, hashed_as_now
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import PASSWORD, client, gateway, new_key
from tests.integration.test_access_control import VALID_SCOPES, plaza

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
async def app(sessions: async_sessionmaker[AsyncSession]) -> FastAPI:
    return gateway(sessions)


@pytest.fixture
async def admin(
    app: FastAPI, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, await new_key(sessions, Role.ADMIN)) as c:
        yield c


async def make_user(admin: httpx.AsyncClient, username: str, role: str, **grant: object) -> int:
    made = await admin.post(
        "/api/v1/admin/users",
        json={"username": username, "password": PASSWORD, "role": role, **grant},
    )
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


async def log_in(app: FastAPI, username: str, password: str = PASSWORD) -> httpx.Response:
    async with client(app) as anonymous:
        return await anonymous.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )


async def token_of(app: FastAPI, username: str, password: str = PASSWORD) -> str:
    login = await log_in(app, username, password)
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


async def test_new_scopes_apply_to_the_tokens_already_issued(
    app: FastAPI, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A manager given Sarrià sees it with the token they have; one losing Gràcia loses it. The
    scopes are checked and stored as on creation ("5" is 05), and the change is logged."""
    caplog.set_level(logging.INFO, "plaza_api.auth")
    maria = await make_user(admin, "maria", "manager", scopes=["06"])
    async with client(app, await token_of(app, "maria")) as her:
        assert (await her.get("/api/v1/districts/05/queue")).status_code == 403
        changed = await admin.patch(f"/api/v1/admin/users/{maria}", json={"scopes": ["5"]})
        assert changed.status_code == 200, changed.text
        assert changed.json() == {
            "id": maria,
            "username": "maria",
            "role": "manager",
            "scopes": ["05"],
            "worker_handle": None,
            "disabled": False,
        }
        assert (await her.get("/api/v1/districts/05/queue")).status_code == 200
        assert (await her.get("/api/v1/districts/06/queue")).status_code == 403
    assert f"key:admin-all changed user 'maria' (id {maria}) (scopes)" in caplog.text


async def test_a_change_is_checked_as_a_new_user_is(app: FastAPI, admin: httpx.AsyncClient) -> None:
    """422 for what creation refuses, naming it; 404 for no such user; nothing half-done."""
    maria = await make_user(admin, "maria", "manager", scopes=["06"])
    jordi = await make_user(admin, "jordi", "worker", worker_handle="@jordi")
    for user, body, said, field in (
        (maria, {"scopes": ["99"]}, "scope '99' is not a queue of the city", "scopes"),
        (maria, {"scopes": []}, "a manager needs at least one scope", "scopes"),
        (
            maria,
            {"scopes": ["05"], "password": "short"},
            "a password needs at least 10",
            "password",
        ),
        (maria, {"role": "bridge"}, "role bridge is for API keys (apps and bridges)", "role"),
        (maria, {"role": "worker"}, "a worker needs a worker handle", "worker_handle"),
        (maria, {"role": "city_hall", "scopes": ["06"]}, "only managers (queues)", "scopes"),
        (jordi, {"worker_handle": "pere pi"}, "'pere pi' is not a public handle", "worker_handle"),
        (jordi, {"scopes": ["06"]}, "only managers (queues) and bridges", "scopes"),
    ):
        refused = await admin.patch(f"/api/v1/admin/users/{user}", json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        # named as a malformed body's field is (it was about:blank, with no errors[])
        problem = refused.json()
        assert said in problem["detail"] and problem["detail"].startswith(f"{field}: ")
        assert problem["type"] == "https://plaza.example/problems/validation"
        assert [e["field"] for e in problem["errors"]] == [field]
    scopes = await admin.patch(f"/api/v1/admin/users/{maria}", json={"scopes": ["gracia"]})
    assert scopes.json()["detail"].endswith(VALID_SCOPES)
    for body, field in (
        ({"username": "marta"}, "username"),  # a name stays with its user
        ({"worker_handle": None}, "worker_handle"),
        ({"disabled": "maybe"}, "disabled"),
    ):
        refused = await admin.patch(f"/api/v1/admin/users/{jordi}", json=body)
        assert refused.status_code == 422 and field in refused.json()["detail"], refused.text
    missing = await admin.patch("/api/v1/admin/users/999", json={"disabled": True})
    assert missing.status_code == 404 and missing.json()["detail"] == "no user 999"
    assert missing.headers["content-type"] == "application/problem+json"
    listed = {u["username"]: u for u in (await admin.get("/api/v1/admin/users")).json()}
    assert listed["maria"]["scopes"] == ["06"] and listed["maria"]["role"] == "manager"
    assert listed["jordi"]["worker_handle"] == "@jordi"
    assert (await log_in(app, "maria")).status_code == 200  # the refused password not set


async def test_a_new_role_comes_with_its_own_grant(app: FastAPI, admin: httpx.AsyncClient) -> None:
    """A manager made city hall drops their queues (no scopes to clear by hand) and sees every
    queue with the token they have; a worker made a manager gives up their handle."""
    maria = await make_user(admin, "maria", "manager", scopes=["06"])
    async with client(app, await token_of(app, "maria")) as her:
        promoted = await admin.patch(
            f"/api/v1/admin/users/{maria}",
            json={"role": "city_hall"},
            headers={"content-type": "application/merge-patch+json"},
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["scopes"] == [] and promoted.json()["role"] == "city_hall"
        assert (await her.get("/api/v1/districts/05/queue")).status_code == 200
    jordi = await make_user(admin, "jordi", "worker", worker_handle="jordi")
    made = await admin.patch(
        f"/api/v1/admin/users/{jordi}", json={"role": "manager", "scopes": ["triage"]}
    )
    assert made.json()["worker_handle"] is None and made.json()["scopes"] == ["triage"]
    handle = await admin.patch(
        f"/api/v1/admin/users/{jordi}", json={"role": "worker", "worker_handle": "pere"}
    )
    assert handle.json()["worker_handle"] == "@pere", handle.text  # stored as assignments are


async def test_a_password_reset_stops_the_tokens_issued_before(
    app: FastAPI, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pau = await make_user(admin, "pau", "city_hall")
    async with client(app, await token_of(app, "pau")) as old:
        assert (await old.get("/api/v1/districts/06/queue")).status_code == 200
        reset = await admin.patch(f"/api/v1/admin/users/{pau}", json={"password": NEW_PASSWORD})
        assert reset.status_code == 200 and NEW_PASSWORD not in reset.text
        stopped = await old.get("/api/v1/districts/06/queue")
        assert stopped.status_code == 401
        assert stopped.json()["detail"] == (
            "this token of user 'pau' was issued before their password was reset or they "
            "were disabled: log in again"
        )
    assert (await log_in(app, "pau")).status_code == 401
    async with client(app, await token_of(app, "pau", NEW_PASSWORD)) as new:
        assert (await new.get("/api/v1/districts/06/queue")).status_code == 200
    assert f"changed user 'pau' (id {pau}) (password)" in caplog.text
    assert NEW_PASSWORD not in caplog.text


async def test_a_disabled_user_is_re_enabled_and_their_old_tokens_stay_dead(
    app: FastAPI, admin: httpx.AsyncClient
) -> None:
    """Their name stays theirs: making them again is a 409 that says how to re-enable them."""
    pau = await make_user(admin, "pau", "city_hall")
    async with client(app, await token_of(app, "pau")) as old:
        disabled = await admin.patch(f"/api/v1/admin/users/{pau}", json={"disabled": True})
        assert disabled.json()["disabled"] is True
        assert (await old.get("/api/v1/districts/06/queue")).json()["detail"] == (
            "user 'pau' is disabled"
        )
        again = await admin.post(
            "/api/v1/admin/users",
            json={"username": "pau", "password": PASSWORD, "role": "city_hall"},
        )
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["detail"] == (
            f"user 'pau' exists (id {pau}) and is disabled: re-enable them rather than make "
            f'them again (PATCH /api/v1/admin/users/{pau} with {{"disabled": false}}, and a '
            '"password" if they need a new one; or plaza users update pau --enable '
            "--reset-password)"
        )
        enabled = await admin.patch(f"/api/v1/admin/users/{pau}", json={"disabled": False})
        assert enabled.status_code == 200 and enabled.json()["disabled"] is False
        still = await old.get("/api/v1/districts/06/queue")
        assert still.status_code == 401 and "log in again" in still.json()["detail"]
    async with client(app, await token_of(app, "pau")) as new:
        assert (await new.get("/api/v1/districts/06/queue")).status_code == 200
    active = await admin.post(
        "/api/v1/admin/users", json={"username": "pau", "password": PASSWORD, "role": "admin"}
    )
    assert active.status_code == 409 and active.json()["detail"] == (
        f"user 'pau' exists (id {pau}): change them with PATCH /api/v1/admin/users/{pau} "
        "(or plaza users update pau)"
    )


async def test_two_users_never_share_a_worker_handle(
    app: FastAPI, admin: httpx.AsyncClient
) -> None:
    """One worker would see the other's assignments: a 409 naming who holds it. A disabled user
    keeps theirs (what is still assigned to it is theirs) until an admin gives them another."""
    jordi = await make_user(admin, "jordi", "worker", worker_handle="@jordi")
    anna = await make_user(admin, "anna", "worker", worker_handle="@anna")
    taken = (
        f"worker handle '@jordi' is user 'jordi''s (id {jordi}): two users with one handle "
        f"would see each other's assignments; give 'jordi' another handle first (PATCH "
        f'/api/v1/admin/users/{jordi} with {{"worker_handle": "@..."}}), or choose another'
    )
    for refused in (
        await admin.post(
            "/api/v1/admin/users",
            json={
                "username": "j2",
                "password": PASSWORD,
                "role": "worker",
                "worker_handle": "jordi",
            },
        ),
        await admin.patch(f"/api/v1/admin/users/{anna}", json={"worker_handle": "@jordi"}),
    ):
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == taken
    cased = await admin.patch(f"/api/v1/admin/users/{anna}", json={"worker_handle": "JORDI"})
    assert cased.status_code == 409 and cased.json()["detail"].startswith(
        "worker handle '@JORDI' ('@jordi': platforms ignore case) is user 'jordi''s"
    ), cased.text
    same = await admin.patch(f"/api/v1/admin/users/{jordi}", json={"worker_handle": "jordi"})
    assert same.status_code == 200  # their own handle is no conflict
    assert (await admin.delete(f"/api/v1/admin/users/{jordi}")).status_code == 204
    kept = await admin.patch(f"/api/v1/admin/users/{anna}", json={"worker_handle": "@jordi"})
    assert kept.status_code == 409
    assert kept.json()["detail"].startswith(
        f"worker handle '@jordi' is user 'jordi''s (id {jordi}, disabled), who keeps it for what "
        f"is still assigned to it: if this is them, re-enable them (PATCH "
        f'/api/v1/admin/users/{jordi} with {{"disabled": false}}, or plaza users update jordi '
        "--enable); if not, give them another handle first"
    ), kept.text
    moved = await admin.patch(f"/api/v1/admin/users/{jordi}", json={"worker_handle": "@jordi-old"})
    assert moved.status_code == 200 and moved.json()["disabled"] is True
    given = await admin.patch(f"/api/v1/admin/users/{anna}", json={"worker_handle": "@jordi"})
    assert given.status_code == 200 and given.json()["worker_handle"] == "@jordi"
    back = await admin.patch(f"/api/v1/admin/users/{jordi}", json={"worker_handle": "@jordi"})
    assert back.status_code == 409  # a disabled user too: anna holds it now


async def test_two_admins_giving_one_handle_at_once_give_it_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The second waits for the first to commit, then sees its user: a lock on the handle."""

    async def make(username: str) -> None:
        async with sessions.begin() as session:
            await create_user(
                session, username=username, password=PASSWORD, role=Role.WORKER, worker_handle="x"
            )

    async with sessions.begin() as first:
        await create_user(
            first, username="one", password=PASSWORD, role=Role.WORKER, worker_handle="@X"
        )
        second = asyncio.create_task(make("two"))
        await asyncio.sleep(0.5)
        assert not second.done(), second
    with pytest.raises(AccessConflict, match="is user 'one''s"):
        await second


async def test_a_key_name_stays_with_its_key(admin: httpx.AsyncClient) -> None:
    """A revoked key's name is not reused (the audit trail names keys by it); a key's grant never
    changes: the 409 says to make another key."""
    made = await admin.post("/api/v1/admin/keys", json={"name": "app", "role": "civic_developer"})
    key_id = made.json()["id"]
    again = await admin.post("/api/v1/admin/keys", json={"name": "app", "role": "civic_developer"})
    assert again.status_code == 409 and again.json()["detail"] == (
        f"a key named 'app' exists (id {key_id}); a key's grant never changes: for another, make "
        f"a key with another name and revoke this one (DELETE /api/v1/admin/keys/{key_id}, or "
        f"plaza keys revoke {key_id})"
    )
    assert (await admin.delete(f"/api/v1/admin/keys/{key_id}")).status_code == 204
    revoked = await admin.post("/api/v1/admin/keys", json={"name": "app", "role": "bridge"})
    assert revoked.status_code == 409 and revoked.json()["detail"] == (
        f"a key named 'app' existed (id {key_id}, revoked): a name stays with its key, as the "
        "audit trail names keys by it (key:app); choose another name"
    )
    patched = await admin.patch(f"/api/v1/admin/keys/{key_id}", json={"scopes": []})
    assert patched.status_code == 405


async def test_the_cli_updates_users_as_the_api_does(
    database_url: str, app: FastAPI, admin: httpx.AsyncClient
) -> None:
    maria = await make_user(admin, "maria", "manager", scopes=["06"])
    await make_user(admin, "jordi", "worker", worker_handle="@jordi")
    await make_user(admin, "anna", "worker", worker_handle="@anna")
    updated = await asyncio.to_thread(
        plaza,
        database_url,
        *("users", "update", "maria", "--scope", "5", "--scope", "triage", "--password-stdin"),
        stdin=NEW_PASSWORD + "\n",
    )
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout == (
        f"user 'maria' (id {maria}, role manager, scopes 05, triage): changed scopes, password\n"
    )
    assert NEW_PASSWORD not in updated.stdout + updated.stderr
    assert (await log_in(app, "maria")).status_code == 401
    async with client(app, await token_of(app, "maria", NEW_PASSWORD)) as her:
        assert (await her.get("/api/v1/districts/05/queue")).status_code == 200
    for args, code, said in (
        (
            ("users", "update", "anna", "--worker-handle", "jordi"),
            1,
            "plaza users: worker handle '@jordi' is user 'jordi''s (id ",
        ),
        (
            ("users", "update", "maria", "--scope", "gracia"),
            2,
            "plaza users: scope 'gracia' is not a queue of the city; a manager's scopes are: ",
        ),
        (("users", "update", "nobody", "--enable"), 1, "plaza users update: no user 'nobody'"),
        (
            ("users", "create", "jordi", "--role", "admin", "--password-stdin"),
            1,
            "plaza users: user 'jordi' exists (id ",
        ),
    ):
        refused = await asyncio.to_thread(plaza, database_url, *args, stdin=PASSWORD + "\n")
        assert refused.returncode == code, (args, refused.stdout, refused.stderr)
        assert refused.stderr.startswith(said) and refused.stderr.count("\n") == 1, refused.stderr
    disabled = await asyncio.to_thread(plaza, database_url, "users", "disable", "jordi")
    assert disabled.returncode == 0 and "disabled" in disabled.stdout, disabled.stderr
    assert (await log_in(app, "jordi")).status_code == 401
    enabled = await asyncio.to_thread(
        plaza, database_url, "users", "update", "jordi", "--enable", "--reset-password"
    )
    assert enabled.returncode == 0, enabled.stderr
    generated = enabled.stdout.splitlines()[-1].removeprefix("password (shown once): ")
    assert "changed password, enabled" in enabled.stdout and len(generated) >= 10
    assert (await log_in(app, "jordi", generated)).status_code == 200


async def test_a_token_from_before_generations_counts_as_the_first(
    app: FastAPI, admin: httpx.AsyncClient
) -> None:
    """Tokens issued by a gateway older than token generations keep working until they expire,
    and stop at a password reset as the others do."""
    pau = await make_user(admin, "pau", "city_hall")
    claims = jwt.decode(
        await token_of(app, "pau"), options={"verify_signature": False}, algorithms=["HS256"]
    )
    assert claims["gen"] == 0
    del claims["gen"]
    old = jwt.encode(claims, app.state.auth.config.jwt_secret, algorithm="HS256")
    async with client(app, old) as them:
        assert (await them.get("/api/v1/districts/06/queue")).status_code == 200
        await admin.patch(f"/api/v1/admin/users/{pau}", json={"password": NEW_PASSWORD})
        assert (await them.get("/api/v1/districts/06/queue")).status_code == 401


async def test_the_documented_patch_examples_are_accepted_as_they_are(
    admin: httpx.AsyncClient,
) -> None:
    """/docs's "Try it out" sends the schema's example: it must be a patch the endpoint takes
    (each field's own example was null, which it refuses), and the 404 and 409 it answers are
    documented."""
    spec = (await admin.get("/openapi.json")).json()
    examples = spec["components"]["schemas"]["UserPatch"]["examples"]
    operation = spec["paths"]["/api/v1/admin/users/{user_id}"]["patch"]
    assert {"404", "409", "422"} <= set(operation["responses"])
    maria = await make_user(admin, "maria", "manager", scopes=["06"])
    for example in examples:
        changed = await admin.patch(f"/api/v1/admin/users/{maria}", json=example)
        assert changed.status_code == 200, (example, changed.text)
    # "disabled" is true or false, not a word that might mean either
    for loose in ("yes", "no", 1, "true"):
        vague = await admin.patch(f"/api/v1/admin/users/{maria}", json={"disabled": loose})
        assert vague.status_code == 422, loose


async def test_the_last_admin_cannot_be_disabled_demoted_or_revoked(
    app: FastAPI, admin: httpx.AsyncClient
) -> None:
    """Without an admin nobody can manage users and keys through the API (the city would need
    someone with the server's data directory): the last admin user or key is kept, with a 409
    saying what to do first."""
    [key] = (await admin.get("/api/v1/admin/keys")).json()
    alone = await admin.delete(f"/api/v1/admin/keys/{key['id']}")  # the only admin, itself
    assert alone.status_code == 409, alone.text
    assert (
        "last admin" in alone.json()["detail"]
        and "make another admin first" in alone.json()["detail"]
    )
    ada = await make_user(admin, "ada", "admin")
    async with client(app, await token_of(app, "ada")) as as_ada:
        assert (await as_ada.delete(f"/api/v1/admin/keys/{key['id']}")).status_code == 204
        for attempt in (
            as_ada.delete(f"/api/v1/admin/users/{ada}"),
            as_ada.patch(f"/api/v1/admin/users/{ada}", json={"role": "city_hall"}),
            as_ada.patch(f"/api/v1/admin/users/{ada}", json={"disabled": True}),
        ):
            refused = await attempt
            assert refused.status_code == 409, refused.text
            assert "user 'ada' is the last admin" in refused.json()["detail"]
        berta = await make_user(as_ada, "berta", "admin")
        assert (await as_ada.delete(f"/api/v1/admin/users/{ada}")).status_code == 204
    async with client(app, await token_of(app, "berta")) as as_berta:
        users = {u["username"]: u for u in (await as_berta.get("/api/v1/admin/users")).json()}
        assert users["ada"]["disabled"] and not users["berta"]["disabled"]
        assert (await as_berta.delete(f"/api/v1/admin/users/{berta}")).status_code == 409


async def test_a_password_hashed_with_older_parameters_is_hashed_again_at_login(
    app: FastAPI, admin: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Staff passwords were hashed with scrypt p=1, below OWASP's guidance; a user made then is
    hashed with today's parameters the next time they log in, and logs in as before."""
    pau = await make_user(admin, "pau", "city_hall")
    salt = base64.b64encode(b"0123456789abcdef").decode()
    old = hashlib.scrypt(PASSWORD.encode(), salt=b"0123456789abcdef", n=2**14, r=8, p=1, dklen=32)
    async with sessions.begin() as s:
        user = await s.get(StaffUser, pau)
        assert user is not None and hashed_as_now(user.password_hash)
        user.password_hash = f"scrypt$16384$8$1${salt}${base64.b64encode(old).decode()}"

    assert (await log_in(app, "pau", "not the password")).status_code == 401
    async with sessions() as s:
        user = await s.get(StaffUser, pau)
        assert user is not None and not hashed_as_now(user.password_hash)  # not on a failure
    token = await token_of(app, "pau")
    async with sessions() as s:
        user = await s.get(StaffUser, pau)
        assert user is not None and hashed_as_now(user.password_hash)
        assert user.password_hash.startswith("scrypt$16384$8$5$")
    async with client(app, token) as him:
        assert (await him.get("/api/v1/me")).status_code == 200
    await token_of(app, "pau")  # and again, with the new hash
