"""The consumer lag while a handler retries a transient error (PostgreSQL or the broker away for
minutes): the gauge counts the records that wait instead of freezing at its last value."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from plaza.bus import Bus
from plaza.contracts import TOPICS, Envelope, Outgoing
from plaza.worker import RetryPolicy, Worker
from prometheus_client import REGISTRY

from tests.integration.test_worker_runtime import Recorder, post_event, publish

SOURCE = TOPICS.POST_RECEIVED


def lag(group: str) -> float | None:
    """The group's lag over its partitions; None before any was reported."""
    values = [
        REGISTRY.get_sample_value(
            "plaza_bus_consumer_lag_records",
            {"group": group, "topic": SOURCE.topic, "partition": str(p)},
        )
        for p in range(3)
    ]
    reported = [v for v in values if v is not None]
    return sum(reported) if reported else None


class DatabaseAway(Recorder):
    """Fails every record with a transient error until `back` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.back = asyncio.Event()

    async def __call__(self, event: Envelope) -> list[Outgoing]:
        if not self.back.is_set():
            self.seen.append(event.post_received.post.post_id)
            raise ConnectionError("the database is away")
        return list(await super().__call__(event))


async def wait_for_lag(group: str, at_least: float, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen: list[float | None] = []
    while (current := lag(group)) is None or current < at_least:
        seen.append(current)
        assert loop.time() < deadline, f"the lag read {seen[-5:]} while {at_least:.0f} waited"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def stuck_worker(bus: Bus, group: str, handler: DatabaseAway) -> AsyncIterator[None]:
    """A worker that fetched 5 records and retries the first one, while the block runs."""
    await publish(bus, [post_event(n) for n in range(5)])
    worker = Worker(
        bus,
        group=group,
        topics=[SOURCE],
        handler=handler,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
        lag_interval=0.1,
    )
    task = asyncio.create_task(worker.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not handler.seen:
            assert loop.time() < deadline and not task.done(), "the worker handled nothing"
            await asyncio.sleep(0.05)
        yield
    finally:
        worker.stop()
        await task


async def test_the_lag_counts_the_records_waiting_while_a_handler_retries(bus: Bus) -> None:
    group = f"w-lag-retrying-{type(bus).__name__}"
    handler = DatabaseAway()
    async with stuck_worker(bus, group, handler):
        await publish(bus, [post_event(n) for n in range(5, 25)])
        await wait_for_lag(group, 25, within=30)  # the 5 fetched (1 retried) and 20 more
        handler.back.set()
        deadline = asyncio.get_running_loop().time() + 30
        while lag(group) != 0:
            assert asyncio.get_running_loop().time() < deadline, f"lag {lag(group)} once handled"
            await asyncio.sleep(0.05)


async def test_the_lag_keeps_growing_while_posts_keep_coming_and_a_handler_retries(
    bus: Bus, request: pytest.FixtureRequest
) -> None:
    group = f"w-lag-growing-{type(bus).__name__}"
    async with stuck_worker(bus, group, DatabaseAway()):
        for more in range(3):  # posts keep coming while the database is away
            await publish(bus, [post_event(n) for n in range(5 + 20 * more, 25 + 20 * more)])
            await wait_for_lag(group, 25 + 20 * more, within=5)
