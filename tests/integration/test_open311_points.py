"""Where a request is, as the public sees it: Open311 publishes a geotagged request's point on a
grid of PLAZA_PUBLIC_POINT_PRECISION_M (50 m by default), the same on every read, and its
radius filter decides on that point, so the citizen's exact position cannot be read nor
narrowed down; staff still see it exact. On real PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import httpx
import pytest
from plaza_api.access import AccessConfig
from plaza_api.auth import Role
from plaza_api.privacy import PUBLIC_POINT_PRECISION_M, PublicGrid
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import client, gateway, new_key
from tests.integration.lifecycle_helpers import as_event, classified, router

# Where two citizens' phones stood, to the metre a phone tells: carrer de Verdi and, 2 km
# south-west, the Eixample (neither a cell's centre).
AT_VERDI = (41.403612, 2.156734)
IN_EIXAMPLE = (41.387013, 2.164911)
ADDRESS = "Carrer de Verdi 12"


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The distance between two (lat, long) points, as the filter measures it."""
    scale = math.cos(math.radians(a[0]))
    return math.hypot(a[0] - b[0], (a[1] - b[1]) * scale) * 111_195.0


@pytest.fixture
async def requests(sessions: async_sessionmaker[AsyncSession]) -> None:
    """1 from a post geotagged at carrer de Verdi, 2 from one geotagged in the Eixample, 3 from
    a post without a point that named a door."""
    now = datetime.now(UTC).replace(microsecond=0)
    route = router(sessions)
    await route(as_event(classified("p1", at=now - timedelta(hours=3), latlon=AT_VERDI)))
    await route(
        as_event(classified("p2", at=now - timedelta(hours=2), latlon=IN_EIXAMPLE, district="02"))
    )
    await route(
        as_event(
            classified(
                "p3",
                at=now - timedelta(hours=1),
                service_code="cleaning",
                latlon=None,
                text="Contenidor desbordat a Verdi 12",
                street_address=ADDRESS,
            )
        )
    )


