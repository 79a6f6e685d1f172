"""City hall's view, checked on a real Prometheus: it scrapes the service processes of an
end-to-end run (each worker on its PLAZA_METRICS_PORT, ingest and the gateway on their HTTP
port) with deploy/prometheus's scrape jobs and rules; then every recording rule and every query
of every committed dashboard must return series carrying the labels its legend shows.

The run gives every panel something to show: two requests in one district, one acknowledged,
assigned and resolved in time, the other left to breach its (shortened) acknowledgement SLA; a
malformed post; Open311 reads; a poison record, a record the router fails on (retried, then
dead-lettered) and a reply the notifier rejects.

Each process shows Prometheus the series it counts at 0 from its start, so that increase() sees
every first count: the one breach, the two deadlines met, a single dead letter that fires
PlazaDeadLetters, the one request's time to acknowledge and resolve, the first posts each
stage handled. A panel must show what happened, not only series with the right labels: no
panel shows NaN, and the panels whose figures the run determines show those figures.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import cast

import httpx
import pytest
from plaza import metrics
from plaza.bus import OutRecord
from plaza.bus.kafka import KafkaBus
from plaza.city import City
from plaza.contracts import (
    TOPICS,
    Placement,
    Post,
    PostClassified,
    ReplyKind,
    ReplyRequested,
    envelope,
    timestamp,
)
from plaza.db import create_engine, session_factory
from plaza.taxonomy import load_taxonomy, service_name
from plaza_api.auth import Role, create_api_key
from plaza_notifier import metrics as notifier_metrics

from tests.conftest import TEMPLATE_DB, Postgres
from tests.infra import SHARED_DATA, KafkaBroker, free_port
from tests.processes import ServiceProcess, base_env, wait_http
from tests.prometheus import (
    PanelQuery,
    Prometheus,
    level_labels,
    panel_queries,
    recording_rules,
    scrape_config,
    start_prometheus,
)

ACK_HOURS = 0.002  # 7.2 s: long enough to acknowledge in time, short enough to breach in a test
# How the test stands in for Grafana's variables: windows that hold the whole run, so that a
# rate() times 600 is the run's count.
GRAFANA_VARIABLES = {"$__rate_interval": "10m", "$__range": "10m"}
RUN_SECONDS = 600
BARCELONA = City.barcelona(SHARED_DATA / "barcelona")


@dataclass
class Run:
    api: str
    headers: dict[str, str]
    bus: KafkaBus
    services: dict[str, ServiceProcess]
    prometheus: Prometheus
    metrics: dict[str, str]  # each process's /metrics
    metrics_token: str

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()[-1500:]}" for n, p in self.services.items())


def short_acknowledgement_sla(path: Path) -> Path:
    """Every service and urgency acknowledges within ACK_HOURS; resolution deadlines stay."""
    packaged = tomllib.loads(resources.files("plaza").joinpath("config/sla.toml").read_text())
    tables = ["default", "default.urgent"]
    for code in packaged.get("services", {}):
        tables += [f"services.{code}", f"services.{code}.urgent"]
    path.write_text("".join(f"[{t}]\nacknowledge_hours = {ACK_HOURS}\n\n" for t in tables))
    return path


async def staff_key(database_url: str) -> str:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_factory(engine).begin() as session:
            _, key = await create_api_key(session, name="prometheus-e2e", role=Role.ADMIN)
    finally:
        await engine.dispose()
    return key


@pytest.fixture(scope="module")
async def run(
    kafka: KafkaBroker, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    workdir = tmp_path_factory.mktemp("prometheus-run")
    database = f"prom_{uuid.uuid4().hex[:8]}"
    await postgres.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE_DB}"')
    namespace = f"prom{uuid.uuid4().hex[:8]}."
    token_file = workdir / "metrics_token"
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    bus = KafkaBus(kafka.bootstrap, namespace=namespace)
    await bus.start()
    await bus.create_topics(
        [t.topic for t in TOPICS.all()] + [t.dead_letter_topic for t in TOPICS.all()], 3
    )
    env = {
        **base_env(kafka.bootstrap, namespace, postgres.url(database)),
        "PLAZA_SLA_CONFIG": str(short_acknowledgement_sla(workdir / "sla.toml")),
        "PLAZA_SLA_SCAN_INTERVAL": "1",
        "PLAZA_JWT_SECRET": secrets.token_urlsafe(48),
        # every /metrics asks for it, as make up's do; Prometheus sends it from the file
        "PLAZA_METRICS_TOKEN_FILE": str(token_file),
    }
    ports = {name: free_port() for name in ("api", "ingest", "classifier", "router", "notifier")}
    ports["relay"] = free_port()
    services = {
        "ingest": ServiceProcess(
            "ingest", {**env, "PLAZA_INGEST_PORT": str(ports["ingest"])}, workdir
        ),
        **{
            name: ServiceProcess(name, {**env, "PLAZA_METRICS_PORT": str(ports[name])}, workdir)
            for name in ("classifier", "router", "notifier")
        },
        "relay": ServiceProcess(
            "relay",
            {**env, "PLAZA_METRICS_PORT": str(ports["relay"])},
            workdir,
            module="plaza_router.relay",
        ),
        "api": ServiceProcess(
            "api",
            {
                **env,
                "PLAZA_PORT": str(ports["api"]),
                "PLAZA_INGEST_URL": f"http://127.0.0.1:{ports['ingest']}",
            },
            workdir,
        ),
    }
    for proc in services.values():
        proc.start()
    prometheus = start_prometheus(
        scrape_config(
            {f"plaza-{name}": f"127.0.0.1:{port}" for name, port in ports.items()}, token_file
        ),
        workdir / "prometheus",
    )
    try:
        for name in ("api", "ingest"):
            wait_http(f"http://127.0.0.1:{ports[name]}/healthz", proc=services[name])
        for name in ("classifier", "router", "notifier", "relay"):
            wait_http(f"http://127.0.0.1:{ports[name]}/metrics", proc=services[name])
        headers = {"X-API-Key": await staff_key(postgres.url(database))}
        metrics_urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
        yield Run(
            f"http://127.0.0.1:{ports['api']}",
            headers,
            bus,
            services,
            prometheus,
            metrics_urls,
            token_file.read_text().strip(),
        )
        codes = {name: proc.stop() for name, proc in services.items()}
        assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}"
    finally:
        prometheus.stop()
        for proc in services.values():
            if proc.alive():
                proc.kill()
        await bus.close()


def post(post_id: str, text: str, lat: float, long: float) -> dict[str, object]:
    return {
        "platform": "mastodon",
        "post_id": post_id,
        "author_handle": "@vei@bcn.social",
        "text": text,
        "lat": lat,
        "long": long,
        "created_at": datetime.now(UTC).isoformat(),
    }


async def find_request(client: httpx.AsyncClient, run: Run, post_id: str) -> dict[str, object]:
    """The request a post opened, from the district queue it was routed to."""
    for _ in range(300):
        for queue in ("06", "triage", "city-mobility"):
            response = await client.get(f"/api/v1/districts/{queue}/queue")
            assert response.status_code == 200, response.text
            for item in response.json()["items"]:
                if item["source_post_id"] == post_id:
                    return dict(item)
        await asyncio.sleep(0.1)
    raise AssertionError(f"post {post_id} opened no request\n{run.logs()}")


async def act(client: httpx.AsyncClient, rid: str, action: str, **body: str) -> None:
    response = await client.post(
        f"/api/v1/requests/{rid}/actions/{action}", json={"actor": "manager-06", **body}
    )
    assert response.status_code == 200, response.text


async def publish_bad_records(bus: KafkaBus) -> None:
    """A record that is not an event, one the router cannot store (a service code too long for
    its column: retried, then dead-lettered) and a reply the notifier rejects (no reply_id)."""
    now = datetime.now(UTC)
    too_long = PostClassified(
        post=Post(
            platform="mastodon",
            post_id="too-long",
            author_handle="@vei@bcn.social",
            text="x",
            created_at=timestamp(now),
            channel="webhook",
        ),
        service_code="x" * 100,
        actionable=True,
        placement=Placement(district_code="06", confidence=1.0),
    )
    no_reply_id = ReplyRequested(
        service_request_id="1", kind=ReplyKind.REPLY_KIND_ACKNOWLEDGED, platform="mastodon"
    )
    events = [
        envelope(too_long, key="mastodon:too-long", event_id=str(uuid.uuid4()), correlation_id="t"),
        envelope(no_reply_id, key="1", event_id=str(uuid.uuid4()), correlation_id="t"),
    ]
    await bus.publish(
        [
            OutRecord(TOPICS.POST_RECEIVED.topic, "mastodon:poison", b"\x08\x96\x01garbage"),
            *(OutRecord(e.topic, e.key, e.encode()) for e in events),
        ]
    )


@dataclass(frozen=True)
class Truth:
    """What the run did, to compare the panels with."""

    district: str
    service_code: str  # of the request acknowledged, assigned and resolved in a few seconds


async def drive_the_city(run: Run) -> Truth:
    """What citizens, managers and developers do."""
    async with httpx.AsyncClient(base_url=run.api, headers=run.headers, timeout=10) as client:
        fixed = post("prom-a", "El fanal del carrer de Verdi no funciona", 41.4036, 2.1566)
        ignored = post(
            "prom-b", "Hi ha un forat molt gran a la vorera de la plaça del Sol", 41.4009, 2.1577
        )
        for body in (fixed, ignored):
            accepted = await client.post("/api/v1/posts", json=body)
            assert accepted.status_code == 202, accepted.text
        malformed = await client.post("/api/v1/posts", json={**fixed, "lat": 91})
        assert malformed.status_code == 422
        await publish_bad_records(run.bus)

        a = await find_request(client, run, "prom-a")
        b = await find_request(client, run, "prom-b")
        district = str(a["district_code"])
        assert district and b["district_code"] == district, (a, b)
        rid = str(a["service_request_id"])
        await act(client, rid, "acknowledge")
        await act(client, rid, "assign", worker="@brigada_enllumenat")
        await act(client, rid, "resolve", note="Fanal canviat")
        assert (await client.get("/open311/v2/requests.json")).status_code == 200
        assert (await client.get("/open311/v2/requests/999999.json")).status_code == 404
    return Truth(district, str(a["service_code"]))


def panel_expr(query: PanelQuery, district: str) -> str:
    """The query as Grafana sends it, for `district` and the test's windows."""
    expr = query.expr.replace("$district", district)
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"{query.dashboard} / {query.panel}: a variable is left in {expr}"
    return expr


