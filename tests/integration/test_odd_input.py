"""Odd input never gets a 500: every read and write the gateway offers, given values a client
might send by mistake or on purpose (digits int() refuses, numbers past a bigint, NaN, huge
strings, emoji, NUL), answers 2xx or 4xx. The ASGI client raises what the app raises: each
is listed as a 500 with its exception."""

from __future__ import annotations

from urllib.parse import quote

from plaza_api.access import AccessConfig
from plaza_api.auth import Role
from plaza_api.limits import Limits
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import client, gateway, new_key
from tests.integration.lifecycle_helpers import as_event, classified, router

ODD = (
    "²",  # a digit to str.isdigit, not to int
    "٣",  # an Arabic-Indic 3: int() reads it
    "99999999999999999999",  # past a bigint
    "-1",
    "0",
    "nan",
    "inf",
    "1e309",
    " ",
    "x" * 3000,
    "'; --",
    "🙂",
    "\x00",
    "a,b,,",
    "2026-13-45T00:00:00Z",
    "true",
)
# Paths with one odd segment, and each GET's query parameters.
PATHS = (
    "/api/v1/requests/{}",
    "/api/v1/requests/{}/history",
    "/api/v1/districts/{}/queue",
    "/open311/v2/requests/{}.json",
    "/open311/v2/services/{}.json",
    "/open311/v2/tokens/{}.json",
)
QUERIES = {
    "/api/v1/districts/06/queue": (
        "status",
        "service_code",
        "urgency",
        "overdue",
        "assigned_worker",
        "sort",
        "cursor",
        "limit",
    ),
    "/api/v1/assignments": ("cursor", "limit"),
    "/api/v1/replies": ("state", "platform", "limit"),
    "/open311/v2/requests.json": (
        "service_request_id",
        "service_code",
        "start_date",
        "end_date",
        "status",
        "updated_after",
        "updated_before",
        "page",
        "page_size",
        "extensions",
        "jurisdiction_id",
        "lat",
        "long",
        "radius",
    ),
    "/open311/v2/servicerequestupdates.json": ("start_date", "end_date", "page", "page_size"),
    "/open311/v2/services.json": ("lang",),
}


async def test_odd_values_get_a_client_error_never_a_server_error(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    route = router(sessions)
    for n in range(len(ODD) + 1):  # request 1, and one per odd value to write its note into
        await route(as_event(classified(f"odd-{n}", latlon=(41.38 + 0.003 * n, 2.15))))
    admin = await new_key(sessions, Role.ADMIN)
    answers: list[tuple[str, int]] = []

    async def ask(method: str, url: str, **kwargs: object) -> None:
        what = f"{method} {url} {kwargs}"[:160]
        try:
            response = await api.request(method, url, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:  # what the app raised: listed with the others, below
            answers.append((f"{what}: {exc!r}"[:400], 500))
            return
        answers.append((what, response.status_code))

    # no rate limit: every request must reach its endpoint, not the limiter
    unlimited = AccessConfig(limits=Limits(per_key_per_minute=0, anonymous_per_minute=0))
    async with client(gateway(sessions, access=unlimited), admin) as api:
        for n, odd in enumerate(ODD, start=2):
            segment = quote(odd, safe="")  # the server sees the odd value itself
            # a note with it, on a request that may be acknowledged, and on its own
            await ask("POST", f"/api/v1/requests/{n}/actions/acknowledge", json={"note": odd})
            await ask("POST", f"/api/v1/requests/{n}/notes", json={"note": odd})
            for path in PATHS:
                await ask("GET", path.format(segment))
            await ask("POST", f"/api/v1/replies/{segment}/retry")
            await ask("DELETE", f"/api/v1/admin/keys/{segment}")
            await ask("DELETE", f"/api/v1/admin/users/{segment}")
            for key in (
                {"name": odd, "role": "manager", "scopes": ["06"]},
                {"name": f"k{n}", "role": "manager", "scopes": [odd]},
                {"name": f"w{n}", "role": "worker", "worker_handle": odd},
            ):
                await ask("POST", "/api/v1/admin/keys", json=key)
            await ask("POST", "/api/v1/admin/users", json={"username": odd, "password": odd})
            await ask("POST", "/api/v1/auth/token", data={"username": odd, "password": odd})
            await ask("POST", "/api/v1/requests/1/split", json={"report_ids": [odd]})
            for base, names in QUERIES.items():
                for name in names:
                    await ask("GET", base, params={name: odd})
            for action in ("acknowledge", "assign", "transfer", "resolve", segment):
                for field in ("note", "worker", "district_code", "actor"):
                    await ask("POST", f"/api/v1/requests/1/actions/{action}", json={field: odd})
            await ask("POST", "/api/v1/requests/actions/acknowledge", json={"ids": [odd]})
            await ask("POST", "/api/v1/requests/actions/acknowledge", json={"ids": odd})
            await ask("POST", "/api/v1/requests/1/notes", json={"note": odd, "public": odd})
            await ask(
                "POST",
                "/open311/v2/requests.json",
                data={
                    "service_code": "streetlight",
                    "lat": odd,
                    "long": "2.15",
                    "description": odd,
                    "email": odd,
                    "attribute[language]": odd,
                },
            )
    failed = [(what, status) for what, status in answers if status >= 500]
    assert not failed, failed
    asked = len(PATHS) + 1 + sum(map(len, QUERIES.values())) + 5 * 4 + 6 + 8
    assert len(answers) == len(ODD) * asked
    assert any(status < 300 for _, status in answers)
    assert not [what for what, status in answers if status == 429]
    # a NUL, which PostgreSQL's text cannot hold, is refused in the path's own error format
    nul_request = ODD.index("\x00") + 2  # the request its value's note went to
    nul = dict(answers)
    assert nul[f"POST /api/v1/requests/{nul_request}/notes {{'json': {{'note': '\\x00'}}}}"] == 400
