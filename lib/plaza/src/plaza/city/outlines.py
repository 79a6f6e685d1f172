"""The city's areas drawn for a map (the console's): simplified outlines as SVG paths, in metres.

A district's map is its outline and its barris' with their names; the city's, its districts'.
Coordinates are whole metres east and south of the map's north-west corner, so that an SVG's
viewBox is the map's size in metres and a point is placed by the `projection` given with it
(x = lon * x_per_lon - x0, y = y0 - lat * y_per_lat). The outlines are simplified to a few
metres (a phone's pixel is 10 m of a district): Barcelona's 73 barris hold 16,700 points, a
district's map a few hundred. Packaged Barcelona's polygons are the outlines packaged with it
(barcelona_outlines.json, scripts/derive_outlines.py: read_outlines), already simplified to 4 m;
a city placed by centres draws its areas' names where their centres are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from plaza.city import City, geo

__all__ = ["CITY_TOLERANCE_M", "DISTRICT_TOLERANCE_M", "Outlines", "read_outlines"]

DISTRICT_TOLERANCE_M = 4.0
"""How far a district map's outlines may stray from the exact ones: under half a pixel on a phone."""
CITY_TOLERANCE_M = 20.0
"""The same for the whole city's map (ten districts across a phone's width)."""
_MARGIN_M = 150.0
_NO_OUTLINE_MARGIN_M = 600.0  # around the centres when there are no outlines: a barri's reach


def _ring(coords: Iterable[tuple[float, ...]], x0: float, y0: float) -> str:
    points = [f"{round(x - x0)} {round(y0 - y)}" for x, y, *_ in coords]
    # the ring's last point repeats its first: Z closes it
    return "M" + " ".join(points[:-1]) + "Z"


def svg_path(area: BaseGeometry, x0: float, y0: float) -> str:
    """An area's (Multi)Polygon, in metres, as an SVG path's `d` (holes as rings of their own,
    drawn with fill-rule evenodd)."""
    polygons = area.geoms if isinstance(area, MultiPolygon) else [area]
    rings = []
    for polygon in polygons:
        if not isinstance(polygon, Polygon) or polygon.is_empty:
            continue
        rings.append(_ring(polygon.exterior.coords, x0, y0))
        rings.extend(_ring(hole.coords, x0, y0) for hole in polygon.interiors)
    return "".join(rings)


def read_outlines(
    file: Traversable, city: City
) -> tuple[Mapping[str, BaseGeometry], Mapping[str, BaseGeometry]]:
    """The districts' and barris' outlines of a file scripts/derive_outlines.py wrote, in metres
    as `city.metres` projects (plaza.city.geo.read_outlines: ValueError naming the file)."""
    districts, barris = geo.read_outlines(
        file, city.metres, city=city.name, districts=city.districts, barris=city.barris
    )
    return districts.shapes, barris.shapes


@dataclass(slots=True)
class Outlines:
    """A city's maps, each made once when first asked for (a few milliseconds) and kept."""

    city: City
    _districts: Mapping[str, BaseGeometry] = field(init=False)
    _barris: Mapping[str, BaseGeometry] = field(init=False)
    _maps: dict[str | None, dict[str, object]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._districts, self._barris = self.city.outlines()

    def map(self, district: str | None) -> dict[str, object]:
        """The map of a district (its code), or of the whole city (None); KeyError for a
        district the city does not have."""
        if district is not None and district not in self.city.districts:
            raise KeyError(district)
        if district not in self._maps:
            self._maps[district] = self._draw(district)
        return self._maps[district]

    def _draw(self, district: str | None) -> dict[str, object]:
        city, metres = self.city, self.city.metres
        # (kind, code, name, lat, lon, outline) of each area drawn, the named ones labelled
        areas: list[tuple[str, str, str, float, float, BaseGeometry | None, bool]] = []
        if district is None:
            tolerance = CITY_TOLERANCE_M
            for d in city.districts.values():
                areas.append(
                    ("district", d.code, d.name, d.lat, d.lon, self._districts.get(d.code), True)
                )
        else:
            tolerance = DISTRICT_TOLERANCE_M
            own = city.districts[district]
            barris = [b for b in city.barris.values() if b.district_code == district]
            # its name is the map's title: on the map, its barris' (a town's district alone)
            areas.append(
                (
                    "district",
                    own.code,
                    own.name,
                    own.lat,
                    own.lon,
                    self._districts.get(district),
                    not barris,
                )
            )
            for b in barris:
                areas.append(
                    ("barri", b.code, b.name, b.lat, b.lon, self._barris.get(b.code), True)
                )
        outlines = [area for *_, area, _ in areas if area is not None]
        if outlines:
            west, south, east, north = (float(v) for v in shapely.total_bounds(outlines))
            margin = _MARGIN_M
        else:  # a city placed by centres: around them (the whole city: its bounding box)
            box = city.bbox
            lats = [lat for _, _, _, lat, *_ in areas] + (
                [box.min_lat, box.max_lat] if district is None else []
            )
            lons = [lon for _, _, _, _, lon, *_ in areas] + (
                [box.min_lon, box.max_lon] if district is None else []
            )
            west, east = min(lons) * metres.per_deg_lon, max(lons) * metres.per_deg_lon
            south, north = min(lats) * metres.per_deg_lat, max(lats) * metres.per_deg_lat
            margin = _NO_OUTLINE_MARGIN_M
        x0, y0 = west - margin, north + margin
        return {
            "district": district,
            "outlines": bool(outlines),
            "projection": {
                "x_per_lon": metres.per_deg_lon,
                "y_per_lat": metres.per_deg_lat,
                "x0": x0,
                "y0": y0,
            },
            "width": round(east + margin - x0),
            "height": round(y0 - (south - margin)),
            "areas": [
                {
                    "kind": kind,
                    "code": code,
                    "name": name,
                    "path": svg_path(area.simplify(tolerance), x0, y0)
                    if area is not None
                    else None,
                    "label": [
                        round(lon * metres.per_deg_lon - x0),
                        round(y0 - lat * metres.per_deg_lat),
                    ]
                    if labelled
                    else None,
                }
                for kind, code, name, lat, lon, area, labelled in areas
            ],
        }
