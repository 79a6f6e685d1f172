"""The router's cost per post as the database grows: the same posts routed in batches, in this
process, on a database holding 0, 20,000 or 100,000 requests (two thirds of them open, spread
over the city's ten districts and the last 2,000 hours). Routing is where the number of open requests
can matter: the duplicate search reads the open requests of the post's service near it (or in
its barri) within the window. The districts enter only as the routing table's lookup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from plaza.city import City
from plaza.contracts import Envelope
from plaza.db import create_engine, session_factory
from plaza_classifier.classify import default_classifier
from plaza_classifier.handler import ClassifyPost
from plaza_router.handler import RoutePost
from plaza_router.settings import RouterSettings

from bench import api
from bench.pipeline import event_for
from bench.posts import generate

BATCH = 250


async def classified_events(n: int, seed: int) -> list[Envelope]:
    """n bench posts as the classifier sends them to the router."""
    mix = generate(n, seed=seed, platform="bench-cost")
    now = datetime.now(UTC)
    received = [event_for(p, now).envelope for p in mix.posts]
    classify = ClassifyPost(City.barcelona(), default_classifier())
    out = []
    for at in range(0, len(received), BATCH):
        out += [o.envelope for o in await classify.batch(received[at : at + BATCH])]
    return out


async def posts_per_second(database_url: str, events: Sequence[Envelope]) -> float:
    engine = create_engine(database_url)
    try:
        route = RoutePost.from_settings(
            session_factory(engine), City.barcelona(), RouterSettings(database_url=database_url)
        )
        started = time.perf_counter()
        for at in range(0, len(events), BATCH):
            await route.batch(events[at : at + BATCH])
        return len(events) / (time.perf_counter() - started)
    finally:
        await engine.dispose()


def cost_by_size(
    database_url_for: dict[int, str], posts: int, seed: int
) -> list[tuple[int, float]]:
    """(requests in the database before, posts/s) for each database (already migrated)."""
    events = asyncio.run(classified_events(posts, seed))
    figures = []
    for size, url in sorted(database_url_for.items()):
        if size:
            asyncio.run(api.fill_to(url, size))
        figures.append((size, asyncio.run(posts_per_second(url, events))))
    return figures
