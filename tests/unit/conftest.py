"""Fixtures the unit tests share: Barcelona as Plaza ships it, and with its exact polygons."""

from __future__ import annotations

import pytest
from plaza.city import City

from tests.infra import SHARED_DATA


@pytest.fixture(scope="session")
def city() -> City:
    """Barcelona without the shared data: placed by its packaged outlines, the packaged names."""
    return City.barcelona()


@pytest.fixture(scope="session")
def exact_city() -> City:
    """Barcelona with the districts' and barris' polygons from ../shared/data."""
    return City.barcelona(SHARED_DATA / "barcelona")
