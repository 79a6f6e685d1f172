"""The city's areas drawn for the console's map (plaza.city.outlines): a district's outline and its
barris', simplified to a few metres and small enough for a phone, placed where the city's own
polygons are; a city placed by centres gets their names there."""

from __future__ import annotations

import re

import orjson
import pytest
import shapely
from plaza.city import City
from plaza.city.outlines import DISTRICT_TOLERANCE_M, Outlines
from shapely.geometry import Point, Polygon

from tests.infra import ROOT, SHARED_DATA


@pytest.fixture(scope="module")
def barcelona() -> Outlines:
    return Outlines(City.barcelona(SHARED_DATA / "barcelona"))


def rings(path: str) -> list[Polygon]:
    """An SVG path's rings ("M x y x y ...Z" each) as polygons in the map's metres."""
    found = []
    for ring in re.findall(r"M([^MZ]+)Z", path):
        numbers = [int(n) for n in ring.split()]
        found.append(Polygon(list(zip(numbers[::2], numbers[1::2], strict=True))))
    return found


def place(drawn: dict[str, object], lat: float, lon: float) -> Point:
    p = drawn["projection"]
    assert isinstance(p, dict)
    return Point(lon * p["x_per_lon"] - p["x0"], p["y0"] - lat * p["y_per_lat"])


def test_a_districts_map_is_its_outline_and_its_barris_small_enough_for_a_phone(
    barcelona: Outlines,
) -> None:
    gracia = barcelona.map("06")
    areas = gracia["areas"]
    assert isinstance(areas, list)
    assert [(a["kind"], a["code"]) for a in areas] == [
        ("district", "06"),
        *(("barri", code) for code in ("28", "29", "30", "31", "32")),
    ]
    assert gracia["outlines"] is True
    assert all(a["label"] for a in areas[1:]) and areas[0]["label"] is None  # its name: the title
    # 4.6 KB rather than the 45 KB of its barris' exact GeoJSON
    assert len(orjson.dumps(gracia)) < 8_000
    # within the simplification of the exact outline: a point on Verdi street is in la Vila de
    # Gràcia's (barri 31) as drawn, and the drawn area is the exact one's to 1%
    district = shapely.union_all(rings(str(areas[0]["path"])))
    vila = shapely.union_all(rings(str(areas[4]["path"])))
    assert vila.contains(place(gracia, 41.4036, 2.1570))
    exact, _ = barcelona.city.outlines()
    assert abs(district.area - exact["06"].area) / exact["06"].area < 0.01
    assert district.buffer(DISTRICT_TOLERANCE_M + 1).contains(vila)
    # the frame holds the district with a margin
    assert district.bounds[0] > 0 and district.bounds[2] < int(str(gracia["width"]))
    assert district.bounds[1] > 0 and district.bounds[3] < int(str(gracia["height"]))


def test_the_citys_map_is_its_districts(barcelona: Outlines) -> None:
    city = barcelona.map(None)
    areas = city["areas"]
    assert isinstance(areas, list)
    assert [a["code"] for a in areas] == [f"{n:02}" for n in range(1, 11)]
    assert all(a["kind"] == "district" and a["path"] and a["label"] for a in areas)
    assert len(orjson.dumps(city)) < 16_000
    assert barcelona.map(None) is city  # drawn once
    with pytest.raises(KeyError):
        barcelona.map("99")


def test_a_city_without_polygons_gets_its_barris_names_where_their_centres_are() -> None:
    packaged = Outlines(City.barcelona())  # no PLAZA_CITY_DATA_DIR: centres only
    gracia = packaged.map("06")
    areas = gracia["areas"]
    assert isinstance(areas, list)
    assert gracia["outlines"] is False and all(a["path"] is None for a in areas)
    for area in areas[1:]:
        x, y = area["label"]
        assert 0 < x < int(str(gracia["width"])) and 0 < y < int(str(gracia["height"]))


def test_a_town_without_barris_draws_its_district() -> None:
    jun = Outlines(City.from_config(ROOT / "deploy/cities/jun.toml"))
    code = next(iter(jun.city.districts))
    (district,) = jun.map(code)["areas"]  # type: ignore[misc]
    assert district["kind"] == "district" and district["path"].startswith("M")
    assert district["label"]  # no barri names it: its own name is on the map