def missing_series(prometheus: Prometheus, district: str) -> list[str]:
    """Every recording rule and panel query that returns no series, series without the labels
    it should carry, or NaN (0/0: a quantile or ratio of nothing, which Grafana shows as a
    blank or a legend without a value); empty when city hall's view is complete."""
    problems = []
    for record in recording_rules():
        wanted = level_labels(record)
        result = prometheus.query(record)
        if not result:
            problems.append(f"recording rule {record}: no series")
        for series in result:
            labels = set(series["metric"])  # type: ignore[arg-type]
            if not wanted <= labels:
                problems.append(f"recording rule {record}: {labels} lacks {wanted - labels}")
            if _is_nan(series):
                problems.append(f"recording rule {record}: NaN for {series['metric']}")
    for query in panel_queries():
        expr = panel_expr(query, district)
        result = prometheus.query(expr)  # Prometheus refuses a query that does not parse
        where = f"{query.dashboard} / {query.panel}: {expr}"
        # No social platform is configured in this run: ingest checks no X posts and runs no
        # connector, so those panels have no series to show (their queries still must parse).
        unconfigured = "plaza_x_compliance_" in query.expr or "plaza_connector_" in query.expr
        if not result and not unconfigured:
            problems.append(f"{where}: no series")
        for series in result:
            labels = set(series["metric"])  # type: ignore[arg-type]
            if not query.labels() <= labels:
                problems.append(f"{where}: {labels} lacks {query.labels() - labels}")
            if _is_nan(series):
                problems.append(f"{where}: NaN for {series['metric']}")
    return problems


