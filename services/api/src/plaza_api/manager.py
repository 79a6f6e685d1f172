"""The manager API (/api/v1): district queues (filters, due-time order, cursor pages, live updates
as Server-Sent Events), a request with its reports, replies, notes and history, and the actions
that move requests through their lifecycle, one by one or in bulk.

Who sees what: a manager the queues and districts in their scopes, a worker the requests assigned
to them, city hall and admins everything (plaza_api.auth)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from plaza.city import City
from plaza.db.models import (
    Open311Submission,
    Reply,
    RequestEvent,
    RequestReport,
    ServiceRequest,
    StaffUser,
)
from plaza.lifecycle import (
    Command,
    InvalidCommand,
    RequestNotFound,
    act,
    add_note,
    history,
    lock_in_order,
    split_report,
)
from plaza.policy import RoutingTable, SlaPolicy
from plaza.report import Month, as_csv, monthly_report
from plaza.requests import (
    CITY_HALL_QUEUE,
    ID_MAX,
    OPEN_STATUSES,
    TRIAGE_QUEUE,
    Action,
    InvalidTransition,
    Status,
    allowed_actions,
    extended_status,
    open311_status,
    parse_id,
    sql_list,
    worker_handle,
)
from plaza.taxonomy import load_taxonomy
from plaza.web import InvalidField, problem
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from starlette.datastructures import QueryParams

from plaza_api.auth import (
    EVERY_QUEUE,
    STAFF,
    Authenticator,
    CurrentPrincipal,
    InvalidCredentials,
    Principal,
    Role,
    StaffPrincipal,
    authenticator,
    bearer_scheme,
    current_principal,
    key_scheme,
    manager_queues,
    require,
)
from plaza_api.deps import CityDep, RoutingDep, SessionDep, SlaDep
from plaza_api.open311 import w3c
from plaza_api.reads import Reads

router = APIRouter(prefix="/api/v1", tags=["Manager API"])

# What a worker may do to a request assigned to them; managers may do every action.
WORKER_ACTIONS: Final = frozenset({Action.START, Action.RESOLVE})
# Names no public address has (RFC 6761, RFC 8375, RFC 6762's .local and common intranet ones).
_INTERNAL_SUFFIXES: Final = (".localhost", ".local", ".internal", ".home.arpa", ".lan", ".intranet")
MAX_BULK: Final = 100
ASSIGNMENTS: Final = "assignments"  # a worker's own requests, as a stream follows them
SSE_HEARTBEAT_SECONDS: Final = 15.0


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
    escalated: bool
    source_platform: str
    source_post_id: str
    author_handle: str
    overdue: bool = Field(
        description="Still open and past its resolve-by time, or not acknowledged and past its "
        "acknowledge-by time"
    )


class Queue(BaseModel):
    queue: str
    name: str
    count: int = Field(description="How many items this page has")
    items: list[QueueItem]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page"
    )


class ReplyOut(BaseModel):
    reply_id: str
    kind: str
    language: str
    platform: str
    channel: str
    in_reply_to_post_id: str
    text: str
    posted_at: str | None


class ContactOut(BaseModel):
    """An Open311 reporter's contact details: for the city's staff only."""

    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None


class ReportOut(BaseModel):
    platform: str
    post_id: str
    author_handle: str
    text: str
    reported_at: str | None
    merged: bool
    withdrawn: bool = Field(
        default=False,
        description="Its author deleted the post: its text, handle and point are gone",
    )
    contact: ContactOut | None = None


class NoteOut(BaseModel):
    at: str | None
    actor: str
    kind: str
    note: str
    public: bool


class RequestDetail(QueueItem):
    version: int = Field(
        description="Grows with every change; the ETag. Send it back as `If-Match` to act only "
        "on the request as you read it (412 if it changed meanwhile)"
    )
    lat: float | None
    long: float | None
    address: str | None = Field(
        description="Where the citizen said it is: the address they gave (Open311's "
        "address_string) as they wrote it, else the street and number their post's text names, "
        "in the city's street register's official form (\"Carrer de Verdi 12\")"
    )
    media_urls: list[str] = Field(description="The citizens' photos (their platforms' URLs)")
    source_public_url: str | None = Field(description="The post that opened it, on its platform")
    status_notes: str | None
    resolution_photo_url: str | None
    duplicate_of: str | None
    withdrawn: bool = Field(
        default=False,
        description="The post that opened it was deleted by its author: its description says "
        "so, and its photos, handle, address and exact point are gone (the request stays)",
    )
    allowed_actions: list[str]
    reports: list[ReportOut]
    replies: list[ReplyOut]
    notes: list[NoteOut] = Field(default_factory=list, description="Public and internal notes")


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
    or agency; mark_duplicate → duplicate_of; not_responsible → note. The audit trail records
    the authenticated caller, not `actor`. A field this model does not have is a 422 (a
    misspelt `worker` would otherwise be a silent no-op)."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(
        default=None, max_length=256, description="Ignored: the audit trail names the caller"
    )
    note: str | None = Field(default=None, max_length=2000, examples=["Fanal canviat"])
    public: bool = Field(default=True, description="False for an internal note")
    worker: str | None = Field(
        default=None,
        max_length=256,
        examples=["@electricista_jun"],
        description="A public handle (the @ is added when left out: jordi is @jordi)",
    )
    photo_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    district_code: str | None = Field(
        default=None, max_length=16, examples=["02"], description='A district\'s code ("2" is "02")'
    )
    agency: str | None = Field(default=None, max_length=128)
    duplicate_of: int | None = Field(default=None, ge=1, le=ID_MAX)

    @field_validator("worker")
    @classmethod
    def _handle(cls, value: str | None) -> str | None:
        return worker_handle(value) if value is not None else None

    @field_validator("photo_url")
    @classmethod
    def _public_photo(cls, value: str | None) -> str | None:
        """The photo is published (in the reply, in Open311): an address only the city's own
        network reaches (127.0.0.1, 10.x, an intranet name) is a mistake, and would tell the
        world about that network."""
        if value is None:
            return None
        host = (urlsplit(value).hostname or "").rstrip(".").lower()
        if not host:
            raise ValueError("photo_url has no host")
        try:
            private = not ipaddress.ip_address(host).is_global
        except ValueError:
            private = "." not in host or host.endswith(_INTERNAL_SUFFIXES)
        if private:
            raise ValueError(f"photo_url must be a public address, not {host!r}")
        return value


class BulkActionIn(ActionIn):
    service_request_ids: list[int] = Field(min_length=1, max_length=MAX_BULK, examples=[[12, 15]])


class BulkResult(BaseModel):
    service_request_id: str
    status: int = Field(description="200 done, or the error's status (403, 404, 409, 422)")
    detail: str | None = None
    request_status: str | None = None


class BulkOut(BaseModel):
    succeeded: int
    failed: int
    results: list[BulkResult]


class NoteIn(BaseModel):
    note: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
    ] = Field(examples=["Cal una grua; trucar a BCASA"])
    public: bool = Field(default=False, description="True publishes it in Open311's notes")


class SplitIn(BaseModel):
    actor: str | None = Field(default=None, max_length=256, description="Ignored (the caller)")
    platform: str
    post_id: str


class Me(BaseModel):
    kind: str
    name: str
    role: str | None
    scopes: list[str]
    worker_handle: str | None


class SlaWindowOut(BaseModel):
    acknowledge_hours: float
    resolve_hours: float


class SlaServiceOut(BaseModel):
    normal: SlaWindowOut
    urgent: SlaWindowOut


def _now() -> datetime:
    return datetime.now(UTC)


class _QueueRow(Protocol):
    """What _item reads: a ServiceRequest, or a row of its _QUEUE_COLUMNS."""

    id: int
    status: str
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
    requested_datetime: datetime
    ack_due_at: datetime | None
    acknowledged_at: datetime | None
    expected_datetime: datetime | None
    escalated_at: datetime | None
    source_platform: str
    source_post_id: str
    source_author_handle: str


_STATUS_VALUES: Final = frozenset(s.value for s in Status)


def _item(r: _QueueRow, now: datetime) -> dict[str, object]:
    overdue = r.status in OPEN_STATUSES and (
        (r.expected_datetime is not None and r.expected_datetime < now)
        or (r.acknowledged_at is None and r.ack_due_at is not None and r.ack_due_at < now)
    )
    return {
        "service_request_id": str(r.id),
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


# --- who am I ------------------------------------------------------------------------------


@router.get("/me", response_model=Me, tags=["Access"])
async def me(principal: CurrentPrincipal) -> Me:
    """Who the credentials belong to, their role and scopes."""
    return Me(
        kind=principal.kind,
        name=principal.name,
        role=principal.role.value if principal.role else None,
        scopes=sorted(principal.scopes),
        worker_handle=principal.worker_handle,
    )


# --- queues --------------------------------------------------------------------------------


def _queue(code: str, city: City, routing: RoutingTable) -> tuple[str, ColumnElement[bool]]:
    """A queue's name and which requests are in it (open or not), or 404."""
    name = _queue_name(code, city, routing)
    if code == CITY_HALL_QUEUE:
        return name, ServiceRequest.escalated_at.is_not(None)
    return name, ServiceRequest.queue == code


