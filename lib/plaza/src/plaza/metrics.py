"""Prometheus metrics that several Plaza processes share: bus, worker runtime, pipeline and requests.

Every process serves its own registry (a worker on PLAZA_METRICS_PORT, ingest and the gateway on
their HTTP port); Prometheus adds them up across processes. In `make run` all services share one
process and so one registry, which the gateway's /metrics serves.

Labels stay bounded: district, service_code, urgency, channel, platform, stage, deadline, group,
topic and partition; never a request, post, user or worker id.

Request metrics describe committed changes only: they are recorded by `on_commit`, when the
transaction that made the change commits, so a rolled-back or retried handler counts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

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
    return district_code or "none"


def seconds_between(start: datetime | None, end: datetime) -> float:
    """A duration for a histogram; a report dated in the future counts as instant."""
    return max(0.0, (end - start).total_seconds()) if start is not None else 0.0