def _is_nan(series: dict[str, object]) -> bool:
    _, value = cast(tuple[float, str], series["value"])
    return math.isnan(float(value))


def panel(prometheus: Prometheus, dashboard: str, title: str, truth: Truth) -> dict[str, float]:
    """What a panel shows, by its legend: one entry per series."""
    found = {}
    queries = [q for q in panel_queries() if (q.dashboard, q.panel) == (dashboard, title)]
    assert queries, f"no panel {title!r} in {dashboard!r}"
    for query in queries:
        for series in prometheus.query(panel_expr(query, truth.district)):
            labels = cast(dict[str, str], series["metric"])
            _, value = cast(tuple[float, str], series["value"])
            found[legend(query.legend, labels)] = float(value)
    return found


def legend(template: str, labels: dict[str, str]) -> str:
    """A legend format filled in as Grafana does."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def what_the_panels_show(prometheus: Prometheus, truth: Truth) -> dict[str, dict[str, float]]:
    """The panels whose figures the run determines. One request was acknowledged and resolved
    within 5 minutes of its report: its p90 is 270 s, its median 150 s (linear within the first
    bucket, 0 to 300 s). Two posts came through ingest's webhook and were classified and
    routed; each reply request the notifier handled was replied to. The other request is open
    in its district, and every other district shows 0 open, triage's too."""
    seconds = {
        name: {
            legend: round(value, 1) for legend, value in panel(prometheus, *where, truth).items()
        }
        for name, where in [
            (
                "slowest to acknowledge",
                ("City SLA overview", "Slowest services to acknowledge (p90)"),
            ),
            ("slowest to resolve", ("City SLA overview", "Slowest services to resolve (p90)")),
            ("district slowest to resolve", ("District", "Slowest services to resolve (p90)")),
            (
                "time to each step",
                ("District", "Time to acknowledge, assign and resolve (median, last hour)"),
            ),
        ]
    }
    throughput = panel(prometheus, "Pipeline health", "Throughput by stage", truth)
    open_by_district = panel(prometheus, "City SLA overview", "Open requests by district", truth)
    return {
        **seconds,
        "districts with open requests": {
            district: value for district, value in open_by_district.items() if value
        },
        "districts shown": {"": len(open_by_district)},
        "posts through each stage": {
            stage: round(per_second * RUN_SECONDS) for stage, per_second in throughput.items()
        },
    }


