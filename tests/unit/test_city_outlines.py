"""The city's areas drawn for the console's map (plaza.city.outlines): a district's outline and its
barris', simplified to a few metres and small enough for a phone, placed where the city's own
polygons are; packaged Barcelona draws (and places a post by) the outlines packaged with it
(scripts/derive_outlines.py), as its exact polygons look; another city placed by centres gets
their names there."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import orjson
import pytest
import shapely
from plaza.city import BoundingBox, City
from plaza.city.outlines import DISTRICT_TOLERANCE_M, Outlines, read_outlines
from shapely.geometry import Point, Polygon

from tests.infra import ROOT, SHARED_DATA

PACKAGED_OUTLINES = ROOT / "lib/plaza/src/plaza/city/barcelona_outlines.json"


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


def drawn_area(path: str) -> shapely.Geometry:
    """What an SVG path fills, its rings made valid (a ring of a few metres may touch itself once
    rounded to whole metres)."""
    return shapely.union_all([shapely.make_valid(ring) for ring in rings(path)])


def _derive_outlines() -> ModuleType:
    path = ROOT / "scripts/derive_outlines.py"
    spec = importlib.util.spec_from_file_location("derive_outlines", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


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


def test_another_city_without_polygons_gets_its_barris_names_where_their_centres_are() -> None:
    packaged = City.barcelona()
    # another city placed by centres: Barcelona's names and centres, without its outlines file
    town = City("Vila", packaged.districts.values(), packaged.barris.values(), packaged.bbox)
    gracia = Outlines(town).map("06")
    areas = gracia["areas"]
    assert isinstance(areas, list)
    assert gracia["outlines"] is False and all(a["path"] is None for a in areas)
    for area in areas[1:]:
        x, y = area["label"]
        assert 0 < x < int(str(gracia["width"])) and 0 < y < int(str(gracia["height"]))
    assert Outlines(town).map(None)["outlines"] is False


# --- packaged Barcelona: the outlines packaged with it ------------------------------------------


def test_packaged_barcelona_draws_its_packaged_outlines_as_the_exact_ones_look(
    barcelona: Outlines,
) -> None:
    """Without PLAZA_CITY_DATA_DIR, every map (the city's and each district's) draws the same
    areas as with the exact polygons, in the same frame to a few metres, each area's shape the
    exact one's to well under 1% (the packaged outlines were simplified once more)."""
    packaged = Outlines(City.barcelona())
    assert packaged.city.has_polygons  # the packaged outlines
    for code in [None, *packaged.city.districts]:
        drawn, exact = packaged.map(code), barcelona.map(code)
        assert drawn["outlines"] is True, code
        for size in ("width", "height"):
            assert abs(int(str(drawn[size])) - int(str(exact[size]))) <= 2, (code, size)
        drawn_areas, exact_areas = drawn["areas"], exact["areas"]
        assert isinstance(drawn_areas, list) and isinstance(exact_areas, list)
        assert [(a["kind"], a["code"]) for a in drawn_areas] == [
            (a["kind"], a["code"]) for a in exact_areas
        ]
        for ours, theirs in zip(drawn_areas, exact_areas, strict=True):
            ours_area, exact_area = drawn_area(ours["path"]), drawn_area(theirs["path"])
            where = (code, ours["code"])
            assert abs(ours_area.area - exact_area.area) / exact_area.area < 0.005, where
            assert ours_area.symmetric_difference(exact_area).area / exact_area.area < 0.01, where
            for a, b in zip(ours_area.bounds, exact_area.bounds, strict=True):
                assert abs(a - b) <= 2 * DISTRICT_TOLERANCE_M, where
            if ours["label"] is not None:
                assert (
                    max(abs(a - b) for a, b in zip(ours["label"], theirs["label"], strict=True))
                    <= 1
                )
    # small enough for a phone still: Gràcia's map as the exact polygons draw it
    assert len(orjson.dumps(packaged.map("06"))) < 8_000


def test_packaged_barcelona_places_a_post_where_its_map_draws_it() -> None:
    """This point on Diagonal is drawn in la Dreta de l'Eixample (Eixample), and placed there
    by the packaged outlines, as the exact polygons place it (the nearest barri centre was el
    Camp d'en Grassot i Gràcia Nova's, in Gràcia: the request drawn across the street from the
    district whose queue it was in)."""
    city = City.barcelona()
    point = (41.40019, 2.16425)
    drawn = Outlines(city).map(None)
    areas = {a["code"]: drawn_area(a["path"]) for a in drawn["areas"]}  # type: ignore[attr-defined]
    assert areas["02"].contains(place(drawn, *point))
    dreta = Outlines(city).map("02")
    barris = {a["code"]: drawn_area(a["path"]) for a in dreta["areas"]}  # type: ignore[attr-defined]
    assert barris["07"].contains(place(dreta, *point))
    location = city.locate(*point)
    assert location is not None and location.barri is not None and location.district is not None
    assert (location.barri.code, location.district.code) == ("07", "02")
    assert location.confidence == 1.0  # inside its outline, not a centre's 0.6
    assert location == City.barcelona(SHARED_DATA / "barcelona").locate(*point)


