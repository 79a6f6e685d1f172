"""The city configuration: packaged names and centres, point lookups, place names in text."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import shapely
from plaza.city import City, Location, fold, names
from plaza.city.geo import Metres
from shapely.geometry import Point

from tests.infra import ROOT, SHARED_DATA

BARCELONA_DATA = SHARED_DATA / "barcelona"
PLACA_SANT_JAUME = (41.38264, 2.17701)
MADRID_SOL = (40.41690, -3.70350)


@pytest.fixture(scope="module")
def exact() -> City:
    return City.barcelona(BARCELONA_DATA)


@pytest.fixture(scope="module")
def packaged() -> City:
    return City.barcelona()


def where(location: Location | None) -> tuple[str | None, str | None]:
    assert location is not None
    return (
        location.district.name if location.district else None,
        location.barri.name if location.barri else None,
    )


# --- the packaged configuration -------------------------------------------------------------


def test_the_packaged_file_is_what_derive_city_produces(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("derive_city", ROOT / "scripts/derive_city.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "barcelona.json"
    script.main([str(BARCELONA_DATA), str(out)])
    packaged = ROOT / "lib/plaza/src/plaza/city/barcelona.json"
    assert out.read_text(encoding="utf-8") == packaged.read_text(encoding="utf-8")


def test_barcelona_has_its_10_districts_and_73_barris(packaged: City) -> None:
    assert list(packaged.districts) == [f"{n:02d}" for n in range(1, 11)]
    assert list(packaged.barris) == [f"{n:02d}" for n in range(1, 74)]
    assert packaged.district("06").name == "Gràcia"
    assert packaged.barris["31"].name == "la Vila de Gràcia"
    assert packaged.barris["31"].district_code == "06"


def test_names_agree_with_the_flat_reference_list(packaged: City) -> None:
    with (BARCELONA_DATA / "barris_districtes.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 73
    for row in rows:
        barri = packaged.barris[row["codi_barri"]]
        assert (barri.name, barri.district_code) == (row["nom_barri"], row["codi_districte"])
        assert packaged.district(row["codi_districte"]).name == row["nom_districte"]


def test_every_centre_lies_in_its_own_barri(exact: City) -> None:
    for barri in exact.barris.values():
        location = exact.locate(barri.lat, barri.lon)
        assert location is not None and location.barri == barri, barri.name
        assert location.confidence == 1.0


def test_an_unknown_district_is_a_clear_key_error(packaged: City) -> None:
    with pytest.raises(KeyError, match="no district '11'"):
        packaged.district("11")


# --- points ---------------------------------------------------------------------------------


def test_placa_de_sant_jaume_is_in_the_gothic_quarter(exact: City) -> None:
    location = exact.locate(*PLACA_SANT_JAUME)
    assert where(location) == ("Ciutat Vella", "el Barri Gòtic")
    assert location is not None and location.source == "geo" and location.confidence == 1.0


@pytest.mark.parametrize(
    ("lat", "lon", "district", "barri"),
    [
        (41.40363, 2.17436, "Eixample", "la Sagrada Família"),
        (41.40270, 2.15690, "Gràcia", "la Vila de Gràcia"),
        (41.37550, 2.13500, "Sants-Montjuïc", "Sants"),
        (41.40100, 2.20300, "Sant Martí", "el Poblenou"),
        (41.43600, 2.19000, "Sant Andreu", "Sant Andreu"),
    ],
)
def test_points_fall_in_their_barri(
    exact: City, lat: float, lon: float, district: str, barri: str
) -> None:
    assert where(exact.locate(lat, lon)) == (district, barri)


def test_a_point_in_madrid_is_not_in_barcelona(exact: City, packaged: City) -> None:
    assert exact.locate(*MADRID_SOL) is None
    assert packaged.locate(*MADRID_SOL) is None


def test_a_point_just_off_the_beach_snaps_with_lower_confidence(exact: City) -> None:
    # On the sand, a few metres seaward of the Barceloneta polygon.
    location = exact.locate(41.3784, 2.1935)
    assert where(location) == ("Ciutat Vella", "la Barceloneta")
    assert location is not None and 0.6 <= location.confidence < 1.0


def test_a_point_far_out_at_sea_is_outside_the_city(exact: City) -> None:
    assert exact.locate(41.3700, 2.2100) is None


def test_many_points_looked_up_together_land_where_each_alone_does(
    exact: City, packaged: City
) -> None:
    """The classifier's batches: inside a barri, snapped from the beach, out at sea, in Madrid,
    and a grid over the city and its margins (every kind of answer, borders included)."""
    rng = random.Random(5)
    box = exact.bbox
    points = [
        (
            rng.uniform(box.min_lat - 0.01, box.max_lat + 0.01),
            rng.uniform(box.min_lon - 0.01, box.max_lon + 0.01),
        )
        for _ in range(3000)
    ]
    points += [(b.lat, b.lon) for b in exact.barris.values()]
    points += [(41.3784, 2.1935), (41.3700, 2.2100), MADRID_SOL, PLACA_SANT_JAUME]
    for city in (exact, packaged):
        alone = [city.locate(lat, lon) for lat, lon in points]
        assert city.locate_many(points) == alone
        assert {found is None for found in alone} == {True, False}  # in the city, and out
    assert exact.locate_many([]) == []


def test_without_polygons_the_nearest_centre_is_used(packaged: City) -> None:
    # another city placed by centres: Barcelona's names and centres without its outlines
    town = City("Vila", packaged.districts.values(), packaged.barris.values(), packaged.bbox)
    location = town.locate(*PLACA_SANT_JAUME)
    assert where(location) == ("Ciutat Vella", "el Barri Gòtic")
    assert location is not None and location.confidence == 0.6
    assert not town.has_polygons


# --- packaged Barcelona: placed by its packaged outlines ---------------------------------------


def test_packaged_barcelona_places_a_point_in_the_barri_its_outline_holds(packaged: City) -> None:
    location = packaged.locate(*PLACA_SANT_JAUME)
    assert where(location) == ("Ciutat Vella", "el Barri Gòtic")
    assert location is not None and location.confidence == 1.0  # a polygon's, not a centre's
    assert packaged.has_polygons


@pytest.fixture(scope="module")
def exact_areas(exact: City) -> tuple[shapely.Geometry, shapely.Geometry]:
    """The exact polygons' borders between barris (district borders among them), and the
    city's area, in the city's metres."""
    _, barris = exact.outlines()
    city = shapely.union_all(list(barris.values()))
    outline = max(shapely.get_parts(city), key=lambda part: part.area).exterior
    borders = shapely.union_all([area.boundary for area in barris.values()])
    inner = borders.difference(outline.buffer(0.5))
    shapely.prepare(inner)
    shapely.prepare(city)
    return inner, city


def around(
    lines: shapely.Geometry, metres: Metres, count: int, reach: tuple[float, float], seed: int
) -> list[tuple[float, float]]:
    """(lat, lon) of `count` points scattered along lines, each between reach[0] and reach[1]
    metres from a point of them, in any direction."""
    rng = random.Random(seed)
    parts = list(shapely.get_parts(lines))
    points = []
    for line in rng.choices(parts, weights=[part.length for part in parts], k=count):
        point = shapely.line_interpolate_point(line, rng.uniform(0, 1), normalized=True)
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(*reach)
        x, y = point.x + distance * math.cos(angle), point.y + distance * math.sin(angle)
        points.append((y / metres.per_deg_lat, x / metres.per_deg_lon))
    return points


def test_packaged_barcelona_places_points_near_borders_where_the_exact_polygons_do(
    exact: City, packaged: City, exact_areas: tuple[shapely.Geometry, shapely.Geometry]
) -> None:
    """Points up to 80 m from a border between barris (a district's among them): those more
    than 6 m from every border (the outlines are simplified to 4 m) land in the exact polygons'
    barri, and district, as surely (the nearest barri centre put half of these 1,143 in
    another barri and one in six in another district's queue). Closer to a border, in the slivers where two
    simplified outlines overlap or leave a gap, a point is still placed, in one of the barris
    that border is between, a little less surely than inside one."""
    borders, _ = exact_areas
    metres = exact.metres
    _, barris = exact.outlines()
    far = near = 0
    districts = set()
    for lat, lon in around(borders, metres, 1500, (0.0, 80.0), seed=7):
        expected = exact.locate(lat, lon)
        if expected is None or expected.barri is None or expected.confidence < 1.0:
            continue  # on a border exactly
        found = packaged.locate(lat, lon)
        assert found is not None, (lat, lon)
        point = Point(lon * metres.per_deg_lon, lat * metres.per_deg_lat)
        if not shapely.dwithin(borders, point, 6.0):
            far += 1
            districts.add(expected.district)
            assert found == expected, (lat, lon)
        else:
            near += 1
            nearby = {code for code, area in barris.items() if shapely.dwithin(area, point, 6.0)}
            assert found.barri is not None and found.barri.code in nearby, (lat, lon)
            assert 0.85 <= found.confidence <= 1.0, (lat, lon)
    assert far > 1000 and near > 80 and len(districts) == 10


def test_packaged_barcelona_places_nothing_beyond_its_outline(
    exact: City, packaged: City, exact_areas: tuple[shapely.Geometry, shapely.Geometry]
) -> None:
    """Points 160 to 450 m outside the city (L'Hospitalet, Esplugues, Montcada, Santa Coloma,
    Sant Adrià, the sea) go nowhere, as with the exact polygons (the nearest barri centre placed
    all 219 of these in a Barcelona district); 10 to 140 m outside
    (a beach, the port, across a border street) they snap to the nearest barri, less surely."""
    _, city = exact_areas
    outline = max(shapely.get_parts(city), key=lambda part: part.area).exterior
    metres = exact.metres
    beyond = snapped = 0
    for lat, lon in around(outline, metres, 1500, (0.0, 450.0), seed=11):
        outside = city.distance(Point(lon * metres.per_deg_lon, lat * metres.per_deg_lat))
        found = packaged.locate(lat, lon)
        if outside >= 160.0:
            beyond += 1
            assert exact.locate(lat, lon) is None
            assert found is None, (lat, lon, outside)
        elif 10.0 <= outside <= 140.0:
            snapped += 1
            assert found is not None and 0.6 <= found.confidence < 0.9, (lat, lon, outside)
    assert beyond > 150 and snapped > 300
    for lat, lon in [(41.4510, 2.2080), (41.4230, 2.2240), (41.3780, 2.2050)]:
        # Santa Coloma de Gramenet, Sant Adrià de Besòs, 700 m out at sea off the Barceloneta
        assert packaged.locate(lat, lon) is None


def test_polygons_that_are_missing_or_malformed_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"districtes_geo\.json"):
        City.barcelona(tmp_path)
    shutil.copy(BARCELONA_DATA / "districtes_geo.json", tmp_path)
    with pytest.raises(ValueError, match=r"barris_geo\.json: file not found"):
        City.barcelona(tmp_path)
    (tmp_path / "barris_geo.json").write_text('{"type": "FeatureCollection", "features": [}')
    with pytest.raises(ValueError, match=r"barris_geo\.json: not readable"):
        City.barcelona(tmp_path)
    collection = json.loads((BARCELONA_DATA / "barris_geo.json").read_text(encoding="utf-8"))
    collection["features"] = collection["features"][:-1]
    (tmp_path / "barris_geo.json").write_text(json.dumps(collection))
    with pytest.raises(ValueError, match=r"barris_geo\.json: barri codes"):
        City.barcelona(tmp_path)
    collection["features"][0]["geometry"] = {"type": "Polygon", "coordinates": "nowhere"}
    (tmp_path / "barris_geo.json").write_text(json.dumps(collection))
    with pytest.raises(ValueError, match=r"barris_geo\.json: malformed geometry"):
        City.barcelona(tmp_path)


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "district", "barri"),
    [
        ("Fanal trencat a la Vila de Gràcia", "Gràcia", "la Vila de Gràcia"),
        ("Farola rota en Gracia", "Gràcia", None),
        ("Soroll a Gràcia cada nit", "Gràcia", None),
        ("Obras en San Martín", "Sant Martí", None),
        ("Problemes al districte de Sant Martí", "Sant Martí", None),
        ("Un forat a Sants-Montjuïc", "Sants-Montjuïc", None),
        ("Basura en Sants", "Sants-Montjuïc", "Sants"),
        ("Ratas en Montjuic", "Sants-Montjuïc", "el Poble Sec"),
        ("Horta-Guinardó necessita més neteja", "Horta-Guinardó", None),
        ("Nou Barris oblidat un altre cop", "Nou Barris", None),
        ("Ruido en San Andrés", "Sant Andreu", "Sant Andreu"),
        ("Bins in Les Corts", "Les Corts", "les Corts"),
        ("Las Corts está sucio", "Les Corts", "les Corts"),
        ("Sarrià-Sant Gervasi sense llum", "Sarrià-Sant Gervasi", None),
        ("Sarriá sin luz", "Sarrià-Sant Gervasi", "Sarrià"),
        ("Voreres trencades a l'Eixample", "Eixample", None),
        ("Suciedad en el Ensanche", "Eixample", None),
        ("Botellón en Ciudad Vieja", "Ciutat Vella", None),
        (
            "Soroll al Born cada cap de setmana",
            "Ciutat Vella",
            "Sant Pere, Santa Caterina i la Ribera",
        ),
        ("Terrasses a el Born", "Ciutat Vella", "Sant Pere, Santa Caterina i la Ribera"),
        ("Graffiti all over Poblenou", "Sant Martí", "el Poblenou"),
        ("Ruido en Pueblo Nuevo", "Sant Martí", "el Poblenou"),
        ("Rats in the Barceloneta", "Ciutat Vella", "la Barceloneta"),
        ("Brutícia al Raval", "Ciutat Vella", "el Raval"),
        ("Pintadas en el Gótico", "Ciutat Vella", "el Barri Gòtic"),
        ("Bench broken in the Gothic Quarter", "Ciutat Vella", "el Barri Gòtic"),
        ("Soroll a Sagrada Família", "Eixample", "la Sagrada Família"),
        ("Contenidors plens al Fort Pienc", "Eixample", "el Fort Pienc"),
        ("Mercat de Sant Antoni", "Eixample", "Sant Antoni"),
        ("Farolas apagadas en el Poble-sec", "Sants-Montjuïc", "el Poble Sec"),
        ("Pueblo Seco sin luz", "Sants-Montjuïc", "el Poble Sec"),
        ("Obres al Clot", "Sant Martí", "el Clot"),
        ("Soroll a Horta", "Horta-Guinardó", "Horta"),
        ("Park Güell is packed", "Gràcia", "la Salut"),
        ("Camp Nou traffic", "Les Corts", "la Maternitat i Sant Ramon"),
        ("Top manta a la Rambla", "Ciutat Vella", "el Barri Gòtic"),
        ("Carteristas en Las Ramblas", "Ciutat Vella", "el Barri Gòtic"),
        ("Plaça Catalunya plena de brutícia", "Eixample", "la Dreta de l'Eixample"),
        ("Passeig de Gràcia sense llum", "Eixample", "la Dreta de l'Eixample"),
        ("Rambla de Catalunya", "Eixample", "la Dreta de l'Eixample"),
        ("Plaza de España colapsada", "Sants-Montjuïc", "el Poble Sec"),
        ("Parc de la Ciutadella", "Ciutat Vella", "Sant Pere, Santa Caterina i la Ribera"),
        ("Tibidabo", "Sarrià-Sant Gervasi", "Vallvidrera, el Tibidabo i les Planes"),
        ("Obres a Glòries", "Sant Martí", "el Parc i la Llacuna del Poblenou"),
        ("Arc de Triomf", "Ciutat Vella", "Sant Pere, Santa Caterina i la Ribera"),
        ("Hospital Clínic", "Eixample", "l'Antiga Esquerra de l'Eixample"),
        ("Mercat de la Boqueria", "Ciutat Vella", "el Raval"),
        ("Diagonal Mar", "Sant Martí", "Diagonal Mar i el Front Marítim del Poblenou"),
        ("Bunkers del Carmel plens de gent", "Horta-Guinardó", "Can Baró"),
        ("Carrer de Sant Pau", "Ciutat Vella", "el Raval"),
    ],
)
def test_places_named_in_text(packaged: City, text: str, district: str, barri: str | None) -> None:
    location = packaged.find_in_text(text)
    assert where(location) == (district, barri)
    assert location is not None and location.source == "text"


@pytest.mark.parametrize(
    "text",
    [
        "Muchas gracias por todo",
        "Gracias!",
        "No tiene ninguna gracia que la calle esté así",
        "santsimo cielo",
        "Gran Via de les Corts Catalanes sense llum",
        "Hi ha un clot enorme al carrer",
        "el clot de la vorera",
        "Hay un problema en el centro",
        "Perill per a la salut pública",
        "L'horta urbana està abandonada",
        "Born and raised here",
        "Porta trencada del contenidor",
        "besos a todos",
        "el 22 de març",
        "Travessera de Gràcia tallada",
        "Les Corts Generals han aprovat la llei",
        "Las Cortes Generales votan hoy el presupuesto",
    ],
)
def test_words_that_are_not_places(packaged: City, text: str) -> None:
    assert packaged.find_in_text(text) is None


def test_the_most_specific_name_wins(packaged: City) -> None:
    location = packaged.find_in_text("Gràcia: la Vila de Gràcia està bruta")
    assert where(location) == ("Gràcia", "la Vila de Gràcia")
    assert location is not None and location.confidence == 0.8
    district_only = packaged.find_in_text("Gràcia està bruta")
    assert district_only is not None and district_only.confidence == 0.7


def test_two_districts_named_pick_the_first_with_lower_confidence(packaged: City) -> None:
    location = packaged.find_in_text("De Gràcia al Raval tot brut")
    assert where(location) == ("Gràcia", None)
    assert location is not None and location.confidence < 0.7
    reverse = packaged.find_in_text("Del Raval a Gràcia tot brut")
    assert where(reverse) == ("Ciutat Vella", "el Raval")
    assert reverse is not None and reverse.confidence < 0.8


def test_text_without_a_place_is_none(packaged: City) -> None:
    assert packaged.find_in_text("La farola no funciona") is None
    assert packaged.find_in_text("") is None


def test_fold_strips_accents_and_punctuation_keeping_length() -> None:
    assert fold("Sants-Montjuïc, l'Eixample i Col·legi") == "sants montjuic l eixample i collegi"
    text = "ÀREA d’Horta · Sarrià"
    assert len(fold(text)) == len(fold(text, keep_case=True))


def test_every_landmark_and_alias_names_a_real_barri(packaged: City) -> None:
    codes = set(names.LANDMARKS.values()) | set(names.PROPER_NOUNS.values())
    codes |= set(names.BARRI_ALIASES)
    assert codes <= set(packaged.barris)
    assert set(names.DISTRICT_ALIASES) <= set(packaged.districts)
