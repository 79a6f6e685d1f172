"""Derives the packaged Barcelona configuration (names, centroids, bbox) from the CartoBCN polygons.

Usage: python scripts/derive_city.py [DATA_DIR] [OUT_FILE]
DATA_DIR defaults to ../shared/data/barcelona (relative to the repository root) and OUT_FILE to
lib/plaza/src/plaza/city/barcelona.json. Polygons are not copied: only what Plaza needs offline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shapely.geometry import shape

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "barcelona"
DEFAULT_OUT = ROOT / "lib" / "plaza" / "src" / "plaza" / "city" / "barcelona.json"
SOURCE = "Ajuntament de Barcelona / CartoBCN (CC-BY): districtes_geo.json, barris_geo.json"


def _features(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        features: list[dict[str, object]] = json.load(f)["features"]
    return features


def _centre(geometry: object) -> dict[str, float]:
    """The centroid when it lies inside the shape, else shapely's representative point."""
    shp = shape(geometry)
    point = shp.centroid if shp.contains(shp.centroid) else shp.representative_point()
    return {"lat": round(point.y, 6), "lon": round(point.x, 6)}


def derive(data_dir: Path) -> dict[str, object]:
    """Builds the city configuration from the district and barri polygons in data_dir."""
    districts = []
    bounds = [180.0, 90.0, -180.0, -90.0]
    for feature in _features(data_dir / "districtes_geo.json"):
        props = feature["properties"]
        assert isinstance(props, dict)
        geometry = feature["geometry"]
        minx, miny, maxx, maxy = shape(geometry).bounds
        bounds = [
            min(bounds[0], minx),
            min(bounds[1], miny),
            max(bounds[2], maxx),
            max(bounds[3], maxy),
        ]
        districts.append(
            {"code": props["C_Distri"], "name": props["N_Distri"], **_centre(geometry)}
        )

    district_names = {d["code"]: d["name"] for d in districts}
    barris = []
    for feature in _features(data_dir / "barris_geo.json"):
        props = feature["properties"]
        assert isinstance(props, dict)
        if district_names.get(props["C_Distri"]) != props["N_Distri"]:
            raise SystemExit(
                f"barri {props['C_Barri']} names an unknown district {props['C_Distri']}"
            )
        barris.append(
            {
                "code": props["C_Barri"],
                "name": props["N_Barri"],
                "district_code": props["C_Distri"],
                **_centre(feature["geometry"]),
            }
        )

    return {
        "name": "Barcelona",
        "source": SOURCE,
        "bbox": {
            "min_lat": round(bounds[1], 6),
            "min_lon": round(bounds[0], 6),
            "max_lat": round(bounds[3], 6),
            "max_lon": round(bounds[2], 6),
        },
        "districts": sorted(districts, key=lambda d: str(d["code"])),
        "barris": sorted(barris, key=lambda b: str(b["code"])),
    }


def main(argv: list[str]) -> Path:
    data_dir = Path(argv[0]) if argv else DEFAULT_DATA_DIR
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    city = derive(data_dir)
    out.write_text(json.dumps(city, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    written = main(sys.argv[1:])
    print(f"wrote {written}")
