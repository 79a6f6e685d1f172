"""HTTP conventions shared by Plaza's FastAPI apps: RFC 9457 problem+json errors, request metrics
and the /metrics endpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, Final, cast

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plaza.pgerrors import database_unavailable
from plaza.pgerrors import sqlstate as sqlstate  # plaza.web.sqlstate, as before
from plaza.scrape import PROBLEM_JSON as PROBLEM_JSON  # plaza.web.PROBLEM_JSON, as before
from plaza.scrape import MetricsAccess

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "plaza_http_requests_total",
    "HTTP requests served, by app, route template, method and status code",
    ["app", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "plaza_http_request_duration_seconds",
    "Time to serve an HTTP request, by app and route template",
    ["app", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extensions: object,
) -> JSONResponse:
    body: dict[str, object] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


VALIDATION: Final = "https://plaza.example/problems/validation"


class InvalidField(StarletteHTTPException):
    """A 422 for one parameter or field that a handler checked itself (an unknown status, a
    cursor from another query), answered as pydantic's own refusals are: the validation type,
    `detail` "field: message" and `errors` [{field, message}], so a client reads every 422 one
    way."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(422, f"{field}: {message}")
        self.field, self.message = field, message


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_error(error: Mapping[str, Any]) -> dict[str, str]:
    """One of pydantic's errors as {field, message, type}. A body that is not JSON is the body's
    fault (its location holds the character where parsing stopped, not a field); a model's own
    check (lat without long) drops pydantic's "Value error, " prefix."""
    kind = str(error.get("type", ""))
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if kind == "json_invalid":
        at = next((p for p in loc if isinstance(p, int)), None)
        reason = (error.get("ctx") or {}).get("error")
        where = f" at character {at}" if at is not None else ""
        return {
            "field": "body",
            "message": f"not valid JSON{where}" + (f": {reason}" if reason else ""),
            "type": kind,
        }
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return {"field": _field_name(loc), "message": message, "type": kind}


# PostgreSQL's SQLSTATEs for a transaction rolled back because another ran at the same time.
_CONFLICTS: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected


DATABASE_AWAY: Final = "the database is unavailable for now; nothing was done, send it again"


