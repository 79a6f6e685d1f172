"""The open backlog and the outbox as Prometheus metrics, read from the database when the gateway
is scraped, and whether the database could be read.

A scrape reads the database at most once every `max_age` seconds; scrapes in between get the
last reading. If the database cannot be read within `timeout` seconds (so that the scrape still
answers), plaza_database_up is 0 and the backlog metrics are left out of the scrape (a gap in
the graphs, and a warning in the log) rather than shown stale; plaza_database_up is 1 otherwise.

The outbox's oldest event is read here, not by the relay, so that its age keeps growing when the
relay is down or never gets its lock. For the same reason the consumer groups' lag is read here
from the broker (given a `lag` reader): a group whose members are all down still shows what
waits for it. A failed lag reading leaves the lag out of that scrape (and says so in the log).

Several gateways report the same numbers: aggregate them with max, not sum, across instances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from plaza.db.models import OutboxRecord, ServiceRequest
from plaza.metrics import LIFECYCLE_BUCKETS, NO_DISTRICT, district_label, no_district_name
from plaza.requests import OPEN_STATUSES
from plaza.taxonomy import load_taxonomy, service_name
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Float, and_, cast, distinct, extract, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

# How old the open requests are, with an edge at every SLA window (5 minutes to 30 days, as
# the time to each step): the median and p90 of a queue whose deadlines are 15 minutes to 10
# days are read at those deadlines, not between an hour and a day (they were 4 to 7 times off).
AGE_BUCKETS = LIFECYCLE_BUCKETS


class LagReader(Protocol):
    """Reads every consumer group's lag from the broker (plaza.bus.kafka.GroupLag)."""

    async def read(self) -> Mapping[tuple[str, str, int], int]: ...


@dataclass(frozen=True, slots=True)
class DistrictAges:
    cumulative: tuple[int, ...]  # requests at most AGE_BUCKETS[i] old
    count: int
    sum_seconds: float
    busy_workers: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    open: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    overdue: dict[tuple[str, str, str], int] = field(default_factory=dict)
    past_due: dict[tuple[str, str], int] = field(default_factory=dict)
    escalated: dict[tuple[str, str], int] = field(default_factory=dict)
    districts: dict[str, DistrictAges] = field(default_factory=dict)
    outbox_oldest_seconds: float = 0.0  # 0 when every event is published


