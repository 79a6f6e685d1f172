"""Prometheus metrics that several Plaza processes share: bus, worker runtime, pipeline and requests.

Every process serves its own registry (a worker on PLAZA_METRICS_PORT, ingest and the gateway on
their HTTP port); Prometheus adds them up across processes. In `make run` all services share one
process and so one registry, which the gateway's /metrics serves.

Labels stay bounded: district, service_code, urgency, channel, platform, stage, deadline, group,
topic and partition; never a request, post, user or worker id.

Request metrics describe committed changes only: they are recorded by `on_commit`, when the
transaction that made the change commits, so a rolled-back or retried handler counts nothing.

A labelled series (a counter's, or a histogram's _count and _bucket) is created at its first
count, and Prometheus's increase() and rate() cannot see that first count (a series that appears
at 1 has increased by nothing): each process calls `start_at_zero` at start, so that the series
it will count or observe are there at 0 before anything happens.
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

from plaza.contracts import TOPICS, EventType
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
RECEIVED: Final = "received"
# The pipeline stage a record of each topic completes once its handler is done with it.
STAGES: Final[Mapping[str, str]] = {
    TOPICS.POST_RECEIVED.topic: "classified",
    TOPICS.POST_CLASSIFIED.topic: "routed",
    TOPICS.REPLY_REQUESTED.topic: "replied",
}
PIPELINE_STAGE_LATENCY = Histogram(
    "plaza_pipeline_stage_latency_seconds",
    "Time from the previous stage to the end of this one: received is from the post's creation "
    "on its platform to ingest; classified, routed and replied from the event the stage read",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

# Service requests (recorded on commit, see on_commit).
_REQUEST_LABELS: Final = ["district", "service_code", "urgency"]
# Minutes to weeks, with an edge at every SLA window of config/sla.toml (an urgent traffic light
# is acknowledged in 15 minutes, graffiti resolved in 10 days; 4, 6, 8 and 12 hours, 1, 2, 3, 5
# and 7 days in between), so that the share of requests inside a window is read, not
# interpolated between edges on either side of it. Each edge is a series per district, service
# and urgency: no more than the windows need.
LIFECYCLE_BUCKETS: Final = (
    300,
    900,
    1800,
    3600,
    2 * 3600,
    4 * 3600,
    6 * 3600,
    8 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    3 * 86400,
    5 * 86400,
    7 * 86400,
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
POSTS_WITHDRAWN = Counter(
    "plaza_posts_withdrawn_total",
    "Posts their authors deleted, taken out of Plaza's records (reports, requests, replies), "
    "by platform",
    ["platform"],
)
POST_LOCATIONS_WITHDRAWN = Counter(
    "plaza_post_locations_withdrawn_total",
    "Posts whose authors took their location off them (X's scrub_geo): their point taken out "
    "of Plaza's records, what they said kept; by platform",
    ["platform"],
)
# The platforms whose deletions Plaza sees (a bridge's platform is counted once it has one).
WITHDRAWING_PLATFORMS = ("bluesky", "mastodon", "x")
_WITHDRAWN_TOPIC = "plaza.post-withdrawn.v1"
TIME_TO_ACKNOWLEDGE = Histogram(
    "plaza_request_time_to_acknowledge_seconds",
    "From the citizen's report to a manager acknowledging (or assigning) the request",
    _REQUEST_LABELS,
    buckets=LIFECYCLE_BUCKETS,
)
TIME_TO_ASSIGN = Histogram(
    "plaza_request_time_to_assign_seconds",
    "From the citizen's report to the request's first assignment to a worker",
    _REQUEST_LABELS,
    buckets=LIFECYCLE_BUCKETS,
)
TIME_TO_RESOLVE = Histogram(
    "plaza_request_time_to_resolve_seconds",
    "From the citizen's report to the request being resolved",
    _REQUEST_LABELS,
    buckets=LIFECYCLE_BUCKETS,
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
REQUEST_HISTOGRAMS: Final = (TIME_TO_ACKNOWLEDGE, TIME_TO_ASSIGN, TIME_TO_RESOLVE)
# A manager's action times the step it took with the deadline it met (plaza.lifecycle): the
# process that counts deadlines met observes these histograms too, and starts them with it.
_OBSERVED_WITH: Final[Mapping[Counter | Histogram, tuple[Histogram, ...]]] = {
    SLA_MET: REQUEST_HISTOGRAMS
}

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
# What `none` is called where a district's name goes (the dashboards' legends, city hall's
# report), in the city's language.
_NO_DISTRICT_NAMES: Final = {
    "ca": "sense districte (triatge)",
    "es": "sin distrito (triaje)",
    "en": "no district (triage)",
}

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


def no_district_name(language: str) -> str:
    """The name of the `none` district in `language` ("ca", "es-ES", ...), English otherwise."""
    return _NO_DISTRICT_NAMES.get(language.lower()[:2], _NO_DISTRICT_NAMES["en"])


def district_label(district_code: str | None) -> str:
    """The district label of a request: its code, or `none` when no district was found."""
    return district_code or NO_DISTRICT


def _request_series(
    metric: Counter | Histogram, districts: Iterable[str]
) -> Iterator[tuple[str, ...]]:
    """Every label combination of a request counter or histogram: district (or none), service
    code and urgency, with the counter's own label."""
    requests = list(product([*districts, NO_DISTRICT], load_taxonomy(), URGENCIES))
    if metric is REQUESTS_CREATED:
        yield from ((*labels, channel) for labels in requests for channel in CHANNELS)
    elif metric is REQUESTS_CLOSED:
        yield from ((*labels, status) for labels in requests for status in CLOSED_AS)
    elif metric is SLA_MET or metric is SLA_BREACHES:
        yield from ((deadline, *labels) for deadline in DEADLINES for labels in requests)
    elif metric in REQUEST_HISTOGRAMS:
        yield from requests
    else:
        raise ValueError(f"{metric} is not a request counter")


