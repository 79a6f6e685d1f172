"""The cities `make bench` measures the cost by districts on (bench/district_cost.py): each is a
real city file Plaza loads, and places points and names as a city of that many districts would."""

from __future__ import annotations

from pathlib import Path

import pytest
from plaza.city import City

from bench.district_cost import cities


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, City]:
    workdir = tmp_path_factory.mktemp("cities")
    return {name: build() for name, build in cities(shared_data / "barcelona", workdir)}


def test_the_cities_grow_from_ten_districts_to_thousands(built: dict[str, City]) -> None:
    sizes = [len(city.districts) for city in built.values()]
    assert sizes[:3] == [10, 10, 73]
    assert sizes[2] < sizes[3] < sizes[4] < sizes[5] and sizes[5] > 5_000


def test_a_point_is_placed_in_the_square_that_holds_it(built: dict[str, City]) -> None:
    lat, lon = 41.4036, 2.1566  # carrer de Verdi, Gràcia
    for name, city in list(built.items())[3:]:
        found = city.locate(lat, lon)
        assert found is not None and found.source == "geo", name
        square = city.districts[found.district.code]
        # a square's centre is within a square's diagonal of any point in it
        size = float(name.split()[2])
        assert city.bbox.metres().distance_sq(square.lat, square.lon, lat, lon) < 2 * size**2, name


def test_a_barri_named_in_a_post_is_placed_in_a_square(built: dict[str, City]) -> None:
    text = "La font de la plaça de la Vila de Gràcia no funciona"
    for name, city in list(built.items())[3:]:
        found = city.find_in_text(text)
        assert found is not None and found.district.name.startswith("Sector "), name
        assert found.district.lat == pytest.approx(41.403, abs=0.01), name
        assert found.district.lon == pytest.approx(2.157, abs=0.01), name
    assert built["73 barris as districts"].find_in_text(text).district.name == "la Vila de Gràcia"