def expected_panels(prometheus: Prometheus, truth: Truth) -> dict[str, dict[str, float]]:
    replies = values(
        prometheus,
        'sum(plaza_bus_messages_consumed_total{group="plaza-notifier",outcome="processed"})',
        "",
    )
    service = service_name(truth.service_code, "ca")  # Barcelona's language, as legends are
    return {
        "slowest to acknowledge": {service: 270.0},
        "slowest to resolve": {service: 270.0},
        "district slowest to resolve": {service: 270.0},
        "time to each step": {"acknowledge": 150.0, "assign": 150.0, "resolve": 150.0},
        # the request left open, in its district; every other district at 0, and triage's
        "districts with open requests": {
            f"{truth.district} {BARCELONA.districts[truth.district].name}": 1.0
        },
        "districts shown": {"": len(BARCELONA.districts) + 1},
        "posts through each stage": {
            "received": 2,
            "classified": 2,
            "routed": 2,
            "replied": round(replies.get("", -1)),
        },
    }


def values(prometheus: Prometheus, expr: str, by: str) -> dict[str, float]:
    """The result of `expr`, by the value of its label `by`."""
    found = {}
    for series in prometheus.query(expr):
        labels = cast(dict[str, str], series["metric"])
        _, value = cast(tuple[float, str], series["value"])
        found[labels.get(by, "")] = float(value)
    return found


