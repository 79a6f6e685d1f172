"""Prometheus metrics that several Plaza processes share: bus, worker runtime, pipeline and requests.

Every process serves its own registry (a worker on PLAZA_METRICS_PORT, ingest and the gateway on
their HTTP port); Prometheus adds them up across processes. In `make run` all services share one
process and so one registry, which the gateway's /metrics serves.

Labels stay bounded: district, service_code, urgency, channel, platform, stage, deadline, group,
topic and partition; never a request, post, user or worker id.

Request metrics describe committed changes only: they are recorded by `on_commit`, when the
transaction that made the change commits, so a rolled-back or retried handler counts nothing.

A counter's labelled series is created at its first count, and Prometheus's increase() and
rate() cannot see that first count (a series that appears at 1 has increased by nothing): each
process calls `start_at_zero` at start, so that the series it will count are there at 0 before
anything happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from itertools import product
from typing import Final

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from plaza.contracts import EventType
from plaza.taxonomy import load_taxonomy

MESSAGES_CONSUMED = Counter(
    "plaza_bus_messages_consumed_total",
    "Records a worker finished with, by outcome (processed or dead_lettered)",
    ["group", "topic", "outcome"],
)
HANDLER_RETRIES = Counter(
    "plaza_bus_handler_retries_total",
    "Handler attempts that failed and were retried, by kind (transient or error)",
    ["group", "topic", "kind"],
)
HANDLER_DURATION = Histogram(
    "plaza_bus_handler_duration_seconds",
    "Time a handler took for one record, retries included",
    ["group", "topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES_PUBLISHED = Counter(
    "plaza_bus_messages_published_total",
    "Records published and acknowledged, by topic",
    ["topic"],
)
DEAD_LETTERS = Counter(
    "plaza_bus_dead_letters_total",
    "Records sent to a dead-letter topic, by source topic and reason class",
    ["group", "topic", "reason"],
)
CONSUMER_LAG = Gauge(
    "plaza_bus_consumer_lag_records",
    "Records on a partition that the group has not handled yet (end offset minus position), "
    "reported by the member that owns the partition",
    ["group", "topic", "partition"],
)

# The pipeline, post by post: received (ingest) → classified → routed → replied.
PIPELINE_STAGE_LATENCY = Histogram(
    "plaza_pipeline_stage_latency_seconds",
    "Time from the previous stage to the end of this one: received is from the post's creation "
    "on its platform to ingest; classified, routed and replied from the event the stage read",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

# Service requests (recorded on commit, see on_commit).
_REQUEST_LABELS: Final = ["district", "service_code", "urgency"]
# Minutes to weeks: an urgent traffic light is acknowledged in 15 minutes, graffiti in 10 days.
_LIFECYCLE_BUCKETS: Final = (
    60,
    300,
    900,
    1800,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    24 * 3600,
    2 * 86400,
    5 * 86400,
    10 * 86400,
    30 * 86400,
)
REQUESTS_CREATED = Counter(
    "plaza_requests_created_total",
    "Service requests opened, by district, service, urgency and the channel the post came by",
    [*_REQUEST_LABELS, "channel"],
)
REQUESTS_CLOSED = Counter(
    "plaza_requests_closed_total",
    "Service requests that left the open backlog, by the status they reached "
    "(resolved, duplicate or not_responsible)",
    [*_REQUEST_LABELS, "status"],
)
TIME_TO_ACKNOWLEDGE = Histogram(
    "plaza_request_time_to_acknowledge_seconds",
    "From the citizen's report to a manager acknowledging (or assigning) the request",
    _REQUEST_LABELS,
    buckets=_LIFECYCLE_BUCKETS,
)
TIME_TO_ASSIGN = Histogram(
    "plaza_request_time_to_assign_seconds",
    "From the citizen's report to the request's first assignment to a worker",
    _REQUEST_LABELS,
    buckets=_LIFECYCLE_BUCKETS,
)
TIME_TO_RESOLVE = Histogram(
    "plaza_request_time_to_resolve_seconds",
    "From the citizen's report to the request being resolved",
    _REQUEST_LABELS,
    buckets=_LIFECYCLE_BUCKETS,
)
SLA_MET = Counter(
    "plaza_sla_met_total",
    "Deadlines met: requests acknowledged or resolved in time, by deadline (acknowledge or resolve)",
    ["deadline", *_REQUEST_LABELS],
)
SLA_BREACHES = Counter(
    "plaza_sla_breaches_total",
    "Deadlines missed, by deadline (acknowledge or resolve): found by the SLA scanner, or "
    "by the action itself when it came late and before the scanner noticed",
    ["deadline", *_REQUEST_LABELS],
)
REQUEST_COUNTERS: Final = (REQUESTS_CREATED, REQUESTS_CLOSED, SLA_MET, SLA_BREACHES)

# The label values known at start (see start_at_zero).
URGENCIES: Final = ("normal", "urgent")
DEADLINES: Final = ("acknowledge", "resolve")
# How posts reach Plaza: ingest's webhook and Open311 posts, its connectors' streams, a replay.
# (A request split from another counts under its platform, at its first count.)
CHANNELS: Final = ("webhook", "open311", "stream", "replay")
CLOSED_AS: Final = ("resolved", "duplicate", "not_responsible")
DEAD_LETTER_REASONS: Final = ("contract", "rejected", "error")
RETRY_KINDS: Final = ("transient", "error")
OUTCOMES: Final = ("processed", "dead_lettered")
NO_DISTRICT: Final = "none"

_PENDING: Final = "plaza.metrics.pending"


def on_commit(session: AsyncSession | Session, record: Callable[[], None]) -> None:
    """Runs `record` once the session's transaction commits; never if it rolls back."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_PENDING, []).append(record)


