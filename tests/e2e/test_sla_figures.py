"""City hall's figures agree, on real services: what Prometheus makes of the counters (through
a gateway restarted half-way, its counters back at 0) is what the monthly report reads from the
request rows, district by district. Without waiting for the scrape before the restart, both
acknowledgements were missing (compliance 0.667 where the database has 0.8).

Three requests in two districts, with acknowledgement deadlines of seconds: Gràcia's
streetlight and Ciutat Vella's acknowledged in time, then the gateway restarts, then both are
resolved in time; Gràcia's pavement request misses its acknowledgement (the SLA scanner
escalates it) and is acknowledged late afterwards, which counts no second breach.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime

import httpx
import pytest
from plaza.report import Month

from tests.e2e.test_prometheus import (  # the module's services, Kafka topics and Prometheus
    BARCELONA,
    Run,
    act,
    post,
    run,  # noqa: F401  (the fixture)
    values,
)
from tests.processes import wait_http

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def wait_for_targets(services: Run) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        targets = services.prometheus.targets()
        at_zero = values(services.prometheus, "count by (job) (plaza_sla_met_total == 0)", "job")
        if len(targets) == 6 and all(t["health"] == "up" for t in targets) and at_zero:
            return
        assert asyncio.get_running_loop().time() < deadline, targets
        await asyncio.sleep(0.5)


async def find_request(client: httpx.AsyncClient, services: Run, post_id: str) -> dict[str, object]:
    """The request a post opened, from Gràcia's or Ciutat Vella's queue."""
    for _ in range(300):
        for queue in ("06", "01"):
            response = await client.get(f"/api/v1/districts/{queue}/queue")
            assert response.status_code == 200, response.text
            for item in response.json()["items"]:
                if item["source_post_id"] == post_id:
                    return dict(item)
        await asyncio.sleep(0.1)
    raise AssertionError(f"post {post_id} opened no request\n{services.logs()}")


def report(services: Run) -> dict[str, dict[str, str]]:
    """This month's report from the gateway, each district's total line by its code."""
    month = Month.parse(
        datetime.now(UTC).astimezone(BARCELONA.council.zone).strftime("%Y-%m"),
        BARCELONA.council.zone,
    )
    got = httpx.get(
        f"{services.api}/api/v1/reports/monthly",
        params={"month": str(month)},
        headers=services.headers,
    )
    assert got.status_code == 200, got.text
    return {
        row["district_code"]: row
        for row in csv.DictReader(io.StringIO(got.text))
        if row["service_code"] == "all"
    }


def what_prometheus_shows(services: Run) -> dict[str, object]:
    p = services.prometheus
    return {
        "met": {
            f"{d} {deadline}": n
            for d in ("01", "06")
            for deadline in ("acknowledge", "resolve")
            for n in values(
                p,
                "round(sum(increase(plaza_sla_met_total"
                f'{{district="{d}",deadline="{deadline}"}}[10m])))',
                "",
            ).values()
        },
        "breaches": {
            d: n
            for d in ("01", "06")
            for n in values(
                p, f'round(sum(increase(plaza_sla_breaches_total{{district="{d}"}}[10m])))', ""
            ).values()
        },
        "open": {
            d: n
            for d, n in values(p, "district:plaza_requests_open:sum", "district").items()
            if d in ("01", "06")
        },
        # to the percent: increase() extrapolates to its window's ends, a little differently
        # for a series that restarted (0.803 for 4 of 5)
        "compliance": values(p, "round(city:plaza_sla_compliance:ratio1h, 0.01)", ""),
    }


def what_the_database_says(rows: dict[str, dict[str, str]]) -> dict[str, object]:
    """The same figures from the report's district totals."""
    met = {
        f"{d} {deadline}": float(rows[d][column])
        for d in ("01", "06")
        for deadline, column in (
            ("acknowledge", "acknowledged_in_time"),
            ("resolve", "resolved_in_time"),
        )
    }
    breaches = {
        d: float(rows[d]["acknowledge_missed"]) + float(rows[d]["resolve_missed"])
        for d in ("01", "06")
    }
    in_time = sum(met.values())
    return {
        "met": met,
        "breaches": breaches,
        "open": {d: float(rows[d]["still_open"]) for d in ("01", "06")},
        "compliance": {"": round(in_time / (in_time + sum(breaches.values())), 2)},
    }


async def test_the_dashboards_figures_are_the_databases_through_a_gateway_restart(
    run: Run,  # noqa: F811
) -> None:
    await wait_for_targets(run)
    async with httpx.AsyncClient(base_url=run.api, headers=run.headers, timeout=10) as client:
        posts = {
            "gracia-light": post(
                "sla-a", "El fanal del carrer de Verdi no funciona", 41.4036, 2.1566
            ),
            "gracia-pavement": post(
                "sla-b", "Hi ha un forat molt gran a la vorera de la plaça del Sol", 41.4009, 2.1577
            ),
            "ciutat-vella-light": post(
                "sla-c", "El fanal de la plaça Reial no funciona", 41.3800, 2.1753
            ),
        }
        for body in posts.values():
            accepted = await client.post("/api/v1/posts", json=body)
            assert accepted.status_code == 202, accepted.text
        found = {
            name: await find_request(client, run, str(body["post_id"]))
            for name, body in posts.items()
        }
        assert [found[n]["district_code"] for n in posts] == ["06", "06", "01"], found
        for name in ("gracia-light", "ciutat-vella-light"):
            await act(client, str(found[name]["service_request_id"]), "acknowledge")

    # Once Prometheus has scraped them (a count made in the last scrape interval before a
    # process stops never reaches Prometheus: the monthly report is the record), the gateway
    # restarts, and the deadlines it counted as met go back to 0 in its /metrics.
    scraped = 'sum(plaza_sla_met_total{deadline="acknowledge",job="plaza-api"})'
    deadline = asyncio.get_running_loop().time() + 30
    while values(run.prometheus, scraped, "").get("") != 2:
        assert asyncio.get_running_loop().time() < deadline, values(run.prometheus, scraped, "")
        await asyncio.sleep(0.5)
    api = run.services["api"]
    assert api.stop() == 0
    api.start()
    wait_http(f"{run.api}/healthz", proc=api)

    async with httpx.AsyncClient(base_url=run.api, headers=run.headers, timeout=10) as client:
        for name in ("gracia-light", "ciutat-vella-light"):
            await act(client, str(found[name]["service_request_id"]), "resolve", note="Fet")
        pavement = str(found["gracia-pavement"]["service_request_id"])
        for _ in range(300):  # until the scanner escalated it
            detail = (await client.get(f"/api/v1/requests/{pavement}")).json()
            if detail["escalated"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"request {pavement} was not escalated\n{run.logs()}")
        await act(client, pavement, "acknowledge")

    database = what_the_database_says(report(run))
    assert database == {
        "met": {"01 acknowledge": 1, "01 resolve": 1, "06 acknowledge": 1, "06 resolve": 1},
        "breaches": {"01": 0, "06": 1},
        "open": {"01": 0, "06": 1},
        "compliance": {"": 0.8},
    }
    deadline = asyncio.get_running_loop().time() + 45
    while (shown := what_prometheus_shows(run)) != database:
        assert asyncio.get_running_loop().time() < deadline, f"{shown} != {database}"
        await asyncio.sleep(1)
