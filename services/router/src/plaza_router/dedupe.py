"""Finding the open request a new report repeats: same service, close by, recently, and not
about another problem of that service.

Close by is within a radius of a report's point; without a point, in the same barri with a
similar text, or at the same address. Two addresses of the city's street register (a post's
own, or the street and number its text names) tell more than the texts: the same street and
number is the same place whatever the words, another street or numbers far apart
(FAR_NUMBERS) is another place however alike the words. The open requests at an address are
searched by its canonical key (plaza.city.streets.address_key, the street's code and number),
not by its words: "c/ Aragó 250" and "Calle Aragón, 250, 2º 1ª" are one door."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Protocol, TypeVar

import asyncpg
from plaza.city import fold
from plaza.city.streets import Streets
from plaza.db.models import ServiceRequest
from plaza.requests import OPEN_STATUSES, sql_list
from plaza.subjects import different_problems
from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

_M_PER_DEG_LAT = 111_320.0
FAR_NUMBERS = 10
"""House numbers of one street further apart than this are not one place: about the duplicate
radius along a side of an Eixample block (a block's side holds some 20 to 30 numbers)."""


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


# One object per distinct trigram, shared by every cached set that has it: each set holds
# references only (a 76-character post's set is 2 KB, not 6 KB with its own strings). Bounded:
# past this many trigrams (emoji and other scripts have many), a new one is kept by its set.
_SHARED_TRIGRAMS: dict[str, str] = {}
SHARED_TRIGRAMS_MAX = 200_000


@lru_cache(maxsize=4096)
def trigrams(value: str) -> frozenset[str]:
    """The text's character trigrams, folded. Cached: an open request's description is compared
    with every text-only report of its service and barri, batch after batch. 4,096 sets: 8,192
    of them, with their own strings, were 63 MB of a router's memory (posts of 74 characters on
    average), and took it past 150 MB after some 20,000 posts."""
    folded = f"  {fold(value)} "
    shared = _SHARED_TRIGRAMS
    if len(shared) >= SHARED_TRIGRAMS_MAX:
        return frozenset(folded[i : i + 3] for i in range(len(folded) - 2))
    return frozenset(
        shared.setdefault(gram, gram)
        for gram in (folded[i : i + 3] for i in range(len(folded) - 2))
    )


def similarity(a: str, b: str, at_least: float = 0.0) -> float:
    """Jaccard similarity of character trigrams (robust to typos and word order); 0.0 for a
    pair whose sets' sizes alone keep it below `at_least`: the shared trigrams are at most the
    smaller set, the union at least the larger, so the smaller over the larger bounds it, and
    the sets of texts of very different lengths are not intersected (a report compared with
    every open request of its barri, after a storm)."""
    ta, tb = trigrams(a), trigrams(b)
    na, nb = len(ta), len(tb)
    if not na or not nb or min(na, nb) < at_least * max(na, nb):
        return 0.0
    shared = len(ta & tb)  # the union's size without building it
    return shared / (na + nb - shared)


async def lock_service(session: AsyncSession, service_code: str) -> None:
    """Serialises deciding "new or duplicate" for one service across router processes, until
    the transaction ends; without it two reports of one pothole could open two requests."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"dedupe:{service_code}"}
    )


# The inbox of a batch and its dedupe locks in one round trip: the events not seen before are
# recorded, then the services of those that are actionable locked, in one order for every
# router (by code, C collation: Python's order) so that two routers never wait for each other's
# locks in opposite orders. The locks wait for the whole INSERT (their rows come from reading
# all of `fresh`): a router waiting for another's inbox rows (a redelivery after a rebalance)
# holds no lock meanwhile.
_FIRST_TIMES_LOCKED = text(
    """
    WITH fresh AS (
        INSERT INTO processed_events (consumer, event_id)
        SELECT :consumer, e FROM unnest(CAST(:ids AS text[])) AS e
        ON CONFLICT DO NOTHING RETURNING event_id
    ), locked AS (
        SELECT count(pg_advisory_xact_lock(hashtext('dedupe:' || s))) AS n
        FROM (
            SELECT DISTINCT t.s COLLATE "C" AS s
            FROM unnest(CAST(:ids AS text[]), CAST(:services AS text[])) AS t(e, s)
            JOIN fresh ON fresh.event_id = t.e
            WHERE t.s IS NOT NULL
            ORDER BY 1
        ) AS services
    )
    SELECT fresh.event_id FROM fresh, locked
    """
)


async def first_times_locking(
    session: AsyncSession, consumer: str, events: Iterable[tuple[str, str | None]]
) -> set[str]:
    """The inbox for a batch of (event id, service code or None when not actionable): the ids
    not seen before (an id given twice counts once); the services of those are locked as
    lock_service does, until the transaction ends."""
    first: dict[str, str | None] = {}
    for event_id, service_code in events:
        first.setdefault(event_id, service_code)
    if not first:
        return set()
    found = await session.execute(
        _FIRST_TIMES_LOCKED,
        {"consumer": consumer, "ids": list(first), "services": list(first.values())},
    )
    return set(found.scalars())


class Candidate(Protocol):
    """What deciding on a duplicate reads of an open request."""

    @property
    def lat(self) -> float | None: ...
    @property
    def long(self) -> float | None: ...
    @property
    def description(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def address_key(self) -> str | None: ...


Spot = tuple[str, int | None]
"""A street of the register (its code) and a house number, if one was given."""


@lru_cache(maxsize=8192)
def spot(streets: Streets | None, address: str | None) -> Spot | None:
    """The street and number an address names, by the city's register; None without a register
    or when the address names no street of it. Cached: an open request's address is compared
    with report after report."""
    if streets is None or not address:
        return None
    found = streets.find(address)
    return None if found is None else (found.street.code, found.number)


@lru_cache(maxsize=8192)
def key_of(streets: Streets | None, address: str | None) -> str | None:
    """The canonical key of an address (plaza.city.streets.StreetAddress.key) by the city's
    register, or None: without a register, when the register cannot read the address, or for a
    street without a number (no place)."""
    if streets is None or not address:
        return None
    return streets.key(address)


def same_place(mine: Spot | None, theirs: Spot | None) -> bool | None:
    """Whether two addresses are one place: True for the same street and number, False for
    another street or numbers more than FAR_NUMBERS apart, None when they cannot tell (an
    address unknown, a number missing, numbers close by)."""
    if mine is None or theirs is None:
        return None
    if mine[0] != theirs[0]:
        return False
    if mine[1] is None or theirs[1] is None:
        return None
    if mine[1] == theirs[1]:
        return True
    return False if abs(mine[1] - theirs[1]) > FAR_NUMBERS else None


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True, slots=True)
class Probe:
    """One report's duplicate search: its service, time and place (a box around its point, or
    its barri, address and text when it has no point). `streets`: the city's register, which
    reads the addresses."""

    service_code: str
    reported_at: datetime
    text: str
    lat: float | None
    lon: float | None
    barri_code: str | None
    address: str | None = None
    streets: Streets | None = None

    @property
    def spot(self) -> Spot | None:
        return spot(self.streets, self.address)

    @property
    def address_key(self) -> str | None:
        """The canonical key of the address, when the register reads it (as a request opened by
        this report records it in service_requests.address_key)."""
        return key_of(self.streets, self.address)

    @property
    def by_address(self) -> str | None:
        """The address key searched for, without a point: one the register reads, else None."""
        if self.lat is not None and self.lon is not None:
            return None
        return self.address_key

    def searchable(self, policy: DuplicatePolicy) -> bool:
        if policy.window <= timedelta(0):
            return False
        if self.lat is not None and self.lon is not None:
            return policy.radius_m > 0
        return bool(self.barri_code) or self.by_address is not None

    def box(self, policy: DuplicatePolicy) -> tuple[float, float, float, float]:
        """(lat_min, lat_max, lon_min, lon_max) around the point, radius_m each way."""
        assert self.lat is not None and self.lon is not None
        dlat = policy.radius_m / _M_PER_DEG_LAT
        dlon = dlat / max(math.cos(math.radians(self.lat)), 0.01)
        return self.lat - dlat, self.lat + dlat, self.lon - dlon, self.lon + dlon

    def admits(
        self,
        policy: DuplicatePolicy,
        *,
        service_code: str,
        requested_at: datetime,
        candidate: Candidate,
        barri_code: str | None,
    ) -> bool:
        """Whether an open request is among this probe's candidates (what the SQL selects)."""
        if service_code != self.service_code:
            return False
        if abs(requested_at - self.reported_at) > policy.window:
            return False
        if self.lat is not None and self.lon is not None:
            lat0, lat1, lon0, lon1 = self.box(policy)
            return (
                candidate.lat is not None
                and candidate.long is not None
                and lat0 <= candidate.lat <= lat1
                and lon0 <= candidate.long <= lon1
            )
        if self.barri_code and barri_code == self.barri_code:
            return True
        return self.by_address is not None and candidate.address_key == self.by_address

    def best(
        self, policy: DuplicatePolicy, candidates: Iterable[tuple[tuple[int, int], C]]
    ) -> C | None:
        """The candidate this report repeats, or None: the nearest within the radius for a
        point, else the one at the same street and number, else the most alike text in the
        barri or at the address, but never at another street or number far apart (same_place);
        ties go to the oldest (its order key). Never one whose text names another problem of
        the service (plaza.subjects): a stop sign 40 m from an abandoned car is another
        request."""
        if self.lat is not None and self.lon is not None:
            lat, lon = self.lat, self.lon
            close = [
                (distance, order, c)
                for order, c in candidates
                if c.lat is not None
                and c.long is not None
                and (distance := distance_m(lat, lon, c.lat, c.long)) <= policy.radius_m
            ]
            return self._first_of_the_same_problem(close)
        mine = self.spot
        threshold = policy.text_similarity
        alike = []
        for order, c in candidates:
            place = same_place(mine, spot(self.streets, c.address))
            if place is False:
                continue
            score = 1.0 if place else similarity(self.text, c.description, threshold)
            if score >= threshold:
                alike.append((-score, order, c))
        return self._first_of_the_same_problem(alike)

    def _first_of_the_same_problem(
        self, ranked: list[tuple[float, tuple[int, int], C]]
    ) -> C | None:
        """The best ranked (nearest, or most alike; then the oldest) whose text names no other
        problem than this report's. The subjects are looked for in that order and only until
        one is found: a report near many open requests (the piles of a busy street after a
        storm) compares its text with the nearest, not with all of them."""
        for _, _, c in sorted(ranked, key=lambda s: (s[0], s[1])):
            if not different_problems(self.service_code, self.text, c.description):
                return c
        return None


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
    address: str | None = None,
    streets: Streets | None = None,
) -> ServiceRequest | None:
    """The open request this report repeats, locked for update, or None."""
    probe = Probe(service_code, reported_at, text_, lat, lon, barri_code, address, streets)
    if not probe.searchable(policy):
        return None
    stmt = select(ServiceRequest).where(
        ServiceRequest.service_code == service_code,
        ServiceRequest.status.in_(OPEN_STATUSES),
        ServiceRequest.requested_datetime >= reported_at - policy.window,
        ServiceRequest.requested_datetime <= reported_at + policy.window,
    )
    if lat is not None and lon is not None:
        lat0, lat1, lon0, lon1 = probe.box(policy)
        stmt = stmt.where(
            ServiceRequest.lat.between(lat0, lat1), ServiceRequest.long.between(lon0, lon1)
        )
    else:
        places = [ServiceRequest.barri_code == barri_code] if barri_code else []
        if probe.by_address is not None:
            places.append(ServiceRequest.address_key == probe.by_address)
        stmt = stmt.where(or_(*places))
    candidates = (await session.execute(stmt)).scalars().all()
    best = probe.best(policy, (((0, c.id), c) for c in candidates))
    if best is None:
        return None
    return await session.get(ServiceRequest, best.id, with_for_update=True, populate_existing=True)


