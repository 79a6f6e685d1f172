"""A city from a configuration file: Madrid's districts by coordinates, Barcelona as packaged."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import random
import re
from pathlib import Path

import pytest
from plaza.city import (
    PACKAGED_ROUTING,
    Barri,
    BoundingBox,
    City,
    Council,
    District,
    Location,
    Polygons,
    fold,
)
from plaza.settings import PlazaSettings, SettingsError, load

from tests.infra import ROOT, SHARED_DATA

CITIES = ROOT / "deploy" / "cities"
MADRID_REPORTS = SHARED_DATA / "madrid" / "avisos_2021-2023.csv.gz"
PUERTA_DEL_SOL = (40.41690, -3.70350)
PLACA_SANT_JAUME = (41.38264, 2.17701)


@pytest.fixture(scope="module")
def madrid() -> City:
    return City.from_config(CITIES / "madrid.toml")


def district_name(location: Location | None) -> str | None:
    return location.district.name if location and location.district else None


# --- Madrid: districts only ------------------------------------------------------------------


def test_madrid_has_its_21_districts_in_official_order(madrid: City) -> None:
    assert madrid.name == "Madrid"
    assert list(madrid.districts) == [f"{n:02d}" for n in range(1, 22)]
    assert madrid.district("01").name == "Centro"
    assert madrid.district("05").name == "Chamartín"  # the config restores the accent
    assert madrid.district("21").name == "Barajas"
    assert madrid.barris == {}
    assert madrid.has_polygons


def test_a_point_in_madrid_gets_its_district_and_no_barri(madrid: City) -> None:
    location = madrid.locate(*PUERTA_DEL_SOL)
    assert location == Location(madrid.district("01"), None, "geo", 1.0)
    assert madrid.locate(*PLACA_SANT_JAUME) is None


def test_every_district_centre_lies_in_its_own_district(madrid: City) -> None:
    for district in madrid.districts.values():
        location = madrid.locate(district.lat, district.lon)
        assert location is not None and location.district == district, district.name


def test_madrid_reports_are_placed_in_the_district_madrid_gave_them(madrid: City) -> None:
    with gzip.open(MADRID_REPORTS, "rt", encoding="utf-8", newline="") as f:
        rows = [
            (float(r["lat"]), float(r["long"]), r["district_from_latlon"])
            for r in csv.DictReader(f)
            if r["district_from_latlon"] and r["lat"] and r["long"]
        ]
    sample = random.Random(2021).sample(rows, 20_000)
    agree = sum(
        fold(district_name(madrid.locate(lat, lon)) or "") == fold(expected)
        for lat, lon, expected in sample
    )
    agreement = agree / len(sample)
    print(f"Madrid district from coordinates agrees with district_from_latlon: {agreement:.4%}")
    assert agreement >= 0.99


@pytest.mark.parametrize(
    ("text", "district"),
    [
        ("Farola fundida en Chamartin", "Chamartín"),
        ("Bache enorme en Tetuán", "Tetuán"),
        ("Contenedores llenos en Fuencarral-El Pardo", "Fuencarral-El Pardo"),
        ("Ruido en Lavapiés", "Centro"),
        ("Pintadas en la Puerta del Sol", "Centro"),
        ("Árbol caído en el parque del Retiro", "Retiro"),
        ("Basura en Aluche", "Latina"),
        ("Socavón en Puente de Vallecas", "Puente de Vallecas"),
        ("Acera rota en Villa de Vallecas", "Villa de Vallecas"),
        ("Bancos rotos en San Blas-Canillejas", "San Blas"),
    ],
)
def test_madrid_district_names_in_text(madrid: City, text: str, district: str) -> None:
    location = madrid.find_in_text(text)
    assert district_name(location) == district
    assert location is not None and location.source == "text" and location.barri is None


@pytest.mark.parametrize(
    "text",
    [
        "El centro de salud no tiene rampa",
        "Solicito el retiro del vehículo abandonado",
        "La comunidad latina del barrio",
        "Vallecas",  # Puente or Villa: no guess
    ],
)
def test_madrid_everyday_words_are_not_districts(madrid: City, text: str) -> None:
    assert madrid.find_in_text(text) is None


# --- Barcelona from configuration is the packaged Barcelona ---------------------------------


def test_barcelona_from_its_config_is_the_packaged_city_with_polygons() -> None:
    configured = City.from_config(CITIES / "barcelona.toml")
    packaged = City.barcelona(SHARED_DATA / "barcelona")
    assert configured.name == packaged.name
    assert configured.bbox == packaged.bbox
    assert list(configured.districts.items()) == list(packaged.districts.items())
    assert list(configured.barris.items()) == list(packaged.barris.items())
    assert configured.has_polygons
    rng = random.Random(7)
    box = packaged.bbox
    for _ in range(2_000):
        lat = rng.uniform(box.min_lat, box.max_lat)
        lon = rng.uniform(box.min_lon, box.max_lon)
        assert configured.locate(lat, lon) == packaged.locate(lat, lon), (lat, lon)
    for text in [
        "Soroll al Born cada cap de setmana",
        "Park Güell is packed",
        "Muchas gracias por todo",
        "Hi ha un clot enorme al carrer",
        "De Gràcia al Raval tot brut",
        "Travessera de Gràcia tallada",
    ]:
        assert configured.find_in_text(text) == packaged.find_in_text(text), text


# --- what a configuration may say, and its mistakes -----------------------------------------


def box(min_lat: float, min_lon: float, max_lat: float, max_lon: float) -> dict[str, object]:
    ring = [[min_lon, min_lat], [max_lon, min_lat], [max_lon, max_lat], [min_lon, max_lat]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def write_geojson(path: Path, features: list[tuple[dict[str, object], dict[str, object]]]) -> None:
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": props, "geometry": geometry}
            for props, geometry in features
        ],
    }
    path.write_text(json.dumps(collection), encoding="utf-8")


@pytest.fixture
def town(tmp_path: Path) -> Path:
    """Two districts side by side (codes 7 and 12, as numbers); the first has two barris."""
    write_geojson(
        tmp_path / "districts.geojson",
        [
            ({"num": 7, "label": "Riba Nord"}, box(40.00, 1.00, 40.02, 1.02)),
            ({"num": 12, "label": "Riba Sud"}, box(40.00, 1.02, 40.02, 1.04)),
        ],
    )
    (tmp_path / "data").mkdir()
    write_geojson(
        tmp_path / "data" / "barris.geojson",
        [
            ({"id": "a", "nom": "el Moll", "dist": 7}, box(40.00, 1.00, 40.01, 1.02)),
            ({"id": "b", "nom": "la Plaça", "dist": 7}, box(40.01, 1.00, 40.02, 1.02)),
            ({"id": "c", "nom": "el Pont", "dist": 12}, box(40.00, 1.02, 40.02, 1.04)),
        ],
    )
    return tmp_path


def write_config(directory: Path, text: str) -> Path:
    path = directory / "city.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_codes_from_a_property_are_zero_padded_and_paths_are_relative_to_the_file(
    town: Path,
) -> None:
    city = City.from_config(
        write_config(
            town,
            """
            name = "Riba"
            [districts]
            geojson = "districts.geojson"
            code_property = "num"
            name_property = "label"
            """,
        )
    )
    assert [(d.code, d.name) for d in city.districts.values()] == [
        ("07", "Riba Nord"),
        ("12", "Riba Sud"),
    ]
    assert district_name(city.locate(40.01, 1.01)) == "Riba Nord"
    assert district_name(city.locate(40.01, 1.03)) == "Riba Sud"
    assert city.bbox == BoundingBox(40.0, 1.0, 40.02, 1.04)
    assert city.locate(40.5, 1.5) is None


def test_a_city_with_barris_places_points_and_names_by_barri(town: Path) -> None:
    city = City.from_config(
        write_config(
            town,
            """
            name = "Riba"
            not_places = ["el moll de l'os"]
            [districts]
            geojson = "districts.geojson"
            code_property = "num"
            name_property = "label"
            aliases = { "12" = ["la Riba de baix"] }
            [barris]
            geojson = "data/barris.geojson"
            code_property = "id"
            name_property = "nom"
            district_property = "dist"
            code_width = 1
            names = { "b" = "la Plaça Major" }
            ambiguous = ["c"]
            aliases = { "c" = ["barri del Pont"] }
            """,
        )
    )
    assert city.barris["b"] == Barri("b", "la Plaça Major", "07", 40.015, 1.01)
    location = city.locate(40.015, 1.005)
    assert location is not None and location.barri == city.barri("b")
    location = city.locate(40.005, 1.03)
    assert location is not None and location.barri == city.barri("c")
    assert location.district == District("12", "Riba Sud", 40.01, 1.03)
    assert district_name(city.find_in_text("Brutícia a la Riba de baix")) == "Riba Sud"
    moll = city.find_in_text("Tot el Moll està brut")
    assert moll is not None and moll.barri == city.barri("a")
    renamed = city.find_in_text("Soroll a la Plaça Major")
    assert renamed is not None and renamed.barri == city.barri("b")
    assert city.find_in_text("el moll de l'os") is None
    assert city.find_in_text("Obres al pont") is None
    pont = city.find_in_text("Obres al barri del Pont")
    assert pont is not None and pont.barri == city.barri("c")


def test_codes_by_feature_order(town: Path) -> None:
    city = City.from_config(
        write_config(
            town,
            'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\nname_property = "label"\n',
        )
    )
    assert list(city.districts) == ["01", "02"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("name = ", r"city\.toml: not readable TOML"),
        ('name = "Riba"', r"city\.toml: districts: Field required"),
        (
            'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\nname_propety = "label"\n',
            r"districts\.name_property: Field required; districts\.name_propety: Extra inputs",
        ),
        (
            'name = "Riba"\n[districts]\ngeojson = "nowhere.geojson"\nname_property = "label"\n',
            r"nowhere\.geojson: file not found",
        ),
        (
            'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\nname_property = "nom"\n',
            r"districts\.geojson: feature 01 has no 'nom' property",
        ),
        (
            'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\nname_property = "label"\n'
            'aliases = { "03" = ["Riba Est"] }\n',
            r"city\.toml: districts names, aliases or ambiguous refer to codes \['03'\]",
        ),
        (
            'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\nname_property = "label"\n'
            'code_property = "num"\n[barris]\ngeojson = "data/barris.geojson"\n'
            'code_property = "id"\nname_property = "nom"\ndistrict_property = "id"\n',
            r"barris\.geojson: barri a is in district 'a', which districts\.geojson does not have",
        ),
    ],
)
def test_a_mistake_in_a_config_names_the_file_and_the_key(
    town: Path, config: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        City.from_config(write_config(town, config))


# --- which city Plaza serves ------------------------------------------------------------------


def test_settings_choose_the_city(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLAZA_CITY_DATA_DIR", str(SHARED_DATA / "barcelona"))
    monkeypatch.delenv("PLAZA_CITY_CONFIG", raising=False)
    settings = load(PlazaSettings)
    barcelona = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    assert barcelona.name == "Barcelona" and barcelona.has_polygons

    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(CITIES / "madrid.toml"))
    settings = load(PlazaSettings)
    madrid = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    assert madrid.name == "Madrid"

    broken = write_config(tmp_path, 'name = "Nowhere"')
    with pytest.raises(SettingsError, match=r"PLAZA_CITY_CONFIG: .*city\.toml: districts"):
        City.from_settings(city_config=broken, city_data_dir=None)


def test_a_missing_city_config_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAZA_CITY_CONFIG", "/nonexistent/city.toml")
    with pytest.raises(SettingsError, match=re.escape("PLAZA_CITY_CONFIG=/nonexistent/city.toml")):
        load(PlazaSettings)


def test_without_polygons_or_barris_the_nearest_district_centre_is_a_weak_guess() -> None:
    north, south = District("01", "Nord", 40.03, 1.0), District("02", "Sud", 40.0, 1.0)
    city = City("Riba", [north, south], [], BoundingBox(39.99, 0.99, 40.04, 1.01))
    assert city.locate(40.025, 1.0) == Location(north, None, "geo", 0.4)
    assert city.locate(41.0, 1.0) is None
    assert not city.has_polygons


def test_polygons_must_cover_the_city_s_districts() -> None:
    bbox = BoundingBox(40.0, 1.0, 40.02, 1.04)
    shapes = {"01": box(40.00, 1.00, 40.02, 1.02)}
    with pytest.raises(ValueError, match=r"polygons cover districts \['01'\], the city has"):
        City(
            "Riba",
            [District("01", "Nord", 40.01, 1.01), District("02", "Sud", 40.01, 1.03)],
            [],
            bbox,
            district_polygons=Polygons(shapes, bbox.metres()),
        )


def test_simplified_neighbours_place_a_point_in_their_overlap_or_gap_deterministically() -> None:
    """Outlines simplified independently (packaged Barcelona's) overlap or leave a gap of a few
    metres along a border: a point in the overlap goes to the first of the two (whatever the
    tree's order), in a gap to the nearer, both as surely as a point on a border (0.9), not as
    one inside a single area (1.0)."""
    metres = BoundingBox(40.0, 1.0, 40.02, 1.04).metres()
    west, east = box(40.00, 1.00, 40.02, 1.02005), box(40.00, 1.01995, 40.02, 1.04)  # 8.5 m
    for first, second in (("01", "02"), ("02", "01")):
        overlapping = Polygons({first: west, second: east}, metres)
        points = [(40.01, 1.01996), (40.01, 1.02004), (40.01, 1.01)]
        assert [overlapping.locate(*point) for point in points] == [
            (first, 0.9),
            (first, 0.9),
            (first, 1.0),
        ]
        assert overlapping.locate_many(points) == [overlapping.locate(*p) for p in points]
        touching = Polygons(
            {first: box(40.00, 1.00, 40.02, 1.02), second: box(40.00, 1.02, 40.02, 1.04)}, metres
        )
        assert touching.locate(40.01, 1.02) == (first, 0.9)  # on their border
    apart = Polygons(
        {"01": box(40.00, 1.00, 40.02, 1.01995), "02": box(40.00, 1.02005, 40.02, 1.04)}, metres
    )
    points = [(40.01, 1.01997), (40.01, 1.02003), (40.01, 1.03)]
    assert [apart.locate(*point) for point in points] == [("01", 0.9), ("02", 0.9), ("02", 1.0)]
    assert apart.locate_many(points) == [apart.locate(*point) for point in points]


# --- geometry a city file gets wrong: named by file and feature, never accepted silently -------


def _town_with(tmp_path: Path, geometry: dict[str, object]) -> Path:
    """A town whose second district has `geometry`; the first is a valid box."""
    write_geojson(
        tmp_path / "districts.geojson",
        [
            ({"num": 1, "label": "Riba Nord"}, box(40.00, 1.00, 40.02, 1.02)),
            ({"num": 2, "label": "Riba Sud"}, geometry),
        ],
    )
    return write_config(
        tmp_path,
        'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\n'
        'code_property = "num"\nname_property = "label"\n',
    )


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        (
            {"type": "Polygon", "coordinates": "nope"},
            r"feature #2 \(02 Riba Sud\): malformed geometry: could not convert",
        ),
        (
            {"type": "Polygon", "coordinates": [[[1.02, 40.0], [1.04, 40.0]]]},
            r"feature #2 \(02 Riba Sud\): malformed geometry: A linearring requires at least 4",
        ),
        (
            {
                "type": "Polygon",
                "coordinates": [
                    [[1.02, 40.0], [1.04, 40.02], [1.04, 40.0], [1.02, 40.02], [1.02, 40.0]]
                ],
            },
            r"feature #2 \(02 Riba Sud\): not a valid Polygon: Self-intersection\[1\.03 40\.01\]",
        ),
        (
            {"type": "Point", "coordinates": [1.03, 40.01]},
            r"feature #2 \(02 Riba Sud\): a Point, not a Polygon or MultiPolygon",
        ),
        (
            {"type": "LineString", "coordinates": [[1.02, 40.0], [1.04, 40.02]]},
            r"feature #2 \(02 Riba Sud\): a LineString, not a Polygon or MultiPolygon",
        ),
        ({"type": "Polygon", "coordinates": []}, r"feature #2 \(02 Riba Sud\): an empty Polygon"),
    ],
)
def test_a_district_that_is_no_valid_area_is_refused_naming_its_feature(
    tmp_path: Path, geometry: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=r"districts\.geojson: " + message):
        City.from_config(_town_with(tmp_path, geometry))


def test_a_barri_that_is_no_valid_area_is_refused_naming_its_feature(town: Path) -> None:
    write_geojson(
        town / "data" / "barris.geojson",
        [({"id": "a", "nom": "el Moll", "dist": 7}, {"type": "Point", "coordinates": [1.0, 40.0]})],
    )
    config = write_config(
        town,
        'name = "Riba"\n[districts]\ngeojson = "districts.geojson"\ncode_property = "num"\n'
        'name_property = "label"\n[barris]\ngeojson = "data/barris.geojson"\n'
        'code_property = "id"\nname_property = "nom"\ndistrict_property = "dist"\n',
    )
    with pytest.raises(ValueError, match=r"barris\.geojson: feature #1 \(a el Moll\): a Point"):
        City.from_config(config)


def swapped_box(
    min_lat: float, min_lon: float, max_lat: float, max_lon: float
) -> dict[str, object]:
    """box() written [lat, lon], as a hand-made file often is."""
    ring = [[min_lat, min_lon], [min_lat, max_lon], [max_lat, max_lon], [max_lat, min_lon]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def test_coordinates_that_are_no_degrees_say_what_they_look_like(tmp_path: Path) -> None:
    # A city east of 90 E written [lat, lon] has latitudes past 90.
    write_geojson(
        tmp_path / "districts.geojson",
        [({"label": "Chuo"}, swapped_box(35.68, 139.75, 35.70, 139.77))],
    )
    config = write_config(
        tmp_path,
        'name = "Chuo"\n[districts]\ngeojson = "districts.geojson"\nname_property = "label"\n',
    )
    with pytest.raises(
        ValueError,
        match=r"districts\.geojson: latitudes 139\.75\.\.139\.77, .*"
        r"GeoJSON puts longitude first, \[lon, lat\]; the file looks written",
    ):
        City.from_config(config)
    # A UTM export (metres) is no degrees at all.
    write_geojson(
        tmp_path / "districts.geojson",
        [({"label": "Jun"}, box(4_119_000, 447_000, 4_121_000, 449_000))],
    )
    with pytest.raises(ValueError, match=r"are not degrees: GeoJSON is WGS84 \[lon, lat\]"):
        City.from_config(config)


def test_the_town_hall_catches_a_swapped_file_that_stays_within_the_degrees(
    tmp_path: Path,
) -> None:
    """Jun at 37 N, 3 W written [lat, lon] is a plausible place at 3 S, 37 E: only a point known
    to be in the town tells."""
    town_hall = "town_hall = { lat = 40.01, lon = 1.01 }\n"
    write_geojson(
        tmp_path / "districts.geojson", [({"label": "Riba"}, swapped_box(40.0, 1.0, 40.02, 1.02))]
    )
    config = write_config(
        tmp_path,
        f'name = "Riba"\n{town_hall}[districts]\ngeojson = "districts.geojson"\n'
        'name_property = "label"\n',
    )
    with pytest.raises(
        ValueError,
        match=r"city\.toml: town_hall \(40\.01, 1\.01\) is in no "
        r"district of districts\.geojson .*: GeoJSON puts longitude first",
    ):
        City.from_config(config)
    write_geojson(
        tmp_path / "districts.geojson", [({"label": "Riba"}, box(41.0, 2.0, 41.02, 2.02))]
    )
    with pytest.raises(
        ValueError,
        match=r"town_hall \(40\.01, 1\.01\) is in no district .*"
        r"span 41\.0\.\.41\.02 N, 2\.0\.\.2\.02 E\): is town_hall \[lat, lon\]",
    ):
        City.from_config(config)
    write_geojson(
        tmp_path / "districts.geojson", [({"label": "Riba"}, box(40.0, 1.0, 40.02, 1.02))]
    )
    assert City.from_config(config).name == "Riba"


def test_start_up_logs_where_the_city_is(caplog: pytest.LogCaptureFixture) -> None:
    """A file in the wrong place shows at once in the log, before posts go to triage."""
    with caplog.at_level("INFO", logger="plaza.city"):
        City.from_settings(city_config=CITIES / "jun.toml", city_data_dir=None)
    assert "Jun: 2 districts, 0 barris, 37.215000..37.235000 N, -3.602000..-3.588000 E" in (
        caplog.text
    )


# --- the council: how the city is named in public --------------------------------------------

DISTRICTS = (
    '[districts]\ngeojson = "districts.geojson"\ncode_property = "num"\nname_property = "label"\n'
)


def test_a_city_files_council_follows_from_its_name_and_language(town: Path) -> None:
    english = City.from_config(write_config(town, f'name = "Riba"\n{DISTRICTS}')).council
    assert english == Council("Riba City Council", "en", "{name} District", "riba", None)
    assert english.team_of("Riba Nord") == "Riba Nord District"
    catalan = City.from_config(write_config(town, f'name = "Riba"\nlanguage = "ca"\n{DISTRICTS}'))
    assert catalan.council.agency == "Ajuntament de Riba"
    assert catalan.council.team_of("Eixample") == "Districte de l'Eixample"
    assert catalan.council.team_of("Riba Sud") == "Districte de Riba Sud"
    spanish = Council.of("L'Hospitalet de Llobregat", "es")
    assert spanish.agency == "Ayuntamiento de L'Hospitalet de Llobregat"
    assert spanish.team_of("Centre") == "Distrito de Centre"
    assert spanish.jurisdiction_id == "l-hospitalet-de-llobregat"
    assert Council.of("Åre", "sv") == Council("Åre", "sv", "{name}", "are")


def test_a_city_file_names_its_council_and_its_routing(town: Path) -> None:
    (town / "rules").mkdir()
    (town / "rules" / "routing.toml").write_text("", encoding="utf-8")
    council = City.from_config(
        write_config(
            town,
            'name = "Riba"\nlanguage = "es"\nagency = "Concello da Riba"\n'
            'district_team = "Equipo {name} ({of_name})"\njurisdiction_id = "riba.example.org"\n'
            f'routing = "rules/routing.toml"\n{DISTRICTS}',
        )
    ).council
    assert council.agency == "Concello da Riba" and council.language == "es"
    assert council.team_of("Riba Nord") == "Equipo Riba Nord (de Riba Nord)"
    assert council.jurisdiction_id == "riba.example.org"
    assert council.routing == town / "rules" / "routing.toml"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('district_team = "Distrito {nombre}"', r"district_team 'Distrito \{nombre\}' may hold "),
        ('language = "Spanish"', r"language: String should match pattern"),
        ('jurisdiction_id = "la riba"', r"jurisdiction_id: String should match pattern"),
        ('routing = "nowhere.toml"', r"routing: .*nowhere\.toml is not a file"),
        ("town_hall = { lat = 1.01, lon = 140.0, alt = 3 }", r"town_hall\.alt: Extra inputs"),
        ("town_hall = { lat = 140.0, lon = 1.01 }", r"town_hall\.lat: Input should be less"),
    ],
)
def test_a_mistake_in_the_council_names_the_file_and_the_key(
    town: Path, keys: str, message: str
) -> None:
    with pytest.raises(ValueError, match=r"city\.toml: " + message):
        City.from_config(write_config(town, f'name = "Riba"\n{keys}\n{DISTRICTS}'))


def test_barcelona_s_council_is_the_same_built_in_or_from_its_file() -> None:
    packaged = City.barcelona().council
    assert packaged == Council(
        "Ajuntament de Barcelona", "ca", "Districte {of_name}", "barcelona", PACKAGED_ROUTING
    )
    configured = City.from_config(CITIES / "barcelona.toml").council
    assert configured.routing == CITIES / "../../lib/plaza/src/plaza/config/routing.toml"
    assert (
        configured.routing.read_bytes()
        == (ROOT / "lib/plaza/src/plaza/config/routing.toml").read_bytes()
    )
    assert dataclasses.replace(configured, routing=PACKAGED_ROUTING) == packaged


def test_the_council_of_the_settings_reads_no_geojson(tmp_path: Path) -> None:
    """The notifier and the gateway's settings need the council alone: a city file whose GeoJSON
    is elsewhere still names it."""
    config = write_config(tmp_path, f'name = "Riba"\nlanguage = "ca"\n{DISTRICTS}')
    assert Council.from_settings(city_config=config).agency == "Ajuntament de Riba"
    assert Council.from_settings(city_config=None) == City.barcelona().council
    with pytest.raises(SettingsError, match=r"PLAZA_CITY_CONFIG: .*city\.toml: language"):
        Council.from_settings(
            city_config=write_config(tmp_path, f'name = "R"\nlanguage = "x"\n{DISTRICTS}')
        )
