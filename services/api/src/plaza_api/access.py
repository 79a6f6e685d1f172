"""Wires access control into the gateway: who is calling (keys, tokens), rate and size limits,
CORS for public reads, Open311's own error format, the access routes, and the docs' text."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import asyncpg
from fastapi import FastAPI, HTTPException, Request, Response
from plaza.scrape import MetricsAccess
from plaza.web import sqlstate
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from plaza_api import admin
from plaza_api.auth import AuthConfig, Authenticator
from plaza_api.limits import (
    BodySizeLimit,
    Limits,
    LoginFailures,
    PublicCors,
    RateLimiter,
    SecurityHeaders,
    Utf8Forms,
)
from plaza_api.open311 import Open311Query, install_open311_errors
from plaza_api.privacy import PUBLIC_POINT_PRECISION_M

DESCRIPTION = """
A city answers its citizens in public. Three audiences use this API:

* **Civic developers** — [Open311 GeoReport v2](http://wiki.open311.org/GeoReport_v2) under
  `/open311/v2/`, in `.json` and `.xml`. Reads are public (no key needed, CORS open);
  `POST /open311/v2/requests.json` needs an `api_key` (role `civic_developer`) and answers with a
  token that `GET /open311/v2/tokens/{token}.json` turns into the request's id.
  Reporters' contact details are never published; e-mails, phone numbers and licence plates in
  public text are masked; a request's point is published to a street block (a 50 m grid by
  default), never where the reporter's phone stood.
* **District managers, workers and city hall** — the manager API under `/api/v1`. Log in with
  `POST /api/v1/auth/token` (OAuth2 password flow) and send `Authorization: Bearer <token>`.
  A manager sees the queues in their scopes, a worker what is assigned to them, city hall
  everything.
* **Admins** — `/api/v1/admin/keys` and `/api/v1/admin/users` (`PATCH` a user to change their
  scopes, role, worker handle or password, or to re-enable them); or `plaza keys …` and
  `plaza users …` on the command line.

API keys (`plz_…`) go in `Authorization: Bearer`, `X-API-Key`, or Open311's `api_key` parameter.
Errors are RFC 9457 `application/problem+json` (Open311's own `[{code, description}]` under
`/open311/`). Each key has a rate limit: past it, `429` with `Retry-After`.
"""

TAGS = [
    {"name": "Open311 GeoReport v2", "description": "Public data for civic developers"},
    {"name": "Manager API", "description": "Queues, requests and actions, for staff"},
    {"name": "City hall", "description": "City-wide configuration"},
    {"name": "Access", "description": "Log in; users and API keys (admins)"},
    {"name": "Privacy", "description": "Posts erased at their authors' request (admins)"},
    {"name": "Ingest", "description": "The bridges' webhook (role bridge)"},
]


@dataclass(frozen=True, slots=True)
class AccessConfig:
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: Limits = field(default_factory=Limits)
    jurisdiction_id: str = "barcelona"
    public_url: str | None = None  # the gateway as the world reaches it; None: as asked
    # The grid a request's point is published on (plaza_api.privacy.public_point_sql); 0: exact.
    public_point_precision_m: float = PUBLIC_POINT_PRECISION_M
    sse_poll_seconds: float = 1.0
    metrics: MetricsAccess = field(default_factory=MetricsAccess)  # who may read /metrics


def install_access(
    app: FastAPI, sessions: async_sessionmaker[AsyncSession], config: AccessConfig
) -> None:
    """Call after the app's problem handlers are installed (Open311's wrap them)."""
    app.description = DESCRIPTION
    app.openapi_tags = TAGS
    app.state.auth = Authenticator(sessions, config.auth)
    app.state.limits = config.limits
    app.state.rate_limiter = RateLimiter()
    app.state.login_failures = LoginFailures(
        config.limits.failed_logins_per_user, config.limits.failed_login_refill_seconds
    )
    app.state.jurisdiction_id = config.jurisdiction_id
    app.state.public_url = config.public_url
    app.state.public_point_precision_m = config.public_point_precision_m
    app.state.sse_poll_seconds = config.sse_poll_seconds
    app.state.sse_streams = collections.Counter()  # open live update streams per caller
    install_open311_errors(app)
    install_storage_errors(app)
    app.add_middleware(Open311Query)
    app.add_middleware(Utf8Forms)
    app.add_middleware(BodySizeLimit, max_bytes=config.limits.max_body_bytes)
    # Added last, so outermost: a web page can read BodySizeLimit's 413 as well as the routes'
    # answers (without CORS headers a browser hides it, and the page sees a network error).
    app.add_middleware(PublicCors)
    https = (config.public_url or "").startswith("https://")
    app.add_middleware(SecurityHeaders, https=https)  # outermost: the 413s get them too
    app.include_router(admin.router)


# PostgreSQL's SQLSTATE for a character its text type cannot hold: in UTF-8, only NUL (\u0000).
_UNSTORABLE_CHARACTER = "22021"


def install_storage_errors(app: FastAPI) -> None:
    """A text PostgreSQL cannot store (one with a NUL character, from a path, a query parameter
    or a body) is the client's mistake: 400 in the path's own error format (Open311's under
    /open311/, problem+json elsewhere), where it was a 500. Every other database error stays a
    500. Call after install_open311_errors."""
    on_http = cast(
        Callable[[Request, Exception], Awaitable[Response]],
        app.exception_handlers[StarletteHTTPException],
    )

    async def on_database_error(request: Request, exc: Exception) -> Response:
        if sqlstate(exc) != _UNSTORABLE_CHARACTER:
            raise exc
        return await on_http(
            request,
            HTTPException(400, "a text holds a NUL character (\\u0000), which cannot be stored"),
        )

    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(asyncpg.PostgresError, on_database_error)
