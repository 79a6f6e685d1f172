"""Public replies on their way to the social platforms, for staff: which are waiting, which
failed for good (the dead letters), and a retry of a failed one. A manager sees the replies of
the requests in their scopes; city hall and admins see every reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from plaza.db.models import ReplyDelivery, ServiceRequest
from plaza.requests import CITY_HALL_QUEUE, TRIAGE_QUEUE
from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, or_, select

from plaza_api.auth import Principal, Role, StaffPrincipal
from plaza_api.deps import SessionDep
from plaza_api.open311 import w3c

router = APIRouter(prefix="/api/v1", tags=["Manager API"])

# withdrawn: never sent, the post it answers was deleted by its author
DeliveryState = Literal["pending", "sending", "posted", "failed", "withdrawn"]


class ReplyDeliveryOut(BaseModel):
    reply_id: str
    service_request_id: str | None
    district_code: str | None
    queue: str | None
    platform: str
    kind: str
    language: str
    text: str
    in_reply_to_post_id: str
    state: str
    attempts: int
    last_error: str | None
    remote_id: str | None
    public_url: str | None
    next_attempt_at: str | None
    updated_at: str | None


def _out(d: ReplyDelivery, request: ServiceRequest | None) -> ReplyDeliveryOut:
    return ReplyDeliveryOut(
        reply_id=d.reply_id,
        service_request_id=str(d.service_request_id) if d.service_request_id else None,
        district_code=request.district_code if request else None,
        queue=request.queue if request else None,
        platform=d.platform,
        kind=d.kind,
        language=d.language,
        text=d.body,
        in_reply_to_post_id=d.in_reply_to_post_id,
        state=d.state,
        attempts=d.attempts,
        last_error=d.last_error,
        remote_id=d.remote_id,
        public_url=d.public_url,
        next_attempt_at=w3c(d.next_attempt_at),
        updated_at=w3c(d.updated_at),
    )


def _scope(principal: Principal) -> ColumnElement[bool] | None:
    """Which replies the caller may see: None for all; 403 for a role that sees none."""
    if principal.sees_every_queue:
        return None
    if principal.role is not Role.MANAGER:
        raise HTTPException(403, "only managers, city hall and admins see the replies' delivery")
    queues = [s for s in principal.scopes if s != CITY_HALL_QUEUE]
    # in triage, a district is only a guess (Principal.manages)
    return or_(
        ServiceRequest.queue.in_(queues),
        and_(ServiceRequest.queue != TRIAGE_QUEUE, ServiceRequest.district_code.in_(queues)),
    )


@router.get("/replies", response_model=list[ReplyDeliveryOut])
async def reply_deliveries(
    session: SessionDep,
    principal: StaffPrincipal,
    state: Annotated[DeliveryState | None, Query(description="failed: the dead letters")] = None,
    platform: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ReplyDeliveryOut]:
    """Replies to social platforms and how their delivery goes, the most recently changed
    first; `state=failed` lists those that failed for good and wait for a retry."""
    scope = _scope(principal)
    query = select(ReplyDelivery, ServiceRequest).outerjoin(
        ServiceRequest, ServiceRequest.id == ReplyDelivery.service_request_id
    )
    if scope is not None:
        query = query.where(scope)
    if state is not None:
        query = query.where(ReplyDelivery.state == state)
    if platform is not None:
        query = query.where(ReplyDelivery.platform == platform)
    rows = await session.execute(
        query.order_by(ReplyDelivery.updated_at.desc(), ReplyDelivery.reply_id).limit(limit)
    )
    return [_out(d, r) for d, r in rows.all()]


@router.post("/replies/{reply_id}/retry", response_model=ReplyDeliveryOut)
async def retry_reply(
    reply_id: str, session: SessionDep, principal: StaffPrincipal
) -> ReplyDeliveryOut:
    """Sends a failed reply again (the notifier first checks that it is not in the thread)."""
    scope = _scope(principal)
    delivery = await session.get(ReplyDelivery, reply_id, with_for_update=True)
    if delivery is None:
        raise HTTPException(404, f"no reply {reply_id!r}")
    request = (
        await session.get(ServiceRequest, delivery.service_request_id)
        if delivery.service_request_id is not None
        else None
    )
    if scope is not None and (request is None or not principal.manages(request)):
        raise HTTPException(403, f"reply {reply_id} is not to a request of yours")
    if delivery.state != "failed":
        raise HTTPException(
            409, f"reply {reply_id} is {delivery.state}; only a failed one is retried"
        )
    now = datetime.now(UTC)
    delivery.state = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.updated_at = now
    await session.commit()
    return _out(delivery, request)