def _queue_name(code: str, city: City, routing: RoutingTable) -> str:
    """A queue's name, or 404."""
    if code == CITY_HALL_QUEUE:
        return "City hall (escalated)"
    if code == TRIAGE_QUEUE:
        return "Triage (no district found)"
    if code in city.districts:
        return city.districts[code].name
    if code in routing.queues:
        return code
    known = ", ".join([*manager_queues(city, routing), CITY_HALL_QUEUE])
    raise HTTPException(404, f"no queue {code!r}; queues are {known}")


def _yours(principal: Principal) -> str:
    """What the caller may see, for a 403: "you are a manager of 06, triage"."""
    if principal.role is Role.WORKER:
        return f"you are the worker {principal.worker_handle}: what is assigned to you"
    return f"you are a {principal.role} of {', '.join(sorted(principal.scopes)) or 'no queue'}"


def _not_yours(what: str, request: ServiceRequest, principal: Principal) -> HTTPException:
    district = f", district {request.district_code}" if request.district_code else ""
    return HTTPException(
        403, f"{what} is in queue {request.queue!r}{district}; {_yours(principal)}"
    )


def _may_read_queue(principal: Principal, code: str) -> None:
    if not principal.manages_queue(code):
        raise HTTPException(403, f"queue {code!r} is not yours: {_yours(principal)}")


def _csv_of(value: str | None, allowed: frozenset[str] | set[str], name: str) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    unknown = sorted(set(items) - set(allowed))
    if unknown:
        raise InvalidField(name, f"unknown {unknown}; one of {', '.join(sorted(allowed))}")
    return items


def _worker_filter(handle: str) -> str:
    """A worker filter read as assignments store handles ("jordi" finds "@jordi")."""
    try:
        return worker_handle(handle)
    except ValueError as exc:
        raise InvalidField("assigned_worker", str(exc)) from None


def _query_key(*parts: object) -> str:
    """What a page's query is (its queue, filters and sort), short: a cursor carries it, so that
    one passed with another query, whose order it does not belong to, is refused rather than
    silently skipping items."""
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


