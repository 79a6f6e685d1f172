"""Jun from its example city file (deploy/cities/jun.toml), on real PostgreSQL: its requests are
routed and published in its own council's names, never Barcelona's or in Catalan, and Open311
serves it as jurisdiction `jun`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from plaza.city import City
from plaza.contracts import LocationSource, Placement
from plaza.policy import RoutingTable, SlaPolicy
from plaza_api.app import create_app
from plaza_api.settings import AccessSettings
from plaza_router.dedupe import DuplicatePolicy
from plaza_router.handler import RoutePost
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import ROOT
from tests.integration.api_helpers import client
from tests.integration.lifecycle_helpers import as_event, classified

pytestmark = [pytest.mark.postgres]

JUN_FILE = ROOT / "deploy" / "cities" / "jun.toml"
CALLE_REAL = (37.2206, -3.5950)  # in Casco Urbano


@pytest.fixture(scope="module")
def jun() -> City:
    return City.from_config(JUN_FILE)


@pytest.fixture
async def api(
    sessions: async_sessionmaker[AsyncSession], jun: City, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as `make run` builds it for Jun: its settings read PLAZA_CITY_CONFIG."""
    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(JUN_FILE))
    monkeypatch.delenv("PLAZA_JURISDICTION_ID", raising=False)
    access = AccessSettings().access("j" * 40)
    ingest = httpx.AsyncClient(base_url="http://ingest.invalid")
    app = create_app(sessions, ingest, jun, routing=RoutingTable.load(city=jun), access=access)
    async with client(app) as c:
        yield c


async def test_jun_s_requests_are_published_in_its_council_s_names(
    sessions: async_sessionmaker[AsyncSession], jun: City, api: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)  # Open311 lists the last 90 days
    route = RoutePost(
        sessions,
        jun,
        sla=SlaPolicy.load(),
        routing=RoutingTable.load(city=jun),
        duplicates=DuplicatePolicy(radius_m=60, window=timedelta(hours=72)),
    )
    for post_id, service, text in (
        ("j1", "parks_trees", "Árbol caído en el parque de la calle Real"),
        ("j2", "water_sewer", "Fuga de agua en la calle Real"),
    ):
        post = classified(
            post_id,
            service_code=service,
            text=text,
            language="es",
            latlon=CALLE_REAL,
            barri="",
            at=now,
        )
        post.placement.CopyFrom(
            Placement(
                district_code="01",
                district_name="Casco Urbano",
                source=LocationSource.LOCATION_SOURCE_GEO,
                confidence=1.0,
            )
        )
        await route(as_event(post))
    await route(
        as_event(
            classified(
                "j3",
                district="",
                service_code="animals",
                text="Perros sueltos",
                latlon=None,
                at=now,
            )
        )
    )

    published = (await api.get("/open311/v2/requests.json")).json()
    agencies = {r["service_code"]: r["agency_responsible"] for r in published}
    assert agencies == {
        "parks_trees": "Distrito de Casco Urbano",  # not Parcs i Jardins de Barcelona
        "water_sewer": "Distrito de Casco Urbano",  # not Aigües de Barcelona
        "animals": "Ayuntamiento de Jun",  # triage: not the Ajuntament de Barcelona
    }


async def test_open311_serves_jun_as_its_jurisdiction_and_names_its_council(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.get("/open311/v2/requests.json?jurisdiction_id=jun")).status_code == 200
    other = await api.get("/open311/v2/requests.json?jurisdiction_id=barcelona")
    assert other.status_code == 404
    assert other.json()[0]["description"] == "unknown jurisdiction_id 'barcelona'; this is 'jun'"
    discovery = (await api.get("/open311/v2/discovery.json")).json()
    assert discovery["contact"] == "The Plaza administrators of Ayuntamiento de Jun"
    assert discovery["key_service"].startswith(
        "Ask the Plaza administrators of Ayuntamiento de Jun"
    )


def test_the_jurisdiction_is_the_city_s_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAZA_JURISDICTION_ID", raising=False)
    monkeypatch.delenv("PLAZA_CITY_CONFIG", raising=False)
    assert AccessSettings().access("j" * 40).jurisdiction_id == "barcelona"
    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(ROOT / "deploy" / "cities" / "madrid.toml"))
    assert AccessSettings().access("j" * 40).jurisdiction_id == "madrid"
    monkeypatch.setenv("PLAZA_JURISDICTION_ID", "madrid.es")
    assert AccessSettings().access("j" * 40).jurisdiction_id == "madrid.es"


async def test_jun_s_metrics_name_jun_and_its_services_in_spanish(api: httpx.AsyncClient) -> None:
    """The city-wide compliance alert said "Barcelona met 62%" to Jun's duty officer, and its
    dashboards named services in Plaza's English codes."""
    families = {
        f.name: [s.labels for s in f.samples]
        for f in text_string_to_metric_families((await api.get("/metrics")).text)
    }
    assert families["plaza_city_info"] == [{"name": "Jun"}]
    services = {s["service_code"]: s["name"] for s in families["plaza_service_info"]}
    assert services["streetlight"] == "Alumbrado público"
    districts = {s["district"]: s["name"] for s in families["plaza_district_info"]}
    assert districts["none"] == "sin distrito (triaje)"