def series_at_zero(prometheus: Prometheus) -> dict[str, dict[str, float]]:
    """How many series of each counter each process shows at 0, before anything happened."""
    counters = [
        "plaza_sla_met_total",
        "plaza_sla_breaches_total",
        "plaza_requests_created_total",
        "plaza_requests_closed_total",
        "plaza_bus_dead_letters_total",
        "plaza_bus_handler_retries_total",
        "plaza_outbox_published_total",
        "plaza_replies_dead_lettered_total",
        "plaza_replies_failed_total",
    ]
    return {name: values(prometheus, f"count by (job) ({name} == 0)", "job") for name in counters}


def expected_at_zero() -> dict[str, dict[str, int]]:
    """What start_at_zero gives each process, in a city of Barcelona's districts."""
    requests = (
        (len(City.barcelona(SHARED_DATA / "barcelona").districts) + 1)
        * len(load_taxonomy())
        * len(metrics.URGENCIES)
    )
    deadlines = requests * len(metrics.DEADLINES)
    # Each process's consumer groups: the router's also applies withdrawn posts.
    groups = {"plaza-classifier": 1, "plaza-router": 2, "plaza-notifier": 1}
    return {
        "plaza_sla_met_total": {"plaza-api": deadlines},
        "plaza_sla_breaches_total": {"plaza-api": deadlines, "plaza-router": deadlines},
        "plaza_requests_created_total": {"plaza-router": requests * len(metrics.CHANNELS)},
        "plaza_requests_closed_total": {"plaza-api": requests * len(metrics.CLOSED_AS)},
        "plaza_bus_dead_letters_total": {
            job: n * len(metrics.DEAD_LETTER_REASONS) for job, n in groups.items()
        },
        "plaza_bus_handler_retries_total": {
            job: n * len(metrics.RETRY_KINDS) for job, n in groups.items()
        },
        "plaza_outbox_published_total": {"plaza-relay": len(TOPICS.all())},
        "plaza_replies_dead_lettered_total": {"plaza-notifier": len(notifier_metrics.PLATFORMS)},
        "plaza_replies_failed_total": {
            "plaza-notifier": len(notifier_metrics.PLATFORMS)
            * len(notifier_metrics.FAILURE_REASONS)
        },
    }


def what_prometheus_saw(prometheus: Prometheus, district: str) -> dict[str, object]:
    """The run's counts as the rules and panels read them (increase() of each counter), the
    alerts firing, and where the outbox's age and the database's state come from."""
    d = f'district="{district}"'
    return {
        "breaches": values(
            prometheus, f"sum by (deadline) (plaza_sla_breaches_total{{{d}}}) > 0", "deadline"
        ),
        "breaches seen": values(
            prometheus, f"round(sum(increase(plaza_sla_breaches_total{{{d}}}[10m])))", ""
        ),
        "met seen": values(
            prometheus,
            f"round(sum by (deadline) (increase(plaza_sla_met_total{{{d}}}[10m])))",
            "deadline",
        ),
        "compliance x3": values(
            prometheus, f"round(district:plaza_sla_compliance:ratio1h{{{d}}} * 3)", ""
        ),
        "dead letters alerted": {"plaza-classifier", "plaza-router"}
        & values(
            prometheus,
            'count by (group) (ALERTS{alertname="PlazaDeadLetters",alertstate="firing"})',
            "group",
        ).keys(),
        "outbox age from": values(
            prometheus, "count by (job) (plaza_outbox_oldest_pending_seconds)", "job"
        ),
        "database up": values(prometheus, "plaza_database_up", "job"),
        # Read from the broker by the gateway, for every group (there if their members stop).
        "groups' lag from": {
            job: set(values(prometheus, f'plaza_bus_group_lag_records{{job="{job}"}}', "group"))
            for job in values(prometheus, "count by (job) (plaza_bus_group_lag_records)", "job")
        },
    }


