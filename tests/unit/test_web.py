"""Errors nobody planned for still leave as problem+json: a 500 that says where to look, and a
transaction PostgreSQL undid for a concurrent one (a deadlock, a serialization failure) as a 409
to send again."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from plaza.web import PROBLEM_JSON, install_problem_handlers


class _Deadlock(Exception):
    sqlstate = "40P01"  # as asyncpg's DeadlockDetectedError carries it


class _Wrapped(Exception):
    """As SQLAlchemy wraps a driver's error: the driver's is `orig`."""

    def __init__(self, orig: Exception) -> None:
        super().__init__("wrapped")
        self.orig = orig


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    @app.get("/deadlock")
    async def deadlock() -> None:
        raise _Wrapped(_Deadlock("deadlock detected"))

    return app


async def test_an_unexpected_error_is_a_problem_and_a_concurrent_rollback_a_409() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        bug = await client.get("/bug")
        assert bug.status_code == 500 and bug.headers["content-type"] == PROBLEM_JSON
        assert bug.json()["detail"] == "an unexpected error, recorded in the service's log"
        assert "a bug" not in bug.text  # nothing of the error's own text leaks out
        conflict = await client.get("/deadlock")
        assert conflict.status_code == 409 and conflict.headers["retry-after"] == "1"
        assert conflict.headers["content-type"] == PROBLEM_JSON
        assert "send it again" in conflict.json()["detail"]


class _StartingUp(Exception):
    sqlstate = "57P03"  # as asyncpg's CannotConnectNowError carries it


def _database_away_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/restarting")
    async def restarting() -> None:
        raise _Wrapped(_StartingUp("the database system is starting up"))

    @app.get("/down")
    async def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    return app


async def test_a_database_away_is_a_503_to_send_again_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A PostgreSQL restarting made every webhook post a 500 (which a bridge may give up on) and
    a stack trace each; it is a 503 with Retry-After, and one line in the log."""
    transport = httpx.ASGITransport(app=_database_away_app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with caplog.at_level(logging.INFO, logger="plaza.web"):
            answers = [await client.get(path) for path in ("/restarting", "/down") * 5]
    for answer in answers:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert "send it again" in answer.json()["detail"]
    [line] = [r for r in caplog.records if r.name == "plaza.web"]
    assert "the database is unavailable: GET /restarting answered 503" in line.getMessage()
    assert line.exc_info is None  # no stack trace


async def test_a_method_not_allowed_names_every_method_of_the_path() -> None:
    """Starlette's 405 names the first route matching the path alone: a path with a GET and a
    POST answered a PUT with Allow: GET."""
    app = _app()

    @app.get("/keys")
    async def keys() -> None:
        pass

    @app.post("/keys")
    async def new_key() -> None:
        pass

    @app.delete("/keys/{id}")
    async def revoke(id: int) -> None:
        pass

    @app.patch("/keys/{id}")
    async def change(id: int) -> None:
        pass

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        put = await c.put("/keys")
        assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD, POST"
        assert put.headers["content-type"] == PROBLEM_JSON
        assert (await c.get("/keys/3")).headers["allow"] == "DELETE, PATCH"


async def test_every_get_answers_head_without_its_body() -> None:
    """HTTP has every GET answer HEAD too (uptime monitors ask /healthz with it): the GET's
    status and headers, Content-Length too, and no body; a path with no GET stays a 405."""
    app = _app()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/posts")
    async def post() -> None:
        pass

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        got, head = await c.get("/healthz"), await c.head("/healthz")
        assert (got.status_code, head.status_code) == (200, 200)
        assert head.content == b"" and got.content == b'{"status":"ok"}'
        assert head.headers["content-length"] == str(len(got.content))
        assert head.headers["content-type"] == got.headers["content-type"]
        assert (await c.head("/nowhere")).status_code == 404
        no_get = await c.head("/posts")
        assert no_get.status_code == 405 and no_get.headers["allow"] == "POST"


def test_the_openapi_document_describes_the_problems_answered() -> None:
    """FastAPI documents a 422 as its own `{"detail": [{"loc", "msg"}]}` in application/json,
    which these handlers never answer: a client generated from /openapi.json read every 422
    wrong. The document now has the validation problem for each 422, and the problem for a 4xx
    documented by its description alone."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/queue", responses={403: {"description": "not your queue"}})
    async def queue(limit: int = 50) -> dict[str, int]:
        return {"limit": limit}

    spec = app.openapi()
    responses = spec["paths"]["/queue"]["get"]["responses"]
    assert list(responses["422"]["content"]) == [PROBLEM_JSON]
    ref = responses["422"]["content"][PROBLEM_JSON]["schema"]["$ref"]
    assert ref == "#/components/schemas/ValidationProblem"
    assert responses["403"]["content"][PROBLEM_JSON]["schema"]["$ref"].endswith("/Problem")
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    example = schemas["ValidationProblem"]["examples"][0]
    assert set(example) == {"type", "title", "status", "detail", "errors"}
    assert app.openapi() is spec  # built once
