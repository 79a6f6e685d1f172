"""Changes to service requests. Each change writes, in the caller's transaction, the request,
its audit entry (actor, time, before and after) and the events announcing it (outbox).

Used by the router (open, merge, reopen), the SLA scanner (breach) and the manager API (act)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import overload

from sqlalchemy import distinct, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from plaza import metrics
from plaza.city import City
from plaza.contracts import (
    LOCATION_SOURCE_GEO,
    LOCATION_SOURCE_NONE,
    LOCATION_SOURCE_TEXT,
    REPLY_KIND_ACKNOWLEDGED,
    REPLY_KIND_ASSIGNED,
    REPLY_KIND_DELAYED,
    REPLY_KIND_DUPLICATE,
    REPLY_KIND_NOT_RESPONSIBLE,
    REPLY_KIND_RESOLVED,
    REPLY_KIND_TRANSFERRED,
    URGENCY_NORMAL,
    URGENCY_URGENT,
    Outgoing,
    Placement,
    ReplyKind,
    ReplyRequested,
    RequestCreated,
    RequestMerged,
    RequestSlaBreached,
    RequestStatusChanged,
    derive_event_id,
    envelope,
    timestamp,
)
from plaza.db.models import RequestEvent, RequestReport, ServiceRequest
from plaza.db.rows import add_row, in_bulk
from plaza.outbox import stage
from plaza.policy import Route, RoutingTable, SlaPolicy
from plaza.requests import (
    CITY_HALL_QUEUE,
    OPEN_STATUSES,
    TRIAGE_QUEUE,
    Action,
    Status,
    next_status,
    reporter_of,
)

_SOURCES = {LOCATION_SOURCE_GEO: "geo", LOCATION_SOURCE_TEXT: "text"}
_SOURCE_OF = {name: source for source, name in _SOURCES.items()}

__all__ = [
    "Command",
    "InvalidCommand",
    "NewReport",
    "RequestNotFound",
    "act",
    "add_note",
    "breach",
    "history",
    "lock_in_order",
    "merge_report",
    "open_follow_up",
    "open_request",
    "snapshot",
    "split_report",
]


class RequestNotFound(LookupError):
    pass


class InvalidCommand(ValueError):
    """An action whose details are missing or wrong (no worker to assign, no reason to transfer);
    `field` names the detail at fault, as a 422 of the API names it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class NewReport:
    """A citizen's post about a problem, as the router hands it over."""

    platform: str
    post_id: str
    author_handle: str
    text: str
    language: str
    reported_at: datetime
    lat: float | None = None
    long: float | None = None
    address: str | None = None
    # The address's canonical key by the city's street register (plaza.city.streets.address_key),
    # which the duplicate search compares; None when the register cannot read it, or no register.
    address_key: str | None = None
    public_url: str | None = None
    channel: str = ""
    media_urls: Sequence[str] = ()
    # Who reported, as reports are counted and matched (plaza.requests.reporter_of); empty: the
    # handle on its platform.
    reporter: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """A manager's (or a citizen's) action on a request."""

    action: Action
    actor: str
    note: str | None = None
    public: bool = True
    worker: str | None = None
    photo_url: str | None = None
    district_code: str | None = None
    agency: str | None = None
    duplicate_of: int | None = None


class RequestRow:
    """A request opened inside `rows_in_bulk` (the router's batches): its columns as plain
    attributes, over the very dict the bulk insert writes at the end of the batch, so a report
    merged into it later in the batch is counted. Building and flushing an ORM object per new
    request was most of the router's cost per post."""

    id: int
    status: str
    service_code: str
    queue: str
    district_code: str | None
    urgency: str
    channel: str
    language: str
    reporters_count: int
    version: int
    updated_datetime: datetime
    requested_datetime: datetime

    def __init__(self, columns: dict[str, object]) -> None:
        self.__dict__ = columns

    @property
    def service_request_id(self) -> str:
        return str(self.id)


# What the lifecycle's helpers accept: a loaded (or just flushed) request, or a batch's new one.
AnyRequest = ServiceRequest | RequestRow

# The columns a new request leaves empty, which the audit trail's snapshot reads.
_NOT_YET = {
    "assigned_worker": None,
    "status_notes": None,
    "resolution_photo_url": None,
    "duplicate_of": None,
    "acknowledged_at": None,
    "resolved_at": None,
    "closed_at": None,
    "ack_breached_at": None,
    "resolve_breached_at": None,
    "escalated_at": None,
}