async def read_outbox_age(session: AsyncSession) -> float:
    """Seconds since the oldest unpublished outbox event (the one the relay publishes next) was
    written; 0 when there is none. The relay's own query: the primary key's first entry."""
    age = (
        await session.execute(
            select(
                func.greatest(
                    cast(extract("epoch", func.now() - OutboxRecord.created_at), Float), 0.0
                )
            )
            .order_by(OutboxRecord.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    return float(age or 0.0)


async def read_backlog(session: AsyncSession) -> Snapshot:
    """Two grouped queries over the open requests (the partial index of the open queues,
    ix_service_requests_open_queue, holds every one of them, and no closed one), and the
    outbox's oldest event."""
    r = ServiceRequest
    is_open = r.status.in_(OPEN_STATUSES)
    now = func.now()
    # The manager API's `overdue` (plaza_api.manager): not acknowledged past ack_due_at, or
    # unresolved past expected_datetime; a request late on both is overdue once.
    ack_late = and_(r.acknowledged_at.is_(None), r.ack_due_at < now)
    resolve_late = r.expected_datetime < now
    by_service = await session.execute(
        select(
            r.district_code,
            r.service_code,
            r.status,
            r.urgency,
            r.queue,
            func.count(),
            func.count().filter(ack_late),
            func.count().filter(resolve_late),
            func.count().filter(or_(ack_late, resolve_late)),
            func.count().filter(r.escalated_at.is_not(None)),
        )
        .where(is_open)
        .group_by(r.district_code, r.service_code, r.status, r.urgency, r.queue)
    )
    snapshot = Snapshot(outbox_oldest_seconds=await read_outbox_age(session))
    for row in by_service:
        district, service, status, urgency, queue, count, acks, resolves, late, escalated = row
        d = district_label(district)
        snapshot.open[(d, service, status, urgency, queue)] = count
        for deadline, n in (("acknowledge", acks), ("resolve", resolves)):
            key = (d, service, deadline)
            snapshot.overdue[key] = snapshot.overdue.get(key, 0) + n
        snapshot.past_due[(d, service)] = snapshot.past_due.get((d, service), 0) + late
        snapshot.escalated[(d, service)] = snapshot.escalated.get((d, service), 0) + escalated
    age = cast(extract("epoch", now - r.requested_datetime), Float)
    by_district = await session.execute(
        select(
            r.district_code,
            *(func.count().filter(age <= bound) for bound in AGE_BUCKETS),
            func.count(),
            func.coalesce(func.sum(func.greatest(age, 0.0)), 0.0),
            func.count(distinct(r.assigned_worker)),
        )
        .where(is_open)
        .group_by(r.district_code)
    )
    for district, *values in by_district:
        n = len(AGE_BUCKETS)
        snapshot.districts[district_label(district)] = DistrictAges(
            cumulative=tuple(int(v) for v in values[:n]),
            count=int(values[n]),
            sum_seconds=float(values[n + 1]),
            busy_workers=int(values[n + 2]),
        )
    return snapshot


class BacklogCollector(Collector):
    """Serves the last reading of the backlog; `refresh` reads it again once it is too old."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_age: float = 5.0,
        timeout: float = 5.0,
        lag: LagReader | None = None,
        districts: Mapping[str, str] | None = None,
        language: str = "en",
        city: str | None = None,
    ) -> None:
        """`districts`: each district's code and name, for plaza_district_info; `language`:
        the city's, which plaza_service_info names the services in (and `none`, the district
        of requests with none); `city`: its name, for plaza_city_info."""
        self._city = city
        self._sessions = sessions
        self._districts = dict(districts or {})
        self._language = language
        self._lag = lag
        self._lag_reading: Mapping[tuple[str, str, int], int] | None = None
        self._max_age = max_age
        self._timeout = timeout  # under Prometheus's scrape timeout (10 s unless configured)
        self._snapshot: Snapshot | None = None
        self._database_up: bool | None = None  # unknown until the first reading
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes wait for one reading
            if time.monotonic() - self._read_at < self._max_age:
                return
            try:
                async with asyncio.timeout(self._timeout), self._sessions() as session:
                    self._snapshot = await read_backlog(session)
                self._database_up = True
            except Exception as exc:
                log.warning("could not read the backlog for /metrics: %r", exc)
                self._snapshot = None
                self._database_up = False
            if self._lag is not None:
                try:
                    async with asyncio.timeout(self._timeout):
                        self._lag_reading = await self._lag.read()
                except Exception as exc:
                    log.warning("could not read the consumer groups' lag for /metrics: %r", exc)
                    self._lag_reading = None
            self._read_at = time.monotonic()

    async def exposition(self) -> bytes:
        """This process's metrics followed by the backlog, in the Prometheus text format."""
        await self.refresh()
        # Its thousands of series (every counted one from 0 at start) take a few tens of ms to
        # write out: in a thread, so that requests are not held up meanwhile.
        own = await asyncio.to_thread(generate_latest, REGISTRY)
        return own + generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        if self._districts:
            # The city's, not the database's: there when the database is not. Requests with no
            # district are labelled `none` in every metric; that one is named here too, so a
            # join on it keeps their series.
            yield _gauge(
                "plaza_district_info",
                "1 for each district, naming it: join on `district` to show names, "
                "`* on (district) group_left (name) max by (district, name) (plaza_district_info)`",
                ["district", "name"],
                dict.fromkeys(
                    [*self._districts.items(), (NO_DISTRICT, no_district_name(self._language))], 1
                ),
            )
        if self._city:
            # The city-wide alert names the city it is about (Jun's said "Barcelona").
            yield _gauge(
                "plaza_city_info",
                "1, naming the city this Plaza serves",
                ["name"],
                {(self._city,): 1},
            )
        # The services' names in the city's language, for the legends as the districts' are.
        yield _gauge(
            "plaza_service_info",
            "1 for each service code, naming the service in the city's language: join on "
            "`service_code` to show names, `* on (service_code) group_left (name) "
            "max by (service_code, name) (plaza_service_info)`",
            ["service_code", "name"],
            {(code, service_name(code, self._language)): 1 for code in load_taxonomy()},
        )
        if self._database_up is not None:
            yield GaugeMetricFamily(
                "plaza_database_up",
                "1 when the gateway's last reading of the backlog from PostgreSQL succeeded, 0 "
                "when it failed (the backlog and outbox metrics are then left out)",
                value=int(self._database_up),
            )
        if self._snapshot is not None:
            yield from _families(self._snapshot)
        if self._lag_reading is not None:
            yield _gauge(
                "plaza_bus_group_lag_records",
                "Records a consumer group has not committed yet, by group, topic and partition, "
                "read from the broker by the gateway (end offset minus committed offset): there "
                "whether the group's members are up or not",
                ["group", "topic", "partition"],
                {(g, t, str(p)): records for (g, t, p), records in self._lag_reading.items()},
            )


def _gauge(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, float]
) -> GaugeMetricFamily:
    """A gauge family with one series per key of `counts` (a tuple of label values), in order."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family


def _families(snapshot: Snapshot) -> Iterator[Metric]:
    yield _gauge(
        "plaza_requests_open",
        "Open service requests (the backlog), by district, service, status, urgency and the queue "
        "that holds them (a district's, city-mobility, or city-hall once escalated)",
        ["district", "service_code", "status", "urgency", "queue"],
        snapshot.open,
    )
    yield _gauge(
        "plaza_requests_overdue",
        "Open service requests past a deadline, by district, service and deadline "
        "(acknowledge: not acknowledged past ack_due_at; resolve: past expected_datetime); a "
        "request past both counts under each, see plaza_requests_past_due",
        ["district", "service_code", "deadline"],
        snapshot.overdue,
    )
    yield _gauge(
        "plaza_requests_past_due",
        "Open service requests overdue, each once, as the manager API's `overdue`: not "
        "acknowledged past ack_due_at, or unresolved past expected_datetime",
        ["district", "service_code"],
        snapshot.past_due,
    )
    yield _gauge(
        "plaza_requests_escalated",
        "Open service requests in the city-hall queue (escalated when a deadline was missed), by "
        "district and service",
        ["district", "service_code"],
        snapshot.escalated,
    )
    ages = GaugeHistogramMetricFamily(
        "plaza_requests_open_age_seconds",
        "How long the open service requests have been waiting, by district",
        labels=["district"],
    )
    workers = GaugeMetricFamily(
        "plaza_workers_busy",
        "Workers with at least one open service request assigned, by district",
        labels=["district"],
    )
    for district, d in sorted(snapshot.districts.items()):
        buckets = [
            *((str(float(b)), c) for b, c in zip(AGE_BUCKETS, d.cumulative, strict=True)),
            ("+Inf", d.count),
        ]
        ages.add_metric([district], buckets, d.sum_seconds)
        workers.add_metric([district], d.busy_workers)
    yield ages
    yield workers
    yield GaugeMetricFamily(
        "plaza_outbox_oldest_pending_seconds",
        "Age of the oldest outbox event not yet published to the bus (0 when there is none)",
        value=snapshot.outbox_oldest_seconds,
    )
