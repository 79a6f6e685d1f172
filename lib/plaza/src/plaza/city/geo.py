"""Shapes of a city's areas (districts or barris): GeoJSON reading, projection, point lookups."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import shapely
import shapely.errors
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

__all__ = [
    "SNAP_METRES",
    "Metres",
    "Polygons",
    "bounds",
    "centre",
    "read_features",
    "read_outlines",
]

SNAP_METRES = 150.0
"""A point this close to an area but inside none (beach, port, a border) snaps to the nearest."""

_NEAR_BORDER = 0.9
"""The confidence of a point on an area's edge, or in the sliver where two simplified ones overlap:
less than inside one (1.0), the most a near miss gets (down to 0.6 at SNAP_METRES)."""

_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_AT_EQUATOR = 111_320.0


@dataclass(frozen=True, slots=True)
class Metres:
    """A local equirectangular projection around one latitude: good to well under 1% across a
    city, which is all a 150 m snapping distance needs."""

    per_deg_lon: float
    per_deg_lat: float = _M_PER_DEG_LAT

    @classmethod
    def at(cls, lat: float) -> Metres:
        return cls(per_deg_lon=_M_PER_DEG_LON_AT_EQUATOR * math.cos(math.radians(lat)))

    def project(self, geometry: object) -> object:
        scale = (self.per_deg_lon, self.per_deg_lat)
        return shapely.transform(geometry, lambda xy: xy * scale)

    def distance_sq(self, lat1: float, lon1: float, lat2: float, lon2: float) -> float:
        dy = (lat1 - lat2) * self.per_deg_lat
        dx = (lon1 - lon2) * self.per_deg_lon
        return dx * dx + dy * dy


class Polygons:
    """Area shapes in a metric projection, indexed (STRtree) for point lookups: a city's exact
    ones, or outlines simplified by a few metres, whose independently simplified neighbours
    leave slivers of gap and overlap along their borders. A point in a gap is a near miss of
    both (the nearest holds it, as a beach's is); one in an overlap, which the exact polygons
    place in either about as often (measured on Barcelona's 4 m outlines), goes to the first
    of them in `codes`, as sure as a near miss at 0 m."""

    def __init__(self, shapes: Mapping[str, object], metres: Metres) -> None:
        """shapes: area code -> GeoJSON geometry mapping (WGS84 lon/lat)."""
        self.codes: tuple[str, ...] = tuple(shapes)
        self._metres = metres
        try:
            geometries = [metres.project(shape(g)) for g in shapes.values()]
        except (TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as e:
            raise ValueError(f"malformed geometry: {e}") from e
        self._tree = STRtree(geometries)
        self.metres = metres
        # in metres, as `metres` projects them: what the console's map draws (plaza.city.outlines)
        self.shapes: Mapping[str, BaseGeometry] = dict(zip(self.codes, geometries, strict=True))

    def locate(self, lat: float, lon: float) -> tuple[str, float] | None:
        """(area code, confidence) for a WGS84 point, or None when it is not in or near any."""
        # Projected as project() does, without shapely.transform's call back into Python.
        point = Point(lon * self._metres.per_deg_lon, lat * self._metres.per_deg_lat)
        inside = self._tree.query(point, predicate="within")
        if len(inside) == 1:
            return self.codes[int(inside[0])], 1.0
        if len(inside):
            return self.codes[int(inside.min())], _NEAR_BORDER
        return self._snap(point)

    def locate_many(self, points: Sequence[tuple[float, float]]) -> list[tuple[str, float] | None]:
        """locate() of many (lat, lon) points, with the same answers: the points inside an
        area are found in one query of the tree (a third of the time of one query a point)."""
        if not points:
            return []
        lats, lons = np.array(points, dtype=np.float64).T
        projected = shapely.points(lons * self._metres.per_deg_lon, lats * self._metres.per_deg_lat)
        within: list[list[int]] = [[] for _ in points]
        # (point, area) pairs: a point lies within one area, or two where simplified ones overlap
        for i, area in zip(*self._tree.query(projected, predicate="within").tolist(), strict=True):
            within[i].append(area)
        found: list[tuple[str, float] | None] = []
        for point, areas in zip(projected, within, strict=True):
            if len(areas) == 1:
                found.append((self.codes[areas[0]], 1.0))
            elif areas:
                found.append((self.codes[min(areas)], _NEAR_BORDER))
            else:
                found.append(self._snap(point))
        return found

    def _snap(self, point: Point) -> tuple[str, float] | None:
        """The nearest area within SNAP_METRES of a projected point outside them all, the first
        in `codes` of those as near (a point on a border, or midway across a gap)."""
        nearest, distances = self._tree.query_nearest(
            point, max_distance=SNAP_METRES, return_distance=True
        )
        if not len(nearest):
            return None
        distance = float(distances[0])
        return self.codes[int(nearest.min())], round(_NEAR_BORDER - 0.3 * distance / SNAP_METRES, 2)


def read_outlines(
    file: Traversable,
    metres: Metres,
    *,
    city: str,
    districts: Collection[str],
    barris: Collection[str],
) -> tuple[Polygons, Polygons]:
    """The districts' and barris' outlines of a file scripts/derive_outlines.py wrote
    ({"districts": {code: GeoJSON geometry}, "barris": {...}}, WGS84), projected by `metres`;
    ValueError naming the file when it is unreadable or its codes are not the city's (a file
    older than the city's configuration: re-run the script)."""
    try:
        written = json.loads(file.read_text(encoding="utf-8"))
        outlines = Polygons(written["districts"], metres), Polygons(written["barris"], metres)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file.name}: not readable JSON: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"{file.name}: not outlines by district and barri code "
            f"({type(e).__name__}: {e}); re-run scripts/derive_outlines.py"
        ) from e
    for kind, drawn, codes in (
        ("districts", outlines[0], districts),
        ("barris", outlines[1], barris),
    ):
        if set(drawn.codes) != set(codes):
            raise ValueError(
                f"{file.name}: outlines of {kind} {sorted(drawn.codes)}, {city} has "
                f"{sorted(codes)}; re-run scripts/derive_outlines.py"
            )
    return outlines


