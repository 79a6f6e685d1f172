"""The manager API (/api/v1): district queues, a request with its reports, replies and history,
and the actions that move a request through its lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from plaza.db.models import Reply, RequestEvent, RequestReport, ServiceRequest
from plaza.lifecycle import Command, InvalidCommand, RequestNotFound, act, history, split_report
from plaza.requests import (
    CITY_HALL_QUEUE,
    OPEN_STATUSES,
    TRIAGE_QUEUE,
    Action,
    InvalidTransition,
    Status,
    allowed_actions,
    extended_status,
    open311_status,
)
from plaza.web import problem
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from plaza_api.deps import CityDep, RoutingDep, SessionDep, SlaDep
from plaza_api.open311 import w3c

router = APIRouter(prefix="/api/v1", tags=["Manager API"])


class QueueItem(BaseModel):
    service_request_id: str
    status: str
    open311_status: str
    extended_status: str
    service_code: str
    description: str
    district_code: str | None
    barri_code: str | None
    queue: str
    agency_responsible: str
    location_source: str
    urgency: str
    language: str
    reporters_count: int
    assigned_worker: str | None
    requested_datetime: str | None
    ack_due_at: str | None
    expected_datetime: str | None
    overdue: bool
    escalated: bool
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
    in_reply_to_post_id: str
    text: str
    posted_at: str | None


class ReportOut(BaseModel):
    platform: str
    post_id: str
    author_handle: str
    text: str
    reported_at: str | None
    merged: bool


class RequestDetail(QueueItem):
    lat: float | None
    long: float | None
    status_notes: str | None
    resolution_photo_url: str | None
    duplicate_of: str | None
    allowed_actions: list[str]
    reports: list[ReportOut]
    replies: list[ReplyOut]


class HistoryEntry(BaseModel):
    version: int
    kind: str
    actor: str
    at: str | None
    before: dict[str, object]
    after: dict[str, object]
    note: str | None
    public: bool


class ActionIn(BaseModel):
    """What a manager does to a request. Which fields an action needs: assign → worker;
    resolve → note (public), photo_url optional; transfer → note (the reason) and district_code
    or agency; mark_duplicate → duplicate_of; not_responsible → note."""

    actor: str = Field(min_length=1, max_length=256, description="Who acts (a manager's id)")
    note: str | None = Field(default=None, max_length=2000)
    public: bool = Field(default=True, description="False for an internal note")
    worker: str | None = Field(default=None, max_length=256, examples=["@electricista_jun"])
    photo_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    district_code: str | None = Field(default=None, pattern=r"^\d{2}$")
    agency: str | None = Field(default=None, max_length=128)
    duplicate_of: int | None = Field(default=None, ge=1)


class SplitIn(BaseModel):
    actor: str = Field(min_length=1, max_length=256)
    platform: str
    post_id: str


def _now() -> datetime:
    return datetime.now(UTC)


def _item(r: ServiceRequest, now: datetime) -> dict[str, object]:
    overdue = (
        r.status in OPEN_STATUSES and r.expected_datetime is not None and r.expected_datetime < now
    )
    return {
        "service_request_id": r.service_request_id,
        "status": r.status,
        "open311_status": open311_status(r.status),
        "extended_status": extended_status(r.status),
        "service_code": r.service_code,
        "description": r.description,
        "district_code": r.district_code,
        "barri_code": r.barri_code,
        "queue": r.queue,
        "agency_responsible": r.agency_responsible,
        "location_source": r.location_source,
        "urgency": r.urgency,
        "language": r.language,
        "reporters_count": r.reporters_count,
        "assigned_worker": r.assigned_worker,
        "requested_datetime": w3c(r.requested_datetime),
        "ack_due_at": w3c(r.ack_due_at),
        "expected_datetime": w3c(r.expected_datetime),
        "overdue": overdue,
        "escalated": r.escalated_at is not None,
        "source_platform": r.source_platform,
        "source_post_id": r.source_post_id,
        "author_handle": r.source_author_handle,
    }


@router.get("/districts/{code}/queue", response_model=Queue)
async def district_queue(
    code: str,
    session: SessionDep,
    city: CityDep,
    routing: RoutingDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Queue:
    """The open requests of a queue, the earliest due first: a district ("01".."10"),
    `triage` (no sure district), `city-hall` (escalated after a missed SLA) or a city-wide
    service queue (e.g. `city-mobility`)."""
    stmt = select(ServiceRequest).where(ServiceRequest.status.in_(OPEN_STATUSES))
    if code == TRIAGE_QUEUE:
        name = "Triage (no district found)"
        stmt = stmt.where(ServiceRequest.queue == code)
    elif code == CITY_HALL_QUEUE:
        name = "City hall (escalated)"
        stmt = stmt.where(ServiceRequest.escalated_at.is_not(None))
    elif code in city.districts:
        name = city.districts[code].name
        stmt = stmt.where(ServiceRequest.queue == code)
    elif code in routing.queues:
        name = code
        stmt = stmt.where(ServiceRequest.queue == code)
    else:
        known = ", ".join([*city.districts, TRIAGE_QUEUE, CITY_HALL_QUEUE, *sorted(routing.queues)])
        raise HTTPException(404, f"no queue {code!r}; queues are {known}")
    stmt = stmt.order_by(
        ServiceRequest.expected_datetime.asc().nulls_last(), ServiceRequest.id
    ).limit(limit)
    rows = (await session.execute(stmt)).scalars().all()
    now = _now()
    items = [QueueItem.model_validate(_item(r, now)) for r in rows]
    return Queue(queue=code, name=name, count=len(items), items=items)


async def _detail(session: AsyncSession, request: ServiceRequest) -> RequestDetail:
    replies = (
        await session.execute(
            select(Reply).where(Reply.service_request_id == request.id).order_by(Reply.posted_at)
        )
    ).scalars()
    reports = (
        await session.execute(
            select(RequestReport)
            .where(RequestReport.service_request_id == request.id)
            .order_by(RequestReport.id)
        )
    ).scalars()
    return RequestDetail.model_validate(
        {
            **_item(request, _now()),
            "lat": request.lat,
            "long": request.long,
            "status_notes": request.status_notes,
            "resolution_photo_url": request.resolution_photo_url,
            "duplicate_of": str(request.duplicate_of) if request.duplicate_of else None,
            "allowed_actions": [a.value for a in allowed_actions(Status(request.status))],
            "reports": [
                {
                    "platform": r.platform,
                    "post_id": r.post_id,
                    "author_handle": r.author_handle,
                    "text": r.text,
                    "reported_at": w3c(r.reported_at),
                    "merged": r.merged,
                }
                for r in reports
            ],
            "replies": [
                {
                    "reply_id": r.reply_id,
                    "kind": r.kind,
                    "language": r.language,
                    "platform": r.platform,
                    "channel": r.channel,
                    "in_reply_to_post_id": r.in_reply_to_post_id,
                    "text": r.text,
                    "posted_at": w3c(r.posted_at),
                }
                for r in replies
            ],
        }
    )


async def _get(session: AsyncSession, service_request_id: str) -> ServiceRequest:
    request = (
        await session.get(ServiceRequest, int(service_request_id))
        if service_request_id.isdigit()
        else None
    )
    if request is None:
        raise HTTPException(404, f"no service request {service_request_id!r}")
    return request


@router.get("/requests/{service_request_id}", response_model=RequestDetail)
async def request_detail(service_request_id: str, session: SessionDep) -> RequestDetail:
    """One request with its reports, the public replies it got and the actions it allows now."""
    return await _detail(session, await _get(session, service_request_id))


@router.get("/requests/{service_request_id}/history", response_model=list[HistoryEntry])
async def request_history(service_request_id: str, session: SessionDep) -> list[HistoryEntry]:
    """Every change to the request, oldest first: who, when, what it was and what it became."""
    request = await _get(session, service_request_id)
    return [_entry(e) for e in await history(session, request.id)]


def _entry(e: RequestEvent) -> HistoryEntry:
    return HistoryEntry(
        version=e.version,
        kind=e.kind,
        actor=e.actor,
        at=w3c(e.at),
        before=e.before,
        after=e.after,
        note=e.note,
        public=e.public,
    )


@router.post(
    "/requests/{service_request_id}/actions/{action}",
    response_model=RequestDetail,
    responses={409: {"description": "The request's status does not allow this action"}},
)
async def request_action(
    service_request_id: str,
    action: Action,
    body: ActionIn,
    session: SessionDep,
    city: CityDep,
    sla: SlaDep,
    routing: RoutingDep,
) -> RequestDetail | Response:
    """Moves the request: acknowledge, assign, start, resolve, close, reopen, transfer,
    mark_duplicate, not_responsible. A refused move answers 409 with the allowed actions."""
    if not service_request_id.isdigit():
        raise HTTPException(404, f"no service request {service_request_id!r}")
    command = Command(
        action=action,
        actor=body.actor,
        note=body.note,
        public=body.public,
        worker=body.worker,
        photo_url=body.photo_url,
        district_code=body.district_code,
        agency=body.agency,
        duplicate_of=body.duplicate_of,
    )
    try:
        async with session.begin():
            request = await act(
                session,
                int(service_request_id),
                command,
                now=_now(),
                sla=sla,
                routing=routing,
                city=city,
            )
    except RequestNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InvalidTransition as exc:
        return problem(
            409,
            str(exc),
            title="Action not allowed in this status",
            type_="https://plaza.example/problems/invalid-transition",
            status_now=exc.status.value,
            allowed_actions=[a.value for a in exc.allowed],
        )
    except InvalidCommand as exc:
        return problem(
            422,
            str(exc),
            title="Invalid action",
            type_="https://plaza.example/problems/invalid-action",
        )
    return await _detail(session, request)


@router.post("/requests/{service_request_id}/split", response_model=RequestDetail, status_code=201)
async def split(
    service_request_id: str,
    body: SplitIn,
    session: SessionDep,
    city: CityDep,
    sla: SlaDep,
    routing: RoutingDep,
) -> RequestDetail | Response:
    """Undoes a wrong merge: one report leaves the request and becomes a request of its own."""
    if not service_request_id.isdigit():
        raise HTTPException(404, f"no service request {service_request_id!r}")
    try:
        async with session.begin():
            new = await split_report(
                session,
                int(service_request_id),
                body.platform,
                body.post_id,
                actor=body.actor,
                now=_now(),
                sla=sla,
                routing=routing,
                city=city,
            )
    except RequestNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InvalidCommand as exc:
        return problem(422, str(exc), title="Cannot split")
    return await _detail(session, new)
