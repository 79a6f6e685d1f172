"""Derives the packaged Barcelona outlines the console's map draws from the CartoBCN polygons.

Usage: python scripts/derive_outlines.py [DATA_DIR] [OUT_FILE]
DATA_DIR defaults to ../shared/data/barcelona (relative to the repository root) and OUT_FILE to
lib/plaza/src/plaza/city/barcelona_outlines.json. Each district's and barri's polygon is
simplified to plaza.city.outlines.DISTRICT_TOLERANCE_M (in metres, as the packaged city projects
them) and written as a GeoJSON geometry in WGS84 to 6 decimals (10 cm), one area a line: about
5,800 points, where the exact polygons hold 21,000. For drawing only: a post is placed by the
exact polygons (PLAZA_CITY_DATA_DIR) or by the packaged centres, never by these.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import shapely
from plaza.city.geo import Metres, read_features
from plaza.city.outlines import DISTRICT_TOLERANCE_M
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "barcelona"
DEFAULT_OUT = ROOT / "lib" / "plaza" / "src" / "plaza" / "city" / "barcelona_outlines.json"
SOURCE = (
    "Ajuntament de Barcelona / CartoBCN (CC-BY): districtes_geo.json, barris_geo.json, "
    f"simplified to {DISTRICT_TOLERANCE_M:g} m"
)


def _areas(path: Path, code_property: str) -> dict[str, Mapping[str, object]]:
    """Each feature's geometry by its code; SystemExit naming the file of a feature without
    a code, a code twice or a geometry that is no (Multi)Polygon."""
    try:
        features = read_features(path)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    areas: dict[str, Mapping[str, object]] = {}
    for props, geometry in features:
        if code_property not in props:
            raise SystemExit(f"{path}: a feature has no {code_property} property")
        code = str(props[code_property])
        if code in areas:
            raise SystemExit(f"{path}: {code_property} {code} twice")
        if geometry.get("type") not in ("Polygon", "MultiPolygon"):
            raise SystemExit(f"{path}: {code_property} {code} is a {geometry.get('type')}")
        areas[code] = geometry
    return dict(sorted(areas.items()))


def simplified(geometry: Mapping[str, object], metres: Metres) -> dict[str, object]:
    """An area's GeoJSON geometry simplified to DISTRICT_TOLERANCE_M in metres (its topology
    kept: no ring crosses itself, no part vanishes), back in WGS84 to 6 decimals."""
    area = metres.project(shape(geometry))
    assert isinstance(area, BaseGeometry)
    drawn = area.simplify(DISTRICT_TOLERANCE_M)
    scale = (1 / metres.per_deg_lon, 1 / metres.per_deg_lat)
    degrees = shapely.set_precision(shapely.transform(drawn, lambda xy: xy * scale), 1e-6)
    return dict(mapping(degrees))


def derive(data_dir: Path) -> dict[str, object]:
    """The simplified outlines of the districts and barris in data_dir, projected as the
    packaged city (scripts/derive_city.py) is: around the middle latitude of the districts."""
    districts = _areas(data_dir / "districtes_geo.json", "C_Distri")
    barris = _areas(data_dir / "barris_geo.json", "C_Barri")
    _, min_lat, _, max_lat = shapely.total_bounds([shape(g) for g in districts.values()])
    metres = Metres.at((round(float(min_lat), 6) + round(float(max_lat), 6)) / 2)
    return {
        "source": SOURCE,
        "districts": {code: simplified(g, metres) for code, g in districts.items()},
        "barris": {code: simplified(g, metres) for code, g in barris.items()},
    }


def _rounded(geometry: object) -> object:
    """Coordinates as written: 6 decimals, without set_precision's float noise (2.1770100000000001)."""
    if isinstance(geometry, dict):
        return {k: _rounded(v) for k, v in geometry.items()}
    if isinstance(geometry, list | tuple):
        return [_rounded(v) for v in geometry]
    if isinstance(geometry, float):
        return round(geometry, 6)
    return geometry


def render(outlines: dict[str, object]) -> str:
    """Compact JSON, one area a line, so that new polygons read as a diff of the areas they move."""
    parts = ['{"source": ' + json.dumps(outlines["source"], ensure_ascii=False)]
    for kind in ("districts", "barris"):
        areas = outlines[kind]
        assert isinstance(areas, dict)
        lines = [
            f"{json.dumps(code)}: {json.dumps(_rounded(g), separators=(',', ':'))}"
            for code, g in areas.items()
        ]
        parts.append(f'"{kind}": {{\n  ' + ",\n  ".join(lines) + "\n }")
    return ",\n ".join(parts) + "\n}\n"


def main(argv: list[str]) -> Path:
    data_dir = Path(argv[0]) if argv else DEFAULT_DATA_DIR
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.write_text(render(derive(data_dir)), encoding="utf-8")
    return out


if __name__ == "__main__":
    written = main(sys.argv[1:])
    print(f"wrote {written}")