@event.listens_for(Session, "after_commit")
def _record_committed(session: Session) -> None:
    for record in session.info.pop(_PENDING, ()):
        record()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def district_label(district_code: str | None) -> str:
    """The district label of a request: its code, or `none` when no district was found."""
    return district_code or NO_DISTRICT


def _request_series(counter: Counter, districts: Iterable[str]) -> Iterator[tuple[str, ...]]:
    """Every label combination of a request counter: district (or none), service code and
    urgency, with the counter's own label."""
    requests = list(product([*districts, NO_DISTRICT], load_taxonomy(), URGENCIES))
    if counter is REQUESTS_CREATED:
        yield from ((*labels, channel) for labels in requests for channel in CHANNELS)
    elif counter is REQUESTS_CLOSED:
        yield from ((*labels, status) for labels in requests for status in CLOSED_AS)
    elif counter is SLA_MET or counter is SLA_BREACHES:
        yield from ((deadline, *labels) for deadline in DEADLINES for labels in requests)
    else:
        raise ValueError(f"{counter} is not a request counter")


def start_at_zero(
    *,
    districts: Iterable[str] = (),
    counters: Iterable[Counter] = (),
    consumers: Mapping[str, Iterable[EventType]] | None = None,
) -> int:
    """Creates at 0 the series this process will count, so that Prometheus sees their first
    count: each request counter of `counters` for the city's `districts` (and requests with
    none), every service code and urgency; the worker runtime's counters for each consumer group
    of `consumers` and its topics. Returns how many series it created."""
    created = 0
    codes = list(districts)
    for counter in counters:
        for labels in _request_series(counter, codes):
            counter.labels(*labels)
            created += 1
    for group, topics in (consumers or {}).items():
        for topic in (t.topic for t in topics):
            series = [
                *(DEAD_LETTERS.labels(group, topic, reason) for reason in DEAD_LETTER_REASONS),
                *(HANDLER_RETRIES.labels(group, topic, kind) for kind in RETRY_KINDS),
                *(MESSAGES_CONSUMED.labels(group, topic, outcome) for outcome in OUTCOMES),
            ]
            created += len(series)
    return created


def seconds_between(start: datetime | None, end: datetime) -> float:
    """A duration for a histogram; a report dated in the future counts as instant."""
    return max(0.0, (end - start).total_seconds()) if start is not None else 0.0
