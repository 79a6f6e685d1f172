"""Open311 GeoReport v2 (read side for now): requests.json and requests/{id}.json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from plaza.db.models import ServiceRequest
from plaza.requests import CLOSED_STATUSES, OPEN_STATUSES, open311_status
from plaza.taxonomy import service_name
from sqlalchemy import select

from plaza_api.deps import SessionDep

router = APIRouter(prefix="/open311/v2", tags=["Open311 GeoReport v2"])

DEFAULT_WINDOW = timedelta(days=90)  # the spec's default when no dates are given
MAX_RESULTS = 1000


def open311_error(status: int, description: str) -> JSONResponse:
    """Open311's own error format: an array of {code, description}."""
    return JSONResponse([{"code": status, "description": description}], status_code=status)


def w3c(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None


def as_open311(r: ServiceRequest) -> dict[str, object]:
    return {
        "service_request_id": r.service_request_id,
        "status": open311_status(r.status),
        "status_notes": None,
        "service_name": service_name(r.service_code, "en"),
        "service_code": r.service_code,
        "description": r.description,
        "agency_responsible": r.agency_responsible,
        "service_notice": None,
        "requested_datetime": w3c(r.requested_datetime),
        "updated_datetime": w3c(r.updated_datetime),
        "expected_datetime": w3c(r.expected_datetime),
        "address": r.address,
        "address_id": None,
        "zipcode": None,
        "lat": r.lat,
        "long": r.long,
        "media_url": r.media_url,
    }


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@router.get("/requests.json", response_model=None)
async def list_requests(
    session: SessionDep,
    service_request_id: Annotated[str | None, Query(description="Comma-separated ids")] = None,
    service_code: Annotated[str | None, Query(description="Comma-separated service codes")] = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    status: Annotated[
        str | None, Query(description="open, closed, or both comma-separated")
    ] = None,
) -> JSONResponse:
    stmt = select(ServiceRequest)
    ids = _csv(service_request_id)
    if ids:
        if not all(i.isdigit() for i in ids):
            return open311_error(400, "service_request_id must be a comma-separated list of ids")
        stmt = stmt.where(ServiceRequest.id.in_([int(i) for i in ids]))
    else:
        # The spec: without ids, requests of the last 90 days unless dates are given.
        end = end_date or datetime.now(UTC)
        start = start_date or end - DEFAULT_WINDOW
        if start.tzinfo is None or end.tzinfo is None:
            return open311_error(400, "start_date and end_date need a timezone (W3C format)")
        stmt = stmt.where(
            ServiceRequest.requested_datetime >= start, ServiceRequest.requested_datetime <= end
        )
    codes = _csv(service_code)
    if codes:
        stmt = stmt.where(ServiceRequest.service_code.in_(codes))
    statuses = _csv(status)
    if statuses:
        unknown = set(statuses) - {"open", "closed"}
        if unknown:
            return open311_error(400, f"status must be open or closed, not {sorted(unknown)}")
        wanted: set[str] = set()
        if "open" in statuses:
            wanted |= OPEN_STATUSES
        if "closed" in statuses:
            wanted |= CLOSED_STATUSES
        stmt = stmt.where(ServiceRequest.status.in_(wanted))
    stmt = stmt.order_by(ServiceRequest.requested_datetime.desc()).limit(MAX_RESULTS)
    rows = (await session.execute(stmt)).scalars().all()
    return JSONResponse([as_open311(r) for r in rows])


@router.get("/requests/{service_request_id}.json", response_model=None)
async def get_request(service_request_id: str, session: SessionDep) -> JSONResponse:
    if not service_request_id.isdigit():
        return open311_error(404, f"no service request {service_request_id!r}")
    request = await session.get(ServiceRequest, int(service_request_id))
    if request is None:
        return open311_error(404, f"no service request {service_request_id!r}")
    return JSONResponse([as_open311(request)])