def test_the_packaged_outlines_are_what_derive_outlines_produces(tmp_path: Path) -> None:
    out = tmp_path / "barcelona_outlines.json"
    _derive_outlines().main([str(SHARED_DATA / "barcelona"), str(out)])
    assert out.read_text(encoding="utf-8") == PACKAGED_OUTLINES.read_text(encoding="utf-8")
    assert PACKAGED_OUTLINES.stat().st_size < 150_000  # 125 KB; the exact GeoJSON is 1.5 MB
    written = json.loads(PACKAGED_OUTLINES.read_text(encoding="utf-8"))
    assert "CC-BY" in written["source"] and "CartoBCN" in written["source"]
    assert (len(written["districts"]), len(written["barris"])) == (10, 73)


def square(code_property: str, code: str, ring: list[list[float]]) -> dict[str, object]:
    props = {code_property: code, "C_Distri": "01"}
    return {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def write_city(data_dir: Path, barri: list[dict[str, object]] | None = None) -> None:
    data_dir.mkdir(exist_ok=True)
    # a square of about 830 by 1,100 m at Barcelona's latitude, with a point 1 m off its east
    # side (gone once simplified) and one 30 m off its north side (kept)
    ring = [[2.17, 41.38], [2.18, 41.38], [2.180012, 41.385], [2.18, 41.39], [2.175, 41.39027],
            [2.17, 41.39], [2.17, 41.38]]  # fmt: skip
    collection = {"type": "FeatureCollection", "features": [square("C_Distri", "01", ring)]}
    (data_dir / "districtes_geo.json").write_text(json.dumps(collection), encoding="utf-8")
    collection["features"] = barri if barri is not None else [square("C_Barri", "01", ring)]
    (data_dir / "barris_geo.json").write_text(json.dumps(collection), encoding="utf-8")


def test_derive_outlines_simplifies_to_a_few_metres_in_wgs84(tmp_path: Path) -> None:
    write_city(tmp_path / "town")
    script = _derive_outlines()
    written = json.loads(script.render(script.derive(tmp_path / "town")))
    for kind in ("districts", "barris"):
        (ring,) = written[kind]["01"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) == 6
        assert sorted(map(tuple, ring[1:])) == [
            (2.17, 41.38), (2.17, 41.39), (2.175, 41.39027), (2.18, 41.38), (2.18, 41.39)
        ]  # fmt: skip


def test_derive_outlines_names_the_file_of_a_bad_feature(tmp_path: Path) -> None:
    script = _derive_outlines()
    ring = [[2.17, 41.38], [2.18, 41.38], [2.18, 41.39], [2.17, 41.38]]
    nameless = square("C_Barri", "01", ring)
    del nameless["properties"]["C_Barri"]  # type: ignore[attr-defined]
    write_city(tmp_path / "a", [nameless])
    with pytest.raises(SystemExit, match=r"barris_geo.json: a feature has no C_Barri property"):
        script.derive(tmp_path / "a")
    write_city(tmp_path / "b", [square("C_Barri", "01", ring), square("C_Barri", "01", ring)])
    with pytest.raises(SystemExit, match=r"barris_geo.json: C_Barri 01 twice"):
        script.derive(tmp_path / "b")
    point = square("C_Barri", "01", ring)
    point["geometry"] = {"type": "Point", "coordinates": [2.17, 41.38]}
    write_city(tmp_path / "c", [point])
    with pytest.raises(SystemExit, match=r"barris_geo.json: C_Barri 01 is a Point"):
        script.derive(tmp_path / "c")


def test_outlines_of_other_areas_than_the_citys_are_refused_by_name(tmp_path: Path) -> None:
    city = City.barcelona()
    stale = json.loads(PACKAGED_OUTLINES.read_text(encoding="utf-8"))
    del stale["barris"]["73"]
    file = tmp_path / "barcelona_outlines.json"
    file.write_text(json.dumps(stale), encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=r"barcelona_outlines.json: outlines of barris .* re-run scripts/derive_outlines.py",
    ):
        read_outlines(file, city)
    file.write_text('{"districts": [1, 2]}', encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"barcelona_outlines.json: not outlines by district and barri code"
    ):
        read_outlines(file, city)
    file.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"barcelona_outlines.json: not readable JSON"):
        read_outlines(file, city)
    # a city without Barcelona's barris does not take them from it
    town = City("Vila", city.districts.values(), [], BoundingBox(41.3, 2.0, 41.5, 2.3))
    with pytest.raises(ValueError, match=r"outlines of barris \[.*\], Vila has \[\]"):
        read_outlines(PACKAGED_OUTLINES, town)


def test_a_town_without_barris_draws_its_district() -> None:
    jun = Outlines(City.from_config(ROOT / "deploy/cities/jun.toml"))
    code = next(iter(jun.city.districts))
    (district,) = jun.map(code)["areas"]  # type: ignore[misc]
    assert district["kind"] == "district" and district["path"].startswith("M")
    assert district["label"]  # no barri names it: its own name is on the map
