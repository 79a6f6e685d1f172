"""Errors nobody planned for still leave as problem+json: a 500 that says where to look, and a
transaction PostgreSQL undid for a concurrent one (a deadlock, a serialization failure) as a 409
to send again."""

from __future__ import annotations

import httpx
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
