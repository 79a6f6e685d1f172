"""A city described by a TOML file: its districts (and barris) from GeoJSON, and what people call them.

A minimal file (deploy/cities/madrid.toml is a full example)::

    name = "Madrid"

    [districts]
    geojson = "madrid-districts.geojson"   # relative to this file, or absolute
    name_property = "name"
    # code_property = "CODDIST"            # without it, codes are "01", "02", ... in file order

    [barris]                               # optional; without it, points are placed by district
    geojson = "barrios.geojson"
    code_property = "CODBAR"
    name_property = "NOMBRE"
    district_property = "CODDIS"           # holds the district's code

Top-level keys say how the city's council is named in public (plaza.city.Council; each has a
default from `name` and `language`)::

    language = "es"                        # replies to posts in other languages; default "en"
    agency = "Ayuntamiento de Jun"         # the agency of a request no district holds yet
    district_team = "Distrito {of_name}"   # a district's team; {name}, {of_name} ("de Jun")
    jurisdiction_id = "jun"                # Open311's; default: the name as a slug
    routing = "jun-routing.toml"           # the city's routing rules; without it, none
    time_zone = "Europe/Madrid"            # the clock replies give due times in (IANA)
    town_hall = { lat = 37.2206, lon = -3.5946 }  # a point in the city, checked at start

Each layer may also have `code_width` (numeric codes are zero-padded to it, default 2),
`names` (code -> the name to show, where the GeoJSON's is wrong or unaccented), `aliases`
(code -> other names people write: short forms, other languages, landmarks) and `ambiguous`
(codes whose official name is an everyday word, matched in text only through their aliases).
Top level: `not_places` (phrases that contain a place name but do not name the place),
`packaged_names = "barcelona"` (Plaza's own list of Barcelona's names, see plaza.city.names) and
`streets = "barcelona"` (Barcelona's packaged street register, see plaza.city.streets: a post's
text naming a street and number gives its request that address; without it, none is looked for).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import shapely.errors
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from plaza.city import (
    Barri,
    BoundingBox,
    City,
    Council,
    District,
    PlaceNames,
    barcelona_place_names,
)
from plaza.city.geo import Metres, Polygons, bounds, centre, read_features
from plaza.city.streets import barcelona_register

__all__ = ["load_city_config", "load_council"]


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    geojson: Path
    name_property: str = Field(min_length=1)
    code_property: str | None = Field(default=None, min_length=1)
    code_width: int = Field(default=2, ge=1, le=8)
    names: dict[str, str] = Field(default_factory=dict)
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    ambiguous: list[str] = Field(default_factory=list)

    def code(self, value: object) -> str:
        """A code as Plaza writes it: numeric codes zero-padded ("1" and 1 become "01")."""
        text = str(value).strip()
        return text.zfill(self.code_width) if text.isdigit() else text


class _Barris(_Layer):
    district_property: str = Field(min_length=1)


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class _CityFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    districts: _Layer
    barris: _Barris | None = None
    not_places: list[str] = Field(default_factory=list)
    packaged_names: Literal["barcelona"] | None = None
    streets: Literal["barcelona"] | None = None
    language: str = Field(default="en", pattern=r"^[a-z]{2,3}$")
    agency: str | None = Field(default=None, min_length=1)
    district_team: str | None = Field(default=None, min_length=1)
    jurisdiction_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    routing: Path | None = None
    time_zone: str | None = Field(default=None, min_length=1)
    town_hall: _Point | None = None


_PACKAGED_NAMES = {"barcelona": barcelona_place_names}
_STREETS = {"barcelona": barcelona_register}


def load_council(path: Path) -> Council:
    """The council a city file names (its top-level keys), without reading its GeoJSON."""
    return _council(path, _read(path))


def load_city_config(path: Path) -> City:
    """The City a TOML city file describes. A mistake raises ValueError naming the file and key."""
    config = _read(path)
    council = _council(path, config)
    base = path.resolve().parent
    districts_path = base / config.districts.geojson
    district_features = read_features(districts_path)
    district_shapes = _shapes(districts_path, config.districts, district_features)
    _check_codes(path, "districts", config.districts, district_shapes)
    districts = [
        District(code, _name(districts_path, config.districts, code, props), *centre(geometry))
        for code, (props, geometry) in sorted(district_shapes.items())
    ]
    min_lat, min_lon, max_lat, max_lon = bounds([g for _, g in district_shapes.values()])
    bbox = BoundingBox(min_lat, min_lon, max_lat, max_lon)
    _check_degrees(districts_path, bbox)
    metres = bbox.metres()

    barris: list[Barri] = []
    barri_polygons = district_polygons = None
    if config.barris is None:
        district_polygons = _polygons(districts_path, district_shapes, metres)
    else:
        layer = config.barris
        barris_path = base / layer.geojson
        barri_shapes = _shapes(barris_path, layer, read_features(barris_path))
        _check_codes(path, "barris", layer, barri_shapes)
        for code, (props, geometry) in sorted(barri_shapes.items()):
            district_code = config.districts.code(
                _property(barris_path, layer.district_property, code, props)
            )
            if district_code not in district_shapes:
                raise ValueError(
                    f"{barris_path}: barri {code} is in district {district_code!r}, which "
                    f"{districts_path.name} does not have"
                )
            barris.append(
                Barri(
                    code, _name(barris_path, layer, code, props), district_code, *centre(geometry)
                )
            )
        barri_polygons = _polygons(barris_path, barri_shapes, metres)

    city = City(
        config.name,
        districts,
        barris,
        bbox,
        place_names=_place_names(config),
        barri_polygons=barri_polygons,
        district_polygons=district_polygons,
        council=council,
        streets=_STREETS[config.streets]() if config.streets else None,
    )
    if config.town_hall is not None:
        _check_town_hall(path, districts_path, city, config.town_hall)
    return city


def _council(path: Path, config: _CityFile) -> Council:
    routing = None
    if config.routing is not None:
        routing = path.resolve().parent / config.routing
        if not routing.is_file():
            raise ValueError(f"{path}: routing: {routing} is not a file")
    try:
        return Council.of(
            config.name,
            config.language,
            agency=config.agency,
            district_team=config.district_team,
            jurisdiction_id=config.jurisdiction_id,
            routing=routing,
            time_zone=config.time_zone,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


_SWAPPED = "GeoJSON puts longitude first, [lon, lat]; the file looks written [lat, lon]"


def _check_degrees(path: Path, bbox: BoundingBox) -> None:
    """Coordinates must be degrees (GeoJSON is WGS84): a latitude beyond ±90 is a file written
    [lat, lon], or one in metres (a UTM export), which would place no post at all."""
    lat = max(abs(bbox.min_lat), abs(bbox.max_lat))
    lon = max(abs(bbox.min_lon), abs(bbox.max_lon))
    if lat <= 90 and lon <= 180:
        return
    span = f"latitudes {bbox.min_lat}..{bbox.max_lat}, longitudes {bbox.min_lon}..{bbox.max_lon}"
    if lat <= 180 and lon <= 90:
        raise ValueError(f"{path}: {span}: {_SWAPPED}")
    raise ValueError(
        f"{path}: {span} are not degrees: GeoJSON is WGS84 [lon, lat] (reproject the file to "
        "EPSG:4326, e.g. ogr2ogr -t_srs EPSG:4326)"
    )


def _check_town_hall(path: Path, districts_path: Path, city: City, point: _Point) -> None:
    """The town hall must fall in a district: a swapped file that stays within ±90 (Jun at
    37 N, 3 W becomes a place at 3 S, 37 E) is caught here, not by every post in triage."""
    if city.locate(point.lat, point.lon) is not None:
        return
    box = city.bbox
    where = (
        f"{path}: town_hall ({point.lat}, {point.lon}) is in no district of {districts_path.name} "
        f"(its districts span {box.min_lat}..{box.max_lat} N, {box.min_lon}..{box.max_lon} E)"
    )
    if city.locate(point.lon, point.lat) is not None:
        raise ValueError(f"{where}: {_SWAPPED}")
    raise ValueError(f"{where}: is town_hall [lat, lon] and the GeoJSON the city's?")


def _read(path: Path) -> _CityFile:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: city configuration file not found") from e
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not readable TOML: {e}") from e
    try:
        return _CityFile.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"{path}: {problems}") from None


Feature = tuple[Mapping[str, object], Mapping[str, object]]


def _shapes(path: Path, layer: _Layer, features: Sequence[Feature]) -> dict[str, Feature]:
    """Features by code: the code property's value, or the feature's position (from 1). Each
    geometry must be a valid (Multi)Polygon: an area Plaza can place a point in."""
    by_code: dict[str, Feature] = {}
    for number, (props, geometry) in enumerate(features, start=1):
        code = (
            layer.code(number)
            if layer.code_property is None
            else layer.code(_property(path, layer.code_property, f"#{number}", props))
        )
        if code in by_code:
            raise ValueError(f"{path}: two features have the code {code!r}")
        _check_area(path, number, code, props.get(layer.name_property), geometry)
        by_code[code] = (props, geometry)
    return by_code


def _check_area(
    path: Path, number: int, code: str, name: object, geometry: Mapping[str, object]
) -> None:
    feature = f"{path}: feature #{number} ({code}{f' {name}' if name else ''})"
    try:
        area: BaseGeometry = shape(geometry)
    except (TypeError, ValueError, AttributeError, KeyError, shapely.errors.ShapelyError) as e:
        raise ValueError(f"{feature}: malformed geometry: {e}") from None
    if area.geom_type not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"{feature}: a {area.geom_type}, not a Polygon or MultiPolygon")
    if area.is_empty:
        raise ValueError(f"{feature}: an empty {area.geom_type}")
    if not area.is_valid:
        raise ValueError(f"{feature}: not a valid {area.geom_type}: {explain_validity(area)}")


def _property(path: Path, key: str, code: str, props: Mapping[str, object]) -> object:
    value = props.get(key)
    if value is None or not str(value).strip():
        raise ValueError(f"{path}: feature {code} has no {key!r} property")
    return value


def _name(path: Path, layer: _Layer, code: str, props: Mapping[str, object]) -> str:
    if code in layer.names:
        return layer.names[code]
    return str(_property(path, layer.name_property, code, props)).strip()


def _polygons(path: Path, shapes: Mapping[str, Feature], metres: Metres) -> Polygons:
    try:
        return Polygons({code: geometry for code, (_, geometry) in shapes.items()}, metres)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _check_codes(path: Path, key: str, layer: _Layer, known: Mapping[str, object]) -> None:
    named = set(layer.names) | set(layer.aliases) | set(layer.ambiguous)
    unknown = sorted(named - set(known))
    if unknown:
        raise ValueError(
            f"{path}: {key} names, aliases or ambiguous refer to codes {unknown} that the "
            f"GeoJSON does not have (it has {sorted(known)})"
        )


def _place_names(config: _CityFile) -> PlaceNames:
    packaged = _PACKAGED_NAMES[config.packaged_names]() if config.packaged_names else PlaceNames()
    barris = config.barris
    return PlaceNames(
        district_aliases=_merge(packaged.district_aliases, config.districts.aliases),
        barri_aliases=_merge(packaged.barri_aliases, barris.aliases if barris else {}),
        landmarks=packaged.landmarks,
        proper_nouns=packaged.proper_nouns,
        not_places=(*packaged.not_places, *config.not_places),
        ambiguous_official_barris=packaged.ambiguous_official_barris
        | frozenset(barris.ambiguous if barris else ()),
        ambiguous_official_districts=packaged.ambiguous_official_districts
        | frozenset(config.districts.ambiguous),
    )


def _merge(
    first: Mapping[str, tuple[str, ...]], second: Mapping[str, list[str]]
) -> dict[str, tuple[str, ...]]:
    merged = {code: tuple(names) for code, names in first.items()}
    for code, names in second.items():
        merged[code] = (*merged.get(code, ()), *names)
    return merged
