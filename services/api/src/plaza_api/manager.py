"""The manager API (/api/v1): district queues and a request with its replies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from plaza.db.models import Reply, ServiceRequest
from plaza.requests import OPEN_STATUSES, TRIAGE_QUEUE, open311_status
from pydantic import BaseModel
from sqlalchemy import select

from plaza_api.deps import CityDep, SessionDep
from plaza_api.open311 import w3c

router = APIRouter(prefix="/api/v1", tags=["Manager API"])


class QueueItem(BaseModel):
    service_request_id: str
    status: str
    open311_status: str
    service_code: str
    description: str
    district_code: str | None
    barri_code: str | None
    location_source: str
    urgency: str
    language: str
    requested_datetime: str | None
    expected_datetime: str | None
    source_platform: str
    source_post_id: str
    author_handle: str


class Queue(BaseModel):
    queue: str
    name: str
    count: int
    items: list[QueueItem]


class ReplyOut(BaseModel):
    reply_id: str
    kind: str
    language: str
    platform: str
    channel: str
    text: str
    posted_at: str | None


class RequestDetail(QueueItem):
    agency_responsible: str
    lat: float | None
    long: float | None
    replies: list[ReplyOut]


def _item(r: ServiceRequest) -> dict[str, object]:
    return {
        "service_request_id": r.service_request_id,
        "status": r.status,
        "open311_status": open311_status(r.status),
        "service_code": r.service_code,
        "description": r.description,
        "district_code": r.district_code,
        "barri_code": r.barri_code,
        "location_source": r.location_source,
        "urgency": r.urgency,
        "language": r.language,
        "requested_datetime": w3c(r.requested_datetime),
        "expected_datetime": w3c(r.expected_datetime),
        "source_platform": r.source_platform,
        "source_post_id": r.source_post_id,
        "author_handle": r.source_author_handle,
    }


@router.get("/districts/{code}/queue", response_model=Queue)
async def district_queue(
    code: str,
    session: SessionDep,
    city: CityDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Queue:
    """The open requests of a district (or of `triage`), the most urgent due time first."""
    if code == TRIAGE_QUEUE:
        name = "Triage (no district found)"
    elif code in city.districts:
        name = city.districts[code].name
    else:
        raise HTTPException(404, f"no district {code!r}; districts are 01..10, or 'triage'")
    stmt = (
        select(ServiceRequest)
        .where(ServiceRequest.queue == code, ServiceRequest.status.in_(OPEN_STATUSES))
        .order_by(ServiceRequest.expected_datetime.asc().nulls_last(), ServiceRequest.id)
        .limit(limit)
    )
    rows = (await session.execute(stmt)).scalars().all()
    items = [QueueItem.model_validate(_item(r)) for r in rows]
    return Queue(queue=code, name=name, count=len(items), items=items)


@router.get("/requests/{service_request_id}", response_model=RequestDetail)
async def request_detail(service_request_id: str, session: SessionDep) -> RequestDetail:
    """One request with the public replies it got."""
    request = (
        await session.get(ServiceRequest, int(service_request_id))
        if service_request_id.isdigit()
        else None
    )
    if request is None:
        raise HTTPException(404, f"no service request {service_request_id!r}")
    replies = (
        await session.execute(
            select(Reply).where(Reply.service_request_id == request.id).order_by(Reply.posted_at)
        )
    ).scalars()
    return RequestDetail.model_validate(
        {
            **_item(request),
            "agency_responsible": request.agency_responsible,
            "lat": request.lat,
            "long": request.long,
            "replies": [
                {
                    "reply_id": r.reply_id,
                    "kind": r.kind,
                    "language": r.language,
                    "platform": r.platform,
                    "channel": r.channel,
                    "text": r.text,
                    "posted_at": w3c(r.posted_at),
                }
                for r in replies
            ],
        }
    )