def _encode_cursor(due: datetime | None, last_id: int, query: str) -> str:
    # json.dumps([due.isoformat() or None, last_id, query]), written out: an ISO datetime and a
    # hex digest need no escaping. To the microsecond.
    at = f'"{due.isoformat()}"' if due else "null"
    raw = f'[{at}, {last_id:d}, "{query}"]'
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, query: str) -> tuple[datetime | None, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        due, last_id, given = json.loads(raw)
        when = datetime.fromisoformat(due).astimezone(UTC) if due else None
        if isinstance(last_id, bool) or not isinstance(last_id, int) or not 0 <= last_id <= ID_MAX:
            raise ValueError(last_id)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise InvalidField("cursor", "not a cursor this API gave") from None
    if given != query:
        raise InvalidField(
            "cursor",
            "it continues another query (another queue, filter or sort); pass the same "
            "parameters as the page that gave it, or start again without a cursor",
        )
    return when, last_id


_OPEN_SQL: Final = sql_list(OPEN_STATUSES)


# A queue item as JSON: the text PostgreSQL keeps for each request (service_requests.queue_item,
# written by a trigger on every change: migration 0006), left open, and closed here with the one
# field that depends on the clock. A page is the rows' text joined, with no Python object per
# row or field.
# Past a deadline still running: resolve-by, or acknowledge-by while nobody has acknowledged it.
_PAST_DUE_SQL: Final = (
    "(s.expected_datetime < $1 OR (s.acknowledged_at IS NULL AND s.ack_due_at < $1))"
)
_QUEUE_ITEM_SQL: Final = (
    f"s.queue_item || CASE WHEN s.status IN ({_OPEN_SQL}) AND {_PAST_DUE_SQL}"
    """ THEN ',"overdue":true}' ELSE ',"overdue":false}' END"""
)


class _QueueQuery:
    """The text and parameters of one queue page's statement ($1 is now)."""

    def __init__(self, now: datetime) -> None:
        self.where: list[str] = []
        self.args: list[object] = [now]

    def param(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def keyset(self, cursor: str, descending: bool, query: str) -> None:
        """Keyset pagination over (expected_datetime NULLS LAST, id): the rows after the cursor
        (given by the same `query`, see _query_key)."""
        due, last_id = _decode_cursor(cursor, query)
        beyond = "<" if descending else ">"
        after_id = f"s.id {beyond} {self.param(last_id)}"
        if due is None:
            self.where.append(f"s.expected_datetime IS NULL AND {after_id}")
            return
        at = self.param(due)
        self.where.append(
            f"(s.expected_datetime {beyond} {at} OR (s.expected_datetime = {at} AND {after_id})"
            " OR s.expected_datetime IS NULL)"
        )

    def sql(self, descending: bool, limit: int) -> str:
        """One row for the page: its items' JSON joined (in order; as UTF-8 bytes, which the
        gateway sends as they are, with no decoding and encoding again), how many there are, and
        the last one's keyset. One row more than `limit` is read, to know whether a page
        follows."""
        order = f"s.expected_datetime {'DESC' if descending else 'ASC'} NULLS LAST, s.id"
        order += " DESC" if descending else " ASC"
        beyond = self.param(limit + 1)
        return (
            "SELECT convert_to("
            f"string_agg(p.item, ',' ORDER BY p.n) FILTER (WHERE p.n < {beyond}), 'UTF8'),"
            f" count(*), max(p.due) FILTER (WHERE p.n = {beyond} - 1),"
            f" max(p.id) FILTER (WHERE p.n = {beyond} - 1)"
            f" FROM (SELECT {_QUEUE_ITEM_SQL} AS item, s.expected_datetime AS due, s.id,"
            f" row_number() OVER (ORDER BY {order}) AS n FROM service_requests AS s"
            f" WHERE {' AND '.join(self.where)}"
            f" ORDER BY {order} LIMIT {beyond}) AS p"
        )


def _filtered(
    code: str,
    status: str | None,
    service_code: str | None,
    urgency: str | None,
    overdue: bool | None,
    assigned_worker: str | None,
    escalated: bool | None,
) -> tuple[_QueueQuery, tuple[object, ...]]:
    """A queue's statement with its filters (open requests unless `status` says otherwise), and
    the filters as read (a 422 for a status, service or worker that is none)."""
    statuses = _csv_of(status, _STATUS_VALUES, "status")
    q = _QueueQuery(_now())
    if code == CITY_HALL_QUEUE:
        q.where.append("s.escalated_at IS NOT NULL")
    else:
        q.where.append(f"s.queue = {q.param(code)}")
    q.where.append(f"s.status IN ({sql_list(statuses) if statuses else _OPEN_SQL})")
    codes = _csv_of(service_code, set(load_taxonomy()), "service_code") if service_code else []
    if codes:
        q.where.append(f"s.service_code = ANY({q.param(codes)}::text[])")
    if urgency is not None:
        q.where.append(f"s.urgency = {q.param(urgency)}")
    if overdue is True:
        q.where.append(_PAST_DUE_SQL)
    elif overdue is False:
        q.where.append(f"NOT coalesce({_PAST_DUE_SQL}, false)")
    worker = _worker_filter(assigned_worker) if assigned_worker is not None else None
    if worker is not None:
        q.where.append(f"s.assigned_worker = {q.param(worker)}")
    if escalated is not None:
        q.where.append(f"s.escalated_at IS {'NOT ' if escalated else ''}NULL")
    return q, (sorted(statuses), sorted(codes), urgency, overdue, worker, escalated)


async def district_queue(
    code: str,
    request: Request,
    city: CityDep,
    routing: RoutingDep,
    principal: StaffPrincipal,
    status: Annotated[
        str | None,
        Query(description="Comma-separated statuses (default: every open one)", examples=["new"]),
    ] = None,
    service_code: Annotated[
        str | None, Query(description="Comma-separated service codes", examples=["streetlight"])
    ] = None,
    urgency: Annotated[Literal["normal", "urgent"] | None, Query()] = None,
    overdue: Annotated[
        bool | None,
        Query(
            description="true: past their resolve-by time, or their acknowledge-by time while "
            "not acknowledged (the items' `overdue`); false: neither"
        ),
    ] = None,
    assigned_worker: Annotated[str | None, Query(examples=["@jordi"])] = None,
    escalated: Annotated[
        bool | None,
        Query(
            description="true: escalated to city hall after a missed deadline (the items' "
            "`escalated`); false: not"
        ),
    ] = None,
    sort: Annotated[
        Literal["due", "-due"], Query(description="due: the earliest due first; -due: latest")
    ] = "due",
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """The requests of a queue, the earliest due first: a district ("01".."10"), `triage` (no sure
    district), `city-hall` (escalated after a missed SLA) or a city-wide service queue (e.g.
    `city-mobility`). Open requests unless `status` says otherwise; one page at a time."""
    name = _queue_name(code, city, routing)
    _may_read_queue(principal, code)
    q, filters = _filtered(code, status, service_code, urgency, overdue, assigned_worker, escalated)
    descending = sort == "-due"
    query = _query_key(code, *filters, sort)
    if cursor:
        q.keyset(cursor, descending, query)
    reads: Reads = request.app.state.reads
    items, read, last_due, last_id = (await reads.fetch(q.sql(descending, limit), *q.args))[0]
    # The hot path of a manager's screen: the items are PostgreSQL's JSON, joined (the shape is
    # Queue's, which documents it; tests check the two agree).
    page = {
        "queue": code,
        "name": name,
        "count": min(read, limit),
        "items": orjson.Fragment(b"[%b]" % (items or b"")),
        "next_cursor": _encode_cursor(last_due, last_id, query) if read > limit else None,
    }
    return Response(orjson.dumps(page), media_type="application/json")


@dataclass(frozen=True, slots=True)
class _QueueParams:
    status: str | None = None
    service_code: str | None = None
    urgency: Literal["normal", "urgent"] | None = None
    overdue: bool | None = None
    assigned_worker: str | None = None
    escalated: bool | None = None
    sort: Literal["due", "-due"] = "due"
    cursor: str | None = None
    limit: int = 100


def _plain_queue_params(query: QueryParams) -> _QueueParams | None:
    """The queue's query parameters when each is in its plainest form (`limit=50`,
    `overdue=true`): what FastAPI would make of them, without its per-parameter machinery. None
    for anything else, which then goes through FastAPI's own validation and its 422s."""
    urgency, sort = query.get("urgency"), query.get("sort", "due")
    overdue, limit = query.get("overdue"), query.get("limit", "100")
    escalated = query.get("escalated")
    if (
        (urgency is not None and urgency not in ("normal", "urgent"))
        or sort not in ("due", "-due")
        or (overdue is not None and overdue not in ("true", "false"))
        or (escalated is not None and escalated not in ("true", "false"))
        or not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 500)
    ):
        return None
    return _QueueParams(
        status=query.get("status"),
        service_code=query.get("service_code"),
        urgency="urgent" if urgency == "urgent" else "normal" if urgency == "normal" else None,
        overdue=None if overdue is None else overdue == "true",
        assigned_worker=query.get("assigned_worker"),
        escalated=None if escalated is None else escalated == "true",
        sort="-due" if sort == "-due" else "due",
        cursor=query.get("cursor"),
        limit=int(limit),
    )


_staff_only = require(*STAFF)


class _QueueRoute(APIRoute):
    """The queue's route with a short way in: a request whose parameters are plain has its
    caller found and checked by the same functions as the route's dependencies (so the same
    401, 403 and 429, in the same order) and goes straight to district_queue. Anything else takes
    the route's full FastAPI handler. The route, its parameters and its OpenAPI entry are the
    usual ones; this saves the dependency solving, a third of a page's cost."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        validated = super().get_route_handler()

        async def handler(request: Request) -> Response:
            params = _plain_queue_params(request.query_params)
            if params is None:
                return await validated(request)
            bearer, header_key = await bearer_scheme(request), await key_scheme(request)
            principal = await _staff_only(await current_principal(request, bearer, header_key))
            state = request.app.state
            return await district_queue(
                request.path_params["code"],
                request,
                state.city,
                state.routing,
                principal,
                status=params.status,
                service_code=params.service_code,
                urgency=params.urgency,
                overdue=params.overdue,
                assigned_worker=params.assigned_worker,
                escalated=params.escalated,
                sort=params.sort,
                cursor=params.cursor,
                limit=params.limit,
            )

        return handler


router.add_api_route(
    "/districts/{code}/queue",
    district_queue,
    methods=["GET"],
    response_model=Queue,
    route_class_override=_QueueRoute,
)


class Place(BaseModel):
    """A request of a queue where it is, for a map: its point, else the address or barri it
    was placed by."""

    service_request_id: str
    service_code: str
    status: str
    urgency: str
    overdue: bool
    escalated: bool
    requested_datetime: str | None
    lat: float | None
    long: float | None
    address: str | None
    barri_code: str | None
    district_code: str | None


class Places(BaseModel):
    queue: str
    count: int = Field(description="How many items there are (at most `limit`)")
    more: bool = Field(description="More requests match than `limit`: narrow the filters")
    items: list[Place]


MAX_PLACES: Final = 2000


@router.get("/districts/{code}/queue/places", response_model=Places)
async def queue_places(
    code: str,
    request: Request,
    city: CityDep,
    routing: RoutingDep,
    principal: StaffPrincipal,
    status: Annotated[str | None, Query(description="As the queue's")] = None,
    service_code: Annotated[str | None, Query(description="As the queue's")] = None,
    urgency: Annotated[Literal["normal", "urgent"] | None, Query()] = None,
    overdue: Annotated[bool | None, Query(description="As the queue's")] = None,
    assigned_worker: Annotated[str | None, Query()] = None,
    escalated: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PLACES)] = MAX_PLACES,
) -> Places:
    """Where the requests of a queue are, with the queue's filters, all at once (the earliest
    due first): the console's map. Each has its point (`lat`, `long`), or only the address or
    barri it was placed by, or neither."""
    _queue_name(code, city, routing)
    _may_read_queue(principal, code)
    q, _ = _filtered(code, status, service_code, urgency, overdue, assigned_worker, escalated)
    beyond = q.param(limit + 1)
    rows = await request.app.state.reads.fetch(
        "SELECT s.id, s.service_code, s.status, s.urgency,"
        f" s.status IN ({_OPEN_SQL}) AND coalesce({_PAST_DUE_SQL}, false) AS overdue,"
        " s.escalated_at IS NOT NULL AS escalated, s.requested_datetime, s.lat, s.long,"
        " s.address, s.barri_code, s.district_code FROM service_requests AS s"
        f" WHERE {' AND '.join(q.where)}"
        f" ORDER BY s.expected_datetime ASC NULLS LAST, s.id ASC LIMIT {beyond}",
        *q.args,
    )
    items = [
        Place(
            service_request_id=str(r["id"]),
            service_code=r["service_code"],
            status=r["status"],
            urgency=r["urgency"],
            overdue=r["overdue"],
            escalated=r["escalated"],
            requested_datetime=w3c(r["requested_datetime"]),
            lat=r["lat"],
            long=r["long"],
            address=r["address"],
            barri_code=r["barri_code"],
            district_code=r["district_code"],
        )
        for r in rows[:limit]
    ]
    return Places(queue=code, count=len(items), more=len(rows) > limit, items=items)


@router.get("/assignments", response_model=Queue)
async def my_assignments(
    session: SessionDep,
    principal: StaffPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Queue:
    """A worker's open requests (those assigned to their handle), the earliest due first."""
    if principal.worker_handle is None:
        raise HTTPException(403, "only workers have assignments; managers filter a queue")
    stmt = (
        select(ServiceRequest)
        .where(
            ServiceRequest.assigned_worker == principal.worker_handle,
            ServiceRequest.status.in_(OPEN_STATUSES),
        )
        .order_by(ServiceRequest.expected_datetime.asc().nulls_last(), ServiceRequest.id)
        .limit(limit)
    )
    rows = (await session.execute(stmt)).scalars().all()
    now = _now()
    items = [QueueItem.model_validate(_item(r, now)) for r in rows]
    return Queue(queue="assignments", name=principal.worker_handle, count=len(items), items=items)


# --- live updates ----------------------------------------------------------------------------


def _sse(event_id: int, data: dict[str, object]) -> str:
    return f"id: {event_id}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _sse_end(refusal: HTTPException) -> str:
    """A stream's last event (named `end`, without an id): why it ends, as the 401 or 403 that
    reconnecting gets."""
    data = {"status": refusal.status_code, "detail": refusal.detail}
    return f"event: end\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass(slots=True)
class _Subscriber:
    """Whose stream it is, checked again at each poll: the credential through the Authenticator
    the request used, whose cache makes that no query most polls (a revoked key ends the stream
    within key_cache_seconds, at once on the gateway that revoked it; a token at its expiry), and
    a user's row, which a token does not see (disabled, or no longer a manager of the queue),
    read once per key_cache_seconds."""

    auth: Authenticator
    credential: str | None
    code: str  # a queue's, or ASSIGNMENTS: a worker's own
    principal: Principal
    user_read_at: float | None = None

    def follows(self, principal: Principal) -> None:
        """A 403 when `principal` may not (any more) follow this stream."""
        if self.code != ASSIGNMENTS:
            _may_read_queue(principal, self.code)
        elif (
            principal.worker_handle is None
            or principal.worker_handle != self.principal.worker_handle
        ):
            raise HTTPException(
                403,
                f"the assignments of {self.principal.worker_handle} are not yours: {_yours(principal)}",
            )

    def holds(self, request: ServiceRequest) -> bool:
        """Whether the request is (still) in the stream's queue or assignments."""
        if request.status not in OPEN_STATUSES:
            return False
        if self.code == ASSIGNMENTS:
            return request.assigned_worker == self.principal.worker_handle
        return request.queue == self.code or self.code == CITY_HALL_QUEUE

    async def refusal(self, session: AsyncSession) -> HTTPException | None:
        """Why the stream may not go on (the 401 or 403 a new request would get), or None."""
        try:
            principal = await self.auth.principal(self.credential)
            self.follows(principal)
        except InvalidCredentials as exc:
            return HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
        except HTTPException as exc:
            return exc
        now = time.monotonic()
        cache = self.auth.config.key_cache_seconds
        if principal.kind == "user" and (
            self.user_read_at is None or now - self.user_read_at >= cache
        ):
            user = (
                await session.execute(
                    select(
                        StaffUser.role,
                        StaffUser.scopes,
                        StaffUser.worker_handle,
                        StaffUser.disabled_at,
                    ).where(StaffUser.id == principal.id)
                )
            ).one_or_none()
            if user is None or user.disabled_at is not None:
                detail = f"user {principal.name!r} is disabled"
                return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
            granted = replace(
                principal,
                role=Role(user.role),
                scopes=frozenset(user.scopes or ()),
                worker_handle=user.worker_handle,
            )
            try:
                self.follows(granted)
            except HTTPException as exc:
                return exc
            self.user_read_at = now
        self.principal = principal
        return None

    def change(
        self, event: RequestEvent, changed: ServiceRequest, now: datetime
    ) -> dict[str, object]:
        """One event of the stream. A request the caller may no longer read (as GET
        /requests/{id} decides: transferred out of their scopes) is named by its id alone: that
        it changed and is not in the queue, not where it is now, who has it or who acted."""
        if not self.principal.may_read(changed):
            return {
                "kind": event.kind,
                "at": w3c(event.at),
                "actor": None,
                "in_queue": False,
                "item": {"service_request_id": str(changed.id)},
            }
        return {
            "kind": event.kind,
            "at": w3c(event.at),
            "actor": event.actor,
            "in_queue": self.holds(changed),
            "item": _item(changed, now),
        }


async def _queue_changes(
    request: Request,
    sessions: async_sessionmaker[AsyncSession],
    subscriber: _Subscriber,
    in_queue: ColumnElement[bool],
    last_id: int,
    poll_seconds: float,
) -> AsyncIterator[str]:
    yield "retry: 3000\n: connected\n\n"
    quiet = 0.0
    # A request that left the queue (transferred away; for a worker's assignments, assigned to
    # another) is announced there one last time, and so is every change it had before leaving,
    # even when one poll finds both.
    key, value = (
        ("assigned_worker", subscriber.principal.worker_handle)
        if subscriber.code == ASSIGNMENTS
        else ("queue", subscriber.code)
    )
    left = RequestEvent.before[key].astext == value
    later = aliased(RequestEvent)
    left_later = (
        select(later.id)
        .where(
            later.service_request_id == RequestEvent.service_request_id,
            later.id > RequestEvent.id,
            later.before[key].astext == value,
        )
        .exists()
    )
    while not await request.is_disconnected():
        async with sessions() as session:
            refusal = await subscriber.refusal(session)
            if refusal is not None:
                yield _sse_end(refusal)
                return
            rows = await session.execute(
                select(RequestEvent, ServiceRequest)
                .join(ServiceRequest, ServiceRequest.id == RequestEvent.service_request_id)
                .where(RequestEvent.id > last_id, or_(in_queue, left, left_later))
                .order_by(RequestEvent.id)
                .limit(500)
            )
            changes = [(event, changed) for event, changed in rows]
            now = _now()
            for event, changed in changes:
                last_id = event.id
                yield _sse(event.id, subscriber.change(event, changed, now))
        if changes:
            quiet = 0.0
            continue
        if quiet >= SSE_HEARTBEAT_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_seconds)
        quiet += poll_seconds


