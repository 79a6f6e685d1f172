"""The ingest HTTP app: the webhook that bridges POST posts to (behind the gateway's /api/v1/posts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from plaza.bus import Bus
from plaza.contracts import Outgoing
from plaza.metrics import PIPELINE_STAGE_LATENCY, RECEIVED, seconds_between, start_at_zero
from plaza.posts import PostAccepted, PostIn, WithdrawalIn
from plaza.scrape import MetricsAccess
from plaza.web import install_metrics, install_problem_handlers, install_request_metrics, problem
from plaza.worker import is_transient

from plaza_ingest.publish import post_received, post_withdrawn, publish

log = logging.getLogger(__name__)

OPEN311_PLATFORM = "open311"
# Under the gateway's 10 s wait for ingest, so that its client hears why rather than a timeout.
PUBLISH_TIMEOUT = 5.0


class NotAcknowledged(Exception):
    """The bus did not acknowledge a post's event: it is not accepted, and is sent again."""


def create_app(
    bus: Bus, metrics: MetricsAccess | None = None, *, publish_timeout: float = PUBLISH_TIMEOUT
) -> FastAPI:
    """Without `metrics`, /metrics is open to whoever reaches the port (embedded mode: nobody)."""
    app = FastAPI(title="Plaza ingest", version="1", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    install_request_metrics(app, "ingest")
    start_at_zero(stages=[RECEIVED])  # so that Prometheus sees the first post it times

    @app.exception_handler(NotAcknowledged)
    async def _not_acknowledged(request: Request, exc: NotAcknowledged) -> Response:
        return problem(503, str(exc), headers={"Retry-After": "5"})

    async def acknowledged(events: Sequence[Outgoing]) -> None:
        """Publishes, or raises NotAcknowledged. With two of three brokers away, the idempotent
        acks=all producer retries a write forever (too few in-sync replicas, or no leader): the
        request waited with it until the client gave up, and a lost broker answered 500."""
        try:
            await asyncio.wait_for(publish(bus, events), publish_timeout)
        except TimeoutError:
            raise NotAcknowledged(
                f"the bus did not acknowledge the post within {publish_timeout:g} s (too few"
                " brokers in sync, or none leading its partition); it is not accepted: send it"
                " again"
            ) from None
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("publishing a post failed", exc_info=exc)
            raise NotAcknowledged(
                f"the bus refused the post ({type(exc).__name__}); it is not accepted: send it"
                " again"
            ) from exc

    async def accept(post: PostIn, channel: str) -> JSONResponse:
        event = post_received(post, channel=channel)
        await acknowledged([event])
        if post.created_at is not None:
            latency = seconds_between(post.created_at, datetime.now(UTC))
            PIPELINE_STAGE_LATENCY.labels(RECEIVED).observe(latency)
        body = PostAccepted(
            platform=post.platform, post_id=post.post_id, event_id=event.envelope.event_id
        )
        return JSONResponse(body.model_dump(), status_code=202)

    @app.post("/api/v1/posts", status_code=202, response_model=PostAccepted)
    async def accept_post(post: PostIn) -> Response:
        """Accepts one post for classification and routing; answers once it is durably on the bus."""
        if post.platform == OPEN311_PLATFORM:
            return problem(
                422,
                "platform: 'open311' is reserved for requests POSTed through Open311",
                title="Invalid request",
                type_="https://plaza.example/problems/validation",
            )
        return await accept(post, "webhook")

    @app.post("/api/v1/posts/withdrawals", status_code=202, response_model=PostAccepted)
    async def withdraw_post(withdrawal: WithdrawalIn) -> Response:
        """A post the bridge handed over was deleted by its author: Plaza takes its words,
        photos, handle and point out of its records (only its point with `location_only`: the
        author took the location off it); the router checks the author."""
        if withdrawal.platform == OPEN311_PLATFORM:
            return problem(
                422,
                "platform: 'open311' requests are not withdrawn through a bridge",
                title="Invalid request",
                type_="https://plaza.example/problems/validation",
            )
        event = post_withdrawn(
            withdrawal.platform,
            withdrawal.post_id,
            channel="webhook",
            author_id=withdrawal.author_id,
            author_handle=withdrawal.author_handle,
            withdrawn_at=withdrawal.deleted_at,
            location_only=withdrawal.location_only,
        )
        await acknowledged([event])
        body = PostAccepted(
            platform=withdrawal.platform,
            post_id=withdrawal.post_id,
            event_id=event.envelope.event_id,
        )
        return JSONResponse(body.model_dump(), status_code=202)

    @app.post("/api/v1/open311/posts", status_code=202, response_model=PostAccepted)
    async def accept_open311_post(post: PostIn) -> Response:
        """A request POSTed through the gateway's Open311 endpoint: platform open311, its token as
        post_id, the chosen service_code."""
        if post.platform != OPEN311_PLATFORM or not post.service_code:
            return problem(
                422,
                "an Open311 post has platform 'open311' and a service_code",
                title="Invalid request",
                type_="https://plaza.example/problems/validation",
            )
        return await accept(post, OPEN311_PLATFORM)

    @app.get("/healthz")
    async def healthz() -> Response:
        # Ready means a post given now can be accepted: the broker answers.
        why = await bus.unreachable()
        if why is not None:
            return problem(503, why)
        return JSONResponse({"status": "ok"})

    install_metrics(app, metrics or MetricsAccess())
    return app
