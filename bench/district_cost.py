"""The classifier's and the router's cost per post as the city has more districts.

The same posts are classified, then routed, in this process (batches of 250, as the services
take them) for cities of 10 to a few thousand districts over Barcelona's ground:

- Barcelona as the services run it by default (10 districts, 73 barris, its packaged outlines),
- Barcelona with its exact barri polygons (PLAZA_CITY_DATA_DIR),
- the 73 barris as 73 districts (a city file, as PLAZA_CITY_CONFIG would name),
- Barcelona cut into square districts of about 900 m and about 220 m (a city file of a
  generated GeoJSON; each barri's and district's name is an alias of the square holding its
  centre, so posts naming a place are still placed).

Each city routes on a fresh database. Besides posts/s, the share of posts placed in a district
shows that every city really places them (a city that placed nothing would be cheap)."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import shapely
import shapely.geometry
from plaza.city import City
from plaza.city.geo import read_features
from plaza.contracts import Envelope
from plaza.db import create_engine, session_factory
from plaza_classifier.classify import default_classifier
from plaza_classifier.handler import ClassifyPost
from plaza_router.handler import RoutePost
from plaza_router.settings import RouterSettings

from bench.pipeline import event_for
from bench.posts import generate

BATCH = 250
GRID_METRES = (900.0, 220.0, 100.0)


@dataclass(frozen=True)
class DistrictCost:
    city: str
    districts: int
    placed: float  # share of posts placed in a district
    classifier_posts_per_s: float
    router_posts_per_s: float


def cities(data_dir: Path, workdir: Path) -> list[tuple[str, Callable[[], City]]]:
    """(description, how to build it) of each city measured, smallest first."""
    barris = data_dir / "barris_geo.json"
    found: list[tuple[str, Callable[[], City]]] = [
        ("Barcelona, packaged outlines", City.barcelona),
        ("Barcelona, barri polygons", partial(City.barcelona, data_dir)),
        ("73 barris as districts", partial(City.from_config, _barris_city(barris, workdir))),
    ]
    for metres in GRID_METRES:
        path = _grid_city(data_dir, workdir, metres)
        found.append((f"squares of {metres:.0f} m", partial(City.from_config, path)))
    return found


def _barris_city(barris: Path, workdir: Path) -> Path:
    path = workdir / "barris-as-districts.toml"
    path.write_text(
        f'name = "Barcelona by barri"\n\n[districts]\ngeojson = "{barris}"\n'
        'name_property = "N_Barri"\n',
        encoding="utf-8",
    )
    return path


def _grid_city(data_dir: Path, workdir: Path, metres: float) -> Path:
    """A city file of Barcelona's ground cut into squares of about `metres` (those that touch
    it, clipped to it), named "Sector 0001" ..., each place name an alias of its square."""
    districts = read_features(data_dir / "districtes_geo.json")
    ground = shapely.union_all([shapely.geometry.shape(g) for _, g in districts])
    min_lon, min_lat, max_lon, max_lat = ground.bounds
    step_lat = metres / 110_574.0
    step_lon = metres / (111_320.0 * math.cos(math.radians((min_lat + max_lat) / 2)))
    cells = []
    for row in range(math.ceil((max_lat - min_lat) / step_lat)):
        for col in range(math.ceil((max_lon - min_lon) / step_lon)):
            lat, lon = min_lat + row * step_lat, min_lon + col * step_lon
            cell = shapely.box(lon, lat, lon + step_lon, lat + step_lat).intersection(ground)
            if not cell.is_empty and cell.area > 0:
                cells.append(cell)
    tree = shapely.STRtree(cells)
    aliases: dict[str, list[str]] = {}
    taken: set[str] = set()  # a barri and its district may share a name ("les Corts")
    for name_property, path in (
        ("N_Barri", data_dir / "barris_geo.json"),
        ("N_Distri", data_dir / "districtes_geo.json"),
    ):
        for props, geometry in read_features(path):
            name = str(props[name_property])
            if name.casefold() in taken:
                continue
            taken.add(name.casefold())
            inside = tree.query(shapely.geometry.shape(geometry).representative_point(), "within")
            if len(inside):
                aliases.setdefault(f"{int(inside[0]) + 1:04d}", []).append(name)
    geojson = workdir / f"grid-{metres:.0f}.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"code": f"{i:04d}", "name": f"Sector {i:04d}"},
                        "geometry": shapely.geometry.mapping(cell),
                    }
                    for i, cell in enumerate(cells, start=1)
                ],
            }
        ),
        encoding="utf-8",
    )
    path = workdir / f"grid-{metres:.0f}.toml"
    lines = [
        f'name = "Barcelona in squares of {metres:.0f} m"',
        "",
        "[districts]",
        f'geojson = "{geojson.name}"',
        'name_property = "name"',
        'code_property = "code"',
        "code_width = 4",
        "",
        "[districts.aliases]",
        *(f"{json.dumps(code)} = {json.dumps(names)}" for code, names in sorted(aliases.items())),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _classified(city: City, received: Sequence[Envelope]) -> tuple[list[Envelope], float]:
    classify = ClassifyPost(city, default_classifier())
    started = asyncio.get_running_loop().time()
    out: list[Envelope] = []
    for at in range(0, len(received), BATCH):
        out += [o.envelope for o in await classify.batch(received[at : at + BATCH])]
    return out, len(received) / (asyncio.get_running_loop().time() - started)


async def _routed(database_url: str, city: City, events: Sequence[Envelope]) -> float:
    engine = create_engine(database_url)
    try:
        route = RoutePost.from_settings(
            session_factory(engine), city, RouterSettings(database_url=database_url)
        )
        started = asyncio.get_running_loop().time()
        for at in range(0, len(events), BATCH):
            await route.batch(events[at : at + BATCH])
        return len(events) / (asyncio.get_running_loop().time() - started)
    finally:
        await engine.dispose()


def cost_by_districts(
    builders: Sequence[tuple[str, Callable[[], City]]],
    database_url_for: Callable[[int], str],
    posts: int,
    seed: int,
) -> list[DistrictCost]:
    """Each city's cost; database_url_for(i) gives a fresh, migrated database for the i-th."""
    mix = generate(posts, seed=seed, platform="bench-districts")
    now = datetime.now(UTC)
    received = [event_for(p, now).envelope for p in mix.posts]
    # Untimed, so that the first city measured does not pay for the model's loading and the
    # feature cache's filling, which every later one would find done.
    asyncio.run(_classified(City.barcelona(), received))
    figures = []
    for i, (description, build) in enumerate(builders):
        city = build()
        # the classifier's passes are short (a tenth of a second): the median of three
        runs = [asyncio.run(_classified(city, received)) for _ in range(3)]
        classified = runs[0][0]
        classify_rate = statistics.median(rate for _, rate in runs)
        placed = sum(1 for e in classified if e.post_classified.placement.district_code) / len(
            classified
        )
        route_rate = asyncio.run(_routed(database_url_for(i), city, classified))
        figures.append(
            DistrictCost(description, len(city.districts), placed, classify_rate, route_rate)
        )
    return figures