@pytest.fixture
async def api(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[httpx.AsyncClient]:
    async with client(gateway(sessions)) as c:
        yield c


async def published(api: httpx.AsyncClient, rid: int, **params: object) -> tuple[float, float]:
    [item] = (await api.get(f"/open311/v2/requests/{rid}.json", params=params)).json()
    return item["lat"], item["long"]


async def test_a_geotagged_point_is_published_on_the_grid_the_same_on_every_read(
    api: httpx.AsyncClient, requests: None, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert PUBLIC_POINT_PRECISION_M == 50
    for rid, exact in ((1, AT_VERDI), (2, IN_EIXAMPLE)):
        point = await published(api, rid)
        assert point != exact
        # a cell's centre is at most half its diagonal away
        assert metres(point, exact) <= PUBLIC_POINT_PRECISION_M * math.sqrt(2) / 2 + 0.01
        # the same on every read, every way it is read, and by another gateway
        assert await published(api, rid) == point
        assert await published(api, rid, extensions="true") == point
        listed = (await api.get("/open311/v2/requests.json")).json()
        [item] = [r for r in listed if r["service_request_id"] == str(rid)]
        assert (item["lat"], item["long"]) == point
        xml = ElementTree.fromstring((await api.get(f"/open311/v2/requests/{rid}.xml")).content)
        assert (
            float(xml.findtext("request/lat") or ""),
            float(xml.findtext("request/long") or ""),
        ) == point
        async with client(gateway(sessions)) as another:
            assert await published(another, rid) == point


async def test_points_a_few_metres_apart_in_one_block_are_published_as_one(
    sessions: async_sessionmaker[AsyncSession], api: httpx.AsyncClient
) -> None:
    """A grid, not noise per request: two phones 5 m apart (inside one 50 m cell) publish the
    same point, so no set of requests averages to either."""
    now = datetime.now(UTC).replace(microsecond=0)
    route = router(sessions)
    # the centre of a cell and 5 m north-east of it
    step = 50 / 111_195.0
    lat = (math.floor(41.4036 / step) + 0.5) * step
    width = step / math.cos(math.radians(lat))
    long = (math.floor(2.1566 / width) + 0.5) * width
    moved = (lat + 3.5 / 111_195.0, long + 3.5 / 111_195.0 / math.cos(math.radians(lat)))
    await route(as_event(classified("a", at=now, latlon=(lat, long))))
    await route(as_event(classified("b", at=now, latlon=moved, service_code="cleaning")))
    assert await published(api, 1) == await published(api, 2)
    assert metres(await published(api, 2), (lat, long)) < 0.01


async def test_the_radius_filter_decides_on_the_published_point_not_the_exact_one(
    api: httpx.AsyncClient, requests: None
) -> None:
    """Circles around the exact point tell nothing the published point does not: a 1 m circle
    on the phone's position finds nothing, one on the published point finds the request, and
    every circle finds it exactly when it holds the published point."""

    async def near(centre: tuple[float, float], radius: float) -> list[str]:
        response = await api.get(
            "/open311/v2/requests.json",
            params={"lat": centre[0], "long": centre[1], "radius": radius},
        )
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]

    point = await published(api, 1)
    assert await near(AT_VERDI, 1) == []
    assert await near(point, 1) == ["1"]
    # rings of centres around the exact point, radii from a metre to past the cell (36 reads:
    # an anonymous caller's budget is 120 a minute)
    for bearing in range(0, 360, 90):
        for offset in (0.0, 10.0, 30.0):
            centre = (
                AT_VERDI[0] + offset * math.cos(math.radians(bearing)) / 111_195.0,
                AT_VERDI[1]
                + offset
                * math.sin(math.radians(bearing))
                / 111_195.0
                / math.cos(math.radians(AT_VERDI[0])),
            )
            for radius in (1.0, 15.0, 40.0):
                found = "1" in await near(centre, radius)
                distance = metres(centre, point)
                if abs(distance - radius) > 0.5:  # not on the edge, where rounding decides
                    assert found == (distance <= radius), (centre, radius, distance)
    # a request far away stays out, and the address-placed one has no point to be near
    assert await near(AT_VERDI, 500) == ["1"]
    assert await near(AT_VERDI, 3000) == ["2", "1"]


async def test_staff_see_the_exact_point(
    api: httpx.AsyncClient, requests: None, sessions: async_sessionmaker[AsyncSession]
) -> None:
    manager = await new_key(sessions, Role.MANAGER, ["06"])
    headers = {"Authorization": f"Bearer {manager}"}
    detail = (await api.get("/api/v1/requests/1", headers=headers)).json()
    assert (detail["lat"], detail["long"]) == AT_VERDI
    places = (await api.get("/api/v1/districts/06/queue/places", headers=headers)).json()
    [item] = [p for p in places["items"] if p["service_request_id"] == "1"]
    assert (item["lat"], item["long"]) == AT_VERDI
    assert await published(api, 1) != AT_VERDI


async def test_an_address_placed_request_is_published_as_it_was(
    api: httpx.AsyncClient, requests: None
) -> None:
    """No point to coarsen: the street and number the citizen wrote, as before."""
    [item] = (await api.get("/open311/v2/requests/3.json")).json()
    assert (item["address"], item["lat"], item["long"]) == (ADDRESS, None, None)


async def test_precision_0_publishes_the_exact_point(
    sessions: async_sessionmaker[AsyncSession], requests: None
) -> None:
    async with client(gateway(sessions, access=AccessConfig(public_point_precision_m=0))) as api:
        assert await published(api, 1) == AT_VERDI
        near = await api.get(
            "/open311/v2/requests.json",
            params={"lat": AT_VERDI[0], "long": AT_VERDI[1], "radius": 1},
        )
        assert [r["service_request_id"] for r in near.json()] == ["1"]


async def test_a_coarser_grid_moves_points_further_and_the_filter_follows(
    sessions: async_sessionmaker[AsyncSession], requests: None
) -> None:
    async with client(gateway(sessions, access=AccessConfig(public_point_precision_m=500))) as api:
        point = await published(api, 1)
        assert metres(point, AT_VERDI) <= 500 * math.sqrt(2) / 2 + 0.01
        response = await api.get(
            "/open311/v2/requests.json",
            params={"lat": point[0], "long": point[1], "radius": 1},
        )
        assert [r["service_request_id"] for r in response.json()] == ["1"]


async def test_a_point_by_a_pole_or_the_antimeridian_is_published_as_a_valid_coordinate(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A cell's centre may lie past 90 degrees of latitude or 180 of longitude (a geotag from
    far away, placed by its text): what is published is still a coordinate. (At 41.41 degrees
    a 50 m cell's centre by the antimeridian is at 180.0002; a 500 m band's by the pole at
    90.0018.)"""
    now = datetime.now(UTC).replace(microsecond=0)
    route = router(sessions)
    points = ((41.41, 179.99999), (-41.41, -179.99999), (89.99999, 0.0), (-89.99999, 0.0))
    for n, point in enumerate(points):
        await route(as_event(classified(f"far-{n}", at=now, latlon=point, service_code="noise")))
    for precision in (50, 500):
        access = AccessConfig(public_point_precision_m=precision)
        async with client(gateway(sessions, access=access)) as api:
            for n, point in enumerate(points):
                lat, long = await published(api, n + 1)
                assert -90 <= lat <= 90 and -180 <= long <= 180, (precision, point, lat, long)


async def test_the_published_point_is_what_public_grid_point_says_and_so_are_the_docs(
    api: httpx.AsyncClient, requests: None
) -> None:
    """PublicGrid.point (Python) and lateral_sql (PostgreSQL) publish the same point, and the API
    docs' example request shows a point the API could publish, not a phone's exact one."""
    grid = PublicGrid(PUBLIC_POINT_PRECISION_M)
    for rid, exact in ((1, AT_VERDI), (2, IN_EIXAMPLE)):
        assert await published(api, rid) == pytest.approx(grid.point(*exact), abs=1e-9)
    spec = (await api.get("/openapi.json")).json()
    for path in (
        "/open311/v2/requests.{format}",
        "/open311/v2/requests/{service_request_id}.{format}",
    ):
        [example] = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
            "example"
        ]
        point = (example["lat"], example["long"])
        assert tuple(round(c, 6) for c in grid.point(*point)) == point, path