@router.get(
    "/districts/{code}/queue/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream: one event per change to a request of the queue",
            "content": {
                "text/event-stream": {
                    "example": 'id: 42\ndata: {"kind": "acknowledge", "at": "…", "actor": '
                    '"user:maria", "in_queue": true, "item": {"service_request_id": "7", …}}\n\n'
                }
            },
        }
    },
)
async def queue_events(
    code: str,
    request: Request,
    city: CityDep,
    routing: RoutingDep,
    principal: StaffPrincipal,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(key_scheme)],
    last_event_id: Annotated[str | None, Header(description="Resume after this event")] = None,
) -> StreamingResponse:
    """Live updates of a queue as Server-Sent Events: every change to one of its requests
    (created, merged, each action, notes, SLA breaches) with the request as it now is.
    `in_queue: false` means it left the queue (closed, transferred); a request the caller may no
    longer read comes with its id alone. Browsers' EventSource cannot send headers: pass
    `?access_token=` (a token or key) instead. The credentials are checked again while the
    stream lasts: once a key is revoked, a token expires or a user is disabled, a last event
    named `end` says why and the stream closes."""
    _, in_queue = _queue(code, city, routing)
    _may_read_queue(principal, code)
    return await _changes_stream(
        request, code, in_queue, principal, bearer or header_key, last_event_id
    )


