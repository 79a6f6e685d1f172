"""The ingest HTTP app: the webhook that bridges POST posts to (behind the gateway's /api/v1/posts)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from plaza.bus import Bus
from plaza.web import install_problem_handlers, install_request_metrics
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plaza_ingest.publish import post_received, publish
from plaza_ingest.schemas import PostAccepted, PostIn


def create_app(bus: Bus) -> FastAPI:
    app = FastAPI(title="Plaza ingest", version="1", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    install_request_metrics(app, "ingest")

    @app.post("/api/v1/posts", status_code=202, response_model=PostAccepted)
    async def accept_post(post: PostIn) -> JSONResponse:
        """Accepts one post for classification and routing; answers once it is durably on the bus."""
        event = post_received(post, channel="webhook")
        await publish(bus, [event])
        body = PostAccepted(
            platform=post.platform, post_id=post.post_id, event_id=event.envelope.event_id
        )
        return JSONResponse(body.model_dump(), status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
