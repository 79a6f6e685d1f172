"""An app's routes count from 0 (plaza.web.RequestMetrics): a route read a few times between
two of Prometheus's scrapes appeared with its count and showed no traffic at all."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI
from plaza.web import install_request_metrics
from prometheus_client import REGISTRY


async def test_every_route_starts_at_zero_at_the_first_request() -> None:
    app = FastAPI()
    install_request_metrics(app, "start-at-zero")

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    things = APIRouter(prefix="/v1")  # an included router, as every Plaza app has

    @things.post("/things", status_code=202)
    async def add_thing() -> dict[str, str]:
        return {}

    app.include_router(things)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/ping")).status_code == 200

    def count(route: str, method: str, status: str) -> float | None:
        labels = {"app": "start-at-zero", "route": route, "method": method, "status": status}
        return REGISTRY.get_sample_value("plaza_http_requests_total", labels)

    assert count("/ping", "GET", "200") == 1.0
    assert count("/v1/things", "POST", "202") == 0.0
    assert (
        REGISTRY.get_sample_value(
            "plaza_http_request_duration_seconds_count",
            {"app": "start-at-zero", "route": "/v1/things", "method": "POST"},
        )
        == 0.0
    )