@dataclass(slots=True)
class Found:
    """An open request found by `candidates`, not locked. Not frozen, though nothing changes
    it: a frozen dataclass sets each field through object.__setattr__, five times as slow to
    make (490 against 95 ns), and a storm's batch makes thousands."""

    id: int
    lat: float | None
    long: float | None
    description: str
    address: str | None
    address_key: str | None


_OPEN_SQL = sql_list(OPEN_STATUSES)
_PROBES = """
    unnest(CAST(:codes AS text[]), CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[]),
           CAST(:lat0 AS float8[]), CAST(:lat1 AS float8[]), CAST(:lon0 AS float8[]),
           CAST(:lon1 AS float8[]), CAST(:barri AS text[]), CAST(:addr_key AS text[]))
    WITH ORDINALITY AS p(code, lo, hi, lat0, lat1, lon0, lon1, barri, addr_key, i)"""
# Three parts, so that each uses its index: a point's probe scans a band of latitude of its
# service's open requests (ix_service_requests_dedupe_near); a barri's probe, its barri's within
# the window (ix_service_requests_dedupe_barri); an address's probe, the requests at that very
# address, by its key (ix_service_requests_dedupe_address_key). Each index holds only the
# requests its part can find (with a point, a barri, an address key: migration 0024), so that
# no part can be planned on another's by service_code alone, every open request of the service
# for each probe: the plan a prepared statement made while the table was empty or small, and
# kept until the table's first analyze, did so (200 to 400 ms a batch). The point's half is a
# LATERAL subquery fenced by OFFSET 0, and its time condition is one no index can take (IS
# TRUE), so that with any statistics the only good plan is each probe reading its own band. A
# table that grows by thousands of requests a minute has no statistics until autovacuum's next
# analyze, and the planner then joined every open request with every probe, or read the window
# through the index on requested_datetime (10-60 ms a batch of 100 instead of 1 to 2).
# A request near several of a batch's posts (a busy street's, after a storm) is one row, with
# the probes that found it (array_agg: a probe twice when its barri and its address both find
# it), not a row per probe: by the fourth burst of the bench's --growth, 20 rows a searched post
# were 11 requests, each sent, decoded and made into a Found once instead of twice.
CANDIDATES = text(
    f"""
    SELECT c.id, c.lat, c.long, c.description, c.address, c.address_key, array_agg(c.i)
    FROM (
        SELECT p.i, s.id, s.lat, s.long, s.description, s.address, s.address_key FROM {_PROBES}
        CROSS JOIN LATERAL (
            SELECT s.id, s.lat, s.long, s.description, s.address, s.address_key
            FROM service_requests AS s
            WHERE s.service_code = p.code AND s.status IN ({_OPEN_SQL})
              AND s.lat BETWEEN p.lat0 AND p.lat1 AND s.long BETWEEN p.lon0 AND p.lon1
              AND (s.requested_datetime BETWEEN p.lo AND p.hi) IS TRUE
            OFFSET 0
        ) AS s
        WHERE p.lat0 IS NOT NULL
        UNION ALL
        SELECT p.i, s.id, s.lat, s.long, s.description, s.address, s.address_key FROM {_PROBES}
        JOIN service_requests AS s
          ON s.service_code = p.code AND s.status IN ({_OPEN_SQL})
         AND s.barri_code = p.barri AND s.requested_datetime BETWEEN p.lo AND p.hi
        WHERE p.lat0 IS NULL
        UNION ALL
        SELECT p.i, s.id, s.lat, s.long, s.description, s.address, s.address_key FROM {_PROBES}
        JOIN service_requests AS s
          ON s.service_code = p.code AND s.status IN ({_OPEN_SQL})
         AND s.address_key = p.addr_key AND s.requested_datetime BETWEEN p.lo AND p.hi
        WHERE p.lat0 IS NULL AND p.addr_key IS NOT NULL
    ) AS c
    GROUP BY c.id, c.lat, c.long, c.description, c.address, c.address_key
    """
)


