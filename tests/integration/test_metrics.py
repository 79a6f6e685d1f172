"""Metrics on real adapters: consumer lag on both buses, request metrics recorded on commit only,
the backlog read from PostgreSQL, and, in embedded mode, every service's metrics on the
gateway's /metrics (one process, one registry)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import httpx
from plaza.bus.memory import MemoryBus
from plaza.city import City
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.db.models import OutboxRecord, ServiceRequest
from plaza.db.rows import add_row
from plaza.lifecycle import Command, act
from plaza.outbox import Relay
from plaza.policy import RoutingTable, SlaPolicy
from plaza.requests import Action
from plaza.scrape import MetricsAccess
from plaza.taxonomy import load_taxonomy
from plaza.worker import Worker
from plaza_api.access import AccessConfig
from plaza_api.app import create_app
from plaza_api.backlog import BacklogCollector
from plaza_cli.embedded import EmbeddedSettings, build_workers
from plaza_ingest.app import create_app as create_ingest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.conftest import BusFactory
from tests.integration.lifecycle_helpers import as_event, classified, router
from tests.integration.test_worker_runtime import Recorder, post_event, publish


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def shown(exposition: str, name: str, **labels: str) -> list[float]:
    """The values of the samples called `name` whose labels include `labels`."""
    return [
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]


async def test_consumer_lag_is_what_the_member_has_not_read(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    await bus.start()
    await publish(bus, [post_event(n) for n in range(5)])
    consumer = await bus.subscribe("lag-reader", [TOPICS.POST_RECEIVED.topic])
    read: list[object] = []
    for _ in range(100):
        read += await consumer.fetch(2 - len(read), 0.2)
        if len(read) == 2:
            break
    assert len(read) == 2
    lag = await consumer.lag()
    assert sum(lag.values()) == 3
    assert {topic for topic, _ in lag} == {TOPICS.POST_RECEIVED.topic}
    await consumer.close()
    await bus.close()


async def test_a_worker_reports_its_lag_and_stage_latency_and_forgets_the_lag_when_it_stops() -> (
    None
):
    bus = MemoryBus(default_partitions=3)
    await publish(bus, [post_event(n) for n in range(4)])
    handled_before = sample("plaza_pipeline_stage_latency_seconds_count", stage="classified")
    handler = Recorder()
    worker = Worker(
        bus, group="lag-worker", topics=[TOPICS.POST_RECEIVED], handler=handler, lag_interval=0
    )
    task = asyncio.create_task(worker.run())
    for _ in range(100):
        lags = [
            REGISTRY.get_sample_value(
                "plaza_bus_consumer_lag_records",
                {"group": "lag-worker", "topic": TOPICS.POST_RECEIVED.topic, "partition": str(p)},
            )
            for p in range(3)
        ]
        if len(handler.seen) == 4 and lags == [0.0, 0.0, 0.0]:
            break
        await asyncio.sleep(0.05)
    assert lags == [0.0, 0.0, 0.0]
    after = sample("plaza_pipeline_stage_latency_seconds_count", stage="classified")
    assert after - handled_before == 4
    worker.stop()
    await task
    collected = [s for m in REGISTRY.collect() for s in m.samples if s.labels.get("group")]
    assert not [s for s in collected if s.labels["group"] == "lag-worker" and "lag" in s.name]


async def _open(
    sessions: async_sessionmaker[AsyncSession], post_id: str, service_code: str = "streetlight"
) -> int:
    post = classified(post_id, at=datetime.now(UTC), service_code=service_code)
    await router(sessions)(as_event(post))
    async with sessions() as session:
        return (
            await session.execute(
                select(ServiceRequest.id).where(ServiceRequest.source_post_id == post_id)
            )
        ).scalar_one()


async def test_request_metrics_count_committed_changes_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    labels = {"district": "06", "service_code": "streetlight", "urgency": "normal"}
    created = sample("plaza_requests_created_total", **labels, channel="webhook")
    rid = await _open(sessions, "metrics-1")
    assert sample("plaza_requests_created_total", **labels, channel="webhook") == created + 1

    policies = {"sla": SlaPolicy.load(), "routing": RoutingTable.load(), "city": City.barcelona()}
    acked = sample("plaza_request_time_to_acknowledge_seconds_count", **labels)
    met = sample("plaza_sla_met_total", deadline="acknowledge", **labels)
    async with sessions() as session:  # acknowledged, then rolled back: nothing happened
        await act(
            session, rid, Command(Action.ACKNOWLEDGE, actor="m"), now=datetime.now(UTC), **policies
        )  # type: ignore[arg-type]
        await session.rollback()
    assert sample("plaza_request_time_to_acknowledge_seconds_count", **labels) == acked
    async with sessions.begin() as session:
        await act(
            session, rid, Command(Action.ACKNOWLEDGE, actor="m"), now=datetime.now(UTC), **policies
        )  # type: ignore[arg-type]
    assert sample("plaza_request_time_to_acknowledge_seconds_count", **labels) == acked + 1
    assert sample("plaza_sla_met_total", deadline="acknowledge", **labels) == met + 1

    late = datetime.now(UTC) + timedelta(days=30)  # past the resolution deadline, unnoticed
    breached = sample("plaza_sla_breaches_total", deadline="resolve", **labels)
    closed = sample("plaza_requests_closed_total", **labels, status="resolved")
    async with sessions.begin() as session:
        await act(
            session, rid, Command(Action.RESOLVE, actor="m", note="fet"), now=late, **policies
        )  # type: ignore[arg-type]
    assert sample("plaza_sla_breaches_total", deadline="resolve", **labels) == breached + 1
    assert sample("plaza_requests_closed_total", **labels, status="resolved") == closed + 1


async def test_the_backlog_is_read_from_the_database_at_most_once_per_max_age(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _open(sessions, "backlog-1")
    backlog = BacklogCollector(sessions, max_age=3600)
    text = (await backlog.exposition()).decode()
    open_06 = {"district": "06", "service_code": "streetlight", "status": "new"}
    assert shown(text, "plaza_requests_open", **open_06, urgency="normal") == [1.0]
    assert shown(text, "plaza_requests_open_age_seconds_bucket", district="06", le="+Inf") == [1.0]
    assert shown(text, "plaza_requests_open_age_seconds_bucket", district="06", le="3600.0") == [
        1.0
    ]
    assert shown(text, "plaza_workers_busy", district="06") == [0.0]
    assert shown(text, "python_info")  # the process's own metrics come first
    await router(sessions)(
        as_event(
            classified(
                "backlog-3",
                at=datetime.now(UTC),
                district="10",
                latlon=None,
                barri="68",
                service_code="noise",
                text="Soroll de la discoteca cada nit",
            )
        )
    )
    cached = (await backlog.exposition()).decode()
    assert shown(cached, "plaza_requests_open", district="10") == []  # the earlier reading
    fresh = (await BacklogCollector(sessions, max_age=0).exposition()).decode()
    assert shown(fresh, "plaza_requests_open", district="10", service_code="noise") == [1.0]


async def test_in_embedded_mode_the_gateway_shows_every_service_s_metrics(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bus = MemoryBus()
    city = City.barcelona()
    workers = build_workers(bus, EmbeddedSettings(demo=False), city, sessions)
    loops: list[Worker | Relay] = [*workers, Relay(bus, engine)]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    await asyncio.gather(*(w.ready.wait() for w in workers))
    ingest = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_ingest(bus)), base_url="http://ingest"
    )
    gateway = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(sessions, ingest, city)),
        base_url="http://plaza",
    )
    try:
        accepted = await ingest.post(
            "/api/v1/posts",
            json={
                "platform": "embedded",
                "post_id": "m-1",
                "author_handle": "@vei",
                "text": "El fanal del carrer de Verdi no funciona",
                "lat": 41.4036,
                "long": 2.1566,
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        assert accepted.status_code == 202, accepted.text
        for _ in range(200):
            if sample("plaza_replies_posted_total", platform="embedded", kind="acknowledged"):
                break
            await asyncio.sleep(0.05)
        response = await gateway.get("/metrics")
        assert response.status_code == 200
        text = response.text
        for name, labels in [
            ("plaza_http_requests_total", {"app": "ingest"}),  # ingest
            ("plaza_pipeline_stage_latency_seconds_count", {"stage": "received"}),  # ingest
            ("plaza_pipeline_stage_latency_seconds_count", {"stage": "classified"}),  # classifier
            ("plaza_requests_created_total", {"district": "06", "channel": "webhook"}),  # router
            ("plaza_outbox_published_total", {"topic": TOPICS.REPLY_REQUESTED.topic}),  # relay
            ("plaza_replies_posted_total", {"platform": "embedded"}),  # notifier
            ("plaza_bus_consumer_lag_records", {"group": "plaza-notifier"}),  # every worker
            ("plaza_requests_open", {"district": "06"}),  # the gateway's backlog
        ]:
            assert shown(text, name, **labels), (name, labels)
    finally:
        for loop in loops:
            loop.stop()
        await asyncio.gather(*tasks)
        await gateway.aclose()
        await ingest.aclose()
        await bus.close()


async def test_with_a_metrics_token_the_gateway_shows_its_metrics_and_backlog_to_it_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """PLAZA_METRICS_TOKEN set (in the AccessConfig the gateway and `make run` build from it):
    no token, or a staff key in its place, is a 401 problem+json; the token reads the metrics
    and the backlog read from the database."""
    token = "gateway-metrics-token-0123456789"
    access = AccessConfig(metrics=MetricsAccess(SecretStr(token)))
    async with (
        httpx.AsyncClient(base_url="http://ingest.invalid") as ingest,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=create_app(sessions, ingest, City.barcelona(), access=access)
            ),
            base_url="http://plaza",
        ) as gateway,
    ):
        for headers in ({}, {"Authorization": "Bearer plz_not-the-metrics-token-at-all"}):
            refused = await gateway.get("/metrics", headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["www-authenticate"].startswith('Bearer realm="plaza-metrics"')
            assert "PLAZA_METRICS_TOKEN" in refused.json()["detail"]
        read = await gateway.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert read.status_code == 200
        assert shown(read.text, "plaza_database_up") == [1.0]  # the backlog's reading
        assert shown(read.text, "plaza_http_requests_total", app="api", status="401")


async def test_the_gateway_reads_the_outbox_s_oldest_event_whether_a_relay_runs_or_not(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:  # written ten minutes ago; no relay publishes it
        add_row(
            session,
            OutboxRecord,
            {
                "topic": TOPICS.REPLY_REQUESTED.topic,
                "key": "1",
                "payload": b"",
                "created_at": datetime.now(UTC) - timedelta(minutes=10),
            },
        )
    text = (await BacklogCollector(sessions, max_age=0).exposition()).decode()
    [age] = shown(text, "plaza_outbox_oldest_pending_seconds")  # the gateway's, and no other
    assert 600 <= age < 660
    assert shown(text, "plaza_database_up") == [1.0]

    async with sessions.begin() as session:
        await session.execute(delete(OutboxRecord))
    emptied = (await BacklogCollector(sessions, max_age=0).exposition()).decode()
    assert shown(emptied, "plaza_outbox_oldest_pending_seconds") == [0.0]


async def test_the_gateway_says_when_it_cannot_read_the_database_and_still_answers() -> None:
    # A PostgreSQL that accepts connections and never answers: a hung server, or a network that
    # drops the packets (asyncpg would wait a minute, longer than Prometheus waits for a scrape).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()
        engine = create_engine(f"postgresql+asyncpg://plaza:plaza@{host}:{port}/plaza")
        try:
            districts = {"01": "Ciutat Vella", "06": "Gràcia"}
            backlog = BacklogCollector(
                session_factory(engine), max_age=0, timeout=0.5, districts=districts, language="ca"
            )
            text = (await asyncio.wait_for(backlog.exposition(), 5)).decode()
        finally:
            await engine.dispose()
    assert shown(text, "plaza_database_up") == [0.0]
    assert shown(text, "plaza_requests_open") == []  # left out, not shown stale
    assert shown(text, "plaza_outbox_oldest_pending_seconds") == []
    # the districts' and services' names are the city's, in its language: a dashboard's
    # legends keep them meanwhile
    names = [
        (s.labels["district"], s.labels["name"], s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "plaza_district_info"
    ]
    assert names == [
        ("01", "Ciutat Vella", 1.0),
        ("06", "Gràcia", 1.0),
        ("none", "sense districte (triatge)", 1.0),
    ]
    services = {
        s.labels["service_code"]: s.labels["name"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "plaza_service_info"
    }
    assert len(services) == len(load_taxonomy())
    assert services["streetlight"] == "Enllumenat públic"
    assert services["cleaning"] == "Neteja i residus"


async def _set(
    sessions: async_sessionmaker[AsyncSession], rid: int, **values: datetime | None
) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(ServiceRequest).where(ServiceRequest.id == rid).values(**values)
        )


async def test_the_backlog_counts_an_overdue_request_once_as_the_manager_api_does(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """District 09's Overdue stat added the acknowledge and resolve counts: 22 where 19 were
    overdue. A request past both deadlines is overdue once; one acknowledged late but not yet
    due to be resolved is not overdue at all (the manager API's `overdue`)."""
    now = datetime.now(UTC)
    ago, ahead = now - timedelta(hours=1), now + timedelta(hours=1)
    both = await _open(sessions, "overdue-both", "streetlight")
    await _set(sessions, both, ack_due_at=ago, expected_datetime=ago)
    ack_only = await _open(sessions, "overdue-ack", "pavement")
    await _set(sessions, ack_only, ack_due_at=ago, expected_datetime=ahead)
    acknowledged = await _open(sessions, "overdue-acknowledged", "cleaning")
    await _set(sessions, acknowledged, ack_due_at=ago, acknowledged_at=now, expected_datetime=ahead)
    in_time = await _open(sessions, "overdue-none", "graffiti")
    await _set(sessions, in_time, ack_due_at=ahead, expected_datetime=ahead)

    text = (await BacklogCollector(sessions, max_age=0).exposition()).decode()

    assert sum(shown(text, "plaza_requests_past_due", district="06")) == 2
    by_deadline = {
        deadline: sum(shown(text, "plaza_requests_overdue", district="06", deadline=deadline))
        for deadline in ("acknowledge", "resolve")
    }
    assert by_deadline == {"acknowledge": 2, "resolve": 1}
    assert sum(shown(text, "plaza_requests_open", district="06", queue="06")) == 4


async def test_the_age_of_open_requests_is_read_at_the_sla_windows(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A request 5 hours old lies between the 4 h and 6 h edges (it lay between 4 h and a day,
    which put a district's p90 at 25 h where it was 6 h)."""
    rid = await _open(sessions, "age-5h")
    await _set(sessions, rid, requested_datetime=datetime.now(UTC) - timedelta(hours=5))

    text = (await BacklogCollector(sessions, max_age=0).exposition()).decode()

    def older(le: str) -> float:
        return sum(shown(text, "plaza_requests_open_age_seconds_bucket", district="06", le=le))

    everything = older("+Inf")
    assert everything - older("14400.0") >= 1  # older than 4 h
    assert everything - older("21600.0") == 0  # none older than 6 h
