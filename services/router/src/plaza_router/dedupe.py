"""Finding the open request a new report repeats: same service, close by, recently."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from plaza.city import fold
from plaza.db.models import ServiceRequest
from plaza.requests import OPEN_STATUSES
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

_M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True, slots=True)
class DuplicatePolicy:
    radius_m: float = 60.0
    window: timedelta = timedelta(hours=72)
    text_similarity: float = 0.5


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


def trigrams(value: str) -> set[str]:
    folded = f"  {fold(value)} "
    return {folded[i : i + 3] for i in range(len(folded) - 2)}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of character trigrams (robust to typos and word order)."""
    ta, tb = trigrams(a), trigrams(b)
    return len(ta & tb) / len(ta | tb) if ta and tb else 0.0


async def lock_service(session: AsyncSession, service_code: str) -> None:
    """Serialises deciding "new or duplicate" for one service across router processes, until
    the transaction ends; without it two reports of one pothole could open two requests."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"dedupe:{service_code}"}
    )


async def find_duplicate(
    session: AsyncSession,
    policy: DuplicatePolicy,
    *,
    service_code: str,
    reported_at: datetime,
    text_: str,
    lat: float | None,
    lon: float | None,
    barri_code: str | None,
) -> ServiceRequest | None:
    """The open request this report repeats, locked for update, or None."""
    if policy.window <= timedelta(0):
        return None
    stmt = select(ServiceRequest).where(
        ServiceRequest.service_code == service_code,
        ServiceRequest.status.in_(OPEN_STATUSES),
        ServiceRequest.requested_datetime >= reported_at - policy.window,
        ServiceRequest.requested_datetime <= reported_at + policy.window,
    )
    if lat is not None and lon is not None:
        if policy.radius_m <= 0:
            return None
        dlat = policy.radius_m / _M_PER_DEG_LAT
        dlon = dlat / max(math.cos(math.radians(lat)), 0.01)
        stmt = stmt.where(
            ServiceRequest.lat.between(lat - dlat, lat + dlat),
            ServiceRequest.long.between(lon - dlon, lon + dlon),
        )
        candidates = (await session.execute(stmt)).scalars().all()
        scored = [
            (distance_m(lat, lon, c.lat, c.long), c.id, c)
            for c in candidates
            if c.lat is not None and c.long is not None
        ]
        close = [s for s in scored if s[0] <= policy.radius_m]
        best = min(close, key=lambda s: (s[0], s[1]))[2] if close else None
    else:
        if not barri_code:
            return None
        stmt = stmt.where(ServiceRequest.barri_code == barri_code)
        candidates = (await session.execute(stmt)).scalars().all()
        alike = [(similarity(text_, c.description), -c.id, c) for c in candidates]
        alike = [s for s in alike if s[0] >= policy.text_similarity]
        best = max(alike, key=lambda s: (s[0], s[1]))[2] if alike else None
    if best is None:
        return None
    return await session.get(ServiceRequest, best.id, with_for_update=True, populate_existing=True)