_SNAPSHOT_FIELDS = (
    "status",
    "queue",
    "agency_responsible",
    "district_code",
    "barri_code",
    "assigned_worker",
    "status_notes",
    "resolution_photo_url",
    "duplicate_of",
    "reporters_count",
    "ack_due_at",
    "expected_datetime",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "ack_breached_at",
    "resolve_breached_at",
    "escalated_at",
)


def snapshot(request: AnyRequest) -> dict[str, object]:
    """The fields a change can touch, as JSON, for the audit trail."""
    out: dict[str, object] = {}
    for name in _SNAPSHOT_FIELDS:
        value = getattr(request, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _audit(
    session: AsyncSession,
    request: AnyRequest,
    kind: str,
    actor: str,
    at: datetime,
    before: dict[str, object],
    *,
    note: str | None = None,
    public: bool = True,
) -> None:
    after = snapshot(request)
    add_row(
        session,
        RequestEvent,
        {
            "service_request_id": request.id,
            "version": request.version,
            "kind": kind,
            "actor": actor,
            "at": at,
            "before": {k: v for k, v in before.items() if after.get(k) != v},
            "after": {k: v for k, v in after.items() if before.get(k) != v},
            "note": note,
            "public": public,
        },
    )


def _reply(
    request: AnyRequest,
    report: RequestReport | NewReport,
    kind: ReplyKind.ValueType,
    tag: str,
    correlation_id: str,
    **params: str,
) -> Outgoing:
    rid = request.service_request_id
    reply = ReplyRequested(
        reply_id=derive_event_id("reply", rid, tag, report.platform, report.post_id),
        service_request_id=rid,
        kind=kind,
        language=report.language,
        platform=report.platform,
        in_reply_to_post_id=report.post_id,
        author_handle=report.author_handle,
        params={"service_request_id": rid, **params},
    )
    return envelope(
        reply,
        key=rid,
        event_id=derive_event_id("reply-requested", reply.reply_id),
        correlation_id=correlation_id,
    )


def _district_params(request: AnyRequest, city: City | None) -> dict[str, str]:
    if request.district_code and request.queue not in (TRIAGE_QUEUE,) and city is not None:
        district = city.districts.get(request.district_code)
        if district is not None:
            return {"district_name": district.name}
    return {}


@overload
async def open_request(
    session: AsyncSession,
    report: NewReport,
    *,
    service_code: str,
    urgent: bool,
    service_confidence: float,
    placement: Placement,
    route: Route,
    sla: SlaPolicy,
    actor: str,
    correlation_id: str,
    request_id: None = None,
) -> ServiceRequest: ...


@overload
async def open_request(
    session: AsyncSession,
    report: NewReport,
    *,
    service_code: str,
    urgent: bool,
    service_confidence: float,
    placement: Placement,
    route: Route,
    sla: SlaPolicy,
    actor: str,
    correlation_id: str,
    request_id: int,
) -> RequestRow: ...


async def open_request(
    session: AsyncSession,
    report: NewReport,
    *,
    service_code: str,
    urgent: bool,
    service_confidence: float,
    placement: Placement,
    route: Route,
    sla: SlaPolicy,
    actor: str,
    correlation_id: str,
    request_id: int | None = None,
) -> AnyRequest:
    """A new request from its first report. `request_id`: one the caller took from the
    requests' sequence beforehand (the router's batches), so nothing is written until the
    session flushes (inside `rows_in_bulk` only: the request is a RequestRow, written with the
    batch's other rows); without it the request is flushed here, for the database's next id."""
    deadlines = sla.deadlines(service_code, urgent, report.reported_at)
    routed = route.queue == placement.district_code
    columns: dict[str, object] = {
        "status": Status.NEW.value,
        "service_code": service_code,
        "description": report.text,
        "requested_datetime": report.reported_at,
        "updated_datetime": report.reported_at,
        "expected_datetime": deadlines.resolve_by,
        "ack_due_at": deadlines.acknowledge_by,
        "address": report.address,
        "address_key": report.address_key,
        "lat": report.lat,
        "long": report.long,
        "media_url": report.media_urls[0] if report.media_urls else None,
        "media_urls": list(report.media_urls),
        "agency_responsible": route.team,
        "district_code": placement.district_code or None,
        "barri_code": placement.barri_code or None,
        "location_source": _SOURCES.get(placement.source, "none"),
        "queue": route.queue,
        "urgency": "urgent" if urgent else "normal",
        "language": report.language or "other",
        "service_confidence": service_confidence,
        "channel": report.channel or report.platform,
        "source_platform": report.platform,
        "source_post_id": report.post_id,
        "source_author_handle": report.author_handle,
        "source_public_url": report.public_url,
        "reporters_count": 1,
        "version": 1,
    }
    request: AnyRequest
    if request_id is None:
        request = ServiceRequest(**columns)
        session.add(request)
        await session.flush()
    else:
        if not in_bulk(session):
            raise RuntimeError("open_request(request_id=...) is for rows_in_bulk batches")
        request = RequestRow({"id": request_id, **columns, **_NOT_YET})
        add_row(session, ServiceRequest, request.__dict__)
    add_report(session, request, report, merged=False)
    # When Plaza opened it (the post's own time is the request's requested_datetime).
    _audit(session, request, "created", actor, datetime.now(UTC), {})
    created_labels = (*_labels(request), request.channel)
    metrics.on_commit(session, metrics.REQUESTS_CREATED.labels(*created_labels).inc)
    rid = request.service_request_id
    created = RequestCreated(
        service_request_id=rid,
        status=request.status,
        service_code=service_code,
        queue=request.queue,
        placement=placement,
        requested_at=timestamp(request.requested_datetime),
        expected_at=timestamp(deadlines.resolve_by),
        urgency=URGENCY_URGENT if urgent else URGENCY_NORMAL,
        source_platform=report.platform,
        source_post_id=report.post_id,
        language=request.language,
    )
    params = {"expected_datetime": deadlines.resolve_by.isoformat()}
    if routed and placement.district_name:
        params["district_name"] = placement.district_name
    elif route.queue != TRIAGE_QUEUE:
        params["team"] = route.team  # a city-wide service's: no district to name
    stage(
        session,
        [
            envelope(
                created,
                key=rid,
                event_id=derive_event_id("request-created", rid),
                correlation_id=correlation_id,
            ),
            _reply(
                request,
                report,
                REPLY_KIND_ACKNOWLEDGED,
                "acknowledged",
                correlation_id,
                **params,
            ),
        ],
    )
    return request


def add_report(
    session: AsyncSession, request: AnyRequest, report: NewReport, *, merged: bool
) -> None:
    """Records who reported what about `request`: its opening post, or one merged into it."""
    add_row(
        session,
        RequestReport,
        {
            "service_request_id": request.id,
            "platform": report.platform,
            "post_id": report.post_id,
            "author_handle": report.author_handle,
            "reporter": report.reporter or reporter_of(report.platform, "", report.author_handle),
            "text": report.text,
            "lat": report.lat,
            "long": report.long,
            "address": report.address,
            "address_key": report.address_key,
            "language": report.language or "other",
            "reported_at": report.reported_at,
            "merged": merged,
        },
    )


async def merge_report(
    session: AsyncSession,
    request: AnyRequest,
    report: NewReport,
    *,
    actor: str,
    now: datetime,
    correlation_id: str,
    city: City | None = None,
    new_reporter: bool = True,
) -> None:
    """Another report of the same problem joins `request` (locked by the caller). Its
    reporters_count counts people: new_reporter is False when the report's author has already
    reported it (the caller knows), and the count stays."""
    before = snapshot(request)
    if new_reporter:
        request.reporters_count += 1
    request.version += 1
    request.updated_datetime = now
    add_report(session, request, report, merged=True)
    _audit(
        session, request, "merged", actor, now, before, note=f"{report.platform}:{report.post_id}"
    )
    rid = request.service_request_id
    merged = RequestMerged(
        service_request_id=rid,
        platform=report.platform,
        post_id=report.post_id,
        author_handle=report.author_handle,
        reporters_count=request.reporters_count,
        merged_at=timestamp(now),
    )
    stage(
        session,
        [
            envelope(
                merged,
                key=rid,
                event_id=derive_event_id("request-merged", rid, report.platform, report.post_id),
                correlation_id=correlation_id,
            ),
            _reply(
                request,
                report,
                REPLY_KIND_DUPLICATE,
                "duplicate",
                correlation_id,
                reporters_count=str(request.reporters_count),
                **_district_params(request, city),
            ),
        ],
    )


async def lock_in_order(session: AsyncSession, *request_ids: int) -> None:
    """Locks requests the lower id first, as every transaction locking several must (a merge
    locks the request and the one it joins): two managers marking two requests duplicates of
    each other at once then wait for one another instead of deadlocking."""
    await session.execute(
        select(ServiceRequest.id)
        .where(ServiceRequest.id.in_(sorted(set(request_ids))))
        .order_by(ServiceRequest.id)
        .with_for_update()
    )


async def _locked(session: AsyncSession, request_id: int) -> ServiceRequest:
    request = await session.get(
        ServiceRequest, request_id, with_for_update=True, populate_existing=True
    )
    if request is None:
        raise RequestNotFound(f"no service request {request_id}")
    return request


async def act(
    session: AsyncSession,
    request_id: int,
    cmd: Command,
    *,
    now: datetime,
    sla: SlaPolicy,
    routing: RoutingTable,
    city: City,
) -> ServiceRequest:
    """Applies a manager's action, or raises InvalidTransition (409) or InvalidCommand (422)."""
    if cmd.action is Action.MARK_DUPLICATE and cmd.duplicate_of is not None:
        await lock_in_order(session, request_id, cmd.duplicate_of)
    request = await _locked(session, request_id)
    before = snapshot(request)
    target = next_status(Status(request.status), cmd.action)
    replies: list[tuple[ReplyKind.ValueType, dict[str, str]]] = []
    # Who hears back: everyone who reported it (read now, before a merge moves the reports).
    reporters = list(
        (
            await session.execute(
                select(RequestReport)
                .where(RequestReport.service_request_id == request.id)
                .order_by(RequestReport.id)
            )
        ).scalars()
    )
    match cmd.action:
        case Action.ACKNOWLEDGE:
            request.acknowledged_at = request.acknowledged_at or now
        case Action.ASSIGN:
            if not cmd.worker:
                raise InvalidCommand("assign needs a worker (the worker's public handle)", "worker")
            if cmd.worker == request.assigned_worker:
                # each assignment tells the citizen in public who was sent: not twice
                raise InvalidCommand(
                    f"request {request.id} is already assigned to {cmd.worker}", "worker"
                )
            request.assigned_worker = cmd.worker
            request.acknowledged_at = request.acknowledged_at or now
            replies.append((REPLY_KIND_ASSIGNED, {"worker": cmd.worker}))
        case Action.START:
            pass
        case Action.RESOLVE:
            if not cmd.note:
                raise InvalidCommand("resolve needs a public note saying what was done", "note")
            _public_note(cmd)
            request.resolved_at = now
            request.status_notes = cmd.note
            request.resolution_photo_url = cmd.photo_url
            params = {"note": cmd.note}
            if cmd.photo_url:
                params["photo_url"] = cmd.photo_url
            replies.append((REPLY_KIND_RESOLVED, params))
        case Action.CLOSE:
            request.closed_at = now
        case Action.REOPEN:
            window = sla.window(request.service_code, request.urgency == "urgent")
            request.resolved_at = request.closed_at = None
            # the note that closed it (what was done, who is responsible) no longer holds
            request.status_notes = None
            # it waits for a manager again, as a new request does: the worker sent and the
            # photo of a fix that did not hold are no longer its
            request.assigned_worker = request.resolution_photo_url = None
            # and a new acknowledgement: its deadline counts as met or missed like a new one's
            request.acknowledged_at = None
            request.ack_due_at, request.expected_datetime = (
                now + window.acknowledge,
                now + window.resolve,
            )
            request.ack_breached_at = request.resolve_breached_at = request.escalated_at = None
        case Action.TRANSFER:
            await _transfer(request, cmd, now=now, sla=sla, routing=routing, city=city)
            to = _district_params(request, city) if cmd.district_code else {}
            replies.append((REPLY_KIND_TRANSFERRED, to or {"team": request.agency_responsible}))
        case Action.MARK_DUPLICATE:
            target_request = await _duplicate_target(session, request, cmd)
            await _absorb(session, target_request, request, actor=cmd.actor, now=now, city=city)
            request.duplicate_of = target_request.id
            request.closed_at = now
            replies.append(
                (
                    REPLY_KIND_DUPLICATE,
                    {
                        "service_request_id": target_request.service_request_id,
                        "reporters_count": str(target_request.reporters_count),
                        **_district_params(target_request, city),
                    },
                )
            )
        case Action.NOT_RESPONSIBLE:
            if not cmd.note:
                raise InvalidCommand(
                    "not_responsible needs a public note saying who is responsible", "note"
                )
            _public_note(cmd)
            request.status_notes = cmd.note
            request.closed_at = now
            replies.append((REPLY_KIND_NOT_RESPONSIBLE, {"note": cmd.note}))
    request.status = target.value
    request.version += 1
    request.updated_datetime = now
    _audit(
        session, request, cmd.action.value, cmd.actor, now, before, note=cmd.note, public=cmd.public
    )
    _observe(session, request, cmd.action, before, now)
    rid = request.service_request_id
    events = [
        _status_changed(
            request,
            before,
            action=cmd.action.value,
            actor=cmd.actor,
            now=now,
            note=(cmd.note or "") if cmd.public else "",
        )
    ]
    for report in reporters if replies else ():
        for kind, params in replies:
            events.append(_reply(request, report, kind, f"v{request.version}", rid, **params))
    stage(session, events)
    return request


def _status_changed(
    request: ServiceRequest,
    before: dict[str, object],
    *,
    action: str,
    actor: str,
    now: datetime,
    note: str = "",
) -> Outgoing:
    """The event announcing a change of `request` (already applied), keyed by its id; its event
    id derives from the new version, so a redelivered change is recognised downstream."""
    rid = request.service_request_id
    changed = RequestStatusChanged(
        service_request_id=rid,
        from_status=str(before["status"]),
        to_status=request.status,
        actor=actor,
        note=note,
        changed_at=timestamp(now),
        action=action,
        queue=request.queue,
        agency_responsible=request.agency_responsible,
        assigned_worker=request.assigned_worker or "",
        photo_url=request.resolution_photo_url or "",
        duplicate_of=str(request.duplicate_of or ""),
        version=request.version,
    )
    return envelope(
        changed,
        key=rid,
        event_id=derive_event_id("request-status-changed", rid, str(request.version)),
        correlation_id=rid,
    )


def _labels(request: AnyRequest) -> tuple[str, str, str]:
    return (metrics.district_label(request.district_code), request.service_code, request.urgency)


def _observe(
    session: AsyncSession,
    request: ServiceRequest,
    action: Action,
    before: dict[str, object],
    now: datetime,
) -> None:
    """Records, once the action commits, how long the city took and whether it kept its SLA."""
    labels = _labels(request)
    age = metrics.seconds_between(request.requested_datetime, now)
    records: list[Callable[[], None]] = []
    if before["acknowledged_at"] is None and request.acknowledged_at is not None:
        records.append(partial(metrics.TIME_TO_ACKNOWLEDGE.labels(*labels).observe, age))
        records += _sla_outcome("acknowledge", labels, request.ack_due_at, before, now)
    if action is Action.ASSIGN and before["assigned_worker"] is None:
        records.append(partial(metrics.TIME_TO_ASSIGN.labels(*labels).observe, age))
    if action is Action.RESOLVE:
        records.append(partial(metrics.TIME_TO_RESOLVE.labels(*labels).observe, age))
        records += _sla_outcome("resolve", labels, request.expected_datetime, before, now)
    if before["status"] in OPEN_STATUSES and request.status not in OPEN_STATUSES:
        records.append(metrics.REQUESTS_CLOSED.labels(*labels, request.status).inc)
    for record in records:
        metrics.on_commit(session, record)


def _sla_outcome(
    deadline: str,
    labels: tuple[str, str, str],
    due: datetime | None,
    before: dict[str, object],
    now: datetime,
) -> list[Callable[[], None]]:
    """Met, or breached unless the scanner already counted this deadline as breached."""
    if due is None:
        return []
    if now <= due:
        return [metrics.SLA_MET.labels(deadline, *labels).inc]
    breached_field = "ack_breached_at" if deadline == "acknowledge" else "resolve_breached_at"
    if before[breached_field] is None:
        return [metrics.SLA_BREACHES.labels(deadline, *labels).inc]
    return []


async def _transfer(
    request: ServiceRequest,
    cmd: Command,
    *,
    now: datetime,
    sla: SlaPolicy,
    routing: RoutingTable,
    city: City,
) -> None:
    """Hands the request to another district (its queue and team) or another team. Whoever was
    sent is no longer on it, and the new hands get a fresh acknowledge window, met or missed on
    its own (the miss before was counted, and stays in the history); city hall keeps watching
    an escalated request."""
    if not cmd.note:
        raise InvalidCommand("transfer needs a reason", "note")
    if cmd.district_code is None and not cmd.agency:
        raise InvalidCommand("transfer needs a district_code or an agency", "district_code")
    if cmd.district_code is not None:
        code = city.district_code(cmd.district_code)
        if code is None:
            known = ", ".join(f"{c} ({d.name})" for c, d in city.districts.items())
            raise InvalidCommand(
                f"no district {cmd.district_code!r}; districts are {known}", "district_code"
            )
        district = city.districts[code]
        route = routing.route(district.code, district.name, request.service_code)
        team = cmd.agency or route.team
        if code == request.district_code and team == request.agency_responsible:
            raise InvalidCommand(
                f"request {request.id} is already with district {code} ({district.name}), "
                f"team {team!r}; name another district, or an agency to hand it to",
                "district_code",
            )
        if code != request.district_code:
            request.barri_code = None  # the barri was the other district's
        request.district_code, request.queue = district.code, route.queue
        request.agency_responsible = team
    elif cmd.agency == request.agency_responsible:
        raise InvalidCommand(f"request {request.id} is already with {cmd.agency!r}", "agency")
    else:
        request.agency_responsible = str(cmd.agency)
    window = sla.window(request.service_code, request.urgency == "urgent")
    request.ack_due_at = now + window.acknowledge
    request.acknowledged_at = request.ack_breached_at = None
    request.assigned_worker = None


async def _duplicate_target(
    session: AsyncSession, request: ServiceRequest, cmd: Command
) -> ServiceRequest:
    if cmd.duplicate_of is None:
        raise InvalidCommand(
            "mark_duplicate needs duplicate_of, the request it repeats", "duplicate_of"
        )
    if cmd.duplicate_of == request.id:
        raise InvalidCommand("a request cannot duplicate itself", "duplicate_of")
    target = await session.get(ServiceRequest, cmd.duplicate_of, with_for_update=True)
    if target is None:
        raise InvalidCommand(f"no service request {cmd.duplicate_of} to merge into", "duplicate_of")
    if target.status not in OPEN_STATUSES:
        raise InvalidCommand(
            f"request {target.id} is {target.status}; merge only into an open request",
            "duplicate_of",
        )
    return target


async def _absorb(
    session: AsyncSession,
    target: ServiceRequest,
    source: ServiceRequest,
    *,
    actor: str,
    now: datetime,
    city: City,
) -> None:
    """Moves the reports of `source` onto `target`, which now counts their reporters (a person
    who reported both counts once). A target that had no place takes the one its reports now
    give: its first point that lies in its own district (with that point's barri), its first
    address; a merge moves no request to another district, and a place it had stays."""
    before = snapshot(target)
    await session.execute(
        update(RequestReport)
        .where(RequestReport.service_request_id == source.id)
        .values(service_request_id=target.id, merged=True)
    )
    placeless = target.lat is None or target.long is None
    if placeless or target.address is None:
        point, address = await earliest_place(session, target.id)
        located = city.locate(*point) if placeless and point is not None else None
        # in its own district only: a merge moves no request
        same_district = (
            located is not None
            and located.district is not None
            and (located.district.code == target.district_code)
        )
        if point is not None and located is not None and same_district:
            target.lat, target.long = point
            if target.barri_code is None and located.barri is not None:
                target.barri_code = located.barri.code
        if target.address is None and address is not None:
            target.address, target.address_key = address
    target.reporters_count = await _reporters(session, target.id)
    target.version += 1
    target.updated_datetime = now
    _audit(session, target, "merged", actor, now, before, note=f"request {source.id}")


def _public_note(cmd: Command) -> None:
    """A resolve's or a not_responsible's note is what the citizen is told (the request's
    status_notes, the public reply): it cannot be internal."""
    if not cmd.public:
        raise InvalidCommand(
            f"{cmd.action}'s note is public: it is the request's status_notes and the reply "
            "the citizen gets; put what is internal in a note of its own (POST /notes, "
            "public false)",
            "public",
        )


def point_of(report: RequestReport) -> tuple[float, float] | None:
    """A report's point (lat, long), or None where it has none."""
    return (report.lat, report.long) if report.lat is not None and report.long is not None else None


async def fall_back_place(
    session: AsyncSession,
    request: ServiceRequest,
    *,
    address: str | None,
    point: tuple[float, float] | None,
) -> tuple[bool, bool]:
    """A report is leaving `request` (withdrawn, split off) or losing its point, with the
    address and point it had: where the request's are that report's (it opened the request, or
    a merge gave them), each falls back to the earliest report's still on it (not withdrawn)
    that gives one, else to none (its district and barri stay). Whether its address, its point
    changed."""
    is_address = address is not None and request.address == address
    is_point = point is not None and (request.lat, request.long) == point
    if is_address or is_point:
        other_point, other_address = await earliest_place(session, request.id)
        if is_address:
            request.address, request.address_key = other_address or (None, None)
        if is_point:
            request.lat, request.long = other_point or (None, None)
    return is_address, is_point


async def earliest_place(
    session: AsyncSession, request_id: int
) -> tuple[tuple[float, float] | None, tuple[str, str | None] | None]:
    """The point and the address a request's reports give (those not withdrawn), each the
    earliest report's that has one: (lat, long) and (address, address_key), or None."""
    reports = select(RequestReport).where(
        RequestReport.service_request_id == request_id, RequestReport.withdrawn_at.is_(None)
    )
    earliest = (RequestReport.reported_at, RequestReport.id)
    point = (
        await session.execute(
            reports.with_only_columns(RequestReport.lat, RequestReport.long)
            .where(RequestReport.lat.is_not(None), RequestReport.long.is_not(None))
            .order_by(*earliest)
            .limit(1)
        )
    ).first()
    address = (
        await session.execute(
            reports.with_only_columns(RequestReport.address, RequestReport.address_key)
            .where(RequestReport.address.is_not(None))
            .order_by(*earliest)
            .limit(1)
        )
    ).first()
    lat, long = point if point is not None else (None, None)
    return (
        (lat, long) if lat is not None and long is not None else None,
        (address[0], address[1]) if address is not None and address[0] is not None else None,
    )


async def _reporters(session: AsyncSession, request_id: int, *, without: int | None = None) -> int:
    """How many people reported a request: its reports' distinct authors (but one report's)."""
    query = select(func.count(distinct(RequestReport.reporter))).where(
        RequestReport.service_request_id == request_id
    )
    if without is not None:
        query = query.where(RequestReport.id != without)
    return int((await session.execute(query)).scalar_one())


async def split_report(
    session: AsyncSession,
    request_id: int,
    platform: str,
    post_id: str,
    *,
    actor: str,
    now: datetime,
    sla: SlaPolicy,
    routing: RoutingTable,
    city: City,
) -> ServiceRequest:
    """Undoes a wrong merge: the report becomes a request of its own, and takes back the point
    and address it gave the request it leaves (fall_back_place)."""
    request = await _locked(session, request_id)
    report = (
        await session.execute(
            select(RequestReport).where(
                RequestReport.service_request_id == request.id,
                RequestReport.platform == platform,
                RequestReport.post_id == post_id,
            )
        )
    ).scalar_one_or_none()
    if report is None:
        raise InvalidCommand(f"request {request_id} has no report {platform}:{post_id}", "post_id")
    if not report.merged:
        raise InvalidCommand(
            "that report opened the request; it cannot be split from it", "post_id"
        )
    before = snapshot(request)
    request.reporters_count = await _reporters(session, request.id, without=report.id)
    request.version += 1
    request.updated_datetime = now
    _audit(session, request, "split", actor, now, before, note=f"{platform}:{post_id}")
    revived = (
        await session.execute(
            select(ServiceRequest)
            .where(
                ServiceRequest.source_platform == platform, ServiceRequest.source_post_id == post_id
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    address, point = report.address, point_of(report)
    if revived is not None:
        # The report opened a request of its own that was later marked a duplicate: revive it.
        split = await _revive(session, revived, report, actor=actor, now=now, city=city)
    else:
        split = await _open_split(session, request, report, actor, now, sla, routing, city)
    await session.flush()
    await fall_back_place(session, request, address=address, point=point)
    return split


async def _open_split(
    session: AsyncSession,
    request: ServiceRequest,
    report: RequestReport,
    actor: str,
    now: datetime,
    sla: SlaPolicy,
    routing: RoutingTable,
    city: City,
) -> ServiceRequest:
    await session.delete(report)
    await session.flush()
    placement, route = _placed_as(request, routing, city)
    return await open_request(
        session,
        NewReport(
            platform=report.platform,
            post_id=report.post_id,
            author_handle=report.author_handle,
            text=report.text,
            language=report.language,
            reported_at=report.reported_at,
            lat=report.lat,
            long=report.long,
            address=report.address,
            address_key=report.address_key,
            reporter=report.reporter,
        ),
        service_code=request.service_code,
        urgent=request.urgency == "urgent",
        service_confidence=request.service_confidence,
        placement=placement,
        route=route,
        sla=sla,
        actor=actor,
        correlation_id=f"split:{request.id}",
    )


def _placed_as(
    request: ServiceRequest, routing: RoutingTable, city: City
) -> tuple[Placement, Route]:
    """Where a request that comes out of `request` goes: its district and barri (its own text
    may name no place), routed as a new request of its service there."""
    district = city.districts.get(request.district_code or "")
    route = routing.route(
        request.district_code, district.name if district else "", request.service_code
    )
    placement = Placement(
        district_code=request.district_code or "",
        district_name=district.name if district else "",
        barri_code=request.barri_code or "",
        source=_SOURCE_OF.get(request.location_source or "", LOCATION_SOURCE_NONE),
    )
    return placement, route


def follow_up_of(request_id: int) -> str:
    """How a follow-up's history begins, naming the request it follows (plaza.withdrawals finds
    the follow-ups placed where a withdrawn post was by it)."""
    return f"follow-up of #{request_id} "


async def open_follow_up(
    session: AsyncSession,
    request: ServiceRequest,
    report: NewReport,
    *,
    urgent: bool,
    now: datetime,
    sla: SlaPolicy,
    routing: RoutingTable,
    city: City,
    correlation_id: str,
) -> ServiceRequest:
    """Someone who did not report a resolved request answers its thread that something is
    still wrong ("the light is out again"): a new request of the same service and place (the
    answer's text rarely names them), linked both ways in the history. Only a reporter may
    reopen a request; anyone may report."""
    placement, route = _placed_as(request, routing, city)
    located = report
    # An answer naming another door than the request's is not at the request's point (one whose
    # door is unknown may be at it).
    keys = (report.address_key, request.address_key)
    another_door = None not in keys and keys[0] != keys[1]
    if (report.lat is None or report.long is None) and not another_door:
        located = replace(report, lat=request.lat, long=request.long)
    if not located.address and request.address:
        located = replace(located, address=request.address, address_key=request.address_key)
    follow_up = await open_request(
        session,
        located,
        service_code=request.service_code,
        urgent=urgent,
        service_confidence=request.service_confidence,
        placement=placement,
        route=route,
        sla=sla,
        actor="router",
        correlation_id=correlation_id,
    )
    status = request.status
    await add_note(
        session,
        follow_up.id,
        actor="router",
        note=f"{follow_up_of(request.id)}({status}), answered in its thread",
        public=False,
        now=now,
    )
    await add_note(
        session,
        request.id,
        actor="router",
        note=f"#{follow_up.id} opened from an answer in this thread by someone else",
        public=False,
        now=now,
    )
    return follow_up


async def _revive(
    session: AsyncSession,
    request: ServiceRequest,
    report: RequestReport,
    *,
    actor: str,
    now: datetime,
    city: City,
) -> ServiceRequest:
    before = snapshot(request)
    report.service_request_id = request.id
    report.merged = False
    request.status = Status.NEW.value
    request.duplicate_of = None
    request.closed_at = None
    request.reporters_count = 1
    request.version += 1
    request.updated_datetime = now
    _audit(
        session,
        request,
        "split",
        actor,
        now,
        before,
        note="split from the request it was merged into",
    )
    rid = request.service_request_id
    stage(
        session,
        [
            _status_changed(request, before, action="split", actor=actor, now=now),
            # the citizen was told their report joined another request: now it is its own
            _reply(
                request,
                report,
                REPLY_KIND_ACKNOWLEDGED,
                f"v{request.version}",
                rid,
                **_district_params(request, city),
            ),
        ],
    )
    return request


async def breach(
    session: AsyncSession,
    request: ServiceRequest,
    deadline: str,
    *,
    now: datetime,
    correlation_id: str = "",
) -> None:
    """Records a missed deadline on a locked request and escalates it to city hall."""
    before = snapshot(request)
    due = request.ack_due_at if deadline == "acknowledge" else request.expected_datetime
    if deadline == "acknowledge":
        request.ack_breached_at = now
    else:
        request.resolve_breached_at = now
    request.escalated_at = request.escalated_at or now
    request.version += 1
    _audit(
        session,
        request,
        "sla_breached",
        "sla-scanner",
        now,
        before,
        note=f"{deadline} deadline missed",
    )
    rid = request.service_request_id
    body = RequestSlaBreached(
        service_request_id=rid,
        deadline=deadline,
        detected_at=timestamp(now),
        district_code=request.district_code or "",
        service_code=request.service_code,
        escalated_to=CITY_HALL_QUEUE,
    )
    if due is not None:
        body.due_at.CopyFrom(timestamp(due))
    events = [
        envelope(
            body,
            key=rid,
            event_id=derive_event_id("request-sla-breached", rid, deadline, str(request.version)),
            correlation_id=correlation_id or rid,
        )
    ]
    if deadline == "resolve":
        # The acknowledgement promised a due time; everyone who reported it hears it is late.
        reporters = await session.execute(
            select(RequestReport)
            .where(RequestReport.service_request_id == request.id)
            .order_by(RequestReport.id)
        )
        events += [
            _reply(
                request,
                report,
                REPLY_KIND_DELAYED,
                f"delayed-v{request.version}",
                correlation_id or rid,
            )
            for report in reporters.scalars()
        ]
    stage(session, events)


async def add_note(
    session: AsyncSession,
    request_id: int,
    *,
    actor: str,
    note: str,
    public: bool,
    now: datetime,
) -> ServiceRequest:
    """A note on a request without changing its status: public (Open311 shows it) or internal
    (only staff see it, in the history)."""
    if not note.strip():
        raise InvalidCommand("a note needs text", "note")
    request = await _locked(session, request_id)
    before = snapshot(request)
    request.version += 1
    if public:
        request.updated_datetime = now
    _audit(session, request, "note", actor, now, before, note=note, public=public)
    return request


async def history(session: AsyncSession, request_id: int) -> list[RequestEvent]:
    rows = await session.execute(
        select(RequestEvent)
        .where(RequestEvent.service_request_id == request_id)
        .order_by(RequestEvent.id)
    )
    return list(rows.scalars())