def start_at_zero(
    *,
    districts: Iterable[str] = (),
    counters: Iterable[Counter | Histogram] = (),
    consumers: Mapping[str, Iterable[EventType]] | None = None,
    stages: Iterable[str] = (),
) -> int:
    """Creates at 0 the series this process will count, so that Prometheus sees their first
    count: each request counter or histogram of `counters` for the city's `districts` (and
    requests with none), every service code and urgency, with the time-to-step histograms when
    it counts deadlines met (_OBSERVED_WITH); the worker runtime's counters and handler time for
    each consumer group of `consumers` and its topics, and the pipeline stage each topic
    completes; the other pipeline `stages` this process times (ingest's received). Returns how
    many labelled series (a histogram's counting as one) it created."""
    created = 0
    codes = list(districts)
    metrics = list(counters)
    metrics += [h for c in metrics for h in _OBSERVED_WITH.get(c, ()) if h not in metrics]
    for metric in metrics:
        for labels in _request_series(metric, codes):
            metric.labels(*labels)
            created += 1
    timed = set(stages)
    for group, topics in (consumers or {}).items():
        for topic in (t.topic for t in topics):
            series = [
                *(DEAD_LETTERS.labels(group, topic, reason) for reason in DEAD_LETTER_REASONS),
                *(HANDLER_RETRIES.labels(group, topic, kind) for kind in RETRY_KINDS),
                *(MESSAGES_CONSUMED.labels(group, topic, outcome) for outcome in OUTCOMES),
                HANDLER_DURATION.labels(group, topic),
            ]
            created += len(series)
            if topic == _WITHDRAWN_TOPIC:  # whoever applies withdrawals counts them
                for withdrawn in (POSTS_WITHDRAWN, POST_LOCATIONS_WITHDRAWN):
                    created += len([withdrawn.labels(p) for p in WITHDRAWING_PLATFORMS])
            if topic in STAGES:
                timed.add(STAGES[topic])
    for stage in sorted(timed):
        PIPELINE_STAGE_LATENCY.labels(stage)
        created += 1
    return created


def seconds_between(start: datetime | None, end: datetime) -> float:
    """A duration for a histogram; a report dated in the future counts as instant."""
    return max(0.0, (end - start).total_seconds()) if start is not None else 0.0
