"""Routes the gateway forwards to other services (ingest's webhook), and health."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, Request, Response
from plaza.posts import PostAccepted, PostIn, WithdrawalIn
from plaza.web import problem
from sqlalchemy import text

from plaza_api.auth import POST_WRITERS, Principal, Role, require
from plaza_api.deps import IngestDep, SessionDep

router = APIRouter()
log = logging.getLogger(__name__)

_FORWARDED_HEADERS = ("content-type", "retry-after")


# The body and the answer ingest gives, documented here: the gateway forwards the raw body (ingest
# validates it), so FastAPI has no model of its own to show in /docs.
_POST_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PostIn.model_json_schema()}},
    },
    "responses": {
        "202": {
            "description": "On the bus: Plaza will handle it",
            "content": {"application/json": {"schema": PostAccepted.model_json_schema()}},
        },
        "422": {"description": "Not a post: the problem+json names the field"},
        "503": {"description": "Ingest is unavailable (Retry-After): send it again"},
    },
}


_WITHDRAWAL_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WithdrawalIn.model_json_schema()}},
    },
    "responses": {
        "202": {
            "description": "On the bus: the router withdraws the post if its author asked",
            "content": {"application/json": {"schema": PostAccepted.model_json_schema()}},
        },
        "422": {"description": "Not a withdrawal: the problem+json names the field"},
        "503": {"description": "Ingest is unavailable (Retry-After): send it again"},
    },
}


@router.post("/api/v1/posts", status_code=202, tags=["Ingest"], openapi_extra=_POST_DOCS)
async def submit_post(
    request: Request,
    ingest: IngestDep,
    principal: Annotated[Principal, Depends(require(*POST_WRITERS))],
) -> Response:
    """Hands a post to ingest, which validates it (422 problem+json naming the field) and
    answers 202 once it is on the bus. Needs an API key of role `bridge` (or `admin`); a
    bridge key with scopes posts for those platforms only."""
    return await _forward(request, ingest, principal, "/api/v1/posts")


@router.post(
    "/api/v1/posts/withdrawals", status_code=202, tags=["Ingest"], openapi_extra=_WITHDRAWAL_DOCS
)
async def withdraw_post(
    request: Request,
    ingest: IngestDep,
    principal: Annotated[Principal, Depends(require(*POST_WRITERS))],
) -> Response:
    """Says a post handed over before was deleted by its author (author_id or author_handle,
    as the post named them): its words, photos, handle and point leave Plaza's records, the
    request stays. The same keys and scopes as POST /api/v1/posts."""
    return await _forward(request, ingest, principal, "/api/v1/posts/withdrawals")


async def _forward(
    request: Request, ingest: httpx.AsyncClient, principal: Principal, path: str
) -> Response:
    body = await request.body()
    if principal.role is Role.BRIDGE and principal.scopes:
        platform = _platform_of(body)
        if platform is None:
            # Refused here, not left to ingest: its parser reads bodies this one does not (a
            # UTF-8 byte order mark, a lone surrogate, NaN), and a post whose platform the
            # gateway cannot see would get past the key's scopes.
            return problem(
                422,
                "the body must be a JSON object with a platform (UTF-8 without a byte order "
                f"mark): this bridge key posts for {', '.join(sorted(principal.scopes))} only",
            )
        if platform not in principal.scopes:
            return problem(
                403,
                f"this bridge key posts for {', '.join(sorted(principal.scopes))}, "
                f"not for {platform!r}",
            )
    try:
        upstream = await ingest.post(
            path,
            content=body,
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
    except Exception as exc:  # whatever the connection did, ingest did not answer
        # httpx's errors, and not only: a connection torn down mid-request (ingest killed) has
        # raised an AttributeError from inside httpcore. The post was not accepted; say so.
        if not isinstance(exc, httpx.HTTPError):
            log.warning("forwarding a post to ingest failed", exc_info=exc)
        return problem(
            503, f"ingest is unavailable: {type(exc).__name__}", headers={"Retry-After": "5"}
        )
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _FORWARDED_HEADERS}
    return Response(upstream.content, status_code=upstream.status_code, headers=headers)


def _platform_of(body: bytes) -> str | None:
    """The post's platform, or None when the body is no post (ingest then says what is wrong)."""
    try:
        post = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    platform = post.get("platform") if isinstance(post, dict) else None
    return platform if isinstance(platform, str) else None


@router.get("/healthz", tags=["Operations"])
async def healthz(session: SessionDep) -> Response:
    try:
        await session.execute(text("select 1"))
    except Exception as exc:
        return problem(503, f"database unavailable: {type(exc).__name__}")
    return Response('{"status":"ok"}', media_type="application/json")