class DatabaseUnavailable:
    """A request that met PostgreSQL away (refusing connections, restarting, recovering) gets
    503 with Retry-After, which a bridge or an app sends again, rather than a 500, which says the
    request was at fault; and the log gets one line every 10 s while it lasts, not a stack trace
    for every request (76 of them, 14,000 lines, in a 20-second restart at 10 posts a second).

    Plain ASGI around the app: Starlette hands an error of no registered class to the server
    after its handler has answered, and the server logs its traceback."""

    INTERVAL: Final = 10.0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._logged_at = -self.INTERVAL
        self._unlogged = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # OSError: asyncpg's connection refused or reset, which SQLAlchemy hands on as is.
            if started or not (database_unavailable(exc) or isinstance(exc, OSError)):
                raise
            self._log(scope, exc)
            await self._response(scope)(scope, receive, send)

    @staticmethod
    def _response(scope: Scope) -> Response:
        """problem+json, unless the app answers in a format of its own at that path (its
        `state.database_away`: Open311's clients read [{code, description}])."""
        headers = {"Retry-After": "5"}
        own = getattr(getattr(scope.get("app"), "state", None), "database_away", None)
        if own is not None and (answer := own(scope, DATABASE_AWAY, headers)) is not None:
            return cast(Response, answer)
        return problem(503, DATABASE_AWAY, headers=headers)

    def _log(self, scope: Scope, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged_at < self.INTERVAL:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more requests since)" if self._unlogged else ""
        log.error(
            "the database is unavailable: %s %s answered 503%s: %s: %s",
            scope["method"],
            scope["path"],
            more,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        self._logged_at, self._unlogged = now, 0


class HeadAsGet:
    """A HEAD is answered as its GET without the body (HTTP has every GET answer HEAD too:
    uptime monitors ask /healthz with it, link checkers a request's page; FastAPI's routes
    answered 405). Plain ASGI, so that the routes see a GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}  # the GET's headers, Content-Length too
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


_PROBLEM_SCHEMA: Final = {
    "type": "object",
    "description": "RFC 9457 problem details (application/problem+json)",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["about:blank"]},
        "title": {"type": "string", "examples": ["Not Found"]},
        "status": {"type": "integer", "examples": [404]},
        "detail": {"type": "string", "examples": ["no service request '77'"]},
    },
}
_VALIDATION_PROBLEM_SCHEMA: Final = {
    "description": 'A 422 naming each field at fault: `detail` is the first as "field: message"',
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "message", "type"],
                        "properties": {
                            "field": {"type": "string", "examples": ["lat"]},
                            "message": {
                                "type": "string",
                                "examples": ["Input should be less than or equal to 90"],
                            },
                            "type": {"type": "string", "examples": ["less_than_equal"]},
                        },
                    },
                }
            },
        },
    ],
    "examples": [
        {
            "type": VALIDATION,
            "title": "Invalid request",
            "status": 422,
            "detail": "lat: Input should be less than or equal to 90",
            "errors": [
                {
                    "field": "lat",
                    "message": "Input should be less than or equal to 90",
                    "type": "less_than_equal",
                }
            ],
        }
    ],
}
_FASTAPI_422: Final = "#/components/schemas/HTTPValidationError"


def _document_problems(app: FastAPI) -> None:
    """The OpenAPI document says what the errors are: FastAPI's own schema for a 422
    (`{"detail": [{"loc", "msg"}]}`, application/json) is not what these handlers answer, and a
    client generated from /openapi.json read every 422 wrong. Each 422 becomes the validation
    problem, and a 4xx documented by its description alone gets the problem's schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = _PROBLEM_SCHEMA
        schemas["ValidationProblem"] = _VALIDATION_PROBLEM_SCHEMA
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    _as_problem(status, response)
        if _FASTAPI_422 not in json.dumps(schema):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _as_problem(status: str, response: dict[str, Any]) -> None:
    content = response.get("content") or {}
    fastapi_422 = content.get("application/json", {}).get("schema", {}).get("$ref") == _FASTAPI_422
    if fastapi_422 or (status == "422" and not content):
        if fastapi_422:
            response["description"] = "Invalid request: the problem names each field at fault"
        ref = "#/components/schemas/ValidationProblem"
        response["content"] = {PROBLEM_JSON: {"schema": {"$ref": ref}}}
    elif status.startswith("4") and status[1:].isdigit() and not content:
        response["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves as application/problem+json, naming the bad field where there is one;
    an unexpected one too (Starlette still raises it on, for the server's log), and one that
    met the database away as a 503 (DatabaseUnavailable). A HEAD is answered as its GET."""
    app.add_middleware(DatabaseUnavailable)
    app.add_middleware(HeadAsGet)
    _document_problems(app)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        if sqlstate(exc) in _CONFLICTS:
            return problem(
                409,
                "another change ran at the same time and this one was undone, changing nothing; "
                "send it again",
                title="Conflict with a concurrent change",
                headers={"Retry-After": "1"},
            )
        return problem(500, "an unexpected error, recorded in the service's log")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [_validation_error(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem(
            422,
            f"{first['field']}: {first['message']}",
            title="Invalid request",
            type_=VALIDATION,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc, InvalidField):
            error = {"field": exc.field, "message": exc.message, "type": "value_error"}
            return problem(
                422, str(exc.detail), title="Invalid request", type_=VALIDATION, errors=[error]
            )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem(exc.status_code, str(exc.detail), headers=headers)


# What a 405's Allow may name: the methods Plaza's routes are declared with.
_METHODS: Final = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app takes at this request's path, HEAD with GET
    (HeadAsGet). Starlette's 405 names only the first route that matched the path (GET
    /api/v1/admin/keys), not the others there (POST): a client told Allow: GET would never try
    the POST it came for."""
    routes = request.app.router.routes
    methods = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return sorted([*methods, "HEAD"] if "GET" in methods else methods)


class RequestMetrics:
    """Counts requests and their duration by route template (never by raw path: bounded labels).

    Plain ASGI rather than `@app.middleware("http")`, which costs a task and a copy of the
    response for every request."""

    def __init__(self, app: ASGIApp, app_name: str, routes_of: FastAPI | None = None) -> None:
        self.app = app
        self.app_name = app_name
        self._routes_of = routes_of
        # Bounded: route templates x methods x statuses.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._started = False

    def _start_at_zero(self) -> None:
        """Creates at 0 each route's duration and its count under its success status (see
        plaza.metrics.start_at_zero: increase() cannot see the count a series appears with, and
        a route read a few times between two scrapes showed no traffic). At the first request,
        when every router is included; the routes are the app's OpenAPI paths (FastAPI's
        included routers are no plain list of routes), and other statuses appear at their
        first."""
        self._started = True
        if self._routes_of is None:
            return
        for path, operations in self._routes_of.openapi().get("paths", {}).items():
            for method, operation in operations.items():
                statuses = [code for code in operation.get("responses", {}) if code[:1] == "2"]
                HTTP_DURATION.labels(self.app_name, path, method.upper())
                HTTP_REQUESTS.labels(self.app_name, path, method.upper(), (statuses or ["200"])[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._started:
            self._start_at_zero()
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # The router records the matched route in the scope it shares with us.
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            key = (template, scope["method"], status)
            series = self._series.get(key)
            if series is None:  # labels() costs a lock and a lookup: once per series
                series = self._series[key] = (
                    HTTP_REQUESTS.labels(self.app_name, template, key[1], str(status)),
                    HTTP_DURATION.labels(self.app_name, template, key[1]),
                )
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


def install_request_metrics(app: FastAPI, app_name: str) -> None:
    """Counts every request of `app` in plaza_http_requests_total and its duration."""
    app.add_middleware(RequestMetrics, app_name=app_name, routes_of=app)


async def _this_process() -> bytes:
    return generate_latest()


def install_metrics(
    app: FastAPI,
    access: MetricsAccess,
    exposition: Callable[[], Awaitable[bytes]] = _this_process,
) -> None:
    """Serves GET /metrics: `exposition` (by default this process's registry), to a scrape that
    `access` lets in; otherwise a 401 problem+json with its WWW-Authenticate."""

    async def metrics(request: Request) -> Response:
        refused = access.refusal(request.headers.get("authorization"))
        if refused is not None:
            return problem(401, refused.detail, headers={"WWW-Authenticate": refused.challenge})
        return Response(await exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