@router.get(
    "/assignments/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream: one event per change to a request assigned to "
            "the worker (or assigned to another since)",
            "content": {"text/event-stream": {}},
        }
    },
)
async def assignment_events(
    request: Request,
    principal: StaffPrincipal,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(key_scheme)],
    last_event_id: Annotated[str | None, Header(description="Resume after this event")] = None,
) -> StreamingResponse:
    """A worker's assignments live, as a queue's are (`/districts/{code}/queue/events`): every
    change to a request assigned to them, with the request as it now is; `in_queue: false` when
    it is no longer theirs (closed, resolved, assigned to another). The credential goes in the
    `Authorization` header (the console reads the stream with fetch()); a URL carries one only
    to a queue's stream, for EventSource."""
    if principal.worker_handle is None:
        raise HTTPException(403, "only workers have assignments; managers follow a queue")
    in_queue = ServiceRequest.assigned_worker == principal.worker_handle
    return await _changes_stream(
        request, ASSIGNMENTS, in_queue, principal, bearer or header_key, last_event_id
    )


async def _changes_stream(
    request: Request,
    code: str,
    in_queue: ColumnElement[bool],
    principal: Principal,
    header_credential: str | None,
    last_event_id: str | None,
) -> StreamingResponse:
    query = request.query_params
    # The credential as current_principal read it, to check it again while the stream lasts.
    credential = header_credential or query.get("api_key") or query.get("access_token")
    subscriber = _Subscriber(authenticator(request), credential, code, principal)
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    after: int | None = parse_id(last_event_id) if last_event_id else None
    async with sessions() as session:
        # A disabled user's token is still good elsewhere until it expires, but not here: an
        # EventSource that reconnects after the stream's `end` is refused, so it stops.
        refusal = await subscriber.refusal(session)
        if refusal is not None:
            raise refusal
        if after is None:  # the changes from now on (fixed before the answer starts: none slips by)
            after = (await session.execute(select(func.max(RequestEvent.id)))).scalar() or 0
    poll: float = request.app.state.sse_poll_seconds
    streams: collections.Counter[tuple[str, int]] = request.app.state.sse_streams
    caller = (principal.kind, principal.id)
    if streams[caller] >= MAX_STREAMS_PER_CALLER:
        raise HTTPException(
            429,
            f"at most {MAX_STREAMS_PER_CALLER} live update streams at once per key or user "
            "(each polls the database); close one first",
            headers={"Retry-After": "5"},
        )
    stream = _counted(
        _queue_changes(request, sessions, subscriber, in_queue, after, poll), streams, caller
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


MAX_STREAMS_PER_CALLER: Final = 20  # a manager's screens and tabs, with room to spare


async def _counted(
    stream: AsyncIterator[str],
    streams: collections.Counter[tuple[str, int]],
    caller: tuple[str, int],
) -> AsyncIterator[str]:
    """`stream`, counted among its caller's open streams while it is being sent."""
    streams[caller] += 1
    try:
        async for chunk in stream:
            yield chunk
    finally:
        streams[caller] -= 1
        if streams[caller] <= 0:
            del streams[caller]


# --- one request -----------------------------------------------------------------------------


async def _detail(
    session: AsyncSession, request: ServiceRequest, principal: Principal | None = None
) -> RequestDetail:
    replies = (
        await session.execute(
            select(Reply).where(Reply.service_request_id == request.id).order_by(Reply.posted_at)
        )
    ).scalars()
    reports = list(
        (
            await session.execute(
                select(RequestReport)
                .where(RequestReport.service_request_id == request.id)
                .order_by(RequestReport.id)
            )
        ).scalars()
    )
    tokens = [r.post_id for r in reports if r.platform == "open311"]
    contacts = (
        {
            s.token: ContactOut(
                email=s.email, phone=s.phone, first_name=s.first_name, last_name=s.last_name
            )
            for s in (
                await session.execute(
                    select(Open311Submission).where(Open311Submission.token.in_(tokens))
                )
            ).scalars()
        }
        if tokens
        else {}
    )
    notes = (
        await session.execute(
            select(RequestEvent)
            .where(RequestEvent.service_request_id == request.id, RequestEvent.note.is_not(None))
            .where(RequestEvent.kind.not_in(("merged", "split")))
            .order_by(RequestEvent.id)
        )
    ).scalars()
    allowed = allowed_actions(Status(request.status))
    if principal is not None and not principal.manages(request):
        allowed = [a for a in allowed if a in WORKER_ACTIONS]  # what this caller may do
    return RequestDetail.model_validate(
        {
            **_item(request, _now()),
            "version": request.version,
            "lat": request.lat,
            "long": request.long,
            "address": request.address,
            "media_urls": list(request.media_urls or ()),
            "source_public_url": request.source_public_url,
            "status_notes": request.status_notes,
            "resolution_photo_url": request.resolution_photo_url,
            "duplicate_of": str(request.duplicate_of) if request.duplicate_of else None,
            "withdrawn": request.withdrawn_at is not None,
            "allowed_actions": [a.value for a in allowed],
            "reports": [
                {
                    "platform": r.platform,
                    "post_id": r.post_id,
                    "author_handle": r.author_handle,
                    "text": r.text,
                    "reported_at": w3c(r.reported_at),
                    "merged": r.merged,
                    "withdrawn": r.withdrawn_at is not None,
                    "contact": contacts.get(r.post_id) if r.platform == "open311" else None,
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
            "notes": [
                {
                    "at": w3c(n.at),
                    "actor": n.actor,
                    "kind": n.kind,
                    "note": n.note,
                    "public": n.public,
                }
                for n in notes
            ],
        }
    )


def _request_id(service_request_id: str) -> int:
    rid = parse_id(service_request_id)
    if rid is None:
        raise HTTPException(404, f"no service request {service_request_id!r}")
    return rid


async def _readable(
    session: AsyncSession, service_request_id: str, principal: Principal, *, lock: bool = False
) -> ServiceRequest:
    """The request, if the caller may see it: 404 if there is none, 403 if it is not theirs."""
    request = await session.get(
        ServiceRequest, _request_id(service_request_id), with_for_update=lock or None
    )
    if request is None:
        raise HTTPException(404, f"no service request {service_request_id!r}")
    if not principal.may_read(request):
        raise _not_yours(f"request {request.id}", request, principal)
    return request


def _may_act(principal: Principal, request: ServiceRequest, action: Action) -> None:
    if principal.manages(request):
        return
    if principal.works_on(request) and action in WORKER_ACTIONS:
        return
    if principal.works_on(request):
        allowed = " or ".join(sorted(WORKER_ACTIONS))
        raise HTTPException(
            403, f"a worker may {allowed} a request assigned to them, not {action} it"
        )
    raise _not_yours(f"request {request.id}", request, principal)


@router.get("/requests/{service_request_id}", response_model=RequestDetail)
async def request_detail(
    service_request_id: str, session: SessionDep, principal: StaffPrincipal, response: Response
) -> RequestDetail:
    """One request with its reports (and, for Open311 reports, the reporter's private contact),
    the public replies it got, its notes and the actions the caller may take now. Its `ETag` is
    its version, for `If-Match` on an action."""
    request = await _readable(session, service_request_id, principal)
    response.headers["ETag"] = _etag(request.version)
    return await _detail(session, request, principal)


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match(header: str | None) -> int | None:
    """The version an If-Match names ("7", W/"7", or * for any), or None for no condition."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    if not (tag.isascii() and tag.isdigit()) or len(tag) > 9:
        raise HTTPException(
            400,
            f'If-Match: {header[:40]!r} is not an ETag this API gave (the request\'s "version")',
        )
    return int(tag)


@router.get("/requests/{service_request_id}/history", response_model=list[HistoryEntry])
async def request_history(
    service_request_id: str, session: SessionDep, principal: StaffPrincipal
) -> list[HistoryEntry]:
    """Every change to the request, oldest first: who, when, what it was and what it became."""
    request = await _readable(session, service_request_id, principal)
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


# --- actions ---------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _apply(
    session: AsyncSession,
    request_id: str,
    action: Action,
    body: ActionIn,
    principal: Principal,
    *,
    city: City,
    sla: SlaPolicy,
    routing: RoutingTable,
    expected_version: int | None = None,
) -> ServiceRequest:
    """One action in its own transaction, after checking the caller may take it (and, for a
    duplicate, that the request it joins is theirs too) and, with `expected_version` (If-Match),
    that nobody changed the request since the caller read it. Raises HTTPException or
    _Refused."""
    command = Command(
        action=action,
        actor=principal.actor,
        note=body.note,
        public=body.public,
        worker=body.worker,
        photo_url=body.photo_url,
        district_code=body.district_code,
        agency=body.agency,
        duplicate_of=body.duplicate_of,
    )
    manages = True  # whether the caller manages the request (else a worker on it)
    try:
        async with session.begin():
            if action is Action.MARK_DUPLICATE and body.duplicate_of is not None:
                await lock_in_order(session, _request_id(request_id), body.duplicate_of)
            request = await _readable(session, request_id, principal, lock=True)
            _may_act(principal, request, action)
            manages = principal.manages(request)
            if expected_version is not None and request.version != expected_version:
                raise _Refused(
                    problem(
                        412,
                        f"request {request.id} changed since you read it (it is at version "
                        f"{request.version}, you read {expected_version}): read it again and "
                        "decide on what it is now",
                        title="The request changed meanwhile",
                        type_="https://plaza.example/problems/changed-meanwhile",
                        version=request.version,
                        status_now=request.status,
                    )
                )
            if action is Action.MARK_DUPLICATE and body.duplicate_of is not None:
                target = await session.get(ServiceRequest, body.duplicate_of)
                if target is not None and not principal.manages(target):
                    raise _not_yours(f"request {target.id}, its duplicate,", target, principal)
            return await act(
                session, request.id, command, now=_now(), sla=sla, routing=routing, city=city
            )
    except RequestNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InvalidTransition as exc:
        raise _Refused(
            problem(
                409,
                str(exc),
                title="Action not allowed in this status",
                type_="https://plaza.example/problems/invalid-transition",
                status_now=exc.status.value,
                # read before the rollback expired the request
                allowed_actions=[a.value for a in exc.allowed if manages or a in WORKER_ACTIONS],
            )
        ) from None
    except InvalidCommand as exc:
        raise _Refused(
            _invalid(
                exc, title="Invalid action", type_="https://plaza.example/problems/invalid-action"
            )
        ) from None


def _invalid(exc: InvalidCommand, *, title: str, type_: str) -> Response:
    """A 422 for an action's details, naming the field at fault as a validation error does
    (`detail` "worker: …" and `errors`), so a client, and the console, can mark that field."""
    if exc.field is None:
        return problem(422, str(exc), title=title, type_=type_)
    error = {"field": exc.field, "message": str(exc), "type": "invalid_action"}
    return problem(422, f"{exc.field}: {exc}", title=title, type_=type_, errors=[error])


@router.post(
    "/requests/{service_request_id}/actions/{action}",
    response_model=RequestDetail,
    responses={
        403: {"description": "The request is not the caller's"},
        409: {"description": "The request's status does not allow this action"},
        412: {"description": "If-Match named a version the request is no longer at"},
    },
)
async def request_action(
    service_request_id: str,
    action: Action,
    session: SessionDep,
    city: CityDep,
    sla: SlaDep,
    routing: RoutingDep,
    principal: StaffPrincipal,
    response: Response,
    body: ActionIn | None = None,
    if_match: Annotated[
        str | None,
        Header(description="The request's ETag (version) as read: act only if it is still so"),
    ] = None,
) -> RequestDetail | Response:
    """Moves the request: acknowledge, assign, start, resolve, close, reopen, transfer,
    mark_duplicate, not_responsible. A refused move answers 409 with the allowed actions.
    `public: false` keeps the note internal (history only, never in Open311). An action that
    needs nothing more (acknowledge, start, close) may have no body at all. Two managers acting
    on what they read: send `If-Match` with the ETag of the read, and the second gets a 412
    instead of undoing the first's decision."""
    try:
        request = await _apply(
            session,
            service_request_id,
            action,
            body or ActionIn(),
            principal,
            city=city,
            sla=sla,
            routing=routing,
            expected_version=_if_match(if_match),
        )
    except _Refused as refused:
        return refused.response
    response.headers["ETag"] = _etag(request.version)
    return await _detail(session, request, principal)


@router.post("/requests/actions/{action}", response_model=BulkOut)
async def bulk_action(
    action: Action,
    body: BulkActionIn,
    session: SessionDep,
    city: CityDep,
    sla: SlaDep,
    routing: RoutingDep,
    principal: StaffPrincipal,
    if_match: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> BulkOut:
    """The same action on up to 100 requests, each in its own transaction: one refused request
    (not yours, wrong status) does not stop the others. Each result says what happened."""
    if if_match is not None:
        raise HTTPException(
            400,
            "If-Match names one request's version: send it with that request's own action "
            "(POST /requests/{id}/actions/{action}), not with a bulk one",
        )
    results: list[BulkResult] = []
    for request_id in dict.fromkeys(body.service_request_ids):
        rid = str(request_id)
        try:
            done = await _apply(
                session, rid, action, body, principal, city=city, sla=sla, routing=routing
            )
            results.append(
                BulkResult(service_request_id=rid, status=200, request_status=done.status)
            )
        except HTTPException as exc:
            results.append(
                BulkResult(service_request_id=rid, status=exc.status_code, detail=str(exc.detail))
            )
        except _Refused as refused:
            detail = json.loads(bytes(refused.response.body))["detail"]
            results.append(
                BulkResult(
                    service_request_id=rid, status=refused.response.status_code, detail=detail
                )
            )
    ok = sum(1 for r in results if r.status == 200)
    return BulkOut(succeeded=ok, failed=len(results) - ok, results=results)


@router.post("/requests/{service_request_id}/notes", response_model=RequestDetail, status_code=201)
async def request_note(
    service_request_id: str, body: NoteIn, session: SessionDep, principal: StaffPrincipal
) -> RequestDetail:
    """A note without a status change: internal by default (staff only, in the history), or
    public (Open311's notes and the updates feed show it, contact details masked)."""
    async with session.begin():
        request = await _readable(session, service_request_id, principal, lock=True)
        request = await add_note(
            session,
            request.id,
            actor=principal.actor,
            note=body.note,
            public=body.public,
            now=_now(),
        )
    return await _detail(session, request, principal)


@router.post("/requests/{service_request_id}/split", response_model=RequestDetail, status_code=201)
async def split(
    service_request_id: str,
    body: SplitIn,
    session: SessionDep,
    city: CityDep,
    sla: SlaDep,
    routing: RoutingDep,
    principal: StaffPrincipal,
) -> RequestDetail | Response:
    """Undoes a wrong merge: one report leaves the request and becomes a request of its own."""
    try:
        async with session.begin():
            request = await _readable(session, service_request_id, principal, lock=True)
            if not principal.manages(request):
                raise HTTPException(403, "only the request's manager may split it")
            new = await split_report(
                session,
                request.id,
                body.platform,
                body.post_id,
                actor=principal.actor,
                now=_now(),
                sla=sla,
                routing=routing,
                city=city,
            )
    except RequestNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InvalidCommand as exc:
        return _invalid(
            exc, title="Cannot split", type_="https://plaza.example/problems/invalid-split"
        )
    return await _detail(session, new, principal)


# --- city hall -------------------------------------------------------------------------------


@router.get("/sla", response_model=dict[str, SlaServiceOut], tags=["City hall"])
async def sla_configuration(sla: SlaDep, principal: StaffPrincipal) -> dict[str, SlaServiceOut]:
    """The SLA windows in force, per service code and urgency (PLAZA_SLA_CONFIG on top of the
    packaged defaults). City hall, admins and managers."""
    if principal.role not in (Role.CITY_HALL, Role.ADMIN, Role.MANAGER):
        raise HTTPException(403, f"a {principal.role} may not read the SLA configuration")

    def window(code: str, urgent: bool) -> SlaWindowOut:
        w = sla.window(code, urgent)
        return SlaWindowOut(
            acknowledge_hours=w.acknowledge.total_seconds() / 3600,
            resolve_hours=w.resolve.total_seconds() / 3600,
        )

    return {
        code: SlaServiceOut(normal=window(code, False), urgent=window(code, True))
        for code in load_taxonomy()
    }


@router.get(
    "/reports/monthly",
    tags=["City hall"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the report as a CSV file"}},
)
async def monthly_sla_report(
    session: SessionDep,
    city: CityDep,
    principal: StaffPrincipal,
    month: Annotated[
        str | None,
        Query(description="YYYY-MM in the city's time zone; the month before this one if left out"),
    ] = None,
) -> Response:
    """A month's figures per district and service, and their totals, as CSV: requests received,
    acknowledged and resolved (in time: by their deadline), deadlines missed, median and 90th
    percentile hours to acknowledge and to resolve, still open and escalated. Computed from the
    requests reported that month (from local midnight on the 1st); a district or service with
    none is there at 0. City hall and admins."""
    if principal.role not in EVERY_QUEUE:
        raise HTTPException(
            403, f"a {principal.role} may not read the city's report (city_hall and admin may)"
        )
    zone = city.council.zone
    try:
        chosen = Month.parse(month, zone) if month is not None else Month.last(zone)
    except ValueError as exc:
        # named as every invalid parameter is ("month: '2026-13' is not a month ..."); the
        # message's own "month " (the CLI prints it as it is) is not said twice
        raise InvalidField("month", str(exc).removeprefix("month ")) from None
    report = as_csv(await monthly_report(session, city, chosen))
    return Response(
        report,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="plaza-sla-{chosen}.csv"'},
    )