def read_features(path: Path) -> list[tuple[Mapping[str, object], Mapping[str, object]]]:
    """(properties, geometry) of every feature of a GeoJSON FeatureCollection, in file order."""
    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ValueError(f"{path}: file not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable GeoJSON: {e}") from e
    features = collection.get("features") if isinstance(collection, dict) else None
    if not isinstance(features, list) or not features:
        raise ValueError(f"{path}: not a GeoJSON FeatureCollection with features")
    read: list[tuple[Mapping[str, object], Mapping[str, object]]] = []
    for feature in features:
        props = feature.get("properties") if isinstance(feature, dict) else None
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or not isinstance(geometry, dict):
            raise ValueError(f"{path}: a feature lacks properties or geometry")
        read.append((props, geometry))
    return read


def centre(geometry: Mapping[str, object]) -> tuple[float, float]:
    """(lat, lon) of an area's centre: its centroid when that lies inside it, else shapely's
    representative point; rounded to 6 decimals (about 10 cm), as scripts/derive_city.py does."""
    area = shape(geometry)
    point = area.centroid if area.contains(area.centroid) else area.representative_point()
    return round(point.y, 6), round(point.x, 6)


def bounds(geometries: list[Mapping[str, object]]) -> tuple[float, float, float, float]:
    """(min_lat, min_lon, max_lat, max_lon) around all the geometries, rounded to 6 decimals."""
    min_lon, min_lat, max_lon, max_lat = (
        round(float(b), 6) for b in shapely.total_bounds([shape(g) for g in geometries])
    )
    return min_lat, min_lon, max_lat, max_lon