async def test_every_process_shows_its_metrics_to_the_token_only(run: Run) -> None:
    """PLAZA_METRICS_TOKEN set, each process's /metrics (the gateway's, ingest's, each
    worker's) answers a scrape without it, or with another token, 401 problem+json with a
    challenge; Prometheus reads them all with the token (the other test: every target up)."""
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in run.metrics.items():
            for authorization, error in [
                (None, ""),
                ("Bearer " + "x" * len(run.metrics_token), ', error="invalid_token"'),
                (f"Basic {run.metrics_token}", ', error="invalid_request"'),
            ]:
                headers = {"Authorization": authorization} if authorization else {}
                refused = await client.get(url, headers=headers)
                assert refused.status_code == 401, (name, authorization, refused.text)
                assert refused.headers["content-type"] == "application/problem+json", name
                assert refused.headers["www-authenticate"] == (
                    'Bearer realm="plaza-metrics"' + error
                ), name
                assert "PLAZA_METRICS_TOKEN" in refused.json()["detail"], name
                assert run.metrics_token not in refused.text, name
            read = await client.get(url, headers={"Authorization": f"Bearer {run.metrics_token}"})
            assert read.status_code == 200, (name, read.text)
            assert "plaza_bus_" in read.text or "plaza_http_" in read.text, name


async def test_every_rule_and_dashboard_panel_shows_the_run(run: Run) -> None:
    # Before anything happens, each process shows the series it will count, at 0.
    at_zero = expected_at_zero()
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        targets = run.prometheus.targets()
        seen = series_at_zero(run.prometheus)
        if len(targets) == 6 and all(t["health"] == "up" for t in targets) and seen == at_zero:
            break
        assert asyncio.get_running_loop().time() < deadline, (
            f"targets: {targets}\nseries at 0: {seen}\nexpected: {at_zero}"
        )
        await asyncio.sleep(0.5)

    truth = await drive_the_city(run)
    district = truth.district

    # The untouched request breaches its acknowledgement deadline a few seconds later.
    deadline = asyncio.get_running_loop().time() + 45
    problems: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        problems = missing_series(run.prometheus, district)
        if not problems:
            break
        await asyncio.sleep(1)
    assert problems == [], "\n".join(problems) + f"\n{run.logs()}"

    unhealthy = [r for r in run.prometheus.rules() if r.get("health") != "ok"]
    assert unhealthy == [], unhealthy

    # Each first count is an increase from 0: one breach, two deadlines met, a compliance of
    # 2/3, and a dead letter of the classifier and of the router each fire the alert.
    expected = {
        "breaches": {"acknowledge": 1.0},
        "breaches seen": {"": 1.0},
        "met seen": {"acknowledge": 1.0, "resolve": 1.0},
        "compliance x3": {"": 2.0},
        "dead letters alerted": {"plaza-classifier", "plaza-router"},
        "outbox age from": {"plaza-api": 1.0},  # the gateway's reading of the database only
        "database up": {"plaza-api": 1.0},
        "groups' lag from": {"plaza-api": {"plaza-classifier", "plaza-router", "plaza-notifier"}},
    }
    deadline = asyncio.get_running_loop().time() + 30
    while (saw := what_prometheus_saw(run.prometheus, district)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{saw} != {expected}"
        await asyncio.sleep(1)

    # The panels show the run's figures: each first observation of a histogram counts too.
    deadline = asyncio.get_running_loop().time() + 30
    while (shown := what_the_panels_show(run.prometheus, truth)) != (
        wanted := expected_panels(run.prometheus, truth)
    ):
        assert asyncio.get_running_loop().time() < deadline, f"{shown} != {wanted}"
        await asyncio.sleep(1)