_PROBE_PARAMETERS = ("codes", "lo", "hi", "lat0", "lat1", "lon0", "lon1", "barri", "addr_key")
# CANDIDATES as asyncpg takes it: its parameters numbered in probe_columns' order.
_CANDIDATES_NUMBERED = re.sub(
    r":(\w+)\b", lambda m: f"${_PROBE_PARAMETERS.index(m[1]) + 1}", CANDIDATES.text
)


async def candidates(
    session: AsyncSession, policy: DuplicatePolicy, probes: Sequence[Probe]
) -> list[list[Found]]:
    """Each probe's candidates among the open requests, in one statement for them all (the
    router's batches): what find_duplicate would consider for each, without locking any."""
    found: list[list[Found]] = [[] for _ in probes]
    asked, columns = probe_columns(policy, probes)
    if not asked:
        return found
    # Straight through asyncpg, on the session's connection and in its transaction: after a
    # storm a batch's probes bring thousands of rows (22 a searched post by the fourth burst
    # of the bench's --growth), and SQLAlchemy's result rows cost more than asyncpg's records,
    # which are already tuples. A connection lost meanwhile is said as one (a transient error
    # to the worker, as SQLAlchemy's wrapping said it), not as asyncpg's InterfaceError or
    # InternalClientError, which would be taken for a bad record.
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None
    try:
        rows = await driver.fetch(_CANDIDATES_NUMBERED, *columns.values())
    except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as exc:
        # closed, or its protocol caught mid-way by the server's goodbye ("cannot switch to
        # state ...; another operation is in progress"): unusable either way
        if driver.is_closed() or isinstance(exc, asyncpg.exceptions.InternalClientError):
            raise ConnectionError(f"PostgreSQL's connection was lost: {exc}") from exc
        raise
    for rid, lat, long, description, address, key, finders in rows:
        request = Found(rid, lat, long, description, address, key)
        for i in finders:  # the probes that found it, numbered from 1 among those asked
            found[asked[i - 1]].append(request)
    return found


def probe_columns(
    policy: DuplicatePolicy, probes: Sequence[Probe]
) -> tuple[list[int], dict[str, list[object]]]:
    """Which probes are searched (their indexes) and CANDIDATES' parameters for them."""
    asked = [i for i, p in enumerate(probes) if p.searchable(policy)]
    columns: dict[str, list[object]] = {k: [] for k in _PROBE_PARAMETERS}
    for i in asked:
        p = probes[i]
        box = p.box(policy) if p.lat is not None and p.lon is not None else (None,) * 4
        values = (
            p.service_code,
            p.reported_at - policy.window,
            p.reported_at + policy.window,
            *box,
            p.barri_code,
            p.by_address,
        )
        for column, value in zip(columns.values(), values, strict=True):
            column.append(value)
    return asked, columns
